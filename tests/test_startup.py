"""What a pytest start costs with the plugin installed: which modules it imports.

Counted, not timed (the times are `bench/startup.py`'s): a fresh interpreter that
imports the plugin, or runs a session of plain tests, must not import the libraries
only LLM tests need. Each check runs in a child process, so that what this process
has imported already does not hide anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pytest_llmlab

#: Libraries (and our modules) a session without LLM tests has no use for.
HEAVY = ("pydantic", "httpx", "click", "jinja2", "pandas", "numpy", "yaml", "xllamacpp")
OURS_HEAVY = ("pytest_llmlab.llm", "pytest_llmlab.models.base", "pytest_llmlab.expect")


def _imported_after(code: str, cwd: Path | None = None) -> list[str]:
    """The modules a fresh interpreter holds after running ``code`` (which must not
    print), as top-level names and our own dotted ones."""
    probe = textwrap.dedent(code) + textwrap.dedent(
        """
        import json as _json, sys as _sys
        _names = {n.split(".")[0] for n in _sys.modules} | {
            n for n in _sys.modules if n.startswith("pytest_llmlab.")
        }
        print(_json.dumps(sorted(_names)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=cwd, check=True
    )
    names: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return names


def test_importing_the_plugin_imports_nothing_heavy() -> None:
    names = _imported_after("import pytest, pytest_llmlab.plugin")
    assert "pytest_llmlab.plugin" in names
    assert [n for n in (*HEAVY, *OURS_HEAVY) if n in names] == []


def test_a_session_of_plain_tests_imports_nothing_heavy(tmp_path: Path) -> None:
    """Configure, collection, the run and the session's end with the plugin active,
    and no LLM test: no provider, meter, record or report module is loaded."""
    (tmp_path / "test_plain.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    names = _imported_after(
        """
        import contextlib, io, pytest
        with contextlib.redirect_stdout(io.StringIO()):
            code = pytest.main(["-q", "-p", "no:cacheprovider", "."])
        assert code == 0, code
        """,
        cwd=tmp_path,
    )
    assert "pytest_llmlab.plugin" in names
    # jinja2 is pytest-html's own import when that plugin is installed, not ours.
    heavy = [n for n in (*HEAVY, *OURS_HEAVY) if n in names and n != "jinja2"]
    assert heavy == []


def test_every_public_name_resolves_on_first_use() -> None:
    names = _imported_after(
        """
        import pytest_llmlab
        missing = [n for n in pytest_llmlab.__all__ if getattr(pytest_llmlab, n, None) is None]
        assert not missing, missing
        assert sorted(set(dir(pytest_llmlab)) & set(pytest_llmlab.__all__)) == sorted(
            pytest_llmlab.__all__
        )
        """
    )
    assert "pydantic" in names  # resolving them did import what they live in


def test_the_expect_function_is_not_replaced_by_its_module() -> None:
    """Importing the submodule ``pytest_llmlab.expect`` binds it on the package: the
    package's `expect` stays the function."""
    _imported_after(
        """
        import pytest_llmlab.expect
        from pytest_llmlab.expect import parse
        import pytest_llmlab
        assert callable(pytest_llmlab.expect) and pytest_llmlab.expect.__name__ == "expect"
        from pytest_llmlab import expect
        assert expect is pytest_llmlab.expect
        """
    )


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = pytest_llmlab.nonexistent
