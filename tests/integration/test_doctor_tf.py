"""Doctor and --infer against real models: TF 2.4.1 on Python 3.8 and TF 2.21 on Python 3.11.

Each failure class this machine can produce is produced for real and diagnosed: a legacy
SavedModel under Keras 3, a custom layer edited after the save (found by name with --code-path;
--try imports the capture's snapshot, never the edited source), a distribution that provided a
custom object gone missing, a Lambda layer across Python versions, and the compatible case.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from envrepro.diagnose import doctor
from envrepro.sidecar import layout, manifest, writer
from envrepro.diagnose.findings import ERROR, INFO

pytestmark = [pytest.mark.tf]

VENV38 = Path(os.environ.get("ENVREPRO_TEST_PY38", ""))

LAYERS = textwrap.dedent('''
    """Custom layers of the doctor tests."""
    import tensorflow as tf


    class Scale(tf.keras.layers.Layer):
        def __init__(self, units=3, **kwargs):
            super().__init__(**kwargs)
            self.units = units

        def build(self, input_shape):
            self.w = self.add_weight(name="kernel", shape=(int(input_shape[-1]), self.units),
                                     initializer="random_normal", trainable=True)
            super().build(input_shape)

        def call(self, inputs):
            return tf.matmul(inputs, self.w)

        def get_config(self):
            config = super().get_config()
            config.update({"units": self.units})
            return config
''')


def run(python, code, cwd, pythonpath=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    proc = subprocess.run([str(python), "-c", textwrap.dedent(code)], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def py38(request):
    """Python 3.8 + tensorflow-cpu 2.4.1: the given venv, else conftest's cached one."""
    if VENV38.is_file() and subprocess.run([str(VENV38), "-c", "import tensorflow"],
                                           capture_output=True).returncode == 0:
        return str(VENV38)
    return request.getfixturevalue("py38_tf24")


@pytest.fixture(scope="module")
def host_tf():
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        from conftest import need

        need(False, "TensorFlow is not installed on the host")
    return sys.executable


def capture(model, python, modules=(), code_paths=()):
    from envrepro.capturing.capture import capture as do_capture

    return do_capture(model, python=python, modules=list(modules), code_paths=[str(c) for c in code_paths],
                      hashes=False)


@pytest.fixture(scope="module")
def tf24_custom(py38, tmp_path_factory):
    """A TF 2.4.1 SavedModel with a custom layer, captured from outside with --python."""
    root = tmp_path_factory.mktemp("tf24custom")
    code = root / "code"
    code.mkdir()
    (code / "mylayers.py").write_text(LAYERS)
    run(py38, f"""
        import tensorflow as tf
        from mylayers import Scale
        tf.random.set_seed(1)
        m = tf.keras.Sequential([tf.keras.layers.Dense(4, input_shape=(3,)), Scale(units=2)])
        m.compile("adam", "mse")
        m.save("{root / 'custom_sm'}")
    """, root, pythonpath=code)
    capture(root / "custom_sm", py38, modules=["mylayers"], code_paths=[code])
    return root / "custom_sm", code


def ids(report, severity=ERROR):
    return [f.class_id for f in report.findings if f.severity == severity]


def test_legacy_savedmodel_under_keras3_will_fail(tf24_custom, host_tf):
    model, _ = tf24_custom
    report = doctor.diagnose(model, try_load=True)          # this interpreter: TF 2.21, Keras 3
    assert report.exit_code == 2, doctor.render(report)
    assert "1" in ids(report)
    (static,) = [f for f in report.findings if f.class_id == "1" and f.kind == "class"]
    assert "File format not supported" in static.message and "TF_USE_LEGACY_KERAS=1" in static.fix
    assert report.tried["class_id"] == "1" and not report.tried["ok"]
    assert "tensorflow-cpu" == report.packages[0]["name"]
    assert "[class 1]" in doctor.render(report)


def test_custom_layer_edited_after_the_save(tf24_custom, py38):
    model, code = tf24_custom
    source = code / "mylayers.py"
    original = source.read_text()
    try:
        source.write_text(original.replace('"""Custom layers of the doctor tests."""',
                                           '"""Custom layers (docstring edited)."""  # and a comment'))
        quiet = doctor.diagnose(model, python=py38, code_paths=[code])
        assert quiet.exit_code == 0, doctor.render(quiet)
        assert [f.severity for f in quiet.findings if f.kind == "drift"] == [INFO]

        source.write_text(original.replace("return tf.matmul(inputs, self.w)",
                                           "return tf.nn.relu(tf.matmul(inputs, self.w)) + 1.0"))
        said = []
        loud = doctor.diagnose(model, python=py38, try_load=True, code_paths=[code], notice=said.append)
        text = doctor.render(loud)
        assert loud.exit_code == 2, text
        (drift,) = [f for f in loud.findings if f.kind == "drift"]
        assert drift.severity == ERROR and "Scale.call" in drift.what and "+        return tf.nn.relu" in drift.detail
        # --try imports the capture's verified snapshot, not the edited source: the captured code
        # still reproduces the reference here, so the edit is what differs
        assert said == [f"doctor --try imports the capture's custom code (snapshot/: mylayers) into a Python "
                        f"process on this host ({py38}) and runs load_model there"]
        assert loud.tried["ok"] and loud.tried["reference"]["allclose"], text
        assert loud.tried["imports"] == {"snapshot": ["mylayers"], "environment": []}
    finally:
        source.write_text(original)
    same = doctor.diagnose(model, python=py38, try_load=True, code_paths=[code])
    assert same.exit_code == 0, doctor.render(same)
    assert same.tried["ok"] and same.tried["reference"]["allclose"]
    assert not same.drift                                                  # found and unchanged
    elsewhere = doctor.diagnose(model, python=py38)                        # no --code-path, not in the cwd
    assert [f.severity for f in elsewhere.findings if f.kind == "drift"] == [INFO]
    assert "--code-path" in doctor.render(elsewhere)


