"""TensorFlow Serving's REST API (v1), an adapter over the data plane (app.py): its routes, model
status, metadata, and predict requests in row (``instances``) or columnar (``inputs``) format,
parsed into the model's inputs and formatted back.

``route(path)`` finds a v1 endpoint and its handler, ``handler(plane, body, started)`` ->
``(status, JSON object)``. The rest are pure functions over decoded JSON and numpy arrays
(tensors.py); standard library otherwise, Python 3.6 syntax. Errors are tensors.InputError (400)
naming the signature, never the request's values.
"""
from __future__ import absolute_import, division, print_function

try:
    from urllib.parse import unquote
except ImportError:  # pragma: no cover
    from urllib import unquote

from .config import MODEL_VERSION
from .tensors import InputError, dims, raw_json, to_array, to_json, v1_dtype

SIGNATURE_NAME = "serving_default"
METHOD_NAME = "tensorflow/serving/predict"
VERSION = MODEL_VERSION
PREFIX = "/v1/models/"


# -- endpoints -----------------------------------------------------------------------------------

def route(path):
    """``(endpoint, method, handler, model name, version)`` for a v1 path (no query string, no
    trailing slash), or None: ``/v1/models/NAME[/versions/V]``, its ``/metadata`` and
    ``:predict``."""
    if not path.startswith(PREFIX):
        return None
    rest = path[len(PREFIX):]
    predict = rest.endswith(":predict")
    if predict:
        rest = rest[:-len(":predict")]
    parts = rest.split("/")
    version = None
    if len(parts) >= 3 and parts[1] == "versions":
        version = parts[2]
        parts = [parts[0]] + parts[3:]
    if not parts[0] or ":" in parts[-1]:
        return None
    name = unquote(parts[0])
    if predict and len(parts) == 1:
        return "v1_predict", "POST", handle_predict, name, version
    if not predict and len(parts) == 1:
        return "v1_status", "GET", handle_status, name, version
    if not predict and parts[1:] == ["metadata"]:
        return "v1_metadata", "GET", handle_metadata, name, version
    return None


def handle_status(plane, body, started):
    """``GET /v1/models/NAME``: the server's phase as TF Serving's version states; 503 unless
    ready."""
    phase = plane.state.phase
    if phase == "ready":
        return 200, status("AVAILABLE")
    if phase == "failed":
        return 503, status("END", "UNKNOWN", plane.state.error)
    if phase == "draining":
        return 503, status("UNLOADING", "UNAVAILABLE", "the server is stopping")
    return 503, status("LOADING", "UNAVAILABLE", "the model is loading")


def handle_metadata(plane, body, started):
    return 200, metadata(plane.name, plane.servable().signature)


def handle_predict(plane, body, started):
    def parse(obj, signature):
        inputs, columnar = parse_predict(obj, signature)
        return inputs, lambda outputs: format_predict(outputs, columnar)

    return 200, plane.predict(body, started, parse, lambda sig: sig.describe())


# -- the protocol's JSON -------------------------------------------------------------------------


def status(state, error_code="OK", error_message=""):
    """``GET /v1/models/NAME``: the one version's state (``AVAILABLE``, ``LOADING``,
    ``UNLOADING``, ``END``) as TF Serving writes it."""
    return {"model_version_status": [{"version": VERSION, "state": state,
                                      "status": {"error_code": error_code,
                                                 "error_message": error_message}}]}


def _tensor_info(spec):
    shape = dims(spec.shape)
    info = {"dtype": v1_dtype(spec.dtype), "name": spec.name + ":0"}
    if shape is None:
        info["tensor_shape"] = {"dim": [], "unknown_rank": True}
    else:
        info["tensor_shape"] = {"dim": [{"size": str(d), "name": ""} for d in shape],
                                "unknown_rank": False}
    return info


def metadata(name, signature):
    """``GET /v1/models/NAME/metadata``: the serving_default signature_def as TF Serving writes
    it."""
    sig = {"inputs": dict((s.name, _tensor_info(s)) for s in signature.inputs),
           "outputs": dict((s.name, _tensor_info(s)) for s in signature.outputs),
           "method_name": METHOD_NAME}
    return {"model_spec": {"name": name, "signature_name": "", "version": VERSION},
            "metadata": {"signature_def": {"signature_def": {SIGNATURE_NAME: sig}}}}


