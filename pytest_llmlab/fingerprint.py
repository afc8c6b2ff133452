"""A hardware fingerprint: which machine a result (and a baseline) belongs to.

Energy and speed depend on the box: a budget or a baseline learned on one machine
must not be applied to another without a warning. The fingerprint is a short hash of
the CPU model and count, the architecture, and the NVIDIA GPUs the driver lists.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from pathlib import Path

from pytest_llmlab.energy.cpu import cpu_model_name

__all__ = ["hardware", "hardware_fingerprint"]


def _nvidia_gpus(root: Path = Path("/proc/driver/nvidia/gpus")) -> list[str]:
    """GPU model names from the NVIDIA driver's procfs, without initialising NVML."""
    names: list[str] = []
    if not root.is_dir():
        return names
    for info in sorted(root.glob("*/information")):
        try:
            for line in info.read_text(errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "Model":
                    names.append(value.strip())
        except OSError:
            continue
    return names


@functools.cache
def hardware() -> dict[str, object]:
    """What the fingerprint is made of (also shown in reports)."""
    return {
        "cpu": cpu_model_name(),
        "cpus": os.cpu_count() or 0,
        "machine": platform.machine(),
        "system": platform.system(),
        "gpus": _nvidia_gpus(),
    }


@functools.cache
def hardware_fingerprint() -> str:
    """12 hex digits identifying this machine's hardware."""
    info = hardware()
    text = "|".join(
        [str(info["cpu"]), str(info["cpus"]), str(info["machine"]), str(info["system"]),
         ",".join(str(g) for g in info["gpus"])]  # type: ignore[attr-defined]
    )  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:12]
