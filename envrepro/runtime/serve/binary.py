"""The Open Inference Protocol's binary tensor data extension (as Triton and KServe speak it).

A request with the header ``Inference-Header-Content-Length: N``: its body's first N bytes are the
JSON infer request; an input with ``"parameters": {"binary_data_size": K}`` (and no ``data``) takes
the next K bytes of what follows, in the order of the inputs, as its raw little-endian elements
(BOOL one byte each, BYTES each a 4-byte little-endian length then its bytes); the sizes must add
up to exactly what follows. An output asked with ``"parameters": {"binary_data": true}`` (or every
output, with ``"binary_data_output": true`` in the request's parameters) is answered raw after the
JSON answer, whose length is the response's ``Inference-Header-Content-Length``, with
``"parameters": {"binary_data_size": K}`` in place of its ``data``. BF16 has no binary form here
(400). Errors are tensors.InputError (400) naming the input. Numeric inputs are views of the
body (no copy). Standard library only (numpy lazily), Python 3.6 syntax.
"""
from __future__ import absolute_import, division, print_function

import struct

from .errors import BadRequest
from .limits import PER_STRING
from .tensors import V2_DTYPES, InputError, check_shape

HEADER = "Inference-Header-Content-Length"
CONTENT_TYPE = "application/octet-stream"
_LENGTH = struct.Struct("<I")


def header_length(value, body_length):
    """The value of the request's HEADER as an int; BadRequest unless it is digits and at most
    the body's length."""
    value = (value or "").strip()
    if not value or value.strip("0123456789") or len(value) > 19 or int(value) > body_length:
        raise BadRequest("%s must be the byte length of the JSON header, at most the body's %d bytes"
                         % (HEADER, body_length))
    return int(value)


class Tail(object):
    """The binary data after the JSON header: ``take(size, what)`` hands it out in order."""

    def __init__(self, body, offset):
        self.view = memoryview(body)[offset:]
        self.offset = 0

    def take(self, size, what):
        left = len(self.view) - self.offset
        if size > left:
            raise InputError("%s: binary_data_size %d is more than the %d bytes of binary data left"
                             % (what, size, left))
        chunk = self.view[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def check_used(self):
        if self.offset != len(self.view):
            raise InputError("the binary data is %d bytes but the inputs' binary_data_size add up to %d"
                             % (len(self.view), self.offset))


def split(body, length):
    """``(JSON header bytes, Tail)`` of a binary request body."""
    return body[:length], Tail(body, length)


def _product(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def _size(params, what):
    size = params.get("binary_data_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InputError("%s: \"binary_data_size\" must be a non-negative integer" % what)
    return size


def estimate(obj):
    """Bytes the binary BYTES inputs of a request will take once decoded, beyond the body (numeric
    inputs are views of it), from its JSON header alone: reserved before they are made."""
    total = 0
    for tensor in (obj.get("inputs") if isinstance(obj, dict) else None) or []:
        if not isinstance(tensor, dict) or tensor.get("datatype") != "BYTES":
            continue
        params = tensor.get("parameters")
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        shape = tensor.get("shape")
        if isinstance(size, int) and size > 0 and isinstance(shape, list) and \
                all(isinstance(d, int) and d >= 0 for d in shape):
            total += size + PER_STRING * min(_product(shape), size // 4 + 1)
    return total


def to_array(tensor, spec, tail, where):
    """An input's array from the binary data (its JSON ``tensor`` declares datatype and shape)."""
    import numpy as np

    what = "input '%s'" % spec.name
    if "data" in tensor:
        raise InputError("%s has both \"data\" and a binary_data_size" % where)
    size = _size(tensor["parameters"], where)
    shape = list(tensor["shape"])
    count = _product(shape)
    chunk = tail.take(size, what)
    datatype = tensor.get("datatype")
    if datatype == "BYTES":
        values = _strings(chunk, count, what)   # first: a huge shape can't allocate anything
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
    elif datatype in V2_DTYPES and datatype != "BF16":
        dtype = np.dtype("uint8" if datatype == "BOOL" else V2_DTYPES[datatype]).newbyteorder("<")
        if size != count * dtype.itemsize:
            raise InputError("%s: binary_data_size is %d bytes but shape %s of %s takes %d"
                             % (what, size, shape, datatype, count * dtype.itemsize))
        arr = np.frombuffer(chunk, dtype=dtype) if count else np.zeros(0, dtype)
        arr = arr != 0 if datatype == "BOOL" else arr.astype(dtype.newbyteorder("="), copy=False)
    else:
        raise InputError("%s: the binary form of %s is not supported" % (what, datatype))
    arr = arr.reshape(shape)
    check_shape(spec, shape, what)
    return arr


def _strings(chunk, count, what):
    data = chunk.tobytes()
    out = []
    offset = 0
    while offset < len(data):
        if len(out) == count or offset + 4 > len(data):
            break
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + length > len(data):
            break
        out.append(data[offset:offset + length])
        offset += length
    if len(out) != count or offset != len(data):
        raise InputError("%s: the BYTES binary data is not %d elements, each a 4-byte little-endian "
                         "length then its bytes" % (what, count))
    return out


def output_bytes(arr):
    """An output array's raw binary form: little-endian elements, BOOL one byte each, BYTES each
    length-prefixed."""
    import numpy as np

    if arr.dtype.kind in "OSU":
        parts = []
        for value in arr.reshape(-1).tolist():
            value = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(_LENGTH.pack(len(value)))
            parts.append(value)
        return b"".join(parts)
    if arr.dtype.kind == "b":
        return np.ascontiguousarray(arr, dtype="uint8").tobytes()
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def wanted(body):
    """The names of the outputs to answer binary: those asked with ``binary_data`` true, or every
    output (but those asked with it false) when the request's ``binary_data_output`` is true."""
    params = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    every = params.get("binary_data_output") is True
    per_output = {}
    for item in body.get("outputs") or []:
        p = item.get("parameters") if isinstance(item, dict) else None
        if isinstance(p, dict) and isinstance(p.get("binary_data"), bool):
            per_output[item["name"]] = p["binary_data"]
    return every, per_output


class BinaryAnswer(object):
    """An infer answer with binary outputs: the JSON object and the raw chunks that follow it."""

    def __init__(self, obj, chunks):
        self.obj = obj
        self.chunks = chunks