def _is_b64(value):
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _bad(message, signature):
    return InputError("%s (the model's signature: %s)" % (message, signature.describe()))


def parse_predict(body, signature):
    """A predict request -> ``(inputs, columnar)``: ``{input name: array}`` and whether it came in
    columnar format (``inputs``) rather than rows (``instances``)."""
    if not isinstance(body, dict):
        raise _bad("the request must be a JSON object with \"instances\" or \"inputs\"", signature)
    name = body.get("signature_name", SIGNATURE_NAME)
    if name != SIGNATURE_NAME:
        raise _bad("unknown signature_name: only \"%s\" is served" % SIGNATURE_NAME, signature)
    has_rows, has_cols = "instances" in body, "inputs" in body
    if has_rows == has_cols:
        raise _bad("the request must have exactly one of \"instances\" (rows) and \"inputs\" "
                   "(columns)", signature)
    try:
        if has_rows:
            return _rows(body["instances"], signature), False
        return _columns(body["inputs"], signature), True
    except InputError as exc:
        raise _bad(str(exc), signature)


def _rows(instances, signature):
    specs = signature.inputs
    names = [s.name for s in specs]
    if not isinstance(instances, list) or not instances:
        raise InputError("\"instances\" must be a non-empty list of rows")
    named = [isinstance(row, dict) and not _is_b64(row) for row in instances]
    if len(specs) > 1 and not all(named):
        raise InputError("the model has %d inputs: each instance must be an object keyed by "
                         "input name (%s)" % (len(specs), ", ".join(names)))
    if any(named) and not all(named):
        raise InputError("instances mix objects and plain values")
    if all(named):
        for row in instances:
            if sorted(row) != sorted(names):
                raise InputError("each instance must have exactly the inputs %s" % ", ".join(names))
        columns = dict((n, [row[n] for row in instances]) for n in names)
    else:
        columns = {names[0]: instances}
    return dict((s.name, to_array(columns[s.name], s, "instances")) for s in specs)


def _columns(inputs, signature):
    specs = signature.inputs
    names = [s.name for s in specs]
    if isinstance(inputs, dict) and not _is_b64(inputs):
        if sorted(inputs) != sorted(names):
            raise InputError("\"inputs\" must have exactly the inputs %s" % ", ".join(names))
        values = inputs
    elif len(specs) == 1:
        values = {names[0]: inputs}
    else:
        raise InputError("the model has %d inputs: \"inputs\" must be an object keyed by input "
                         "name (%s)" % (len(specs), ", ".join(names)))
    arrays = dict((s.name, to_array(values[s.name], s, "inputs")) for s in specs)
    batches = set(a.shape[0] for a in arrays.values() if a.ndim)
    if len(batches) > 1:
        raise InputError("the inputs have different batch sizes")
    return arrays


def format_predict(outputs, columnar):
    """``outputs`` (``[(name, array)]`` in signature order) -> the predict response: columnar
    ``{"outputs": ...}`` or rows ``{"predictions": [...]}``; one output is its bare value, more
    are keyed by name. Outputs whose name ends in ``_bytes`` are written as ``{"b64": ...}``."""
    if columnar:
        if len(outputs) == 1:
            return {"outputs": _json(*outputs[0])}
        return {"outputs": dict((n, _json(n, a)) for n, a in outputs)}
    if len(outputs) == 1:
        name, arr = outputs[0]
        if arr.ndim == 0:
            raise InputError("the output has no batch dimension: send \"inputs\" (columnar)")
        return {"predictions": _json(name, arr)}
    batch = set(a.shape[0] if a.ndim else None for _, a in outputs)
    if len(batch) != 1 or None in batch:
        raise InputError("the outputs don't share a batch dimension, so they can't be written as "
                         "rows: send \"inputs\" (columnar)")
    columns = [(n, to_json(a, force_b64=n.endswith("_bytes"))) for n, a in outputs]   # rows index them
    return {"predictions": [dict((n, col[i]) for n, col in columns) for i in range(batch.pop())]}


def _json(name, arr):
    """One output's value: pre-written JSON text for numeric arrays (fast), else nested lists."""
    raw = raw_json(arr)
    return raw if raw is not None else to_json(arr, force_b64=name.endswith("_bytes"))
