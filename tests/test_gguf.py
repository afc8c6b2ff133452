"""A model file that will not load says why: truncated, not GGUF, a folder."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pytest_llmlab.models.gguf import gguf_problem
from pytest_llmlab.models.store import store_home


def _tiny_gguf(tensor_values: int = 64, *, data: bool = True) -> bytes:
    """A GGUF v3 file with one metadata string and one F32 tensor, built by the
    specification's layout (ggml docs/gguf.md)."""

    def string(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    header = b"GGUF" + struct.pack("<IQQ", 3, 1, 1)
    header += string("general.name") + struct.pack("<I", 8) + string("tiny")
    header += string("w") + struct.pack("<I", 1) + struct.pack("<Q", tensor_values)
    header += struct.pack("<IQ", 0, 0)  # F32 at offset 0
    header += b"\0" * (-len(header) % 32)
    return header + (b"\0" * 4 * tensor_values if data else b"")


def test_a_whole_file_has_no_problem(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(_tiny_gguf())
    assert gguf_problem(path) is None


def test_a_file_cut_in_its_data_says_how_much_is_missing(tmp_path: Path) -> None:
    whole = _tiny_gguf()
    path = tmp_path / "m.gguf"
    path.write_bytes(whole[:-1])
    assert gguf_problem(path) == (
        f"truncated: {len(whole) - 1:,} bytes, but its tensors need at least {len(whole):,}"
    )


def test_a_file_cut_in_its_header(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(_tiny_gguf()[:30])
    assert gguf_problem(path) == "truncated: the file (30 bytes) ends inside its GGUF header"


def test_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"PK\x03\x04 not a model")
    assert gguf_problem(path) == "not a GGUF file (bad magic bytes)"


def test_the_real_default_model_reads_whole_and_its_cut_copy_does_not(tmp_path: Path) -> None:
    stored = sorted((store_home() / "smollm2-135m").glob("*.gguf"))
    if not stored:
        pytest.skip("smollm2-135m is not in the model store (llmlab models pull smollm2-135m)")
    assert gguf_problem(stored[0]) is None
    cut = tmp_path / "cut.gguf"
    with stored[0].open("rb") as source:
        cut.write_bytes(source.read(5_000_000))
    problem = gguf_problem(cut)
    assert problem is not None and problem.startswith("truncated: 5,000,000 bytes")


def test_a_truncated_model_fails_its_tests_saying_so(pytester: pytest.Pytester) -> None:
    model = pytester.path / "cut.gguf"
    model.write_bytes(_tiny_gguf()[:-8])
    pytester.makepyfile("def test_x(llm):\n    pass\n")
    result = pytester.runpytest(f"--llm-models=local:{model}", "--llm-baseline-s=0")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*could not load*cut.gguf*truncated:*bytes, but its tensors*"])
