"""Model files built by hand for the model-file readers' tests: a tiny protobuf wire-format writer
(the inverse of envrepro/modelfiles/protowire.py) for SavedModel messages, and a Keras 2 root JSON."""
import json


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fld(number, value):
    """Field ``number``: ints as varints, bytes/str as length-delimited."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint((number << 3) | 2) + varint(len(value)) + value


def saved_model_pb(tf_version="2.4.1", git="v2.4.0-49-g85c8b2a817f", ops=("MatMul", "BiasAdd"),
                   keras_root=None, extra_graph=b""):
    op_list = b"".join(fld(1, fld(1, name)) for name in ops)
    meta_info = fld(1, "") + fld(2, op_list) + fld(4, "serve") + fld(5, tf_version) + fld(6, git) + fld(7, 1)
    graph = fld(1, meta_info) + fld(2, extra_graph)
    if keras_root is not None:
        node = fld(4, fld(1, "_tf_keras_model") + fld(3, json.dumps(keras_root)))
        graph += fld(7, fld(1, node) + fld(1, fld(4, fld(1, "trackable_list_wrapper"))))
    return fld(1, 1) + fld(2, graph)


def keras_metadata_pb(root):
    layer = fld(2, 1) + fld(3, "root.layer-0") + fld(4, "_tf_keras_layer") + fld(5, json.dumps({"class_name": "Dense"}))
    model = fld(2, 0) + fld(3, "root") + fld(4, "_tf_keras_model") + fld(5, json.dumps(root)) + fld(6, fld(1, 2) + fld(2, 1))
    return fld(1, layer) + fld(1, model)


KERAS2_ROOT = {
    "class_name": "Sequential", "keras_version": "2.4.0", "backend": "tensorflow",
    "model_config": {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 4]}},
        {"class_name": "Dense", "config": {"units": 2, "activation": "my_act",
                                           "kernel_initializer": {"class_name": "GlorotUniform", "config": {}}}},
        {"class_name": "MyCustomLayer", "config": {"units": 3}},
        {"class_name": "Addons>GroupNormalization", "config": {}},
    ]}},
    "training_config": {"loss": "mse", "metrics": ["mae"],
                        "optimizer_config": {"class_name": "Adam", "config": {"lr": 0.001, "decay": 0.0}}},
}
