"""Reading saving versions and custom names straight from model files, without TensorFlow.

SavedModel protobufs are built here by a tiny wire-format writer (the inverse of the decoder);
H5 files with h5py when it is installed; .keras zips with zipfile, including hostile ones.
"""
import json
import sys
import zipfile

import pytest

from envrepro.diagnose import modelfiles
from envrepro.diagnose.modelfiles import fields, iter_fields, read_model_file, summarize_training_config


# -- a minimal protobuf writer -------------------------------------------------------------

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


# -- the decoder ---------------------------------------------------------------------------

def test_decoder_roundtrip_and_errors():
    data = fld(1, 150) + fld(2, "abc") + fld(2, "de") + varint((3 << 3) | 5) + b"\x01\x00\x00\x00"
    got = list(iter_fields(data))
    assert got[0] == (1, 0, 150)
    assert [bytes(v) for n, w, v in got if n == 2] == [b"abc", b"de"]
    assert got[-1] == (3, 5, 1)
    assert {k: len(v) for k, v in fields(data).items()} == {1: 1, 2: 2, 3: 1}
    with pytest.raises(ValueError):
        list(iter_fields(fld(2, "abc")[:-1]))          # runs past the end
    with pytest.raises(ValueError):
        list(iter_fields(b"\x80"))                      # truncated varint
    with pytest.raises(ValueError):
        list(iter_fields(varint((1 << 3) | 3)))         # groups are not supported


# -- SavedModel ----------------------------------------------------------------------------

def test_savedmodel_pre_25_keras_json_in_object_graph(tmp_path):
    sm = tmp_path / "sm"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(saved_model_pb(ops=("MatMul", "Addons>Mish", "CudnnRNN"),
                                                       keras_root=KERAS2_ROOT))
    info = read_model_file(sm)
    assert info.format == "savedmodel"
    assert info.tensorflow_version == "2.4.1" and info.tensorflow_git_version.startswith("v2.4.0")
    assert info.keras_version == "2.4.0" and info.backend == "tensorflow"
    assert info.model_class == "Sequential"
    assert info.ops == ["Addons>Mish", "CudnnRNN", "MatMul"] and info.custom_ops == ["Addons>Mish"]
    assert "MyCustomLayer" in info.custom_classes and "my_act" in info.custom_classes
    assert "Dense" not in info.custom_classes and "GlorotUniform" in info.class_names
    assert info.registered_names == ["Addons>GroupNormalization"]
    tc = info.training_config
    assert tc.optimizer == "Adam" and tc.legacy_keys == ["decay", "lr"]
    assert tc.losses == ["mse"] and tc.metrics == ["mae"]
    assert not info.problems


def test_savedmodel_keras_metadata_and_markers(tmp_path):
    sm = tmp_path / "sm"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(saved_model_pb(tf_version="2.12.0",
                                                       extra_graph=b"device: /device:GPU:0"))
    root = dict(KERAS2_ROOT, keras_version="2.12.0")
    (sm / "keras_metadata.pb").write_bytes(keras_metadata_pb(root))
    (sm / "fingerprint.pb").write_bytes(b"")
    info = read_model_file(sm)
    assert info.tensorflow_version == "2.12.0" and info.keras_version == "2.12.0"
    assert {"keras_metadata", "fingerprint", "gpu_device"} <= set(info.markers)
    assert "MyCustomLayer" in info.custom_classes


def test_savedmodel_without_keras_metadata_and_pbtxt(tmp_path):
    sm = tmp_path / "exported"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(saved_model_pb(tf_version="2.21.0"))
    info = read_model_file(sm)
    assert info.tensorflow_version == "2.21.0" and info.keras_version is None
    assert any("no Keras metadata" in n for n in info.notes)
    txt = tmp_path / "txt"
    txt.mkdir()
    (txt / "saved_model.pbtxt").write_text('meta_graphs {\n meta_info_def {\n  stripped_op_list {\n'
                                           '   op {\n    name: "MatMul"\n   }\n  }\n'
                                           '  tensorflow_version: "2.3.0"\n }\n}\n')
    info = read_model_file(txt)
    assert info.tensorflow_version == "2.3.0" and info.ops == ["MatMul"]


