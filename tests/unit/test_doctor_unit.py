"""Doctor without TensorFlow: synthetic models and captures, a faked target environment.

The target's facts normally come from ``probe.py --no-load`` run under the target interpreter;
here ``environment_facts`` is replaced by canned facts except in the one test that runs the real
probe under this interpreter (it imports no TensorFlow).
"""
import base64
import json
import marshal
import sys

import pytest

from envrepro.diagnose import doctor
from envrepro.capturing import infer
from envrepro.sidecar import layout, writer
from envrepro.diagnose.catalogue import ERROR, INFO, WARNING
from envrepro.diagnose.modelfiles import LambdaInfo, ModelFileInfo

from test_modelfiles import KERAS2_ROOT, saved_model_pb

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

def test_code_change_classification():
    assert doctor.code_change(LAYER_V1, LAYER_V1) == ("same", [])
    cosmetic = LAYER_V1.replace("# double", "# times two").replace('"""A layer."""', '"""Doubles."""')
    assert doctor.code_change(LAYER_V1, cosmetic) == ("cosmetic", [])
    reformatted = LAYER_V1.replace("return x * 2", "return (x *\n                2)")
    assert doctor.code_change(LAYER_V1, reformatted)[0] == "cosmetic"
    kind, changed = doctor.code_change(LAYER_V1, LAYER_V1.replace("x * 2", "tf.nn.relu(x * 2)"))
    assert kind == "code" and changed == ["MyLayer.call"]
    kind, changed = doctor.code_change(LAYER_V1, LAYER_V1 + "\nSCALE = 3\n")
    assert kind == "code" and changed == ["(module or class-level code)"]
    assert doctor.code_change(LAYER_V1, "def broken(:\n")[0] == "code"


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


def test_origin_root():
    assert doctor._origin_root({"origin": "/src/pkg/sub/mod.py", "path": "snapshot/pkg/sub/mod.py"}) == "/src"
    assert doctor._origin_root({"origin": "/src/mylayers.py", "path": "snapshot/mylayers.py"}) == "/src"


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


# -- lambdas ----------------------------------------------------------------------------------

def test_check_lambdas_here():
    good = base64.b64encode(marshal.dumps((lambda x: x + 1).__code__)).decode()
    info = ModelFileInfo(path="/m.h5", lambdas=[LambdaInfo("a", "lambda", good), LambdaInfo("b", "lambda", "AAAA")])
    out = doctor.check_lambdas(info, None)
    assert out[0] == "ok" and out[1] != "ok"
    assert doctor.check_lambdas(ModelFileInfo(path="/m"), None) == []


# -- --infer planning (no network) ------------------------------------------------------------

def test_infer_plan_savedmodel():
    p = infer.plan(ModelFileInfo(path="/sm", format="savedmodel", tensorflow_version="2.4.1", keras_version="2.4.0"))
    assert p.tensorflow == "2.4.1" and p.python == "3.8" and p.keras_flavor == "tf.keras"
    assert p.requirements == ["tensorflow-cpu==2.4.1"]
    assert "numpy==1.19.5" in p.constraints and "h5py==2.10.0" in p.constraints


def test_infer_plan_h5_and_keras3_and_tf_keras():
    p = infer.plan(ModelFileInfo(path="/m.h5", format="h5", keras_version="2.4.0"))
    assert p.tensorflow == "2.4.4" and any("keras_version 2.4.0" in r for r in p.reasons)
    p = infer.plan(ModelFileInfo(path="/m.keras", format="keras", keras_version="3.5.0"))
    assert p.requirements == ["tensorflow-cpu==2.17.1", "keras==3.5.0"] and p.keras_flavor == "keras3"
    p = infer.plan(ModelFileInfo(path="/m.h5", format="h5", keras_version="2.16.0"))
    assert "tf-keras==2.16.0" in p.requirements and p.env == {"TF_USE_LEGACY_KERAS": "1"}
    p = infer.plan(ModelFileInfo(path="/sm", format="savedmodel", tensorflow_version="2.4.1",
                                 custom_ops=["Addons>Mish"]))
    assert "tensorflow-addons==0.12.1" in p.requirements
    p = infer.plan(ModelFileInfo(path="/sm", tensorflow_version="2.4.1"), python="3.7.16")
    assert p.python == "3.7"
    with pytest.raises(Exception):
        infer.plan(ModelFileInfo(path="/m.h5", format="h5"))


def test_infer_finds_custom_classes(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "layers.py").write_text("class MyDense(Base):\n    pass\n\ndef my_act(x):\n    return x\n")
    (tmp_path / "single.py").write_text("class Scale(object):\n    pass\n")
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "x.py").write_text("class Hidden(object):\n    pass\n")
    info = ModelFileInfo(path="/m", custom_classes=["MyDense", "my_act", "Custom>Adam", "Addons>Mish", "team>Scale",
                                                    "Hidden", "Missing"], registered_names=["team>Scale"])
    names = infer.wanted_names(info)
    assert names == ["Hidden", "Missing", "MyDense", "Scale", "my_act"]
    found = infer.find_definitions(names, [str(tmp_path)])
    assert found["MyDense"]["module"] == "pkg.sub.layers" and found["MyDense"]["root"] == str(tmp_path / "pkg")
    assert found["my_act"]["module"] == "pkg.sub.layers"
    assert found["Scale"] == {"module": "single", "file": str(tmp_path / "single.py"), "root": str(tmp_path / "single.py")}
    assert "Hidden" not in found and "Missing" not in found


def test_infer_resolve_commands(tmp_path):
    p = infer.plan(ModelFileInfo(path="/sm", tensorflow_version="2.4.1"))
    cmds = infer.resolve_commands(p, "r.in", "c.txt", "rep.json", None, str(tmp_path))
    assert len(cmds) == 1
    how, argv = cmds[0]
    assert "--python-version" in argv and "3.8" in argv and "--only-binary=:all:" in argv and "--dry-run" in argv


def test_infer_picks_the_python_whose_marshal_format_fits(monkeypatch):
    """Lambda bytecode narrows the Python guess: the likeliest first, then the others."""
    info = ModelFileInfo(path="/m.h5", format="h5", keras_version="2.4.0", lambdas=[LambdaInfo("l", "lambda", "AAAA")])
    p = infer.plan(info)
    monkeypatch.setattr(infer, "find_interpreter", lambda xy: (f"/py{xy}", xy + ".0"))
    import envrepro.diagnose.doctor as d

    monkeypatch.setattr(d, "check_lambdas", lambda i, exe: ["ok"] if exe == "/py3.7" else ["ValueError: bad marshal data"])
    q, note = infer._python_for_lambdas(info, p, None)
    assert p.python == "3.8" and q.python == "3.7" and "3.7" in note and "unmarshals" in q.reasons[-1]
    monkeypatch.setattr(d, "check_lambdas", lambda i, exe: ["ValueError: bad marshal data"])
    q, note = infer._python_for_lambdas(info, p, None)
    assert q.python == "3.8" and "kept Python 3.8" in note
