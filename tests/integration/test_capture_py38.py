"""Capture in a Python 3.8 + tensorflow-cpu==2.4.1 training environment: through the hook
(envrepro installed there) and through `envrepro capture --python` (nothing installed there)."""
import sys

import pytest
import yaml

from envrepro.sidecar import layout, manifest
from support import envrepro_cli  # noqa: E402
from tf_helpers import EXAMPLES, run_py

pytestmark = [pytest.mark.py38, pytest.mark.tf]


@pytest.fixture(scope="module")
def tf24_models(py38_tf24, tmp_path_factory):
    """The seed article's models, trained and saved with the hook under TF 2.4.1."""
    out = tmp_path_factory.mktemp("tf24")
    env = {"ENVREPRO_OFFLINE": "1"}
    for script in ("custom_layer_model.py", "adam_model.py", "dense_model.py"):
        run_py(py38_tf24, f"import runpy, sys; sys.argv = ['{script}', '{out}']; "
                          f"runpy.run_path('{EXAMPLES / script}', run_name='__main__')", cwd=str(EXAMPLES), env=env)
    return out


def test_hook_captures_savedmodel_with_custom_layer(tf24_models):
    cap = manifest.read(layout.sidecar_for(tf24_models / "custom_model"))
    d = cap.data
    assert d["model"]["format"] == "savedmodel"
    assert d["python"]["version"].startswith("3.8.")
    assert d["frameworks"]["tensorflow"] == "2.4.1" and d["frameworks"]["keras_flavor"] == "tf.keras"
    assert d["load"]["custom_objects"]["MyCustomLayer"] == "custom_layers:MyCustomLayer"
    assert [f["path"] for f in d["snapshot"]["files"]] == ["snapshot/custom_layers.py"]
    lock = cap.lock_path.read_text()
    for pin in ("tensorflow-cpu==2.4.1", "termcolor==1.1.0", "wrapt==1.12.1", "numpy==1.19.5", "h5py==2.10.0"):
        assert pin in lock, pin
    assert "envrepro==" not in lock
    assert d["reference"]["seeded"] is True and len(d["reference"]["outputs"]) == 1


def test_hook_captures_adam_h5_with_optimizer_state(tf24_models):
    d = manifest.read(layout.sidecar_for(tf24_models / "adam_model.h5")).data
    assert d["model"]["format"] == "h5"
    opt = d["optimizer"]
    assert opt["class"] == "Adam" and opt["iterations"] == 8 and opt["state_saved"] is True
    assert abs(float(opt["config"]["learning_rate"]) - 0.001) < 1e-9
    assert d["load"]["custom_objects"] == {}


def test_dense_example(tf24_models):
    d = manifest.read(layout.sidecar_for(tf24_models / "dense_model")).data
    assert d["model"]["class_name"] == "Sequential" and d["load"]["custom_objects"] == {}


def test_capture_from_outside_with_python(py38_tf24, tmp_path):
    """A model saved without envrepro, captured from the host by running the probe under 3.8."""
    run_py(py38_tf24, f"""
        import sys; sys.argv = ['x', '{tmp_path}']
        import tensorflow as tf
        from custom_layers import MyCustomLayer
        m = tf.keras.Sequential([tf.keras.layers.Dense(8, input_shape=(4,)), MyCustomLayer(units=64)])
        m.save('{tmp_path}/outside')
    """, cwd=str(EXAMPLES))
    out = envrepro_cli("capture", tmp_path / "outside", "--python", py38_tf24, "--code-path", EXAMPLES,
                       "--module", "custom_layers", env={"ENVREPRO_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    d = manifest.read(layout.sidecar_for(tmp_path / "outside")).data
    assert d["python"]["version"].startswith("3.8.") and d["frameworks"]["tensorflow"] == "2.4.1"
    assert d["load"]["custom_objects"]["MyCustomLayer"] == "custom_layers:MyCustomLayer"
    assert "termcolor==1.1.0" in (layout.sidecar_for(tmp_path / "outside") / "requirements.lock").read_text()
