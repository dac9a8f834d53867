"""TensorFlow Serving's REST API (v1): model status, metadata, and predict requests in row
(``instances``) or columnar (``inputs``) format, parsed into the model's inputs and formatted back.

Pure functions over decoded JSON and numpy arrays (servetensors.py); standard library otherwise,
Python 3.6 syntax. Errors are servetensors.InputError (answered 400) naming the signature, never
the request's values.
"""
from __future__ import absolute_import, division, print_function

from .servetensors import InputError, dims, raw_json, to_array, to_json, v1_dtype

SIGNATURE_NAME = "serving_default"
METHOD_NAME = "tensorflow/serving/predict"
VERSION = "1"


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
