"""The Open Inference Protocol (KServe V2) over REST/JSON, an adapter over the data plane (app.py):
its routes, server and model metadata, model readiness, and infer requests parsed into the model's
inputs and formatted back.

``route(path)`` finds a V2 endpoint and its handler, ``handler(plane, body, started)`` ->
``(status, JSON object)``. The rest are pure functions over decoded JSON and numpy arrays
(tensors.py); standard library otherwise, Python 3.6 syntax. Tensor data is JSON, flat (row-major)
or nested, or raw with the binary tensor data extension (binary.py) for inputs and outputs that
ask for it. Errors are tensors.InputError (400) naming the signature, never the request's values. (The health endpoints, which probes use
whatever the protocol, are the data plane's: config.LIVE_PATH, config.READY_PATH.)
"""
from __future__ import absolute_import, division, print_function

import base64

try:
    from urllib.parse import unquote
except ImportError:  # pragma: no cover
    from urllib import unquote

from . import binary
from .config import MODEL_VERSION
from .tensors import InputError, check_declared_shape, dims, raw_json, to_array, v2_dtype

SERVER_NAME = "envrepro"
PLATFORM = "tensorflow_keras"
VERSION = MODEL_VERSION
SERVER_PATH = "/v2"
PREFIX = "/v2/models/"


# -- endpoints -----------------------------------------------------------------------------------

def route(path):
    """``(endpoint, method, handler, model name, version)`` for a V2 path (no query string, no
    trailing slash), or None: ``/v2``, ``/v2/models/NAME[/versions/V]``, its ``/ready`` and
    ``/infer``."""
    if path == SERVER_PATH:
        return "v2_server_metadata", "GET", handle_server_metadata, None, None
    if not path.startswith(PREFIX):
        return None
    parts = path[len(PREFIX):].split("/")
    version = None
    if len(parts) >= 3 and parts[1] == "versions":
        version = parts[2]
        parts = [parts[0]] + parts[3:]
    if not parts[0]:
        return None
    name = unquote(parts[0])
    tail = parts[1:]
    if not tail:
        return "v2_model_metadata", "GET", handle_model_metadata, name, version
    if tail == ["ready"]:
        return "v2_model_ready", "GET", handle_model_ready, name, version
    if tail == ["infer"]:
        return "v2_infer", "POST", handle_infer, name, version
    return None


def handle_server_metadata(plane, body, started):
    return 200, server_metadata(plane.version)


def handle_model_metadata(plane, body, started):
    return 200, model_metadata(plane.name, plane.servable().signature)


def handle_model_ready(plane, body, started):
    ok = plane.state.ready()
    return (200 if ok else 503), {"name": plane.name, "ready": ok}


def handle_infer(plane, body, started, header_length=None):
    """``header_length``: the binary extension's Inference-Header-Content-Length, when given."""
    tail = None
    if header_length is not None:
        body, tail = binary.split(body, header_length)

    def parse(obj, signature):
        inputs, requested, request_id = parse_infer(obj, signature, tail)
        every, per_output = binary.wanted(obj)
        return inputs, lambda outputs: format_infer(plane.name, outputs, requested, request_id,
                                                    every, per_output)

    answer = plane.predict(body, started, parse, describe, binary.estimate if tail is not None else None)
    return answer if isinstance(answer, binary.BinaryAnswer) else (200, answer)


# -- the protocol's JSON -------------------------------------------------------------------------


def server_metadata(version):
    """``GET /v2``."""
    return {"name": SERVER_NAME, "version": version or "", "extensions": ["binary_tensor_data"]}


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


def parse_infer(body, signature, tail=None):
    """An infer request -> ``(inputs, outputs, id)``: ``{input name: array}``, the output names
    asked for (None: all) and the request id to echo (None: none given). ``tail``: the binary data
    after the JSON header (binary.Tail) of a request with the binary extension."""
    try:
        return _parse(body, signature, tail)
    except InputError as exc:
        raise _bad(str(exc), signature)


def _parse(body, signature, tail=None):
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
        if "binary_data_size" in params and tail is None:
            raise InputError("%s: binary_data_size needs the binary tensor data extension (the %s "
                             "header)" % (where, binary.HEADER))
        if not _is_shape(tensor.get("shape")):
            raise InputError("%s: \"shape\" must be a list of non-negative integers" % where)
        check_declared_shape(tensor["shape"], where)
        if tensor.get("datatype") != v2_dtype(spec.dtype):
            raise InputError("input '%s' expects datatype %s" % (spec.name, v2_dtype(spec.dtype)))
        if "binary_data_size" in params:
            arrays[spec.name] = binary.to_array(tensor, spec, tail, where)
            continue
        if "data" not in tensor:
            raise InputError("%s has no \"data\"" % where)
        data = tensor["data"]
        if not isinstance(data, list):
            data = [data]
        arrays[spec.name] = to_array(data, spec, "input '%s'" % spec.name, shape=tensor["shape"])
    missing = [s.name for s in signature.inputs if s.name not in arrays]
    if missing:
        raise InputError("missing input(s): %s" % ", ".join(missing))
    if tail is not None:
        tail.check_used()
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


def format_infer(name, outputs, requested=None, request_id=None, every_binary=False, binary_outputs=None):
    """``outputs`` (``[(name, array)]``) -> the infer response, data flat in row-major order;
    only the ``requested`` outputs when given, in the order asked. Outputs to answer binary
    (``binary_outputs``: name -> bool, over ``every_binary``) make it a binary.BinaryAnswer."""
    by_name = dict(outputs)
    order = requested if requested is not None else [n for n, _ in outputs]
    tensors = []
    chunks = []
    for out_name in order:
        arr = by_name[out_name]
        tensor = {"name": out_name, "datatype": v2_dtype(arr.dtype), "shape": list(arr.shape)}
        if (binary_outputs or {}).get(out_name, every_binary):
            chunks.append(binary.output_bytes(arr))
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        elif arr.dtype.kind in "OSU":
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
    return binary.BinaryAnswer(response, chunks) if chunks else response
