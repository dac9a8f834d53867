"""Doctor without TensorFlow: synthetic models and captures, a faked target environment.

The target's facts normally come from ``probe.py --no-load`` run under the target interpreter;
here ``environment_facts`` is replaced by canned facts except in the one test that runs the real
probe under this interpreter (it imports no TensorFlow).
"""
import json
import os
import sys
import threading

import pytest

from envrepro import errors
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
    work = tmp_path / "work"             # the current directory, searched for modules too
    work.mkdir()
    monkeypatch.chdir(work)
    return model, code


def use_facts(monkeypatch, f):
    monkeypatch.setattr(doctor, "environment_facts", lambda model, python=None: f)


# -- code drift ------------------------------------------------------------------------------

def test_drift_cosmetic_is_quiet(captured, monkeypatch):
    model, code = captured
    (code / "mylayers.py").write_text(LAYER_V1.replace("# double", "# doubles the input"))
    use_facts(monkeypatch, facts())
    report = doctor.diagnose(model, code_paths=[code])
    drift = [f for f in report.findings if f.kind == "drift"]
    assert [f.severity for f in drift] == [INFO] and "only comments" in drift[0].what
    assert report.exit_code == 0, doctor.render(report)


def test_drift_code_is_loud_with_a_diff(captured, monkeypatch):
    model, code = captured
    (code / "mylayers.py").write_text(LAYER_V1.replace("return x * 2", "return tf.nn.relu(x * 2)"))
    use_facts(monkeypatch, facts())
    report = doctor.diagnose(model, code_paths=[code])
    (f,) = [f for f in report.findings if f.kind == "drift"]
    assert f.severity == ERROR and "MyLayer.call" in f.what and str(code / "mylayers.py") in f.what
    assert "+        return tf.nn.relu(x * 2)" in f.detail and "-        return x * 2" in f.detail
    assert report.exit_code == 2
    text = doctor.render(report)
    assert "custom code changed since the save" in text and "| +        return tf.nn.relu" in text
    assert report.drift[0]["changed"] == ["MyLayer.call"]
    assert report.drift[0]["current"] == str(code / "mylayers.py")


def test_drift_found_in_the_current_directory(captured, monkeypatch):
    model, code = captured
    (code / "mylayers.py").write_text(LAYER_V1.replace("return x * 2", "return x * 3"))
    monkeypatch.chdir(code)
    use_facts(monkeypatch, facts())
    report = doctor.diagnose(model)
    (f,) = [f for f in report.findings if f.kind == "drift"]
    assert f.severity == ERROR and "MyLayer.call" in f.what


def test_drift_module_not_found_asks_for_code_path(captured, monkeypatch):
    model, code = captured
    use_facts(monkeypatch, facts())
    report = doctor.diagnose(model)               # the current directory has no mylayers.py
    (f,) = [f for f in report.findings if f.kind == "drift"]
    assert f.severity == INFO and "mylayers not found in" in f.what and "--code-path" in f.fix
    assert report.exit_code == 0, doctor.render(report)
    assert report.drift[0]["status"] == "not_found"
    assert report.drift[0]["origin"] == str(code / "mylayers.py")      # shown, not opened
    assert f"mylayers was captured from {code / 'mylayers.py'}" in f.why
    (code / "mylayers.py").unlink()
    report = doctor.diagnose(model, code_paths=[code])
    (f,) = [f for f in report.findings if f.kind == "drift"]
    assert f.severity == INFO and str(code) in f.what


def test_code_path_must_be_a_folder(captured, monkeypatch, tmp_path):
    model, _ = captured
    use_facts(monkeypatch, facts())
    with pytest.raises(errors.EnvreproError, match="code path is not a folder"):
        doctor.diagnose(model, code_paths=[tmp_path / "nope"])


