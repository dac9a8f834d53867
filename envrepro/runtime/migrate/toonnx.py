"""The ``.onnx`` artifact: the inference SavedModel's ``serving_default`` signature converted with
``tf2onnx`` and run with ``onnxruntime``, when both are in the target environment (they are
optional: without them the artifact is not written, and the report says why).

The ONNX graph has the signature's interface: one input per signature input, named like it (its
TensorSpec name, batch dimension free), one output per output key, named like it. The file is
judged as written: a fresh ``onnxruntime.InferenceSession`` reads it back from disk and runs it
on the sample, each input cast to the signature's dtype as the SavedModel call does.

What can't be converted says why in one line (``NotConvertible``): ops tf2onnx leaves unmapped
(it converts with ``continue_on_error`` and would write a file onnxruntime refuses), string
inputs (a text model's preprocessing: TensorFlow's string ops have no standard ONNX operator).
Imports nothing outside the standard library until called. Python 3.6 syntax.
"""
import logging

NOT_THERE = "tf2onnx/onnxruntime are not in the target environment"
# A text model: the ops a TextVectorization / StringLookup leaves in its graph have no standard
# ONNX operator (only onnxruntime-extensions' custom ones, which no target has).
STRING_INPUTS = ("string inputs %s: tf2onnx has no standard ONNX operator for TensorFlow's string "
                 "ops (a text model's preprocessing%s)")
# onnxruntime's numpy dtype per ONNX tensor type (InferenceSession.get_inputs()[i].type).
ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64",
              "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32",
              "tensor(int16)": "int16", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
              "tensor(bool)": "bool", "tensor(string)": "object"}


class NotConvertible(Exception):
    """The signature can't become an ONNX graph onnxruntime runs: the message says why."""


def missing():
    """None when tf2onnx and onnxruntime import here; else why not, in one line."""
    absent = []
    for name in ("onnxruntime", "tf2onnx"):
        try:
            __import__(name)
            if name == "tf2onnx":
                __import__("tf2onnx.convert")
        except ImportError as exc:
            if getattr(exc, "name", None) in (name, None) and name in str(exc):
                absent.append(name)
            else:
                return "%s doesn't import in the target environment: %s" % (name, _line(exc))
        except Exception as exc:
            return "%s doesn't import in the target environment: %s" % (name, _line(exc))
    if absent:
        return NOT_THERE if len(absent) == 2 else "%s is not in the target environment" \
            % absent[0]
    return None


def modules():
    """``(tf2onnx, onnxruntime)``, or None when either doesn't import."""
    if missing() is not None:
        return None
    import onnxruntime
    import tf2onnx
    import tf2onnx.convert  # noqa: F401

    return tf2onnx, onnxruntime


def _line(exc):
    text = (str(exc).strip().splitlines() or [""])[0]
    text = text if len(text) <= 300 else text[:297] + "..."
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


def _version(module):
    return str(getattr(module, "__version__", "") or "") or None


