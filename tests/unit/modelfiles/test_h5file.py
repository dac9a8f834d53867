"""modelfiles/h5file.py: H5 root attributes (bytes or str, as h5py versions differ), weights-only files, no h5py."""
import json
import sys

import pytest

from envrepro.modelfiles.read import read_model_file
from envrepro.modelfiles.format import HDF5_MAGIC


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
    path.write_bytes(HDF5_MAGIC + b"\x00" * 100)
    monkeypatch.setitem(sys.modules, "h5py", None)   # import h5py -> ImportError
    info = read_model_file(path)
    assert info.format == "h5" and "h5py not installed" in info.notes[0] and not info.problems
