"""Issue 20: the optimizer verdict compares like with like, on the user's case with real TF 2.12.

A Sequential with a registered custom layer trained for 2 steps under the ``mixed_float16``
policy (so compiled with a ``LossScaleOptimizer``) and saved as H5: the file holds iterations 2,
and TF 2.12's own ``load_model`` restores iterations 0 from it. The capture (the save hook and
``envrepro capture --python``) records that restore (``optimizer.restored``); the loader, run
with the same TF 2.12 interpreter as the container runs it, compares with it: exit 0 with a
WARNING naming the behaviour, exit 6 when the reproduction restores something else, and an old
capture (no ``restored``) keeps today's exit 6. A float32 H5 and a SavedModel, which TF 2.12
restores fully, still verify their iterations exactly.

The training environment is the fidelity matrix's cached TF 2.12 venv (tests/matrix/envs.py),
run with this checkout on PYTHONPATH; it is built only when it is missing.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "matrix"))

from envs import BY_NAME, ensure_env, venv_dir  # noqa: E402
from envrepro.sidecar import layout, manifest  # noqa: E402
from support import REPO, envrepro_cli  # noqa: E402
from tf_helpers import run_loader, write_module  # noqa: E402

ENV = "tf2.12-py3.10"

LAYERS = textwrap.dedent('''
    import tensorflow as tf

    @tf.keras.utils.register_keras_serializable(package="issue20")
    class Scale(tf.keras.layers.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor

        def get_config(self):
            return dict(super().get_config(), factor=self.factor)
''')

# argv: folder. Trains under mixed_float16 then float32, 2 steps each; saves through the hook
# (envrepro.save) and plainly; reports what TF 2.12's own load_model restores from the plain H5.
TRAIN = textwrap.dedent('''
    import json, sys, warnings
    import numpy as np
    import tensorflow as tf
    import envrepro
    from layers20 import Scale
    K, out = tf.keras, sys.argv[1]

    def trained(policy):
        K.mixed_precision.set_global_policy(policy)
        tf.random.set_seed(0)
        m = K.Sequential([K.Input((3,)), K.layers.Dense(4), Scale(),
                          K.layers.Dense(1, dtype="float32")])
        m.compile(optimizer="adam", loss="mse")
        rng = np.random.RandomState(0)
        m.fit(rng.rand(8, 3).astype("float32"), rng.rand(8, 1).astype("float32"), batch_size=4,
              epochs=1, verbose=0)
        return m

    facts = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = trained("mixed_float16")
        facts["trained"] = [type(m.optimizer).__name__, int(m.optimizer.iterations.numpy())]
        envrepro.save(m, out + "/hooked.h5")
        m.save(out + "/plain.h5")
        again = K.models.load_model(out + "/plain.h5")
        facts["tf_restores"] = [type(again.optimizer).__name__, int(again.optimizer.iterations.numpy())]
        m = trained("float32")
        envrepro.save(m, out + "/f32.h5")
        envrepro.save(m, out + "/f32_savedmodel")
    facts["envrepro_warnings"] = [str(w.message) for w in caught if str(w.message).startswith("envrepro")]
    print(json.dumps(facts))
''')

WARNING = ("the training environment's load_model also restores iterations 0 of the 2 the file "
           "holds (LossScaleOptimizerV3 in H5): compared with what it restores")
RESTORED_LSO = {"class": "LossScaleOptimizerV3", "iterations": 0, "variables": 9, "via": "load_model"}


@pytest.fixture(scope="module")
def py212():
    """TF 2.12's interpreter: the matrix's cached venv as it is (this checkout goes on
    PYTHONPATH), built by envs.ensure_env only when missing or broken."""
    env = BY_NAME[ENV]
    py = venv_dir(env) / "bin" / "python"
    probe = "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, ('tensorflow', 'h5py', 'yaml'))))"
    if py.exists() and subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0:
        return str(py)
    return ensure_env(env)


@pytest.fixture(scope="module")
def saved(py212, tmp_path_factory):
    """The models and their captures: hooked.h5 (the hook), plain.h5 (`capture --python`),
    f32.h5 and f32_savedmodel (the hook)."""
    folder = tmp_path_factory.mktemp("issue20")
    code = folder / "code"
    write_module(code, "layers20", LAYERS)
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{code}", TF_CPP_MIN_LOG_LEVEL="3",
               ENVREPRO_OFFLINE="1")
    proc = subprocess.run([py212, "-c", TRAIN, str(folder)], capture_output=True, text=True,
                          env=env, cwd=str(folder), timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    out = envrepro_cli("capture", folder / "plain.h5", "--python", py212, "--code-path", code,
                       "--module", "layers20", env={"ENVREPRO_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-4000:]
    return folder, facts


def read(folder, name):
    return manifest.read(layout.sidecar_for(folder / name))


def test_tf212_itself_restores_iterations_0_of_the_2_the_h5_holds(saved):
    _, facts = saved
    assert facts["trained"] == ["LossScaleOptimizerV3", 2]
    assert facts["tf_restores"] == ["LossScaleOptimizerV3", 0]
    assert facts["envrepro_warnings"] == []


@pytest.mark.parametrize("name", ["hooked.h5", "plain.h5"])
def test_the_capture_records_what_tf212_restores_beside_what_the_file_holds(saved, name):
    opt = read(saved[0], name).data["optimizer"]
    assert opt["class"] == "LossScaleOptimizerV3"
    assert (opt["saved_iterations"], opt["saved_variables"]) == (2, 9)
    assert opt["restored"] == RESTORED_LSO and "restored_skipped" not in opt


@pytest.mark.parametrize("name", ["hooked.h5", "plain.h5"])
def test_mixed_float16_h5_verifies_with_the_warning(py212, saved, name, tmp_path):
    code, rep = run_loader(py212, read(saved[0], name), tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    assert rep["versions"]["tensorflow"].startswith("2.12.")
    opt = rep["optimizer"]
    assert opt["ok"] is True and opt["problems"] == [] and opt["warning"] == WARNING
    assert (opt["iterations"], opt["weights_restored"]) == (0, 9)
    assert opt["saved"]["iterations"] == 2
    assert rep["reference"]["allclose"] and rep["reference"]["max_abs_diff"] == 0


def test_a_reproduction_restoring_otherwise_than_tf212_is_exit_6(py212, saved, tmp_path):
    """Had the training environment restored the 2 iterations, restoring 0 would differ."""
    cap = read(saved[0], "hooked.h5")
    cap.data["optimizer"]["restored"]["iterations"] = 2
    code, rep = run_loader(py212, cap, tmp_path)
    assert code == 6 and rep["optimizer"]["ok"] is False
    assert rep["mismatches"] == ["iterations 0, expected 2 (what the training environment "
                                 "restores from this file)"]


def test_an_old_capture_without_restored_keeps_todays_exit_6(py212, saved, tmp_path):
    cap = read(saved[0], "hooked.h5")
    del cap.data["optimizer"]["restored"]
    code, rep = run_loader(py212, cap, tmp_path)
    assert code == 6 and rep["mismatches"] == ["iterations 0, expected 2"]
    assert "warning" not in rep["optimizer"]


@pytest.mark.parametrize("name, fmt", [("f32.h5", "h5"), ("f32_savedmodel", "savedmodel")])
def test_float32_h5_and_savedmodel_still_verify_iterations_exactly(py212, saved, name, fmt, tmp_path):
    cap = read(saved[0], name)
    opt = cap.data["optimizer"]
    assert cap.data["model"]["format"] == fmt and opt["class"] == "Adam"
    assert opt["saved_iterations"] == opt["restored"]["iterations"] == 2
    assert opt["restored"]["variables"] == opt["saved_variables"]
    code, rep = run_loader(py212, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    got = rep["optimizer"]
    assert got["ok"] and "warning" not in got and got["iterations"] == 2
    assert got["weights_restored"] == opt["saved_variables"]
    # iterations are still verified: one more than the training environment restores is exit 6
    cap.data["optimizer"]["restored"]["iterations"] = 3
    (tmp_path / "again").mkdir()
    code, rep = run_loader(py212, cap, tmp_path / "again")
    assert code == 6 and rep["mismatches"] == ["iterations 2, expected 3 (what the training "
                                               "environment restores from this file)"]
    # and without `restored` (an older capture) the verdict is the same as before: OK
    del cap.data["optimizer"]["restored"]
    (tmp_path / "old").mkdir()
    code, rep = run_loader(py212, cap, tmp_path / "old")
    assert code == 0 and rep["optimizer"]["iterations"] == 2
