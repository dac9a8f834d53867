"""A user's sample input for the reference prediction (``--sample FILE``, the hook's
``sample_input=``), checked against the model's inputs, and the conversions that let text be
saved without pickle and fed back as the model takes it.

* ``load_sample(path)``: ``.npy`` (one array), ``.npz`` (``arr_0``... a list, other keys a dict
  by input name) or ``.json`` (a list, or an object of input name -> nested lists; strings
  allowed). A JSON list is the input itself for a model with one input, one entry per input
  otherwise.
* ``resolve(sample, structure, names, specs, source)``: the sample in the model's input
  structure, or SampleMismatch (one line: which input, what it expects, what it got) when its
  count, names, kind of dtype (text, booleans, integers, numbers) or shape don't fit.
* ``storable``/``feedable``: text is saved as fixed-width unicode (``U``, bytes ``S`` when it
  isn't UTF-8): ``np.save(allow_pickle=False)`` refuses object arrays; it is fed to the model as
  an object array of bytes, what TensorFlow makes of a tf.string tensor. ``text_values`` reads
  any of those as bytes, for comparison.

Standard library only (numpy imported inside functions), Python 3.6 syntax.
"""
from __future__ import absolute_import, division, print_function

import json
import re

from .facts import ProbeFailure

SAMPLE_SUFFIXES = (".npy", ".npz", ".json")
SAMPLE_FIX = ("pass one array per model input, shaped and typed as the model takes it: .npy, "
              ".npz or .json, see docs/format.md")


class SampleMismatch(ProbeFailure):
    """A sample that doesn't fit the model's inputs: bad input, the capture stops (exit 2)."""


class JsonSample(object):
    """A ``.json`` sample as read: which input a list stands for is known only with the model."""

    def __init__(self, value):
        self.value = value


def load_sample(path):
    """``.npy`` -> one array; ``.npz`` -> a list (keys ``arr_0``...) or a dict (named keys);
    ``.json`` -> a JsonSample."""
    import numpy as np

    lower = path.lower()
    if lower.endswith(".json"):
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
        if not isinstance(value, (list, dict)) or not value:
            raise ValueError("expected a non-empty list, or an object of input name -> values")
        return JsonSample(value)
    if lower.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.keys())
            if keys and all(re.match(r"^arr_\d+$", k) for k in keys):
                keys.sort(key=lambda k: int(k[4:]))
                arrays = [data[k] for k in keys]
                return arrays[0] if len(arrays) == 1 else arrays
            return dict((k, data[k]) for k in keys)
    return np.load(path, allow_pickle=False)


# -- text arrays ---------------------------------------------------------------------------------

def _is_text_array(arr):
    if arr.dtype.kind in "US":
        return True
    if arr.dtype.kind != "O":
        return False
    return all(isinstance(v, (str, bytes)) for v in arr.reshape(-1).tolist())


def storable(arr):
    """``arr`` as np.save(allow_pickle=False) takes it: object arrays of text as ``U`` (``S``
    when some bytes aren't UTF-8), bfloat16 as float32. Other object arrays: ValueError."""
    import numpy as np

    if arr.dtype.kind == "V" or str(arr.dtype) == "bfloat16":
        return arr.astype("float32")
    if arr.dtype.kind != "O":
        return arr
    flat = arr.reshape(-1).tolist()
    if not all(isinstance(v, (str, bytes)) for v in flat):
        raise ValueError("an array of Python objects (not text) can't be saved without pickle")
    try:
        texts = [v.decode("utf-8") if isinstance(v, bytes) else v for v in flat]
        return np.array(texts, dtype="U%d" % max([len(t) for t in texts] + [1])).reshape(arr.shape)
    except UnicodeDecodeError:
        raw = [v if isinstance(v, bytes) else v.encode("utf-8") for v in flat]
        return np.array(raw, dtype="S%d" % max([len(b) for b in raw] + [1])).reshape(arr.shape)


def feedable(arr):
    """Text arrays (``U``, ``S``) as object arrays of bytes, what a tf.string tensor holds;
    anything else as it is."""
    import numpy as np

    kind = getattr(getattr(arr, "dtype", None), "kind", None)
    if kind not in ("U", "S"):
        return arr
    out = np.empty(arr.shape, dtype=object)
    out.reshape(-1)[:] = [v.encode("utf-8") if isinstance(v, str) else v
                          for v in arr.reshape(-1).tolist()] if arr.size else []
    return out


def text_values(arr):
    """Every element of a text array (``U``, ``S`` or object) as bytes, in row-major order;
    trailing NULs dropped, as numpy's fixed-width arrays drop them."""
    out = []
    for v in arr.reshape(-1).tolist():
        if isinstance(v, str):
            v = v.encode("utf-8")
        elif not isinstance(v, bytes):
            v = str(v).encode("utf-8")
        out.append(v.rstrip(b"\0"))
    return out


# -- a sample against the model's inputs ---------------------------------------------------------

def dtype_kind(dtype):
    """``string``, ``bool``, ``integer`` or ``float`` for a model input's dtype name."""
    name = str(dtype).replace("tf.", "")
    if name in ("string", "object", "str", "bytes"):
        return "string"
    if name == "bool":
        return "bool"
    if name.startswith(("int", "uint")):
        return "integer"
    return "float"


def array_kind(arr):
    kind = arr.dtype.kind
    if kind in "USO":
        return "string"
    if kind == "b":
        return "bool"
    if kind in "iu":
        return "integer"
    return "float"


_WORDS = {"string": "strings", "bool": "booleans", "integer": "integers", "float": "numbers"}


