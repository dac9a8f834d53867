"""Doctor without TensorFlow: synthetic models and captures, a faked target environment.

The target's facts normally come from ``probe.py --no-load`` run under the target interpreter;
here ``environment_facts`` is replaced by canned facts except in the one test that runs the real
probe under this interpreter (it imports no TensorFlow).
"""
import json
import sys

import pytest

from envrepro.diagnose import doctor
from envrepro.diagnose.findings import ERROR, INFO, WARNING
from envrepro.sidecar import layout, manifest, writer

from modelfile_builders import KERAS2_ROOT, saved_model_pb

LAYER_V1 = '''"""My layers."""
import tensorflow as tf


class MyLayer(tf.keras.layers.Layer):
    """A layer."""

    def call(self, x):
        return x * 2  # double


def helper():
    return 1
'''


def facts(tf="2.4.1", python="3.8.18", keras=None, flavor="tf.keras", **packages):
    dists = {"tensorflow-cpu": tf, "numpy": "1.19.5", "h5py": "2.10.0", "protobuf": "3.20.3"}
    if flavor == "keras3":
        dists["keras"] = keras
    dists.update({k.replace("_", "-"): v for k, v in packages.items()})
    return {"python": {"version": python}, "env": {},
            "frameworks": {"tensorflow": tf, "keras": keras, "keras_flavor": flavor},
            "distributions": [{"name": n, "version": v} for n, v in dists.items() if v]}


LOCK = """# pinned
h5py==2.10.0
    # via tensorflow-cpu
numpy==1.19.5
    # via
    #   h5py
    #   tensorflow-cpu
protobuf==3.20.3
    # via tensorflow-cpu
tensorflow-cpu==2.4.1
    # via -r requirements.in
"""


CLEAN_ROOT = json.loads(json.dumps(KERAS2_ROOT))
CLEAN_ROOT["model_config"]["config"]["layers"] = [
    l for l in CLEAN_ROOT["model_config"]["config"]["layers"] if not l["class_name"].startswith("Addons>")]
CLEAN_ROOT["model_config"]["config"]["layers"][1]["config"]["activation"] = "relu"


def make_model(tmp_path, root=CLEAN_ROOT):
    sm = tmp_path / "model"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(saved_model_pb(keras_root=root))
    return sm


def make_capture(tmp_path, model, code_dir, extra=None, lock=LOCK):
    """A capture like capturing.capture writes, by hand: lock, snapshot of mylayers.py, manifest."""
    root = layout.sidecar_for(model)
    (root / "snapshot").mkdir(parents=True)
    (root / "snapshot" / "mylayers.py").write_text(LAYER_V1)
    (root / "requirements.lock").write_text(lock)
    origin = code_dir / "mylayers.py"
    from envrepro.fsutil import sha256_file

    data = {
        "schema": layout.SCHEMA, "inferred": False,
        "model": {"name": model.name, "format": "savedmodel"},
        "python": {"version": "3.8.18"},
        "frameworks": {"tensorflow": "2.4.1", "keras": "2.4.0", "keras_flavor": "tf.keras"},
        "env": {}, "load": {"compile": True, "custom_objects": {"MyCustomLayer": "mylayers:MyLayer"},
                            "modules": ["mylayers"]},
        "snapshot": {"files": [{"path": "snapshot/mylayers.py", "origin": str(origin), "module": "mylayers",
                                "sha256": sha256_file(root / "snapshot" / "mylayers.py")}]},
        "requirement_modules": {}, "reference": None,
    }
    for k, v in (extra or {}).items():
        data[k] = v
    writer.write_manifest(root, data)
    return root