def _all_nodes(graph):
    """Every node of ``graph`` and of its subgraphs (loops, conditionals)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                for inner in _all_nodes(attr.g):
                    yield inner
            for sub in attr.graphs:
                for inner in _all_nodes(sub):
                    yield inner


def unmapped_ops(onnx, model):
    """The op types of the model's standard-domain nodes that ONNX doesn't define (TensorFlow ops
    tf2onnx left in the graph as they were), and of onnxruntime-extensions' domain, which no
    target has; sorted. Other domains (onnxruntime's com.microsoft) are onnxruntime's to judge."""
    bad = set()
    for node in _all_nodes(model.graph):
        domain = node.domain or ""
        if domain in ("", "ai.onnx", "ai.onnx.ml"):
            try:
                known = onnx.defs.has(node.op_type, domain)
            except TypeError:
                known = onnx.defs.has(node.op_type)
            if not known:
                bad.add(node.op_type)
        elif domain == "ai.onnx.contrib":          # onnxruntime-extensions' ops only
            bad.add("%s (domain %s)" % (node.op_type, domain))
    return sorted(bad)


def convert(tf, sig, inputs, output_keys, path):
    """Write the ONNX of the signature ``sig`` (inputs: source.json's list, in order) at ``path``;
    what the conversion used (``opset``, versions). NotConvertible says why it can't."""
    import onnx
    import tf2onnx
    import tf2onnx.convert  # noqa: F401

    try:
        tf2onnx.logging.set_level(logging.ERROR)
    except Exception:
        pass
    names = [i["name"] for i in inputs]
    specs = [tf.TensorSpec(i["shape"], tf.as_dtype(i["dtype"]), name=i["name"]) for i in inputs]

    def call(*args):
        result = sig(**dict(zip(names, args)))
        # A dict: tf2onnx names the graph's outputs by its keys (and its inputs by the specs').
        return dict((k, result[k]) for k in output_keys)

    model, _ = tf2onnx.convert.from_function(tf.function(call), input_signature=specs)
    bad = unmapped_ops(onnx, model)
    if bad:
        ops = ", ".join(bad[:8]) + (" ..." if len(bad) > 8 else "")
        strings = [i["name"] for i in inputs if i.get("dtype") == "string"]
        if strings:
            raise NotConvertible(STRING_INPUTS % (", ".join(strings), ": " + ops))
        raise NotConvertible("tf2onnx %s has no ONNX operator for the TensorFlow op%s %s"
                             % (_version(tf2onnx), "s" if len(bad) > 1 else "", ops))
    onnx.save_model(model, path)
    opset = [o.version for o in model.opset_import if (o.domain or "") in ("", "ai.onnx")]
    return {"opset": opset[0] if opset else None, "tf2onnx": _version(tf2onnx),
            "onnx": _version(onnx)}


def run(ort, np, path, inputs, sample, output_keys):
    """The ONNX file at ``path`` read back by a fresh onnxruntime session and run on the sample;
    the outputs as arrays in ``output_keys`` order."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    by_name = dict((i.name, i) for i in session.get_inputs())
    feeds = {}
    for item in inputs:
        got = by_name.get(item["name"]) or by_name.get(item["name"] + ":0")
        if got is None:
            raise NotConvertible("the ONNX graph has no input %s (it has %s)"
                                 % (item["name"], sorted(by_name)))
        arr = np.asarray(sample[item["sample_key"]])
        want = ORT_DTYPES.get(got.type)
        if want == "object" or arr.dtype.kind in "USO":
            arr = np.array([v.decode("utf-8") if isinstance(v, bytes) else v
                            for v in arr.reshape(-1).tolist()], dtype=object).reshape(arr.shape)
        else:
            if item.get("dtype") not in (None, "string") and str(arr.dtype) != item["dtype"]:
                arr = arr.astype(item["dtype"])
            if want and str(arr.dtype) != want:
                arr = arr.astype(want)
        feeds[got.name] = arr
    outputs = [o.name for o in session.get_outputs()]
    names = [k if k in outputs else k + ":0" for k in output_keys]
    missing_out = [k for k in names if k not in outputs]
    if missing_out:
        raise NotConvertible("the ONNX graph has no output %s (it has %s)"
                             % (", ".join(missing_out), outputs))
    return [np.asarray(o) for o in session.run(names, feeds)]


def convert_and_run(tf, np, sig, inputs, sample, output_keys, path):
    """Convert the signature ``sig`` to ``path`` and run it on the sample; ``(outputs in
    output_keys order, what the conversion used)``."""
    why = missing()
    if why is not None:
        raise RuntimeError(why)
    import onnxruntime as ort

    facts = convert(tf, sig, inputs, output_keys, path)
    facts["onnxruntime"] = _version(ort)
    return run(ort, np, path, inputs, sample, output_keys), facts
