"""System-prompt presets: ``system: concise`` names ``system_prompts/concise.txt``.

Presets are ``.txt`` or ``.md`` files in a ``system_prompts/`` folder beside the suite
file, or in the session's folder (``--llm-system-prompts``, default ``system_prompts``
under the rootdir); the one beside the suite wins. A ``system:`` value that looks like a
name (letters, digits, ``-``, ``_``, ``.``, no spaces) must be a preset; anything else is
the system prompt itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PRESET_SUFFIXES", "is_preset_name", "list_presets", "resolve_system"]

PRESET_SUFFIXES = (".txt", ".md")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def is_preset_name(value: str) -> bool:
    return bool(_NAME.fullmatch(value))


def list_presets(folders: Sequence[Path]) -> dict[str, Path]:
    """Every preset name and its file; a folder earlier in ``folders`` wins."""
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix in PRESET_SUFFIXES and path.is_file():
                found.setdefault(path.stem, path)
    return found


def resolve_system(value: str, folders: Sequence[Path]) -> str:
    """The system prompt text of ``value``: a preset's file content, or ``value``.

    Raises ValueError naming the preset and the folders searched when a name matches
    no preset.
    """
    if not is_preset_name(value):
        return value
    for folder in folders:
        for suffix in PRESET_SUFFIXES:
            path = folder / f"{value}{suffix}"
            if path.is_file():
                return path.read_text(encoding="utf-8").strip()
    presets = ", ".join(sorted(list_presets(folders))) or "none"
    searched = ", ".join(str(folder) for folder in folders)
    raise ValueError(
        f"system preset {value!r} not found in {searched} (presets: {presets}); "
        "inline system text needs at least one space"
    )