def test_savedmodel_garbage_and_lfs(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "saved_model.pb").write_bytes(b"\x0a\xff\xff\xff\xff\x0f")
    info = read_model_file(bad)
    assert info.format == "savedmodel" and any("could not be decoded" in n for n in info.notes)
    lfs = tmp_path / "lfs"
    lfs.mkdir()
    (lfs / "saved_model.pb").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n")
    assert "Git LFS" in read_model_file(lfs).problems[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not a SavedModel" in read_model_file(empty).problems[0]


# -- magic checks --------------------------------------------------------------------------

def test_file_magic(tmp_path):
    lfs = tmp_path / "m.h5"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n")
    assert "git lfs pull" in read_model_file(lfs).problems[0]
    junk = tmp_path / "m.bin"
    junk.write_bytes(b"\x00" * 100)
    assert "not a Keras model file" in read_model_file(junk).problems[0]
    assert read_model_file(tmp_path / "missing").problems == ["no model at this path"]


# -- H5 ------------------------------------------------------------------------------------



def _h5py():
    return pytest.importorskip("h5py")


def test_h5_full_model_bytes_and_str(tmp_path):
    h5 = _h5py()
    config = {"class_name": "Functional", "config": {"layers": [
        {"class_name": "Lambda", "config": {"name": "lam", "function": ["4wEAAAAA\n", None, None],
                                            "function_type": "lambda", "output_shape": None}},
        {"class_name": "team>Scale", "config": {}}]}}
    for kind, conv in (("bytes", lambda s: s.encode()), ("str", lambda s: s)):
        path = tmp_path / f"{kind}.h5"
        with h5.File(path, "w") as f:
            f.attrs["keras_version"] = conv("2.4.0")
            f.attrs["backend"] = conv("tensorflow")
            f.attrs["model_config"] = conv(json.dumps(config))
            f.attrs["training_config"] = conv(json.dumps({"loss": {"out": "mse"}, "optimizer_config":
                                                          {"class_name": "Custom>Adam",
                                                           "config": {"is_legacy_optimizer": False}}}))
            f.create_group("model_weights").attrs["layer_names"] = [b"lam"]
            f.create_group("optimizer_weights")
        info = read_model_file(path)
        assert info.format == "h5" and info.keras_version == "2.4.0" and info.backend == "tensorflow"
        assert info.model_class == "Functional"
        assert info.lambdas[0].layer == "lam" and info.lambdas[0].function_type == "lambda"
        assert info.lambdas[0].code == "4wEAAAAA\n" and not info.lambdas[0].has_output_shape
        assert info.registered_names == ["team>Scale"] and "team>Scale" in info.custom_classes
        assert info.training_config.optimizer == "Custom>Adam"
        assert info.training_config.is_legacy_optimizer is False and info.training_config.losses == ["mse"]
        assert info.optimizer_weights is True and not info.weights_only


def test_h5_weights_only(tmp_path):
    h5 = _h5py()
    path = tmp_path / "w.h5"
    with h5.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.15.0"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["layer_names"] = [b"dense"]
    info = read_model_file(path)
    assert info.weights_only and info.problems[0].startswith("No model config found in the file at")
    assert info.keras_version == "2.15.0"


def test_h5_without_h5py(tmp_path, monkeypatch):
    path = tmp_path / "m.h5"
    path.write_bytes(modelfiles.HDF5_MAGIC + b"\x00" * 100)
    monkeypatch.setitem(sys.modules, "h5py", None)   # import h5py -> ImportError
    info = read_model_file(path)
    assert info.format == "h5" and "h5py not installed" in info.notes[0] and not info.problems


# -- .keras zips ---------------------------------------------------------------------------

KERAS3_CONFIG = {
    "module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional",
    "config": {"layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [None, 4]}},
        {"module": "mylayers", "class_name": "MyDense", "registered_name": "team>MyDense", "config": {
            "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}}}},
        {"module": "keras.layers", "class_name": "Lambda", "config": {"name": "lam", "function": {
            "class_name": "__lambda__", "config": {"code": "4wEAAA==", "defaults": None}}}},
        {"module": "keras.layers", "class_name": "Activation", "config": {"activation": {
            "module": "builtins", "class_name": "function", "config": "my_swish",
            "registered_name": "function"}}},
    ]},
    "compile_config": {"optimizer": {"module": "keras.optimizers", "class_name": "Adam", "config": {}},
                       "loss": "mse"},
}


def write_zip(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_keras_zip(tmp_path):
    path = write_zip(tmp_path / "m.keras", {
        "metadata.json": json.dumps({"keras_version": "3.15.1", "date_saved": "2026-01-02@10:00:00"}),
        "config.json": json.dumps(KERAS3_CONFIG), "model.weights.h5": b"x"})
    info = read_model_file(path)
    assert info.format == "keras" and info.keras_version == "3.15.1" and info.keras_major == 3
    assert info.date_saved.startswith("2026") and info.model_class == "Functional"
    assert info.custom_classes == ["MyDense", "my_swish"]
    assert info.registered_names == ["team>MyDense"]
    assert "keras.src.models.functional" in info.config_modules
    assert {"batch_shape", "dtype_policy"} <= set(info.markers)
    assert info.lambdas[0].function_type == "__lambda__" and info.lambdas[0].code == "4wEAAA=="
    assert info.training_config.optimizer == "Adam" and info.training_config.losses == ["mse"]


@pytest.mark.parametrize("evil", ["../evil.json", "/etc/evil", "a/../../evil", "C:/evil", "..\\evil"])
def test_keras_zip_refuses_unsafe_names(tmp_path, evil):
    path = write_zip(tmp_path / "m.keras", {"config.json": json.dumps(KERAS3_CONFIG), evil: b"x"})
    info = read_model_file(path)
    assert info.problems and "absolute or '..'" in info.problems[0]
    assert info.class_names == []          # nothing was read


def test_keras_zip_size_caps(tmp_path, monkeypatch):
    monkeypatch.setattr(modelfiles, "MAX_JSON_BYTES", 1000)
    path = write_zip(tmp_path / "m.keras", {"config.json": json.dumps(KERAS3_CONFIG) + " " * 5000})
    info = read_model_file(path)
    assert any("larger than" in p for p in info.problems)
    no_config = write_zip(tmp_path / "n.keras", {"metadata.json": "{}"})
    assert "no config.json" in read_model_file(no_config).problems[0]


# -- configs -------------------------------------------------------------------------------

def test_builtin_detection_and_summary():
    assert modelfiles.is_builtin("Dense") and modelfiles.is_builtin("Functional")
    assert modelfiles.is_builtin("Whatever", "keras.src.layers") and not modelfiles.is_builtin("Custom>Adam")
    assert not modelfiles.is_builtin("MyLayer", "mylayers")
    tc = summarize_training_config({"optimizer_config": {"class_name": "SGD", "config": {
        "learning_rate": {"class_name": "WarmUp", "config": {}}}}, "loss": ["mse", {"class_name": "MyLoss"}]})
    assert tc.schedule == "WarmUp" and tc.losses == ["mse"] and tc.legacy_keys == []
    assert summarize_training_config(None) is None


def test_describe_and_to_dict(tmp_path):
    sm = tmp_path / "sm"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(saved_model_pb(keras_root=KERAS2_ROOT))
    info = read_model_file(sm)
    text = modelfiles.describe(info)
    assert "tensorflow   2.4.1" in text and "MyCustomLayer" in text and "Keras-2 keys decay, lr" in text
    json.dumps(info.to_dict())
