"""The ``.onnx`` artifact: the inference SavedModel's signature converted with ``tf2onnx`` and run
with ``onnxruntime``, when both are in the target environment (they are optional: without them
the artifact is not written, and the report says so). Python 3.6 syntax.
"""
NOT_THERE = "tf2onnx/onnxruntime are not in the target environment"


def modules():
    """``(tf2onnx, onnxruntime)``, or None when either doesn't import."""
    try:
        import onnxruntime
        import tf2onnx
        import tf2onnx.convert  # noqa: F401
    except Exception:
        return None
    return tf2onnx, onnxruntime


def convert_and_run(tf, np, sig, inputs, sample, output_keys, path):
    """Convert the signature ``sig`` (inputs: source.json's list, in order) to ``path`` and run
    it on the sample; the outputs as arrays in ``output_keys`` order."""
    found = modules()
    if found is None:
        raise RuntimeError(NOT_THERE)
    tf2onnx, ort = found
    names = [i["name"] for i in inputs]
    specs = [tf.TensorSpec(i["shape"], tf.as_dtype(i["dtype"]), name=i["name"]) for i in inputs]

    def call(*args):
        result = sig(**dict(zip(names, args)))
        return [result[k] for k in output_keys]

    tf2onnx.convert.from_function(tf.function(call), input_signature=specs, output_path=path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {}
    for item, onnx_input in zip(inputs, session.get_inputs()):
        arr = sample[item["sample_key"]]
        if arr.dtype.kind in "US":
            arr = arr.astype(object)
        elif item["dtype"] != "string" and str(arr.dtype) != item["dtype"]:
            arr = arr.astype(item["dtype"])
        feeds[onnx_input.name] = arr
    outputs = session.run(None, feeds)       # in the order ``call`` returned them
    return [np.asarray(o) for o in outputs]