def _to_array(value):
    """A user's value (array, tensor, nested lists) as a numpy array, text kept as text."""
    import numpy as np

    if hasattr(value, "numpy"):
        try:
            value = value.numpy()
        except Exception:
            pass
    arr = np.asarray(value)
    if arr.dtype.kind == "O" and _is_text_array(arr):
        return storable(arr)
    return arr


def _json_array(value, spec, label):
    """A JSON value (nested lists of numbers, booleans or strings) as an array of the input's
    dtype; SampleMismatch when it is ragged or mixes kinds."""
    import numpy as np

    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        arr = None
    leaves = set()
    _leaf_types(value, leaves, 0)
    mixed = ("str" in leaves and len(leaves) > 1) or "null" in leaves
    if arr is None or arr.dtype.kind == "O" or mixed:
        raise SampleMismatch("%s is ragged or mixes strings, numbers and nulls; expected a "
                             "regular nested list" % label, SAMPLE_FIX)
    want = dtype_kind(spec[1]) if spec else None
    got = array_kind(arr)
    if want and got != "string" and (got == want or (want == "float" and got == "integer")):
        dtype = str(spec[1]).replace("tf.", "")
        try:
            arr = arr.astype("float32" if dtype == "bfloat16" else dtype)
        except TypeError:
            pass
    return arr


def _leaf_types(value, seen, depth):
    """The kinds of the leaves of nested JSON lists (numpy would turn 1 beside "a" into "1")."""
    if isinstance(value, list):
        if depth < 64:
            for item in value:
                _leaf_types(item, seen, depth + 1)
        return
    seen.add("str" if isinstance(value, str) else "null" if value is None else "other")


def _check(arr, shape, dtype, label):
    """SampleMismatch unless ``arr`` fits an input of this shape and dtype name (None: any) in
    kind and shape."""
    if dtype is not None:
        want, got = dtype_kind(dtype), array_kind(arr)
        if got != want and not (want == "float" and got == "integer"):
            raise SampleMismatch("%s: the model expects %s (dtype %s), got %s (%s)"
                                 % (label, _WORDS[want], str(dtype).replace("tf.", ""),
                                    _WORDS[got], arr.dtype), SAMPLE_FIX)
    if shape is None:
        return
    fits = len(arr.shape) == len(shape) and all(
        want_d is None or want_d == got_d for want_d, got_d in zip(shape, arr.shape))
    if not fits:
        raise SampleMismatch("%s: the model expects shape %s (None: any size), got %s"
                             % (label, list(shape), list(arr.shape)), SAMPLE_FIX)


def _listed(value, single):
    """Whether a list/tuple ``value`` holds one value per input (True) or, for a model with one
    input, is that input's value itself (nested lists, JSON's always)."""
    if not isinstance(value, (list, tuple)):
        return False
    return not single or (len(value) == 1 and hasattr(value[0], "shape"))


def resolve(sample, structure, names, specs, source="sample_input", dtypes_known=True):
    """``(structure, names, arrays)``: ``sample`` in the model's input structure (a dict by name,
    a list, or one array), text as ``U``/``S`` arrays; SampleMismatch when it doesn't fit the
    model's inputs. Without known inputs (``structure`` None) the sample is taken as given.
    ``dtypes_known`` False (a subclassed model's guessed float32): shapes are checked, not kinds."""
    is_json = isinstance(sample, JsonSample)
    value = sample.value if is_json else sample
    if structure is None:
        return _as_given(value)
    single = len(specs) == 1
    what = "%s holds" % source
    if isinstance(value, dict):
        given = dict((str(k), v) for k, v in value.items())
        if sorted(given) != sorted(names):
            if single and len(given) == 1:
                given = {names[0]: list(given.values())[0]}
            else:
                raise SampleMismatch("%s inputs %s, the model's are %s"
                                     % (what, ", ".join(sorted(given)) or "none",
                                        ", ".join(names)), SAMPLE_FIX)
        values = [given[n] for n in names]
    elif _listed(value, single):
        if len(value) != len(specs):
            raise SampleMismatch("%s %d input(s), the model takes %d (%s)"
                                 % (what, len(value), len(specs), ", ".join(names)), SAMPLE_FIX)
        values = list(value)
    else:
        if not single:
            raise SampleMismatch("%s one input, the model takes %d (%s)"
                                 % (what, len(specs), ", ".join(names)), SAMPLE_FIX)
        values = [value]
    arrays = []
    for name, spec, item in zip(names, specs, values):
        label = "%s, input '%s'" % (source, name)
        try:
            arr = _json_array(item, spec if dtypes_known else None, label) if is_json \
                else _to_array(item)
        except (ValueError, TypeError):    # numpy refuses ragged nested lists
            arr = None
        if arr is None:
            raise SampleMismatch("%s is ragged (rows of different lengths); expected a regular "
                                 "array" % label, SAMPLE_FIX)
        if arr.dtype.kind == "O":
            raise SampleMismatch("%s is an array of Python objects, not numbers or text"
                                 % label, SAMPLE_FIX)
        _check(arr, spec[0], spec[1] if dtypes_known else None, label)
        arrays.append(arr)
    return structure, list(names), arrays


def _as_given(value):
    """A sample for a model whose inputs are unknown: a dict, a list or one array, as given."""
    if isinstance(value, dict):
        names = [str(n) for n in value]
        return "dict", names, [_to_array(value[n]) for n in value]
    if isinstance(value, (list, tuple)) and value and all(hasattr(v, "shape") for v in value):
        return "list", ["input_%d" % i for i in range(len(value))], [_to_array(v) for v in value]
    return "single", ["input"], [_to_array(value)]