def test_cli_code_path(captured, tmp_path):
    """`envrepro doctor MODEL --code-path DIR` (the real env-only probe under this interpreter)."""
    import subprocess

    model, code = captured
    (code / "mylayers.py").write_text(LAYER_V1.replace("return x * 2", "return x * 4"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "envrepro", "doctor", str(model), *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=300)

    out = run("--code-path", code)
    assert "custom code changed since the save" in out.stdout and "MyLayer.call" in out.stdout, out.stderr
    out = run()
    assert "mylayers not found in" in out.stdout and "pass --code-path DIR" in out.stdout
    out = run("--code-path", tmp_path / "nope")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "code path is not a folder" in out.stderr


# -- a hostile capture: nothing outside it is opened because the manifest says so -----------

MARKER = "AKIA-SECRET-MARKER-4242"


def hostile_capture(tmp_path, model):
    """A capture re-sealed by its author: snapshot origins name a secret file, a FIFO and a
    credentials file; one snapshot path mimics the credentials file's path under a home folder."""
    secret = tmp_path / "secret" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text(MARKER + "\n")
    fifo = tmp_path / "secret" / "pipe"
    os.mkfifo(fifo)
    home = tmp_path / "fakehome"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(MARKER + "\n")
    root = make_capture(tmp_path, model, tmp_path / "nowhere")
    (root / "snapshot" / ".aws").mkdir()
    (root / "snapshot" / ".aws" / "credentials").write_text("nothing\n")
    (root / "snapshot" / "other.py").write_text("A = 1\n")
    data = manifest.read(root, verify=False).data
    data["snapshot"]["files"] = [
        {"path": "snapshot/mylayers.py", "origin": str(secret), "module": "mylayers"},
        {"path": "snapshot/other.py", "origin": str(fifo), "module": "other"},
        {"path": "snapshot/.aws/credentials", "origin": str(home / ".aws" / "credentials"), "module": "mylayers"},
    ]
    writer.write_manifest(root, data)
    manifest.read(root)                                  # it passes verification: sealed again
    return [secret, fifo, home / ".aws" / "credentials"], home


class OpenSpy:
    """Records every path opened through open/io.open/os.open."""

    def __init__(self, monkeypatch):
        import builtins
        import io

        self.paths = []
        for mod, name in ((builtins, "open"), (io, "open"), (os, "open")):
            real = getattr(mod, name)
            monkeypatch.setattr(mod, name, self._wrap(real))

    def _wrap(self, real):
        def spy(file, *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)):
                self.paths.append(os.path.realpath(os.fsdecode(file)))
            return real(file, *args, **kwargs)
        return spy


def diagnose_guarded(model, fifo, **kwargs):
    """diagnose in a thread: opening the FIFO would block it; then unblock it and fail."""
    result = {}
    worker = threading.Thread(target=lambda: result.update(report=doctor.diagnose(model, **kwargs)), daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        pytest.fail("doctor opened the FIFO a manifest origin names")
    return result["report"]


def test_hostile_origins_are_never_opened(tmp_path, monkeypatch):
    model = make_model(tmp_path)
    secrets, home = hostile_capture(tmp_path, model)
    monkeypatch.chdir(home)                       # even from the home folder the credentials are not read
    use_facts(monkeypatch, facts())
    spy = OpenSpy(monkeypatch)
    report = diagnose_guarded(model, secrets[1], code_paths=[home])
    opened = set(spy.paths)
    assert not opened & {os.path.realpath(p) for p in secrets}, opened
    text = doctor.render(report, verbose=True) + json.dumps(report.to_dict())
    assert MARKER not in text
    assert str(secrets[0]) in text                # the origin is shown as text
    assert not any(f.kind == "drift" and f.severity == ERROR for f in report.findings)


def test_hostile_origins_and_a_real_edit(tmp_path, monkeypatch):
    """The module edited in --code-path is still reported while the hostile origins stay closed."""
    model = make_model(tmp_path)
    secrets, home = hostile_capture(tmp_path, model)
    code = tmp_path / "code"
    code.mkdir()
    (code / "mylayers.py").write_text(LAYER_V1.replace("return x * 2", "return x * 5"))
    monkeypatch.chdir(tmp_path)
    use_facts(monkeypatch, facts())
    spy = OpenSpy(monkeypatch)
    report = diagnose_guarded(model, secrets[1], code_paths=[code])
    (f,) = [f for f in report.findings if f.kind == "drift" and f.severity == ERROR]
    assert "MyLayer.call" in f.what and str(code / "mylayers.py") in f.what
    assert f"captured from {secrets[0]}" in f.why
    assert not set(spy.paths) & {os.path.realpath(p) for p in secrets}
    assert MARKER not in doctor.render(report, verbose=True)


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
