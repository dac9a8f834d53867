"""Tensors of the model server: the served signature, dtype names of both protocols, and JSON
values turned into numpy arrays the model's inputs accept (and back).

Pure functions over numpy (imported lazily); standard library otherwise, Python 3.6 syntax (see
launch.py). Errors are InputError (errors.BadRequest: 400) with a message that names what the
signature expects and never quotes the request's values.
"""
from __future__ import absolute_import, division, print_function

import base64
import binascii
import warnings

from .errors import BadRequest

# numpy < 1.24 warns (and makes an object array) on ragged nested lists: those are refused below.
warnings.filterwarnings("ignore", message=".*ragged nested sequences.*")

# numpy dtype name -> (TF Serving DT_ name, Open Inference Protocol datatype)
DTYPES = {
    "float32": ("DT_FLOAT", "FP32"), "float64": ("DT_DOUBLE", "FP64"),
    "float16": ("DT_HALF", "FP16"), "bfloat16": ("DT_BFLOAT16", "BF16"),
    "int8": ("DT_INT8", "INT8"), "int16": ("DT_INT16", "INT16"),
    "int32": ("DT_INT32", "INT32"), "int64": ("DT_INT64", "INT64"),
    "uint8": ("DT_UINT8", "UINT8"), "uint16": ("DT_UINT16", "UINT16"),
    "uint32": ("DT_UINT32", "UINT32"), "uint64": ("DT_UINT64", "UINT64"),
    "bool": ("DT_BOOL", "BOOL"), "string": ("DT_STRING", "BYTES"),
}
V2_DTYPES = dict((v2, name) for name, (_, v2) in DTYPES.items())
MAX_RANK = 32          # dimensions of a tensor (numpy 1.x's maximum); more -> 400
MAX_DIM = (1 << 63) - 1
_MAX_DEPTH = MAX_RANK


def _np():
    import numpy

    return numpy


class InputError(BadRequest):
    """A request the signature can't accept: answered 400 with this message."""


class TensorSpec(object):
    """One input or output: name, dtype (numpy name, ``string`` for tf.string) and shape (a list,
    None for a free dimension; None for an unknown rank)."""

    def __init__(self, name, dtype, shape):
        self.name = str(name)
        self.dtype = normalize_dtype(dtype)
        self.shape = None if shape is None else [None if d is None or d < 0 else int(d) for d in shape]

    def describe(self):
        return "%s %s %s" % (self.name, self.dtype, dims(self.shape))

    def __repr__(self):
        return "TensorSpec(%s)" % self.describe()


class Signature(object):
    """The served signature: inputs and outputs (TensorSpec lists, in order)."""

    def __init__(self, inputs, outputs):
        self.inputs = list(inputs)
        self.outputs = list(outputs)

    def input_names(self):
        return [s.name for s in self.inputs]

    def output_names(self):
        return [s.name for s in self.outputs]

    def describe(self):
        """``inputs: x float32 [-1, 16]; outputs: y float32 [-1, 1]`` for error messages."""
        return "inputs: %s; outputs: %s" % (", ".join(s.describe() for s in self.inputs) or "none",
                                            ", ".join(s.describe() for s in self.outputs) or "none")


def normalize_dtype(dtype):
    """numpy/TF/Keras dtype (or its name) -> the numpy name, ``string`` for text/bytes."""
    if getattr(dtype, "kind", None) in ("O", "S", "U"):  # numpy object/bytes/text arrays
        return "string"
    name = getattr(dtype, "name", dtype)
    name = str(name if name is not None else "float32").replace("tf.", "")
    if name in ("object", "str", "bytes") or name.startswith(("<U", "|S", "<S", "|O")):
        return "string"
    return name


def dims(shape):
    """Shape as the protocols write it: -1 for a free dimension."""
    if shape is None:
        return None
    return [-1 if d is None else int(d) for d in shape]


def v1_dtype(dtype):
    return DTYPES.get(normalize_dtype(dtype), ("DT_INVALID", ""))[0]


def v2_dtype(dtype):
    return DTYPES.get(normalize_dtype(dtype), ("", "BYTES"))[1] or "BYTES"


def check_shape(spec, shape, what):
    """InputError unless ``shape`` fits ``spec.shape`` (rank, and every fixed dimension)."""
    if spec.shape is None:
        return
    if len(shape) != len(spec.shape) or any(want is not None and want != got
                                            for want, got in zip(spec.shape, shape)):
        raise InputError("%s: input '%s' expects shape %s, got %s"
                         % (what, spec.name, dims(spec.shape), list(shape)))


def _bytes_leaf(value, spec, what):
    if isinstance(value, dict):
        if len(value) == 1 and "b64" in value and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"].encode("ascii"), validate=True)
            except (binascii.Error, ValueError, UnicodeEncodeError):
                raise InputError("%s: input '%s' has a b64 value that is not valid base64"
                                 % (what, spec.name))
        raise InputError("%s: input '%s' expects strings or {\"b64\": ...} objects" % (what, spec.name))
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:   # a lone surrogate (``"\ud800"``): no UTF-8 for it
            raise InputError("%s: input '%s' has a string that is not valid Unicode (a lone surrogate)"
                             % (what, spec.name))
    raise InputError("%s: input '%s' expects strings (dtype string), got a %s"
                     % (what, spec.name, _json_kind(value)))


