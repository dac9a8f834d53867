"""modelfiles/savedmodel.py: versions, ops and Keras JSON from SavedModel folders built by hand."""
from envrepro.modelfiles.read import read_model_file

from modelfile_builders import KERAS2_ROOT, fld, keras_metadata_pb, saved_model_pb

import json


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


def test_layers_of_a_subclassed_model_are_read_from_every_metadata_node(tmp_path):
    """A subclassed model's config doesn't list its layers: only their own metadata nodes name
    them (keras_metadata.pb from TF 2.5; the object graph's user objects before)."""
    root = {"class_name": "Outer", "name": "outer", "keras_version": "2.8.0", "backend": "tensorflow",
            "config": {"layer was saved without config": True},
            "training_config": {"loss": "my_loss", "metrics": None}}
    inner = {"name": "inner", "class_name": "Inner", "config": {"name": "inner"}}
    dense = {"name": "dense", "class_name": "Dense", "config": {"name": "dense", "activation": "my_act"}}

    def node(path, meta, ident="_tf_keras_layer"):
        return fld(1, fld(3, path) + fld(4, ident) + fld(5, json.dumps(meta)))

    sm = tmp_path / "sm"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(saved_model_pb(tf_version="2.8.4"))
    (sm / "keras_metadata.pb").write_bytes(node("root.inner", inner) + node("root", root, "_tf_keras_model")
                                           + node("root.d", dense))
    info = read_model_file(sm)
    assert info.custom_classes == ["Inner", "Outer", "my_act", "my_loss"]
    assert info.named_by == {"Outer": "class of the model", "Inner": "class of layer 'inner'",
                             "my_act": "activation of layer 'dense'", "my_loss": "loss of training_config"}
