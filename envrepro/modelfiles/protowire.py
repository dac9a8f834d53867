"""Just enough of the protobuf wire format to walk SavedModel messages without the protobuf package.

The doctor must read ``saved_model.pb`` where TensorFlow (and its generated protobuf code) is
absent or the wrong version, so this decodes fields by number instead: no schema, no copies of
large fields, and malformed input raises ValueError instead of crashing.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

Buffer = Union[bytes, bytearray, memoryview]


def _varint(buf: memoryview, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def iter_fields(data: Buffer) -> Iterator[Tuple[int, int, Any]]:
    """Yield ``(field_number, wire_type, value)`` for each field of one message.

    Varints and fixed-size values come back as ints, length-delimited ones as memoryview slices
    (no copy: a graph_def of hundreds of MB is skipped, not duplicated). Groups (wire types 3/4,
    unused by TensorFlow's protos) and malformed input raise ValueError.
    """
    buf = memoryview(data) if not isinstance(data, memoryview) else data
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise ValueError("truncated fixed64")
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ValueError("length-delimited field runs past the end")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            if pos + 4 > end:
                raise ValueError("truncated fixed32")
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def fields(data: Buffer) -> Dict[int, List[Any]]:
    """All fields of one message, grouped by number (repeated fields keep their order)."""
    out: Dict[int, List[Any]] = {}
    for number, _wire, value in iter_fields(data):
        out.setdefault(number, []).append(value)
    return out


def text(value: Any) -> str:
    return bytes(value).decode("utf-8", "replace")


def first_text(msg: Dict[int, List[Any]], number: int) -> Optional[str]:
    vals = msg.get(number)
    return text(vals[0]) if vals and isinstance(vals[0], memoryview) else None