@pytest.fixture
def captured(tmp_path, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    (code / "mylayers.py").write_text(LAYER_V1)
    model = make_model(tmp_path)
    make_capture(tmp_path, model, code)
    return model, code


def use_facts(monkeypatch, f):
    monkeypatch.setattr(doctor, "environment_facts", lambda model, python=None: f)


# -- code drift ------------------------------------------------------------------------------

def test_drift_cosmetic_is_quiet(captured, monkeypatch):
    model, code = captured
    (code / "mylayers.py").write_text(LAYER_V1.replace("# double", "# doubles the input"))
    use_facts(monkeypatch, facts())
    report = doctor.diagnose(model)
    drift = [f for f in report.findings if f.kind == "drift"]
    assert [f.severity for f in drift] == [INFO] and "only comments" in drift[0].what
    assert report.exit_code == 0, doctor.render(report)


def test_drift_code_is_loud_with_a_diff(captured, monkeypatch):
    model, code = captured
    (code / "mylayers.py").write_text(LAYER_V1.replace("return x * 2", "return tf.nn.relu(x * 2)"))
    use_facts(monkeypatch, facts())
    report = doctor.diagnose(model)
    (f,) = [f for f in report.findings if f.kind == "drift"]
    assert f.severity == ERROR and "MyLayer.call" in f.what
    assert "+        return tf.nn.relu(x * 2)" in f.detail and "-        return x * 2" in f.detail
    assert report.exit_code == 2
    text = doctor.render(report)
    assert "custom code changed since the save" in text and "| +        return tf.nn.relu" in text
    assert report.drift[0]["changed"] == ["MyLayer.call"]


def test_drift_origin_gone(captured, monkeypatch):
    model, code = captured
    (code / "mylayers.py").unlink()
    use_facts(monkeypatch, facts())
    report = doctor.diagnose(model)
    (f,) = [f for f in report.findings if f.kind == "drift"]
    assert f.severity == WARNING and "no longer exists" in f.what and report.exit_code == 1


# -- verdicts ---------------------------------------------------------------------------------

def test_same_environment_is_compatible(captured, monkeypatch):
    model, _ = captured
    use_facts(monkeypatch, facts(pip="23.0", envrepro="0.1.0", pytest="8.0"))
    report = doctor.diagnose(model)
    assert report.exit_code == 0 and report.verdict == "compatible", doctor.render(report)
    assert {p["name"] for p in report.packages if p["status"] == "extra"} == {"pytest"}
    json.dumps(report.to_dict())


def test_keras3_target_will_fail_with_class_1(captured, monkeypatch):
    model, _ = captured
    use_facts(monkeypatch, facts(tf="2.21.0", python="3.11.7", keras="3.15.1", flavor="keras3",
                                 numpy="2.4.6", h5py="3.14.0", protobuf="7.36.2"))
    report = doctor.diagnose(model)
    assert report.exit_code == 2
    ids = [f.class_id for f in report.findings if f.severity == ERROR]
    assert "1" in ids
    (c1,) = [f for f in report.findings if f.class_id == "1"]
    assert "File format not supported" in c1.message and "TF_USE_LEGACY_KERAS=1" in c1.fix
    assert report.findings[0].severity == ERROR                      # errors first
    ranked = [p["name"] for p in report.packages if p["status"] == "other"]
    assert ranked[0] == "tensorflow-cpu"                             # framework first
    text = doctor.render(report)
    assert "[class 1]" in text and "result: WILL FAIL (exit 2)" in text
    assert "Python 3.11.7 here, the model was saved under 3.8.18" in text


def test_missing_provider_distribution(tmp_path, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    (code / "mylayers.py").write_text(LAYER_V1)
    model = make_model(tmp_path)
    lock = LOCK + "acme-layers==1.0.0\n    # via -r requirements.in\n"
    make_capture(tmp_path, model, code, lock=lock, extra={
        "requirement_modules": {"acme_layers": "acme-layers"},
        "load": {"compile": True, "modules": ["mylayers", "acme_layers"],
                 "custom_objects": {"MyCustomLayer": "mylayers:MyLayer", "AcmeDense": "acme_layers:AcmeDense"}}})
    use_facts(monkeypatch, facts())
    report = doctor.diagnose(model)
    (f,) = [f for f in report.findings if f.class_id == "2"]
    assert f.severity == ERROR and "acme-layers" in f.what and "AcmeDense" in f.what
    assert "pip install acme-layers" in f.fix and report.exit_code == 2
    assert report.packages[0]["name"] == "acme-layers" and report.packages[0]["status"] == "missing"
    # at another version: a warning, not an error
    use_facts(monkeypatch, facts(acme_layers="2.0.0"))
    report = doctor.diagnose(model)
    (f,) = [f for f in report.findings if f.class_id == "2"]
    assert f.severity == WARNING and report.exit_code == 1


def test_tampered_capture_is_reported_not_fatal(captured, monkeypatch):
    model, _ = captured
    (layout.sidecar_for(model) / "snapshot" / "mylayers.py").write_text("x = 1\n")
    use_facts(monkeypatch, facts())
    report = doctor.diagnose(model)
    assert any(f.kind == "capture" and "can't be trusted" in f.what for f in report.findings)


def test_uncaptured_model_uses_the_file(tmp_path, monkeypatch):
    model = make_model(tmp_path)
    use_facts(monkeypatch, facts())
    report = doctor.diagnose(model)
    assert not report.captured and report.inferred and report.saved["tensorflow"] == "2.4.1"
    assert any(f.kind == "capture" and "no capture" in f.what for f in report.findings)
    assert any(f.class_id == "2" and f.severity == WARNING for f in report.findings)   # MyCustomLayer


def test_env_requirements_outside_tested_range(captured, monkeypatch):
    model, _ = captured
    use_facts(monkeypatch, facts(h5py="3.1.0"))
    report = doctor.diagnose(model)
    sev = {(f.class_id, f.severity) for f in report.findings}
    assert ("3", ERROR) not in sev      # SavedModel: h5py 3 only breaks H5 reading on TF <= 2.4
    assert any(f.kind == "env" and "h5py 3.1.0" in f.what for f in report.findings)


def test_real_probe_env_only(tmp_path):
    """probe.py --no-load under this interpreter: facts without importing TensorFlow."""
    model = make_model(tmp_path)
    f = doctor.environment_facts(model)
    env = doctor.target_env(f)
    assert env.python.startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
    assert "pytest" in env.packages
    with pytest.raises(Exception):
        doctor.environment_facts(model, python=str(tmp_path / "nope"))
