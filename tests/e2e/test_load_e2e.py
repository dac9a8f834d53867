"""The story this project starts from, end to end, with a real Docker engine.

In a Python 3.8 + tensorflow-cpu==2.4.1 environment the seed article's custom-layer model (a
SavedModel folder) and Adam model (H5) are trained and saved with the envrepro hook. On the host
(Python 3.11, TensorFlow 2.21, Keras 3) plain ``load_model`` fails on both; ``envrepro load``
loads both in a reproduced environment, with the reference matched, the optimizer restored and
no network in the container.
"""
from __future__ import annotations

import json
import os
import runpy  # noqa: F401 - used in the child scripts below
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from support import installed_cli as cli  # noqa: E402

from envrepro.sidecar import layout, manifest, writer
from envrepro.fsutil import sha256_tree

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def run_example(python, script, out):
    proc = subprocess.run([python, str(EXAMPLES / script), str(out)], cwd=str(EXAMPLES), capture_output=True,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def seed_models(py38_tf24, standin_38, tmp_path_factory):
    """Trained and saved under TF 2.4.1 / Python 3.8 with the hook (hashes when PyPI answers)."""
    out = tmp_path_factory.mktemp("seed")
    run_example(py38_tf24, "custom_layer_model.py", out)
    run_example(py38_tf24, "adam_model.py", out)
    return {"custom": out / "custom_model", "adam": out / "adam_model.h5"}


def host_load(path):
    code = f"import tensorflow as tf; tf.keras.models.load_model({str(path)!r})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=600)


def test_plain_load_model_fails_on_the_host(seed_models, tf):
    assert int(tf.keras.__version__.split(".")[0]) >= 3, "the host must run Keras 3 for this story"
    sm = host_load(seed_models["custom"])
    assert sm.returncode != 0 and "File format not supported" in sm.stderr
    h5 = host_load(seed_models["adam"])
    assert h5.returncode != 0, "TF 2.4 H5 with a Keras-2 compile config should not load under Keras 3"


@pytest.mark.parametrize("which", ["custom", "adam"])
def test_envrepro_load_reproduces(seed_models, which):
    before = sha256_tree(seed_models[which])
    out = cli("load", seed_models[which], "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout)
    loader = report["loader"]
    assert loader["ok"] and loader["load"]["ok"]
    assert loader["versions"]["tensorflow"] == "2.4.1" and loader["versions"]["python"].startswith("3.8.")
    assert loader["reference"]["allclose"] and loader["reference"]["max_abs_diff"] <= 1e-5
    assert loader["network"]["isolated"] and loader["network"]["non_loopback"] == []
    assert report["image"]["tag"].startswith("envrepro-env:")
    assert report["image"]["base_digest"]
    if which == "adam":
        opt = loader["optimizer"]
        assert opt["ok"] and opt["restored"] == "Adam" and opt["iterations"] == 8
    else:
        assert "MyCustomLayer" in loader["load"]["custom_objects"]
    assert sha256_tree(seed_models[which]) == before, "the model must be left untouched"


def test_models_with_one_lock_share_one_image(seed_models):
    tags = {json.loads(cli("load", seed_models[w], "--json").stdout)["image"]["tag"] for w in ("custom", "adam")}
    assert len(tags) == 1


def test_human_report(seed_models):
    out = cli("load", seed_models["adam"])
    assert out.returncode == 0, out.stderr[-2000:]
    for needle in ("TensorFlow 2.4.1", "Adam restored", "iterations 8", "max |diff|", "isolated", "result: OK"):
        assert needle in out.stdout, needle


def test_edited_custom_layer_source_does_not_change_the_load(seed_models, tmp_path):
    """The snapshot is what loads: editing the origin after the save changes nothing.

    The edit doubles the layer's output, and the control below applies the same edit to the
    snapshot of a copy (re-sealed): that load is a mismatch (exit 6). So had the origin been
    loaded, this test would fail for the reason it names."""
    edit = ("return tf.matmul(inputs, self.w) + self.b", "return 2.0 * (tf.matmul(inputs, self.w) + self.b)")
    cap = manifest.read(layout.sidecar_for(seed_models["custom"]))
    origin = Path(cap.data["snapshot"]["files"][0]["origin"])
    assert edit[0] in origin.read_text()
    copy = tmp_path / "orig.py"
    shutil.copy(origin, copy)
    try:
        origin.write_text(origin.read_text().replace(*edit))
        out = cli("load", seed_models["custom"], "--json")
        assert out.returncode == 0, out.stdout[-2000:]
        assert json.loads(out.stdout)["verdict"] == "verified"
    finally:
        shutil.copy(copy, origin)
    # control: the same edit in the code that does load is caught
    model = tmp_path / "custom_model"
    shutil.copytree(seed_models["custom"], model)
    shutil.copytree(layout.sidecar_for(seed_models["custom"]), layout.sidecar_for(model))
    side = layout.sidecar_for(model)
    snap = side / cap.data["snapshot"]["files"][0]["path"]
    snap.write_text(snap.read_text().replace(*edit))
    writer.write_manifest(side, {k: v for k, v in manifest.read(side, verify=False).data.items() if k != "files"})
    out = cli("load", model, "--json")
    assert out.returncode == 6, out.stdout[-2000:] + out.stderr[-2000:]
    assert json.loads(out.stdout)["loader"]["reference"]["allclose"] is False


def test_tampered_snapshot_and_mismatch(seed_models, tmp_path):
    # a copy of the model and its capture, so the shared fixtures stay intact
    model = tmp_path / "custom_model"
    shutil.copytree(seed_models["custom"], model)
    shutil.copytree(layout.sidecar_for(seed_models["custom"]), layout.sidecar_for(model))
    side = layout.sidecar_for(model)
    # 1. a reference that no longer matches: exit 6 (manifest re-written so only the data differs)
    data = manifest.read(side).data
    ref_out = side / data["reference"]["outputs"][0]
    np.save(ref_out, np.load(ref_out) + 1.0)
    writer.write_manifest(side, {k: v for k, v in data.items() if k != "files"})
    out = cli("load", model, "--json")
    assert out.returncode == 6, out.stdout[-2000:] + out.stderr[-2000:]
    assert json.loads(out.stdout)["loader"]["reference"]["allclose"] is False
    # 2. an edited snapshot file: refused before anything runs, named, exit 2
    snap = side / "snapshot" / "custom_layers.py"
    snap.write_text(snap.read_text() + "\n# edited\n")
    out = cli("load", model)
    assert out.returncode == 2 and "snapshot/custom_layers.py" in out.stderr and "Traceback" not in out.stderr


def test_model_changed_after_its_capture_is_refused_or_flagged(seed_models, tmp_path):
    """The capture's facts and reference describe the model as captured: a model changed since
    is refused (exit 2, nothing run), and --allow-model-change loads it, flagged, never verified."""
    model = tmp_path / "custom_model"
    shutil.copytree(seed_models["custom"], model)
    shutil.copytree(layout.sidecar_for(seed_models["custom"]), layout.sidecar_for(model))
    assert cli("load", model, "--json").returncode == 0   # an identical copy is the same model
    (model / "assets").mkdir(exist_ok=True)
    (model / "assets" / "added-after-capture.txt").write_text("x")
    out = cli("load", model)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "the model changed since its capture" in out.stderr and "--allow-model-change" in out.stderr
    out = cli("load", model, "--json", "--allow-model-change")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rep = json.loads(out.stdout)
    assert rep["model_check"]["changed"] is True and rep["verified"] is False
    assert rep["verdict"] == "loaded, not verified"
    assert any("changed since its capture" in w for w in rep["warnings"])


def test_no_engine_exit_3_nothing_written(seed_models):
    model = seed_models["adam"]
    side = layout.sidecar_for(model)
    before = (sha256_tree(model), sha256_tree(side))
    out = cli("load", model, env={"DOCKER_HOST": "tcp://127.0.0.1:1"})
    assert out.returncode == 3
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert "envrepro doctor" in out.stderr
    assert (sha256_tree(model), sha256_tree(side)) == before


def test_run_and_images(seed_models):
    code = ("import os, tensorflow as tf, custom_layers; "
            "print('TF', tf.__version__, os.environ['ENVREPRO_MODEL'], os.path.isdir(os.environ['ENVREPRO_MODEL']))")
    out = cli("run", seed_models["custom"], "--", "python", "-c", code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TF 2.4.1 /envrepro/model/custom_model True" in out.stdout
    out = cli("run", seed_models["custom"], "--", "python", "-c", "import sys; sys.exit(7)")
    assert out.returncode == 7
    out = cli("images", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    served = {c for r in rows for c in r["captures"]}
    assert str(layout.sidecar_for(seed_models["custom"])) in served


KERAS3_SAVE = textwrap.dedent('''
    import sys, numpy as np, keras
    sys.path.insert(0, sys.argv[2])
    import envrepro
    from custom_layers import MyCustomLayer
    out = sys.argv[1]
    envrepro.install_hook()
    m = keras.Sequential([keras.Input(shape=(16,)), keras.layers.Dense(8), MyCustomLayer(units=64)])
    m.save(out + "/k3.keras")
    lam = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Lambda(lambda x: x * 2.0 + 1.0, output_shape=(4,))])
    lam.save(out + "/lambda.keras")
''')


def test_keras3_model_and_lambda_safe_mode(standin_311, tmp_path, tf):
    """The host's own TF 2.21 / Keras 3 environment reproduced (the `make demo` path), and
    Keras 3's safe_mode kept on unless --unsafe."""
    proc = subprocess.run([sys.executable, "-c", KERAS3_SAVE, str(tmp_path), str(EXAMPLES)], capture_output=True,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = cli("load", tmp_path / "k3.keras", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rep = json.loads(out.stdout)["loader"]
    assert rep["versions"]["tensorflow"] == tf.__version__ and rep["reference"]["allclose"]
    out = cli("load", tmp_path / "lambda.keras", "--json")
    assert out.returncode == 5, out.stdout[-2000:]
    assert "safe_mode" in json.loads(out.stdout)["loader"]["error"]["message"]
    out = cli("load", tmp_path / "lambda.keras", "--unsafe", "--json")
    assert out.returncode == 0, out.stdout[-2000:]


LEGACY_SAVE = textwrap.dedent('''
    import sys
    import tensorflow as tf
    from custom_layers import MyCustomLayer
    m = tf.keras.Sequential([tf.keras.Input(shape=(16,)), tf.keras.layers.Dense(8), MyCustomLayer(units=64)])
    m.compile(optimizer="adam", loss="mse")
    m.save(sys.argv[1])   # no envrepro hook: a model saved long before envrepro
''')


def test_infer_then_load_a_model_saved_without_envrepro(py38_tf24, standin_38, tmp_path):
    model = tmp_path / "legacy_model"
    proc = subprocess.run([py38_tf24, "-c", LEGACY_SAVE, str(model)], cwd=str(EXAMPLES), capture_output=True,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(EXAMPLES)),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not layout.sidecar_for(model).exists()
    out = cli("capture", "--infer", model, "--code-path", EXAMPLES)
    assert out.returncode == 0, out.stderr[-3000:]
    cap = manifest.read(layout.sidecar_for(model))
    assert cap.data["inferred"] is True and cap.data["frameworks"]["tensorflow"] == "2.4.1"
    assert cap.data["load"]["custom_objects"]["MyCustomLayer"] == "custom_layers:MyCustomLayer"
    out = cli("load", model, "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout)
    rep = report["loader"]
    assert rep["ok"] and rep["versions"]["tensorflow"] == "2.4.1" and rep["load"]["ok"]
    # no reference from the training environment: never "verified", whatever else held
    assert report["verdict"] == "loaded, not verified" and report["verified"] is False
    assert rep["reference"] is None and rep["drift"]["checked"] and rep["drift"]["ok"]


def test_inferred_capture_of_an_edited_source_tree_is_exit_6_naming_the_class(py38_tf24, standin_38, tmp_path):
    """Drift without a capture: the model was saved from one source, the custom layer's call was
    edited afterwards (one added activation), then the model captured with --infer from the edited
    tree. The SavedModel's traced graph of the layer disagrees with the source: exit 6, named."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(EXAMPLES / "custom_layers.py", src / "custom_layers.py")
    model = tmp_path / "legacy_model"
    proc = subprocess.run([py38_tf24, "-c", LEGACY_SAVE, str(model)], cwd=str(src), capture_output=True,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(src)),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    layer = src / "custom_layers.py"
    edited = layer.read_text().replace("return tf.matmul(inputs, self.w) + self.b",
                                       "return tf.nn.relu(tf.matmul(inputs, self.w) + self.b)")
    assert edited != layer.read_text()
    layer.write_text(edited)
    out = cli("capture", "--infer", model, "--code-path", src)
    assert out.returncode == 0, out.stderr[-3000:]
    out = cli("load", model, "--json")
    assert out.returncode == 6, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["verdict"] == "mismatch" and report["exit_code"] == 6
    drift = report["loader"]["drift"]
    assert drift["checked"] and drift["ok"] is False and drift["model"]["allclose"] is False
    assert [d.split(" (")[0] for d in drift["differs"]] == ["MyCustomLayer"]
    text = cli("load", model)
    assert text.returncode == 6
    assert ("result: MISMATCH - the model loads but does not reproduce what was saved: the source tree no "
            "longer matches the code the model was saved with: MyCustomLayer (layer my_custom_layer") in text.stdout
    assert "reproduces its reference" not in text.stdout


TRAINED_SAVE = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    from custom_layers import MyCustomLayer
    m = tf.keras.Sequential([tf.keras.Input(shape=(16,)), tf.keras.layers.Dense(8), MyCustomLayer(units=4),
                             tf.keras.layers.Dense(1)])
    m.compile(optimizer=tf.keras.optimizers.Adam(0.001), loss="mse")
    rng = np.random.RandomState(0)
    m.fit(rng.rand(64, 16).astype("float32"), rng.rand(64, 1).astype("float32"), batch_size=8, verbose=0)
    m.save(sys.argv[1])   # a SavedModel with its optimizer, saved without the hook
''')


def test_savedmodel_optimizer_state_captured_with_python_loads_ok(py38_tf24, standin_38, tmp_path):
    """Issue 8: TF 2.4's load_model leaves a SavedModel's optimizer state behind, so a capture
    that recorded the fresh optimizer (1 variable) made `envrepro load` exit 6 on a perfect
    reproduction. The capture now records what the file holds and the load compares with it."""
    model = tmp_path / "trained_model"
    proc = subprocess.run([py38_tf24, "-c", TRAINED_SAVE, str(model)], cwd=str(EXAMPLES), capture_output=True,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(EXAMPLES)),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = cli("capture", model, "--python", py38_tf24, "--code-path", EXAMPLES, "--module", "custom_layers")
    assert out.returncode == 0, out.stderr[-3000:]
    opt = manifest.read(layout.sidecar_for(model)).data["optimizer"]
    assert (opt["saved_variables"], opt["saved_iterations"]) == (13, 8)
    out = cli("load", model, "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rep = json.loads(out.stdout)["loader"]
    assert rep["ok"] and rep["versions"]["tensorflow"] == "2.4.1" and rep["reference"]["max_abs_diff"] == 0
    assert rep["optimizer"]["ok"] and (rep["optimizer"]["weights_restored"], rep["optimizer"]["iterations"]) == (13, 8)
    text = cli("load", model).stdout
    assert ("Adam restored, iterations 8, 13 variables (the training environment restores iterations 8, "
            "13 variables; the file holds 13, iterations 8)  OK") in text, text
