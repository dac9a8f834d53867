"""The in-container loader run as a plain subprocess on the host, under real interpreters:
Python 3.11 + TF 2.21 (Keras 3) on a .keras model with a custom layer, and Python 3.8 + TF 2.4.1
on an H5 model whose Adam state must come back. The plan is made by the host code (make_plan)
with host paths in place of the container ones."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from envrepro.sidecar import layout, manifest
from envrepro.runtime import loader as rt

from support import envrepro_cli  # noqa: E402
from tf_helpers import CUSTOM_LAYERS, run_loader, write_module

pytestmark = pytest.mark.tf

DRIFTED = CUSTOM_LAYERS.replace("return tf.matmul(inputs, self.w) + self.b",
                                "return tf.nn.relu(tf.matmul(inputs, self.w) + self.b) + 1.0")

# Trains and saves a model with MyCustomLayer, writes the reference, prints the optimizer facts.
TRAIN = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    sys.path.insert(0, sys.argv[1])
    from custom_layers import MyCustomLayer
    model_path, ref_dir = sys.argv[2], sys.argv[3]
    tf.random.set_seed(0)
    model = tf.keras.Sequential([tf.keras.Input(shape=(16,)), tf.keras.layers.Dense(8, activation="relu"),
                                 MyCustomLayer(units=4, name="mine"), tf.keras.layers.Dense(1)])
    if sys.argv[4:] == ["adamw"]:  # tensorflow-addons' AdamW
        import tensorflow_addons as tfa
        optimizer = tfa.optimizers.AdamW(weight_decay=1e-4, learning_rate=0.001)
    else:
        optimizer = tf.keras.optimizers.Adam(learning_rate=0.001)
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.RandomState(0)
    model.fit(rng.rand(64, 16).astype("float32"), rng.rand(64, 1).astype("float32"),
              epochs=1, batch_size=8, verbose=0)
    model.save(model_path)
    x = rng.rand(3, 16).astype("float32")
    np.save(ref_dir + "/input_0.npy", x)
    np.save(ref_dir + "/output_0.npy", model.predict(x))
    opt = model.optimizer
    variables = opt.variables() if callable(opt.variables) else opt.variables
    print(json.dumps({"iterations": int(opt.iterations.numpy()), "num_weights": len(variables),
                      "class": type(opt).__name__}))
''')


@pytest.fixture(scope="module")
def py311(tf):
    """This interpreter (the suite's venv: TF >= 2.16, Keras 3), run as a separate process."""
    return sys.executable


@pytest.fixture(scope="module")
def py38(py38_tf24):
    """The suite's cached Python 3.8 + tensorflow-cpu 2.4.1 environment (tests/conftest.py)."""
    return py38_tf24


def train(python, folder, model_name, keras_flavor, tf_version):
    """A model + a capture-shaped sidecar (snapshot/, reference/) and the Capture describing it."""
    model = folder / model_name
    root = layout.sidecar_for(model)
    snap, ref = root / "snapshot", root / "reference"
    write_module(snap, "custom_layers", CUSTOM_LAYERS)
    ref.mkdir(parents=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([python, "-c", TRAIN, str(snap), str(model), str(ref)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    opt = json.loads(proc.stdout.strip().splitlines()[-1])
    data = {
        "schema": layout.SCHEMA,
        "model": {"name": model_name, "format": model_name.rsplit(".", 1)[-1]},
        "frameworks": {"tensorflow": tf_version, "keras_flavor": keras_flavor},
        "env": {"TF_USE_LEGACY_KERAS": None, "KERAS_BACKEND": None},
        "load": {"compile": True, "custom_objects": {"MyCustomLayer": "custom_layers:MyCustomLayer"},
                 "modules": ["custom_layers"]},
        "reference": {"inputs": ["reference/input_0.npy"], "outputs": ["reference/output_0.npy"],
                      "input_structure": "single", "output_structure": "single",
                      "tolerance": {"atol": 1e-05, "rtol": 1e-04}},
        "optimizer": {"class": opt["class"], "iterations": opt["iterations"], "state_saved": True,
                      "num_weights": opt["num_weights"]},
    }
    return manifest.Capture(root=root, data=data)


@pytest.fixture(scope="module")
def keras3_capture(py311, tmp_path_factory):
    return train(py311, tmp_path_factory.mktemp("k3"), "custom.keras", "keras3", "2.21.0")


def test_keras3_ok(py311, keras3_capture, tmp_path):
    code, rep = run_loader(py311, keras3_capture, tmp_path)
    assert code == 0, rep["error"]
    assert rep["ok"] and rep["stage"] == "verify" and rep["load"]["ok"]
    assert rep["versions"]["tensorflow"].startswith("2.") and rep["versions"]["keras"].startswith("3.")
    assert rep["versions"]["python"] == ".".join(map(str, sys.version_info[:3])) or rep["versions"]["python"].startswith("3.")
    assert rep["reference"]["allclose"] and rep["reference"]["max_abs_diff"] <= 1e-5
    assert rep["reference"]["shapes"] == {"expected": [[3, 1]], "got": [[3, 1]]}
    assert rep["optimizer"]["ok"] and rep["optimizer"]["iterations"] == 8
    for step in ("import_tf", "import_modules", "load", "predict", "total"):
        assert rep["timings"][step] >= 0
    assert rep["network"]["interfaces"]  # informative only on the host


def test_keras3_drifted_custom_layer_is_exit_6(py311, keras3_capture, tmp_path):
    src = keras3_capture.root / "snapshot" / "custom_layers.py"
    original = src.read_text()
    try:
        src.write_text(DRIFTED)
        code, rep = run_loader(py311, keras3_capture, tmp_path)
    finally:
        src.write_text(original)
    assert code == rt.EXIT_MISMATCH == 6
    assert rep["load"]["ok"] and rep["error"] is None
    assert rep["reference"]["allclose"] is False and rep["reference"]["max_abs_diff"] > 1e-2
    assert "reference prediction differs" in rep["mismatches"][0]


def test_keras3_missing_module_is_exit_5(py311, keras3_capture, tmp_path):
    src = keras3_capture.root / "snapshot" / "custom_layers.py"
    hidden = src.with_name("hidden.txt")
    src.rename(hidden)
    try:
        code, rep = run_loader(py311, keras3_capture, tmp_path)
    finally:
        hidden.rename(src)
    assert code == rt.EXIT_LOAD_FAILED == 5
    err = rep["error"]
    assert err["type"] == "ModuleNotFoundError" and err["stage"] == "import" and rep["stage"] == "import"
    assert "custom_layers" in err["first_line"]
    assert err["failure_class"]["id"] == "import"
    assert rep["load"]["ok"] is False and rep["versions"]["tensorflow"]


@pytest.mark.py38
def test_tf24_h5_adam_state_restored(py38, tmp_path):
    cap = train(py38, tmp_path / "m", "adam_model.h5", "tf.keras", "2.4.1")
    assert cap.data["optimizer"]["iterations"] == 8 and cap.data["optimizer"]["num_weights"] > 1
    code, rep = run_loader(py38, cap, tmp_path)
    assert code == 0, rep["error"]
    assert rep["versions"]["python"].startswith("3.8.") and rep["versions"]["tensorflow"] == "2.4.1"
    assert rep["versions"]["keras_module"] == "tf.keras"
    opt = rep["optimizer"]
    assert opt["ok"] and opt["restored"] == "Adam" and opt["iterations"] == 8
    assert opt["weights_restored"] == cap.data["optimizer"]["num_weights"]
    assert rep["reference"]["allclose"]
    assert rep["load"]["safe_mode"] is True  # carried; TF 2.4's load_model has no safe_mode to pass


@pytest.mark.py38
def test_tf24_optimizer_mismatch_is_exit_6(py38, tmp_path):
    cap = train(py38, tmp_path / "m", "adam_model.h5", "tf.keras", "2.4.1")
    cap.data["optimizer"]["iterations"] = 99
    code, rep = run_loader(py38, cap, tmp_path)
    assert code == 6 and rep["optimizer"]["ok"] is False
    assert "iterations 8, expected 99" in rep["mismatches"]


@pytest.mark.py38
def test_tf24_savedmodel_optimizer_state_comes_back(py38, tmp_path):
    """Keras 2 leaves a SavedModel's optimizer state behind in load_model; the loader restores it
    from the SavedModel's checkpoint and says so."""
    cap = train(py38, tmp_path / "m", "custom_model", "tf.keras", "2.4.1")
    cap.data["model"]["format"] = "savedmodel"
    code, rep = run_loader(py38, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    opt = rep["optimizer"]
    assert opt["ok"] and opt["iterations"] == 8 and opt["restored_via"] == "load_weights"
    assert "load_model left the optimizer state behind (iterations 0" in opt["note"]
    assert rep["reference"]["allclose"]


# --- The optimizer state the FILE holds, captured for real with `envrepro capture --python` ---

def capture_for_real(python, folder, model_name, optimizer="adam"):
    """Train and save in ``python``, then ``envrepro capture MODEL --python`` as a user would;
    returns the Capture read back and what the training optimizer held."""
    code, scratch = folder / "code", folder / "scratch"
    write_module(code, "custom_layers", CUSTOM_LAYERS)
    scratch.mkdir(parents=True)
    model = folder / model_name
    proc = subprocess.run([python, "-c", TRAIN, str(code), str(model), str(scratch), optimizer],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    trained = json.loads(proc.stdout.strip().splitlines()[-1])
    modules = ["--module", "custom_layers"] + (
        ["--module", "tensorflow_addons"] if optimizer == "adamw" else [])
    out = envrepro_cli("capture", model, "--python", python, "--code-path", code, *modules,
                       env={"ENVREPRO_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-4000:]
    return manifest.read(layout.sidecar_for(model)), trained


@pytest.mark.py38
def test_tf24_savedmodel_captured_with_python_is_not_a_false_alarm(py38, tmp_path):
    """Issue 8: TF 2.4's load_model leaves a SavedModel's optimizer state in the checkpoint, so
    the probe's fresh copy shows 1 variable. The capture records what the file holds and the
    loader compares with that: exit 0, not '13 optimizer variables restored, expected 1'."""
    cap, trained = capture_for_real(py38, tmp_path, "custom_model")
    opt = cap.data["optimizer"]
    assert (trained["num_weights"], trained["iterations"]) == (13, 8)
    assert opt["num_weights"] == 1  # what a fresh TF 2.4 load_model shows
    assert (opt["saved_variables"], opt["saved_iterations"]) == (13, 8)  # what the file holds
    code, rep = run_loader(py38, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    got = rep["optimizer"]
    assert got["ok"] and got["restored_via"] == "load_weights"
    assert (got["weights_restored"], got["iterations"]) == (13, 8)
    assert got["saved"] == {"saved": True, "variables": 13, "iterations": 8,
                            "source": "savedmodel checkpoint"}
    assert rep["reference"]["allclose"] and rep["reference"]["max_abs_diff"] == 0


@pytest.mark.py38
def test_tf24_savedmodel_trained_on_after_capture_is_exit_6(py38, tmp_path):
    """A real mismatch still is one: the model was trained again and saved over the captured
    one, so the file (and the restored optimizer) hold 16 iterations where the capture read 8
    (TF 2.4's load_model left the old state behind: the 2 new epochs count from 0)."""
    cap, _ = capture_for_real(py38, tmp_path, "custom_model")
    retrain = textwrap.dedent('''
        import sys
        import numpy as np
        import tensorflow as tf
        sys.path.insert(0, sys.argv[1])
        import custom_layers
        model = tf.keras.models.load_model(sys.argv[2])
        rng = np.random.RandomState(1)
        model.fit(rng.rand(64, 16).astype("float32"), rng.rand(64, 1).astype("float32"),
                  epochs=2, batch_size=8, verbose=0)
        model.save(sys.argv[2])
    ''')
    proc = subprocess.run([py38, "-c", retrain, str(tmp_path / "code"), str(cap.model_path)],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    code, rep = run_loader(py38, cap, tmp_path)
    assert code == rt.EXIT_MISMATCH == 6 and rep["optimizer"]["ok"] is False
    assert "the model file holds 16 optimizer iterations, the capture read 8" in rep["mismatches"]
    assert rep["optimizer"]["iterations"] == 16 and rep["optimizer"]["saved"]["iterations"] == 16


@pytest.mark.py38
@pytest.mark.parametrize("model_name", ["adamw_model", "adamw_model.h5"])
def test_tf24_addons_adamw_state_verified(py38_tf24_addons, tmp_path, model_name):
    """tensorflow-addons' AdamW (Addons>AdamW), SavedModel and H5, captured with --python."""
    cap, trained = capture_for_real(py38_tf24_addons, tmp_path, model_name, optimizer="adamw")
    opt = cap.data["optimizer"]
    assert opt["class"] == "AdamW" and (opt["saved_variables"], opt["saved_iterations"]) == (13, 8)
    code, rep = run_loader(py38_tf24_addons, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    got = rep["optimizer"]
    assert got["ok"] and got["restored"] == "AdamW"
    assert (got["weights_restored"], got["iterations"]) == (trained["num_weights"], 8) == (13, 8)
    assert rep["reference"]["allclose"]


def test_keras3_archive_captured_with_python_compares_with_the_file(py311, tmp_path):
    """TF 2.21 / Keras 3 .keras: the archive's optimizer/vars, read at capture and at load."""
    cap, trained = capture_for_real(py311, tmp_path, "custom.keras")
    opt = cap.data["optimizer"]
    assert opt["saved_variables"] == opt["num_weights"] == trained["num_weights"]
    assert opt["saved_iterations"] == 8
    code, rep = run_loader(py311, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    got = rep["optimizer"]
    assert got["ok"] and got["saved"]["source"] == "keras model.weights.h5"
    assert (got["weights_restored"], got["iterations"]) == (trained["num_weights"], 8)
