"""Which Python wrote a marshalled code object: the Lambda layers' bytecode, read without
unmarshalling it.

Keras stores a Lambda layer's function as ``marshal.dumps(func.__code__)`` (base64), which only
the Python minor that wrote it can load (docs/failures.md class 5). No version number is
stored, but the code object itself tells: its fields (3.8 added ``co_posonlyargcount``, 3.11
replaced the variable tuples and added ``co_qualname`` and an exception table), the opcodes it
uses (each minor defines its own set: ``OPCODES``, generated from ``opcode.opmap`` of CPython
3.6 .. 3.13), its line table (3.10's covers every instruction, 3.8/3.9's ``co_lnotab`` stops at
the last line's start) and its calls (3.11 puts a PRECALL before every CALL, 3.12 none). The
answer is the set of minors the bytecode fits: one for most lambdas, two when nothing tells
them apart (``lambda x: x * 2`` is the same bytecode in 3.8 and 3.9).

A small marshal reader (format 4, the only one since 3.4) walks the bytes; it builds no code
object and runs nothing: this is untrusted input.
"""
from __future__ import annotations

import base64
import binascii
import struct
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

MINORS = ("3.6", "3.7", "3.8", "3.9", "3.10", "3.11", "3.12", "3.13")
# Opcode numbers each minor defines (opcode.opmap values below 256, as ranges).
_OPCODE_RANGES = {
    "3.6": "1-5 9-12 15-17 19-20 22-29 50-52 55-57 59-73 75-98 100-116 119-122 124-127 130-133 135-138 141-158",
    "3.7": "1-5 9-12 15-17 19-20 22-29 50-52 55-57 59-73 75-98 100-116 119-122 124-126 130-133 135-138 141-158 "
           "160-161",
    "3.8": "1-6 9-12 15-17 19-20 22-29 50-57 59-73 75-79 81-98 100-116 122 124-126 130-133 135-138 141-158 160-163",
    "3.9": "1-6 9-12 15-17 19-20 22-29 48-52 54-57 59-79 82-87 89-98 100-118 121-122 124-126 130-133 135-138 "
           "141-148 154-157 160-165",
    "3.10": "1-6 9-12 15-17 19-20 22-34 49-52 54-57 59-79 82-87 89-119 121-122 124-126 129-133 135-138 141-148 "
            "152 154-157 160-165",
    "3.11": "0-2 9-12 15 25 30-33 35-37 49-54 60-61 68-71 74-75 82-112 114-120 122-126 128-140 142 144-149 "
            "151-152 155-157 160 162-166 171-176",
    "3.12": "0-5 9 11-12 15 17 25-27 30-33 35-37 49-55 60-61 68-69 71 74-75 83 85 87 89-110 114-147 149-152 "
            "155-157 162-165 171-176 237-254",
    "3.13": "0-2 4-118 149 236-254",
}


def _ranges(text: str) -> Set[int]:
    out: Set[int] = set()
    for part in text.split():
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


OPCODES = {minor: frozenset(_ranges(text)) for minor, text in _OPCODE_RANGES.items()}
# From 3.11 some instructions are followed by inline CACHE units (opcode 0), a number that
# changes between minors (opcode._inline_cache_entries): opcode -> count.
_CACHES = {
    "3.11": "25:4 60:1 92:1 95:4 106:4 107:2 116:5 122:1 160:10 166:1 171:4",
    "3.12": "25:1 60:1 92:1 93:1 95:4 106:9 107:1 116:4 122:1 123:1 141:1 171:3",
    "3.13": "5:1 39:1 40:3 45:1 53:3 58:1 59:1 72:1 77:1 82:9 91:4 93:1 97:1 98:1 99:1 100:1 104:1 108:4 117:1",
}
CACHES = {minor: {int(op): int(n) for op, n in (kv.split(":") for kv in text.split())}
          for minor, text in _CACHES.items()}
RESUME = {"3.11": 151, "3.12": 151, "3.13": 149}   # the first instruction of every code object
PRECALL_311, CALL_311 = 166, 171

# The code object's fields in marshal order ('i' a raw 32-bit int, 'o' an object), and where
# the bytecode, the tuples of names and the line table are among them.
_LAYOUTS = (
    (("3.6", "3.7"), "iiiii" + "o" * 8 + "io", {"code": 5, "names": (7, 8, 9, 10), "lines": 14}),
    (("3.8", "3.9", "3.10"), "iiiiii" + "o" * 8 + "io", {"code": 6, "names": (8, 9, 10, 11), "lines": 15}),
    (("3.11", "3.12", "3.13"), "iiiii" + "o" * 8 + "ioo", {"code": 5, "names": (7, 8), "lines": 14}),
)
_MAX_DEPTH = 100


class MarshalError(ValueError):
    """The bytes are not a code object in this layout."""


