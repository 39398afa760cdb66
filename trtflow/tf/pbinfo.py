"""The input placeholders of a frozen GraphDef, read without TensorFlow.

A small reader of the protobuf wire format: ``rules/common.smk`` needs a user's pb's image size
while it builds the DAG (the size is a wildcard) and must not import TensorFlow there. Only the
fields on the way to a Placeholder's ``shape`` attribute are decoded; everything else (the
weights of every Const node) is skipped by its length in a memory map, so only the pages that
hold node headers are read: a 350 MB pb takes milliseconds.

GraphDef.node = 1; NodeDef.name = 1, op = 2, attr = 5 (map entry: key = 1, value = 2);
AttrValue.shape = 7; TensorShapeProto.dim = 2, unknown_rank = 3; Dim.size = 1.
"""

from __future__ import annotations

import functools
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


@dataclass(frozen=True)
class Placeholder:
    """An input of the graph: tensor name and shape (-1 = dynamic; None = unknown rank)."""

    name: str
    shape: tuple[int, ...] | None


def _varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: Any, pos: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(field number, wire type, value)`` of the message in ``buf[pos:end]``.

    A LEN field's value is its ``(start, end)`` span in ``buf``: nothing is copied or read
    until a caller looks inside it.
    """
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        value: Any = None
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
        elif wire == _LEN:
            size, pos = _varint(buf, pos, end)
            value, pos = (pos, pos + size), pos + size
        elif wire in (_I64, _I32):
            pos += 8 if wire == _I64 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if field == 0 or pos > end:
            raise ValueError("malformed field")
        yield field, wire, value


def _text(buf: Any, span: tuple[int, int]) -> str:
    return bytes(buf[span[0] : span[1]]).decode("utf-8", "replace")


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _shape(buf: Any, span: tuple[int, int]) -> tuple[int, ...] | None:
    for field, wire, value in _fields(buf, *span):
        if field == 7 and wire == _LEN:  # AttrValue.shape
            dims: list[int] = []
            for f, w, v in _fields(buf, *value):
                if f == 3 and w == _VARINT and v:  # unknown_rank
                    return None
                if f == 2 and w == _LEN:  # dim
                    size = 0
                    for df, dw, dv in _fields(buf, *v):
                        if df == 1 and dw == _VARINT:
                            size = _int64(dv)
                    dims.append(size)
            return tuple(dims)
    return None


def _placeholder(buf: Any, span: tuple[int, int]) -> Placeholder | None:
    name, op, shape = "", "", None
    attrs = []
    for field, wire, value in _fields(buf, *span):
        if wire != _LEN:
            continue
        if field == 1:
            name = _text(buf, value)
        elif field == 2:
            op = _text(buf, value)
            if op != "Placeholder":
                return None  # before its attrs: a Const's weights are never read
        elif field == 5:
            attrs.append(value)
    if op != "Placeholder":
        return None
    for entry in attrs:
        key, val = "", None
        for f, w, v in _fields(buf, *entry):
            if f == 1 and w == _LEN:
                key = _text(buf, v)
            elif f == 2 and w == _LEN:
                val = v
        if key == "shape" and val is not None:
            shape = _shape(buf, val)
    return Placeholder(f"{name}:0", shape)


@functools.lru_cache(maxsize=64)
def _cached(path: str, size: int, mtime_ns: int) -> tuple[Placeholder, ...]:
    found = []
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        for field, wire, value in _fields(buf, 0, len(buf)):  # only touched pages are read
            if field == 1 and wire == _LEN:  # GraphDef.node
                p = _placeholder(buf, value)
                if p is not None:
                    found.append(p)
    return tuple(found)


def placeholders(path: str | Path) -> tuple[Placeholder, ...]:
    """The graph's Placeholder nodes, cached by (path, size, mtime).

    Raises OSError for an unreadable file and ValueError for bytes that are not a protobuf
    (or an empty file).
    """
    st = os.stat(path)
    return _cached(str(path), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class ImageInput:
    """What a pb's image input fixes: its name, shape, square size and batch (None = dynamic)."""

    name: str
    shape: tuple[int, ...]
    image_size: int | None
    batch: int | None


def image_input(path: str | Path, input_name: str | None = None) -> ImageInput | None:
    """The pb's image input (the named one, or the only Placeholder), or None if not found.

    None when the file cannot be read or parsed, the input is ambiguous or missing, or its shape
    is not a 4-D NHWC/NCHW image batch: export_pb then says what is wrong, in its own job.
    """
    try:
        found = placeholders(path)
    except (OSError, ValueError):
        return None
    if input_name:
        wanted = input_name if ":" in input_name else f"{input_name}:0"
        found = tuple(p for p in found if p.name == wanted)
    if len(found) != 1 or found[0].shape is None or len(found[0].shape) != 4:
        return None
    name, shape = found[0].name, found[0].shape
    spatial = shape[1:3] if shape[3] == 3 else shape[2:4] if shape[1] == 3 else None
    size = None
    if spatial is not None and spatial[0] == spatial[1] and spatial[0] > 0:
        size = spatial[0]
    batch = shape[0] if shape[0] > 0 else None
    return ImageInput(name, shape, size, batch)
