"""The resume check (runtime/resume.py) with real TensorFlow: one training step recorded at
capture on a fresh copy of the model, replayed by the loader (run on the host as the container
runs it) and compared. Keras 3 in this interpreter (TF >= 2.16), Keras 2 under Python 3.8 +
tensorflow-cpu 2.4.1; in-process (``envrepro.capture(..., resume_check=True)``, the path
``envrepro.save`` takes) and from outside (``envrepro capture --python ... --resume-check``)."""
import json
import shutil
import sys
import textwrap

import numpy as np
import pytest

from envrepro.fsutil import sha256_tree
from envrepro.sidecar import layout, manifest, writer

from support import envrepro_cli  # noqa: E402
from tf_helpers import REPO, run_loader, run_py

pytestmark = pytest.mark.tf

# Trains a model (Dropout included: the step must be seeded), saves it, captures it in-process
# with the resume check and reports what the capture did to the file, the in-memory model and
# the interpreter's random generators. argv: folder, suffix. ``tf.keras`` is Keras 3 on the host
# and Keras 2 under TF 2.4.
IN_PROCESS = textwrap.dedent('''
    import json, random, sys
    import numpy as np
    import tensorflow as tf
    import envrepro
    from envrepro.fsutil import sha256_tree
    K = tf.keras
    folder, suffix = sys.argv[1], sys.argv[2]
    m = K.Sequential([K.Input(shape=(8,)), K.layers.Dense(16, activation="relu"), K.layers.Dropout(0.3),
                      K.layers.Dense(1)])
    m.save(folder + "/plain" + suffix)                       # never compiled: nothing to resume
    m.compile(optimizer=K.optimizers.Adam(1e-3), loss="mse")
    rng = np.random.RandomState(0)
    m.fit(rng.rand(64, 8).astype("float32"), rng.rand(64, 1).astype("float32"), batch_size=8, verbose=0)
    path = folder + "/trained" + suffix
    m.save(path)
    before = sha256_tree(path)
    weights, iterations = [w.copy() for w in m.get_weights()], int(m.optimizer.iterations.numpy())
    random.seed(7); np.random.seed(7)
    draws = (random.random(), float(np.random.rand()))
    random.seed(7); np.random.seed(7)
    result = envrepro.capture(path, model=m, resume_check=True)
    generators_unchanged = draws == (random.random(), float(np.random.rand()))
    plain = envrepro.capture(folder + "/plain" + suffix, model=None, resume_check=True)
    print(json.dumps({
        "file_unchanged": sha256_tree(path) == before,
        "model_unchanged": iterations == int(m.optimizer.iterations.numpy())
                           and all((a == b).all() for a, b in zip(weights, m.get_weights())),
        "generators_unchanged": generators_unchanged,
        "iterations": iterations, "seconds": result.seconds, "plain_warnings": plain.warnings}))
''')


def capture_in_process(python, folder, suffix):
    proc = run_py(python, f"import sys; sys.argv = ['x', {str(folder)!r}, {suffix!r}]\n" + IN_PROCESS,
                  env={"PYTHONPATH": str(REPO), "ENVREPRO_OFFLINE": "1"}, cwd=str(folder))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read(model):
    return manifest.read(layout.sidecar_for(model))


