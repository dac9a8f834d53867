"""The Open Inference Protocol (KServe V2) over REST/JSON: server and model metadata, and infer
requests parsed into the model's inputs and formatted back.

Pure functions over decoded JSON and numpy arrays (servetensors.py); standard library otherwise,
Python 3.6 syntax. The binary tensor data extension is not supported: tensor data is JSON, flat
(row-major) or nested. Errors are servetensors.InputError (answered 400) naming the signature,
never the request's values.
"""
from __future__ import absolute_import, division, print_function

import base64

from .servetensors import InputError, dims, raw_json, to_array, v2_dtype

SERVER_NAME = "envrepro"
PLATFORM = "tensorflow_keras"
VERSION = "1"


def server_metadata(version):
    """``GET /v2``."""
    return {"name": SERVER_NAME, "version": version or "", "extensions": []}


def _tensor_metadata(spec):
    shape = dims(spec.shape)
    return {"name": spec.name, "datatype": v2_dtype(spec.dtype),
            "shape": [-1] if shape is None else shape}


def model_metadata(name, signature):
    """``GET /v2/models/NAME``."""
    return {"name": name, "versions": [VERSION], "platform": PLATFORM,
            "inputs": [_tensor_metadata(s) for s in signature.inputs],
            "outputs": [_tensor_metadata(s) for s in signature.outputs]}


def _bad(message, signature):
    return InputError("%s (the model's signature: %s)" % (message, describe(signature)))


def describe(signature):
    def one(spec):
        return "%s %s %s" % (spec.name, v2_dtype(spec.dtype), _tensor_metadata(spec)["shape"])

    return "inputs: %s; outputs: %s" % (", ".join(one(s) for s in signature.inputs) or "none",
                                        ", ".join(one(s) for s in signature.outputs) or "none")


def _is_shape(value):
    return isinstance(value, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                           for d in value)


def parse_infer(body, signature):
    """An infer request -> ``(inputs, outputs, id)``: ``{input name: array}``, the output names
    asked for (None: all) and the request id to echo (None: none given)."""
    try:
        return _parse(body, signature)
    except InputError as exc:
        raise _bad(str(exc), signature)


def _parse(body, signature):
    if not isinstance(body, dict):
        raise InputError("the request must be a JSON object with \"inputs\"")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError("\"id\" must be a string")
    if not isinstance(body.get("parameters", {}), dict):
        raise InputError("\"parameters\" must be an object")
    tensors = body.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise InputError("\"inputs\" must be a non-empty list of tensors")
    specs = dict((s.name, s) for s in signature.inputs)
    arrays = {}
    for i, tensor in enumerate(tensors):
        where = "inputs[%d]" % i
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InputError("%s must be an object with name, shape, datatype and data" % where)
        spec = specs.get(tensor["name"])
        if spec is None:
            raise InputError("%s names no input of the model" % where)
        if spec.name in arrays:
            raise InputError("input '%s' is given twice" % spec.name)
        params = tensor.get("parameters", {})
        if not isinstance(params, dict):
            raise InputError("%s: \"parameters\" must be an object" % where)
        if "binary_data_size" in params:
            raise InputError("%s: the binary tensor data extension is not supported; send JSON "
                             "data" % where)
        if not _is_shape(tensor.get("shape")):
            raise InputError("%s: \"shape\" must be a list of non-negative integers" % where)
        if tensor.get("datatype") != v2_dtype(spec.dtype):
            raise InputError("input '%s' expects datatype %s" % (spec.name, v2_dtype(spec.dtype)))
        if "data" not in tensor:
            raise InputError("%s has no \"data\"" % where)
        data = tensor["data"]
        if not isinstance(data, list):
            data = [data]
        arrays[spec.name] = to_array(data, spec, "input '%s'" % spec.name, shape=tensor["shape"])
    missing = [s.name for s in signature.inputs if s.name not in arrays]
    if missing:
        raise InputError("missing input(s): %s" % ", ".join(missing))
    batches = set(a.shape[0] for a in arrays.values() if a.ndim)
    if len(batches) > 1:
        raise InputError("the inputs have different batch sizes")
    return arrays, _requested(body, signature), request_id


def _requested(body, signature):
    if "outputs" not in body:
        return None
    wanted = body["outputs"]
    if not isinstance(wanted, list):
        raise InputError("\"outputs\" must be a list of {\"name\": ...} objects")
    known = signature.output_names()
    names = []
    for i, item in enumerate(wanted):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InputError("outputs[%d] must be an object with a name" % i)
        if item["name"] not in known:
            raise InputError("outputs[%d] names no output of the model" % i)
        if item["name"] not in names:
            names.append(item["name"])
    return names


def _bytes_data(flat):
    """BYTES data as JSON strings: UTF-8 text, or base64 for every element when one isn't."""
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in flat], None
    except UnicodeDecodeError:
        return ([base64.b64encode(v if isinstance(v, bytes) else str(v).encode("utf-8")).decode("ascii")
                 for v in flat], {"content_type": "base64"})


def format_infer(name, outputs, requested=None, request_id=None):
    """``outputs`` (``[(name, array)]``) -> the infer response, data flat in row-major order;
    only the ``requested`` outputs when given, in the order asked."""
    by_name = dict(outputs)
    order = requested if requested is not None else [n for n, _ in outputs]
    tensors = []
    for out_name in order:
        arr = by_name[out_name]
        tensor = {"name": out_name, "datatype": v2_dtype(arr.dtype), "shape": list(arr.shape)}
        if arr.dtype.kind in "OSU":
            tensor["data"], params = _bytes_data(arr.reshape(-1).tolist())
            if params:
                tensor["parameters"] = params
        else:
            raw = raw_json(arr, flat=True)
            tensor["data"] = raw if raw is not None else arr.reshape(-1).tolist()
        tensors.append(tensor)
    response = {"model_name": name, "model_version": VERSION, "outputs": tensors}
    if request_id is not None:
        response["id"] = request_id
    return response