def test_missing_distribution_that_provided_a_custom_object(tf24_custom, py38, tmp_path):
    model, _ = tf24_custom
    shutil.copytree(model, tmp_path / model.name)
    shutil.copytree(layout.sidecar_for(model), tmp_path / (model.name + ".envrepro"))
    copy = tmp_path / model.name
    root = layout.sidecar_for(copy)
    data = manifest.read(root).data
    data["requirement_modules"] = {"acme_layers": "acme-layers"}
    data["load"]["modules"] = list(data["load"]["modules"]) + ["acme_layers"]
    data["load"]["custom_objects"]["AcmeDense"] = "acme_layers:AcmeDense"
    lock = root / "requirements.lock"
    lock.write_text(lock.read_text() + "acme-layers==1.2.0\n    # via -r requirements.in\n")
    writer.write_manifest(root, data)

    report = doctor.diagnose(copy, python=py38, try_load=True)
    text = doctor.render(report)
    assert report.exit_code == 2, text
    (f,) = [f for f in report.findings if f.class_id == "2" and f.kind == "class"]
    assert "acme-layers" in f.what and "AcmeDense" in f.what and "pip install acme-layers" in f.fix
    assert report.packages[0]["name"] == "acme-layers" and report.packages[0]["status"] == "missing"
    assert report.tried["class_id"] == "import" and "acme_layers" in report.tried["error"]["message"]
    assert report.tried["imports"] == {"snapshot": ["mylayers"], "environment": ["acme_layers"]}


def test_lambda_saved_under_38_checked_against_311(py38, host_tf, tmp_path):
    run(py38, """
        import tensorflow as tf
        m = tf.keras.Sequential([tf.keras.layers.Dense(4, input_shape=(3,)),
                                 tf.keras.layers.Lambda(lambda x: x * 2.0 + 1.0)])
        m.save("lam.h5")
    """, tmp_path)
    capture(tmp_path / "lam.h5", py38)
    report = doctor.diagnose(tmp_path / "lam.h5", try_load=True)
    text = doctor.render(report)
    assert report.exit_code == 2, text
    c5 = [f for f in report.findings if f.class_id == "5" and f.severity == ERROR]
    assert any("bad marshal data" in f.message for f in c5), text
    assert any("marshal.loads" in f.what for f in c5)                 # confirmed under 3.11, no TF
    assert report.tried["class_id"] == "5"                            # Keras 3: safe_mode refusal
    assert "bad marshal data" in text


def test_tf221_model_in_its_own_environment_is_compatible(host_tf, tmp_path):
    run(host_tf, """
        import numpy as np, keras
        m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
        m.compile(optimizer="adam", loss="mse")
        m.fit(np.ones((8, 3)), np.ones((8, 1)), epochs=1, verbose=0)
        m.save("m.keras")
    """, tmp_path)
    capture(tmp_path / "m.keras", host_tf)
    report = doctor.diagnose(tmp_path / "m.keras", try_load=True)
    assert report.exit_code == 0, doctor.render(report)
    assert report.tried["ok"] and report.tried["reference"]["allclose"]
    assert "result: COMPATIBLE (exit 0)" in doctor.render(report)
    json.dumps(report.to_dict())


def test_infer_capture_of_an_uncaptured_tf24_model(py38, tmp_path, monkeypatch):
    from envrepro.capturing.infer import infer_capture

    monkeypatch.delenv("ENVREPRO_OFFLINE", raising=False)   # resolves against the index, never skips

    code = tmp_path / "code"
    code.mkdir()
    (code / "mylayers.py").write_text(LAYERS)
    run(py38, f"""
        import tensorflow as tf
        from mylayers import Scale
        m = tf.keras.Sequential([tf.keras.layers.Dense(4, input_shape=(3,)), Scale(units=2)])
        m.save("{tmp_path / 'legacy'}")
    """, tmp_path, pythonpath=code)
    result = infer_capture(tmp_path / "legacy", code_paths=[code], hashes=False)
    cap = manifest.read(result.sidecar)
    d = cap.data
    assert d["inferred"] is True and d["reference"] is None
    assert d["reference_skipped"] == "inferred capture: no reference"
    assert d["python"]["version"].startswith("3.8")
    assert d["frameworks"]["tensorflow"] == "2.4.1" and d["frameworks"]["keras_flavor"] == "tf.keras"
    assert d["load"]["custom_objects"] == {"Scale": "mylayers:Scale"}
    assert [f["path"] for f in d["snapshot"]["files"]] == ["snapshot/mylayers.py"]
    lock = cap.lock_path.read_text()
    assert "tensorflow-cpu==2.4.1" in lock and "numpy==1.19." in lock and "h5py==2.10.0" in lock
    # the inferred environment is the one the model was saved in: doctor finds nothing to fix
    report = doctor.diagnose(tmp_path / "legacy", python=py38, try_load=True)
    assert report.inferred and report.exit_code == 0, doctor.render(report)