def copy_capture(model, folder):
    """A copy of a model and its capture, for tampering without touching the shared fixtures."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / model.name
    (shutil.copytree if model.is_dir() else shutil.copy)(str(model), str(dest))
    shutil.copytree(str(layout.sidecar_for(model)), str(layout.sidecar_for(dest)))
    return dest


def reseal(model, **resume_changes):
    """Rewrite the manifest with ``resume_check`` changed and every file hashed again, so only the
    recorded data differs (not the seal)."""
    side = layout.sidecar_for(model)
    data = {k: v for k, v in manifest.read(side, verify=False).data.items() if k != "files"}
    data["resume_check"] = dict(data["resume_check"], **resume_changes)
    writer.write_manifest(side, data)
    return read(model)


def assert_resumes(python, cap, tmp_path, iterations):
    code, rep = run_loader(python, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    resume = rep["resume_check"]
    assert resume["ok"] and resume["problems"] == [] and resume["compared"] == "weights"
    assert resume["iterations"] == resume["expected_iterations"] == iterations
    assert abs(resume["loss"] - resume["expected_loss"]) <= resume["atol"] + resume["rtol"] * abs(resume["expected_loss"])
    assert resume["max_abs_diff"] <= resume["atol"]
    return rep


@pytest.fixture(scope="module")
def keras3(tf, tmp_path_factory):
    folder = tmp_path_factory.mktemp("k3")
    return folder, capture_in_process(sys.executable, folder, ".keras")


@pytest.fixture(scope="module")
def keras2(py38_tf24, tmp_path_factory):
    folder = tmp_path_factory.mktemp("k2")
    return folder, capture_in_process(py38_tf24, folder, ".h5")


@pytest.mark.parametrize("which", ["keras3", "keras2"])
def test_recorded_in_process_and_replayed_identically(which, request, tmp_path):
    folder, out = request.getfixturevalue(which)
    python = sys.executable if which == "keras3" else request.getfixturevalue("py38_tf24")
    assert out["file_unchanged"] and out["model_unchanged"] and out["generators_unchanged"]
    model = folder / ("trained.keras" if which == "keras3" else "trained.h5")
    recorded = read(model).data["resume_check"]
    assert recorded["iterations_before"] == out["iterations"] == 8 and recorded["iterations"] == 9
    assert recorded["weights_file"] == "reference/resume_weights.npz" and recorded["weights_skipped"] is None
    assert recorded["targets"] == ["reference/resume_target_0.npy"] and recorded["seed"] == 1234
    assert out["seconds"]["resume_check"] > 0
    assert_resumes(python, read(model), tmp_path, 9)


@pytest.mark.parametrize("which", ["keras3", "keras2"])
def test_tampered_recorded_loss_is_exit_6(which, request, tmp_path):
    folder, _ = request.getfixturevalue(which)
    python = sys.executable if which == "keras3" else request.getfixturevalue("py38_tf24")
    model = copy_capture(folder / ("trained.keras" if which == "keras3" else "trained.h5"), tmp_path / "m")
    loss = read(model).data["resume_check"]["loss"]
    code, rep = run_loader(python, reseal(model, loss=loss + 0.01), tmp_path)
    assert code == 6 and rep["error"] is None
    assert rep["resume_check"]["ok"] is False and rep["resume_check"]["max_abs_diff"] <= 1e-5  # weights agree
    assert rep["mismatches"] == rep["resume_check"]["problems"]
    assert len(rep["mismatches"]) == 1 and "the loss of one training step is" in rep["mismatches"][0]


@pytest.mark.parametrize("which", ["keras3", "keras2"])
def test_model_without_optimizer_is_skipped_with_the_reason(which, request, tmp_path):
    folder, out = request.getfixturevalue(which)
    python = sys.executable if which == "keras3" else request.getfixturevalue("py38_tf24")
    reason = "the model has no optimizer (saved without compile): no training to resume"
    model = folder / ("plain.keras" if which == "keras3" else "plain.h5")
    assert read(model).data["resume_check"] == {"skipped": reason}
    assert f"resume check skipped: {reason}" in out["plain_warnings"]
    assert not (layout.sidecar_for(model) / "reference" / "resume_weights.npz").exists()
    code, rep = run_loader(python, read(model), tmp_path)
    assert code == 0 and rep["resume_check"] == {"skipped": reason, "ok": None, "problems": []}


def test_tampered_weights_file_is_exit_6(keras2, py38_tf24, tmp_path):
    model = copy_capture(keras2[0] / "trained.h5", tmp_path / "m")
    weights = layout.sidecar_for(model) / "reference" / "resume_weights.npz"
    with np.load(weights) as data:
        arrays = {k: data[k] for k in data.files}
    first = sorted(arrays)[0]
    arrays[first] = arrays[first] + np.float32(0.001)
    np.savez(weights, **arrays)
    code, rep = run_loader(py38_tf24, reseal(model), tmp_path)
    assert code == 6
    assert rep["mismatches"] == ["the weights after one training step differ (max |dw| %s, atol 1e-05, rtol 0.0001)"
                                 % rep["resume_check"]["max_abs_diff"]]


# A Keras 2 SavedModel (its optimizer state is left in the checkpoint by load_model, and restored
# from there on both sides) and an H5, trained and saved without envrepro.
KERAS2_SAVE = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    K = tf.keras
    m = K.Sequential([K.Input(shape=(8,)), K.layers.Dense(16, activation="relu"), K.layers.BatchNormalization(),
                      K.layers.Dense(3, activation="softmax")])
    m.compile(optimizer=K.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    rng = np.random.RandomState(0)
    m.fit(rng.rand(64, 8).astype("float32"), rng.randint(0, 3, 64), batch_size=8, verbose=0)
    m.save(sys.argv[1] + "/saved_model")
''')


def test_keras2_savedmodel_captured_with_python_resumes_identically(py38_tf24, tmp_path):
    proc = run_py(py38_tf24, f"import sys; sys.argv = ['x', {str(tmp_path)!r}]\n" + KERAS2_SAVE)
    assert proc.returncode == 0
    model = tmp_path / "saved_model"
    before = sha256_tree(model)
    out = envrepro_cli("capture", model, "--python", py38_tf24, "--resume-check", env={"ENVREPRO_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert sha256_tree(model) == before, "the user's model must be byte-identical after the capture"
    recorded = read(model).data["resume_check"]
    assert recorded["target_kind"] == "argmax_prediction"  # a sparse loss trains on class labels
    assert (recorded["iterations_before"], recorded["iterations"]) == (8, 9)
    rep = assert_resumes(py38_tf24, read(model), tmp_path, 9)
    assert rep["versions"]["tensorflow"] == "2.4.1"


def test_keras3_weights_above_the_limit_are_compared_by_their_summary(keras3, tmp_path):
    model = copy_capture(keras3[0] / "trained.keras", tmp_path / "m")
    shutil.rmtree(str(layout.sidecar_for(model)))
    before = sha256_tree(model)
    out = envrepro_cli("capture", model, "--python", sys.executable, "--resume-check",
                       env={"ENVREPRO_OFFLINE": "1", "ENVREPRO_RESUME_MAX_BYTES": "100"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert sha256_tree(model) == before
    recorded = read(model).data["resume_check"]
    assert recorded["weights_file"] is None
    assert recorded["weights_skipped"] == ("the updated weights take 644 bytes, above the limit of 100 "
                                           "(ENVREPRO_RESUME_MAX_BYTES): compared by their summary only")
    assert not (layout.sidecar_for(model) / "reference" / "resume_weights.npz").exists()
    code, rep = run_loader(sys.executable, read(model), tmp_path)
    assert code == 0, rep["mismatches"]
    assert rep["resume_check"]["compared"] == "summary" and rep["resume_check"]["ok"]