class _Code(object):
    """What the reader keeps of a code object: its bytecode and its line table."""

    def __init__(self, fields: List[Any], where: Dict[str, Any]):
        self.code, self.line_table = fields[where["code"]], fields[where["lines"]]
        if not isinstance(self.code, bytes) or len(self.code) % 2 or not isinstance(fields[where["code"] + 1], tuple) \
                or not all(isinstance(fields[i], tuple) for i in where["names"]) \
                or not isinstance(self.line_table, bytes):
            raise MarshalError("not a code object")


class _Reader(object):
    def __init__(self, data: bytes, layout: str, where: Dict[str, Any]):
        self.data, self.pos, self.layout, self.where = data, 0, layout, where
        self.refs: List[Any] = []
        self.codes: List[_Code] = []

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MarshalError("truncated")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def long(self) -> int:
        return struct.unpack("<i", self.take(4))[0]

    def obj(self, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise MarshalError("nested too deep")
        code = self.take(1)[0]
        flag, kind = code & 0x80, chr(code & 0x7F)
        if kind in "0NFTS.":
            return {"N": None, "F": False, "T": True}.get(kind, kind)
        if kind == "r":
            index = self.long()
            if not 0 <= index < len(self.refs):
                raise MarshalError("bad reference")
            return self.refs[index]
        slot = len(self.refs)
        if flag:
            self.refs.append(None)
        value = self._value(kind, depth)
        if flag:
            self.refs[slot] = value
        return value

    def _value(self, kind: str, depth: int) -> Any:
        if kind == "i":
            return self.long()
        if kind == "l":
            n = self.long()
            self.take(2 * abs(n))
            return 0
        if kind in "gy":
            return self.take(8 if kind == "g" else 16)
        if kind in "fx":
            for _ in range(1 if kind == "f" else 2):
                self.take(self.take(1)[0])
            return 0.0
        if kind in "stuaA":
            raw = self.take(self.long())
            return raw if kind == "s" else raw.decode("utf-8", "replace")
        if kind in "zZ":
            return self.take(self.take(1)[0]).decode("ascii", "replace")
        if kind in "()[<>":
            n = self.take(1)[0] if kind == ")" else self.long()
            if n < 0 or n > len(self.data):
                raise MarshalError("bad size")
            return tuple(self.obj(depth + 1) for _ in range(n))
        if kind == "{":
            items = []
            while True:
                key = self.obj(depth + 1)
                if key == "0":
                    return tuple(items)
                items.append((key, self.obj(depth + 1)))
        if kind == "c":
            fields = [self.long() if f == "i" else self.obj(depth + 1) for f in self.layout]
            code = _Code(fields, self.where)
            self.codes.append(code)
            return code
        raise MarshalError(f"unknown marshal type {kind!r}")


def code_objects(data: bytes) -> Optional[Tuple[Tuple[str, ...], List[_Code]]]:
    """(the minors whose layout reads ``data`` as one code object, its code objects), or None."""
    for minors, layout, where in _LAYOUTS:
        reader = _Reader(data, layout, where)
        try:
            top = reader.obj()
        except (MarshalError, IndexError, struct.error):
            continue
        if isinstance(top, _Code) and reader.pos == len(data):
            return minors, reader.codes
    return None


def _fits(minor: str, codes: Sequence[_Code]) -> bool:
    allowed = OPCODES[minor]
    for c in codes:
        ops = set(c.code[0::2])
        if not ops <= allowed:
            return False
        covers = sum(c.line_table[0::2]) == len(c.code)   # 3.10's linetable covers every instruction
        if minor == "3.10" and not covers:
            return False
        if minor in ("3.8", "3.9") and covers and c.code:
            return False
        if minor == "3.11" and CALL_311 in ops and PRECALL_311 not in ops:
            return False
        if minor in RESUME and (RESUME[minor] not in ops or not _caches_fit(c.code, CACHES[minor])):
            return False
    return True


def _caches_fit(code: bytes, caches: Dict[int, int]) -> bool:
    """Every instruction is followed by exactly the CACHE units this minor gives it."""
    i = 0
    while i < len(code):
        count = caches.get(code[i], 0)
        if any(code[j] != 0 for j in range(i + 2, min(i + 2 + 2 * count, len(code)), 2)):
            return False
        i += 2 * (1 + count)
    return i == len(code)


def pythons_for(encoded: str) -> List[str]:
    """The Python minors a base64 marshalled code object fits (oldest first; [] when it is not
    one: not base64, not marshal, or bytecode no known minor defines)."""
    try:
        data = base64.b64decode(encoded.encode("ascii"), validate=False)
    except (binascii.Error, ValueError, UnicodeError):
        return []
    found = code_objects(data)
    if found is None:
        return []
    minors, codes = found
    return [m for m in minors if _fits(m, codes)]


def common_pythons(encoded: Sequence[str]) -> List[str]:
    """The minors every one of the code objects fits."""
    out = list(MINORS)
    for e in encoded:
        fits = set(pythons_for(e))
        out = [m for m in out if m in fits]
    return out
