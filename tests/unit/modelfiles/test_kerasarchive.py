""".keras zips read by modelfiles/kerasarchive.py, including hostile ones."""
import json
import zipfile

import pytest

from envrepro.modelfiles import kerasarchive
from envrepro.modelfiles.read import read_model_file


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
    monkeypatch.setattr(kerasarchive, "MAX_JSON_BYTES", 1000)
    path = write_zip(tmp_path / "m.keras", {"config.json": json.dumps(KERAS3_CONFIG) + " " * 5000})
    info = read_model_file(path)
    assert any("larger than" in p for p in info.problems)
    no_config = write_zip(tmp_path / "n.keras", {"metadata.json": "{}"})
    assert "no config.json" in read_model_file(no_config).problems[0]
