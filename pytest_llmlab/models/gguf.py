"""Enough of the GGUF format to say why a model file will not load.

llama.cpp answers a truncated or damaged file with "Failed to init server, please check
the input params". `gguf_problem` reads the header the way the GGUF specification
(ggml's docs/gguf.md) lays it out: magic ``GGUF``, version, tensor count, metadata
key/value count, the metadata, then one info per tensor (name, dimensions, ggml type,
offset into the data section, which starts at the next multiple of
``general.alignment``, default 32). It then compares the file's size with the end of
the last tensor's data. Sizes are computed for the ggml types whose block layout is
listed below; for others the tensor's offset alone gives a lower bound.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

__all__ = ["gguf_problem"]

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
#: ggml type id -> (bytes per block, values per block), from ggml's type traits.
_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (4, 1),  # F32
    1: (2, 1),  # F16
    2: (18, 32),  # Q4_0
    3: (20, 32),  # Q4_1
    6: (22, 32),  # Q5_0
    7: (24, 32),  # Q5_1
    8: (34, 32),  # Q8_0
    9: (36, 32),  # Q8_1
    10: (84, 256),  # Q2_K
    11: (110, 256),  # Q3_K
    12: (144, 256),  # Q4_K
    13: (176, 256),  # Q5_K
    14: (210, 256),  # Q6_K
    15: (292, 256),  # Q8_K
    24: (1, 1),  # I8
    25: (2, 1),  # I16
    26: (4, 1),  # I32
    27: (8, 1),  # I64
    28: (8, 1),  # F64
    30: (2, 1),  # BF16
}
#: Metadata value type id -> struct format of a scalar (8: string, 9: array).
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


class _Truncated(Exception):
    """The file ended inside its header."""


def _read(handle: BinaryIO, fmt: str) -> tuple[int | float | bool, ...]:
    size = struct.calcsize("<" + fmt)
    data = handle.read(size)
    if len(data) < size:
        raise _Truncated
    return struct.unpack("<" + fmt, data)


def _int(handle: BinaryIO, fmt: str) -> int:
    return int(_read(handle, fmt)[0])


def _string(handle: BinaryIO) -> str:
    length = _int(handle, "Q")
    data = handle.read(length)
    if len(data) < length:
        raise _Truncated
    return data.decode("utf-8", "replace")


def _value(handle: BinaryIO, kind: int) -> object:
    if kind == _STRING:
        return _string(handle)
    if kind == _ARRAY:
        item_kind, count = _int(handle, "I"), _int(handle, "Q")
        if item_kind in _SCALARS:  # skip the elements without decoding them
            skip = struct.calcsize("<" + _SCALARS[item_kind]) * count
            handle.seek(skip, 1)
            return None
        for _ in range(count):
            _value(handle, item_kind)
        return None
    if kind not in _SCALARS:
        raise ValueError(f"unknown metadata value type {kind}")
    return _read(handle, _SCALARS[kind])[0]


def gguf_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a whole GGUF file, in a few words, or None when its
    header reads and its size covers every tensor."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            if handle.read(4) != _MAGIC:
                return "not a GGUF file (bad magic bytes)"
            version = _int(handle, "I")
            if version < 2:
                return f"GGUF version {version} is too old (llama.cpp reads 2 and 3)"
            tensors, keys = _int(handle, "Q"), _int(handle, "Q")
            alignment = _DEFAULT_ALIGNMENT
            for _ in range(keys):
                key = _string(handle)
                value = _value(handle, _int(handle, "I"))
                if key == "general.alignment" and isinstance(value, int) and value > 0:
                    alignment = value
            end = 0
            for _ in range(tensors):
                _string(handle)
                dims = [_int(handle, "Q") for _ in range(_int(handle, "I"))]
                kind, offset = _int(handle, "I"), _int(handle, "Q")
                values = 1
                for dim in dims:
                    values *= dim
                block_bytes, block_values = _TYPE_SIZES.get(kind, (0, 1))
                end = max(end, offset + values // block_values * block_bytes)
            header = handle.tell()
    except _Truncated:
        return f"truncated: the file ({size:,} bytes) ends inside its GGUF header"
    except (ValueError, OverflowError, MemoryError) as exc:
        return f"damaged GGUF header ({exc})"
    data_start = -(-header // alignment) * alignment
    needed = data_start + end
    if size < needed:
        return f"truncated: {size:,} bytes, but its tensors need at least {needed:,}"
    return None