def _strings(value, spec, what):
    """Nested lists of strings / b64 objects -> (flat list of bytes, shape)."""
    flat = []

    def walk(node, depth):
        if isinstance(node, list):
            if depth > _MAX_DEPTH:
                raise InputError("%s: input '%s' is nested too deeply" % (what, spec.name))
            shapes = [walk(item, depth + 1) for item in node]
            if any(s != shapes[0] for s in shapes[1:]):
                raise InputError("%s: input '%s' is ragged (rows of different lengths); "
                                 "expects shape %s" % (what, spec.name, dims(spec.shape)))
            return [len(node)] + (shapes[0] if shapes else [])
        flat.append(_bytes_leaf(node, spec, what))
        return []

    shape = walk(value, 0)
    return flat, shape


def _json_kind(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if value is None:
        return "null"
    return "list"


def to_array(value, spec, what, shape=None):
    """The JSON ``value`` as an array of ``spec``'s dtype, checked against its shape.

    ``shape`` (V2) is the declared shape: the data, flat or nested, must hold exactly that many
    elements and is reshaped to it. Numbers may go to any numeric input, but a float to an integer
    input, a non-boolean to a boolean one or anything but text to a string one is refused, as TF
    Serving does.
    """
    np = _np()
    if shape is not None:
        check_declared_shape(shape, what)
    if spec.dtype == "string":
        flat, got = _strings(value, spec, what)
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        arr = arr.reshape(got) if shape is None else arr
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            raise InputError("%s: input '%s' is ragged (rows of different lengths); expects shape %s"
                             % (what, spec.name, dims(spec.shape)))
        kind = arr.dtype.kind
        if kind == "O":
            raise InputError("%s: input '%s' expects a regular nested list of %s numbers "
                             "(ragged, null, objects or out-of-range integers are refused)"
                             % (what, spec.name, spec.dtype))
        if kind in "USV":
            raise InputError("%s: input '%s' expects %s numbers, got strings"
                             % (what, spec.name, spec.dtype))
        target = np.dtype("float32") if spec.dtype == "bfloat16" else np.dtype(spec.dtype)
        if target.kind in "iu" and kind == "f":
            raise InputError("%s: input '%s' expects integers (%s), got floats"
                             % (what, spec.name, spec.dtype))
        if target.kind == "b" and kind != "b":
            raise InputError("%s: input '%s' expects booleans, got numbers" % (what, spec.name))
        if target.kind in "iu" and arr.size and kind in "iu":
            info = np.iinfo(target)
            if arr.min() < info.min or arr.max() > info.max:
                raise InputError("%s: input '%s' has integers out of the range of %s"
                                 % (what, spec.name, spec.dtype))
        arr = arr.astype(target, copy=False)
    if shape is not None:
        if arr.size != _product(shape):
            raise InputError("%s: input '%s' has %d values but shape %s holds %d"
                             % (what, spec.name, arr.size, list(shape), _product(shape)))
        arr = arr.reshape(shape)
    check_shape(spec, list(arr.shape), what)
    return arr


def check_declared_shape(shape, what):
    """InputError unless a declared (V2) shape has at most MAX_RANK dimensions, each an int64."""
    if len(shape) > MAX_RANK:
        raise InputError("%s: the shape has %d dimensions, over the maximum of %d" % (what, len(shape), MAX_RANK))
    if any(d > MAX_DIM for d in shape):
        raise InputError("%s: a dimension of the shape is over 2^63 - 1" % what)


def _product(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def output_array(value):
    """A model output (tensor, array, scalar) as a numpy array; bfloat16 as float32."""
    np = _np()
    if hasattr(value, "numpy"):
        value = value.numpy()
    arr = np.asarray(value)
    if arr.dtype.kind == "V" or str(arr.dtype) == "bfloat16":
        arr = arr.astype("float32")
    return arr


def text_or_b64(value, force_b64=False):
    """A bytes element for JSON: the UTF-8 text, or ``{"b64": ...}`` when it isn't text (or the
    output's name ends in ``_bytes``, TF Serving's rule)."""
    if isinstance(value, bytes):
        if not force_b64:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def to_json(arr, force_b64=False):
    """An array as nested lists of JSON values (bytes as text_or_b64)."""
    if arr.dtype.kind in "OSU":
        return _map_nested(arr.tolist(), lambda v: text_or_b64(v, force_b64))
    return arr.tolist()


def _map_nested(node, leaf):
    if isinstance(node, list):
        return [_map_nested(item, leaf) for item in node]
    return leaf(node)


class RawJSON(object):
    """JSON text already written for a numeric array (app.dumps splices it in)."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text


def raw_json(arr, flat=False):
    """A finite float or integer array as JSON text, written by ``%``-formatting whole rows: about
    3x faster than ``json.dumps(arr.tolist())`` for float32, and exact for the declared dtype
    (9 significant digits round-trip float16/float32, 17 float64). None when it doesn't apply
    (strings, bools, NaN/inf, small arrays): the caller falls back to ``to_json``."""
    import numpy as np

    kind = arr.dtype.kind
    if kind == "f":
        code = "%.17g" if arr.dtype.itemsize > 4 else "%.9g"
        if arr.dtype.name == "bfloat16" or not np.isfinite(arr).all():
            return None
    elif kind in "iu":
        code = "%d"
    else:
        return None
    if arr.size < 16 or arr.ndim == 0:
        return None
    a = arr.reshape(-1) if flat else arr
    last = a.shape[-1]
    row = "[" + ",".join([code] * last) + "]"
    parts = [row % tuple(r) for r in a.reshape(-1, last).tolist()]
    for dim in reversed(a.shape[:-1]):
        parts = ["[" + ",".join(parts[i:i + dim]) + "]" for i in range(0, len(parts), dim)]
    return RawJSON(parts[0])
