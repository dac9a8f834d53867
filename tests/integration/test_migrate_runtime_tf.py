"""``envrepro migrate``'s runtime half with real TensorFlow, no Docker: models trained and saved
under old interpreters (TF 2.8 on Python 3.9, TF 2.4 on Python 3.8, TF 2.8 + tensorflow-addons),
captured with ``envrepro capture --python``, then ``migrate.source`` run under the training
interpreter with the loader's plan (make_plan, host paths) plus ``migrate``, and
``migrate.target`` under this interpreter (TF 2.21, Keras 3). The artifacts must be verified
against the capture's reference, and an independent process with plain
``keras.models.load_model`` / ``tf.saved_model.load`` must reproduce the prediction."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from envrepro.runtime import launch
from envrepro.sandbox import loadplan as plans
from envrepro.sidecar import layout, manifest
from support import DEV_CACHE, envrepro_cli
from tf_helpers import CUSTOM_LAYERS, write_module

pytestmark = pytest.mark.tf

PREFIX = "ENVREPRO-MIGRATE "
TOL = {"atol": 1e-5, "rtol": 1e-4}

# Trains and saves a model (argv: code dir, model path, kind), prints what its optimizer holds.
TRAIN = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    sys.path.insert(0, sys.argv[1])
    from custom_layers import MyCustomLayer
    model_path, kind = sys.argv[2], sys.argv[3]
    tf.random.set_seed(0)
    L = tf.keras.layers
    rng = np.random.RandomState(0)
    if kind == "sequential":
        model = tf.keras.Sequential([tf.keras.Input(shape=(16,)), L.Dense(8, activation="relu"),
                                     MyCustomLayer(units=4, name="mine"), L.Dense(1)])
        x = rng.rand(64, 16).astype("float32")
    elif kind == "functional":
        a, b = tf.keras.Input(shape=(16,), name="a"), tf.keras.Input(shape=(4,), name="b")
        h = MyCustomLayer(units=6, name="mine")(L.Concatenate()([a, b]))
        h = L.BatchNormalization()(L.Dense(8, activation="tanh")(h))
        model = tf.keras.Model([a, b], L.Dense(1, name="score")(h))
        x = [rng.rand(64, 16).astype("float32"), rng.rand(64, 4).astype("float32")]
    elif kind == "lambda":
        model = tf.keras.Sequential([tf.keras.Input(shape=(16,)), L.Dense(4),
                                     L.Lambda(lambda t: t * 2.0 + 1.0), L.Dense(1)])
        x = rng.rand(64, 16).astype("float32")
    elif kind == "addons":
        import tensorflow_addons as tfa
        model = tf.keras.Sequential([
            tf.keras.Input(shape=(6, 6, 4)), L.Conv2D(4, 1), tfa.layers.GroupNormalization(groups=2),
            L.Flatten(), L.Dense(8, activation=tfa.activations.gelu), L.Dense(1)])
        x = rng.rand(64, 6, 6, 4).astype("float32") * 3
    elif kind == "weightnorm":
        import tensorflow_addons as tfa
        WN = tfa.layers.WeightNormalization
        model = tf.keras.Sequential([
            tf.keras.Input(shape=(6, 6, 3)), WN(L.Conv2D(4, 3)), L.Flatten(),
            WN(L.Dense(8, activation="relu"), data_init=False), L.Dense(1)])
        x = rng.rand(64, 6, 6, 3).astype("float32")
    optimizer = tf.keras.optimizers.Adam(learning_rate=0.001)
    if kind == "addons":
        optimizer = tfa.optimizers.AdamW(weight_decay=1e-4, learning_rate=0.001)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, rng.rand(64, 1).astype("float32"), epochs=1, batch_size=8, verbose=0)
    model.save(model_path)
    opt = model.optimizer
    variables = opt.variables() if callable(opt.variables) else opt.variables
    print(json.dumps({"iterations": int(opt.iterations.numpy()), "num_weights": len(variables)}))
''')


def existing_python(pattern, modules, request, fallback):
    """A cached interpreter under the developer cache matching ``pattern`` that imports
    ``modules``, used as it is (never rebuilt: other runs may share it); else the conftest
    fixture ``fallback``, which builds one."""
    check = "import " + ", ".join(modules)
    for venv in sorted(DEV_CACHE.glob(pattern)):
        py = venv / "bin" / "python"
        if py.exists() and subprocess.run([str(py), "-c", check], capture_output=True,
                                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")).returncode == 0:
            return str(py)
    return request.getfixturevalue(fallback)


@pytest.fixture(scope="module")
def target(tf):
    """This interpreter (the suite's venv: TF >= 2.16, Keras 3), run as separate processes."""
    import keras

    assert keras.__version__.startswith("3.")
    return sys.executable


@pytest.fixture(scope="module")
def tf28(request):
    return existing_python("venv39-tf284-*", ["tensorflow"], request, "py39_tf28")


@pytest.fixture(scope="module")
def tf28_addons(request):
    return existing_python("matrix-tf2.8-py3.9-*", ["tensorflow", "tensorflow_addons"], request,
                           "py38_tf24_addons")


@pytest.fixture(scope="module")
def tf24(request):
    return existing_python("venv38-tf241-[0-9a-f]*", ["tensorflow"], request, "py38_tf24")


def train_and_capture(python, folder, kind, model_name, *capture_flags):
    """Train ``kind`` under ``python``, save it as ``model_name``, ``envrepro capture --python``
    it as a user would; returns the Capture and what the optimizer held."""
    code = folder / "code"
    write_module(code, "custom_layers", CUSTOM_LAYERS)
    model = folder / model_name
    script = folder / "train.py"        # a file, as a user's: the capture can read a Lambda's source
    script.write_text(TRAIN)
    proc = subprocess.run([python, str(script), str(code), str(model), kind], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    trained = json.loads(proc.stdout.strip().splitlines()[-1])
    modules = ["--module", "custom_layers"] + (
        ["--module", "tensorflow_addons"] if kind in ("addons", "weightnorm") else [])
    out = envrepro_cli("capture", model, "--python", python, "--code-path", code, *modules, *capture_flags,
                       env={"ENVREPRO_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-4000:]
    return manifest.read(layout.sidecar_for(model)), trained


def run_entry(python, entry, plan, folder):
    """An entry point as the container runs it; checks the one stdout line, returns
    ``(exit code, report)``."""
    folder.mkdir(parents=True, exist_ok=True)
    plan_file = folder / (entry.replace(".", "-") + "-plan.json")
    plan_file.write_text(json.dumps(plan))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "ENVREPRO_PLAN", "ENVREPRO_DEBUG")}
    proc = subprocess.run(launch.host_argv(python, entry, ["--plan", plan_file]),
                          capture_output=True, text=True, env=dict(env, HOME=str(folder)),
                          timeout=900, cwd=str(folder))
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX), \
        f"stdout must hold only the report:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    report = json.loads(lines[0][len(PREFIX):])
    assert report["exit_code"] == proc.returncode
    return proc.returncode, report


def source_plan(cap, out):
    paths = plans.ContainerPaths(model=str(cap.model_path), capture=str(cap.root),
                                 runtime=launch.HOST_DIR)
    plan = plans.make_plan(cap, paths)
    plan["migrate"] = {"out": str(out), "seed": 0}
    return plan


def target_plan(plan, source_dir, out, formats=("keras", "savedmodel", "onnx"), lambdas=()):
    ref = plan["reference"]
    return {"source_dir": str(source_dir), "out": str(out), "name": "m",
            "custom_objects": plan["custom_objects"], "snapshot_dir": plan["snapshot_dir"],
            "lambdas": list(lambdas), "resume_check": plan.get("resume_check"),
            "modules": plan["modules"], "safe_mode": True, "formats": list(formats),
            "reference": {"outputs": ref["outputs"], "atol": ref["atol"], "rtol": ref["rtol"]}
            if ref else None}


def migrate(python, target, cap, folder):
    """source then target; returns (source report, target report, target exit, plans)."""
    plan = source_plan(cap, folder / "source")
    code, src = run_entry(python, "migrate.source", plan, folder / "run-source")
    assert code == 0, (src["error"], src["mismatches"])
    tplan = target_plan(plan, folder / "source", folder / "target",
                        lambdas=cap.get("load.lambdas") or [])
    tcode, tgt = run_entry(target, "migrate.target", tplan, folder / "run-target")
    return src, tgt, tcode, plan


def by_format(report):
    return dict((a["format"], a) for a in report["artifacts"])


FRESH = textwrap.dedent('''
    import json, sys
    import numpy as np
    import keras, tensorflow as tf
    sys.path.insert(0, sys.argv[1])
    plan = json.loads(sys.argv[2])
    xs = [np.load(p) for p in plan["reference"]["inputs"]]
    names = plan["reference"]["input_names"]
    custom = {}
    if plan["custom_objects"]:
        import custom_layers
        custom = {"MyCustomLayer": custom_layers.MyCustomLayer}
    model = keras.models.load_model(sys.argv[3], custom_objects=custom)
    got = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    served = tf.saved_model.load(sys.argv[4])
    sig = served.signatures["serving_default"]
    keys = list(sig.structured_input_signature[1]) if len(xs) == 1 else names
    out = list(sig(**dict((k, tf.constant(x)) for k, x in zip(keys, xs))).values())
    np.save(sys.argv[5] + "/keras.npy", np.asarray(got))
    np.save(sys.argv[5] + "/savedmodel.npy", out[0].numpy())
''')


def fresh_process_agrees(target, plan, folder):
    """Plain keras.models.load_model and tf.saved_model.load, in a process of their own,
    reproduce the capture's reference output."""
    out = folder / "fresh"
    out.mkdir()
    proc = subprocess.run([target, "-c", FRESH, plan["snapshot_dir"], json.dumps(plan),
                           str(folder / "target" / "m.keras"),
                           str(folder / "target" / "m.savedmodel"), str(out)],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    want = np.load(plan["reference"]["outputs"][0])
    for name in ("keras", "savedmodel"):
        np.testing.assert_allclose(np.load(out / f"{name}.npy"), want, **TOL)


def assert_verified(tgt, tcode, iterations):
    assert tcode == 0, tgt
    arts = by_format(tgt)
    for fmt in ("keras", "savedmodel"):
        assert arts[fmt]["written"] and arts[fmt]["verified"], arts[fmt]
        assert arts[fmt]["max_abs_diff"] <= 1e-5
    assert arts["onnx"]["verified"] or "tf2onnx" in (arts["onnx"]["why_not"] or ""), arts["onnx"]
    assert tgt["reference"] == "capture" and tgt["agree"]["keras~savedmodel"] <= 1e-5
    opt = tgt["optimizer"]
    assert opt["carried"] and opt["reloaded_iterations"] == iterations, opt


@pytest.mark.parametrize("kind,model_name", [("sequential", "seq.h5"),
                                             ("sequential", "seq_savedmodel"),
                                             ("functional", "func.h5"),
                                             ("functional", "func_savedmodel")])
def test_tf28_to_keras3(tf28, target, tmp_path, kind, model_name):
    cap, trained = train_and_capture(tf28, tmp_path, kind, model_name)
    src, tgt, tcode, plan = migrate(tf28, target, cap, tmp_path)
    assert src["versions"]["tensorflow"] == "2.8.4" and src["reference"]["allclose"]
    assert src["savedmodel"]["written"] and src["savedmodel"]["check"]["allclose"]
    assert src["sample"]["from"] == "reference"
    assert {l["name"] for l in src["model"]["layers"]} >= {"mine"}
    assert src["optimizer"]["iterations"] == trained["iterations"] == 8
    assert_verified(tgt, tcode, 8)
    keras_art = by_format(tgt)["keras"]
    assert "InputLayer: batch_input_shape -> batch_shape" in keras_art["translated"]
    assert keras_art["custom_objects"] == {"MyCustomLayer": "custom_layers:MyCustomLayer"}
    fresh_process_agrees(target, plan, tmp_path)


STEP = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    sys.path.insert(0, sys.argv[1])
    import custom_layers
    try:
        import keras
        k = keras if keras.__version__.startswith("3") else tf.keras
    except ImportError:
        k = tf.keras
    model = k.models.load_model(sys.argv[2], custom_objects={"MyCustomLayer": custom_layers.MyCustomLayer})
    rng = np.random.RandomState(7)
    x, y = rng.rand(8, 16).astype("float32"), rng.rand(8, 1).astype("float32")
    for _ in range(3):
        model.train_on_batch(x, y)
    np.savez(sys.argv[3], *[np.asarray(w) for w in model.get_weights()])
''')


def test_tf28_optimizer_state_resumes_training_the_same(tf28, target, tmp_path):
    """Adam's carried state is the same state: three more training steps from the original model
    in TF 2.8 and from the migrated .keras in Keras 3 end at the same weights. The capture's
    resume check (one train_on_batch recorded in TF 2.8) is replayed by the target on the .keras
    and agrees."""
    cap, _ = train_and_capture(tf28, tmp_path, "sequential", "seq.h5", "--resume-check")
    assert cap.get("resume_check") and not cap.get("resume_check").get("skipped")
    _, tgt, tcode, plan = migrate(tf28, target, cap, tmp_path)
    assert_verified(tgt, tcode, 8)
    rc = tgt["optimizer"]["resume_check"]
    assert rc["ok"] is True and rc["problems"] == [] and rc["iterations"] == 9, rc
    assert rc["compared"] in ("weights", "summary")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for python, path, name in ((tf28, cap.model_path, "old"),
                               (target, tmp_path / "target" / "m.keras", "new")):
        proc = subprocess.run([python, "-c", STEP, plan["snapshot_dir"], str(path),
                               str(tmp_path / f"{name}.npz")], capture_output=True, text=True,
                              timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    old, new = np.load(tmp_path / "old.npz"), np.load(tmp_path / "new.npz")
    for key in old.files:
        np.testing.assert_allclose(new[key], old[key], atol=1e-5, rtol=1e-4)


def _rewrite_npz(path, change):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    np.savez(path, **arrays)


def test_tampered_weight_is_caught(tf28, target, tmp_path):
    """One weight changed in weights.npz: the .keras artifact is written but not verified, the
    SavedModel still is (exit 0). With the SavedModel's variables gone too, nothing is: exit 6."""
    cap, _ = train_and_capture(tf28, tmp_path, "sequential", "seq.h5")
    plan = source_plan(cap, tmp_path / "source")
    code, src = run_entry(tf28, "migrate.source", plan, tmp_path / "run-source")
    assert code == 0

    def bump(arrays):
        arrays["L1/0"] = arrays["L1/0"].copy()
        arrays["L1/0"].flat[0] += 0.5

    _rewrite_npz(tmp_path / "source" / "weights.npz", bump)
    tcode, tgt = run_entry(target, "migrate.target",
                           target_plan(plan, tmp_path / "source", tmp_path / "t1"),
                           tmp_path / "run-t1")
    arts = by_format(tgt)
    assert tcode == 0 and arts["savedmodel"]["verified"]
    assert arts["keras"]["written"] and arts["keras"]["verified"] is False
    assert arts["keras"]["max_abs_diff"] > 1e-3 and arts["keras"]["why_not"] is None
    variables = tmp_path / "source" / "inference.savedmodel" / "variables"
    for f in variables.iterdir():
        f.unlink()
    tcode, tgt = run_entry(target, "migrate.target",
                           target_plan(plan, tmp_path / "source", tmp_path / "t2"),
                           tmp_path / "run-t2")
    arts = by_format(tgt)
    assert tcode == 6 and not tgt["ok"]
    assert arts["keras"]["verified"] is False and arts["savedmodel"]["verified"] is False
    assert arts["savedmodel"]["why_not"]


LAMBDA_FRESH = textwrap.dedent('''
    import sys
    import numpy as np
    import keras
    sys.path.insert(0, sys.argv[1])
    import m_lambdas        # registers the rebuilt function by name
    model = keras.models.load_model(sys.argv[2], safe_mode=True)
    np.save(sys.argv[3], np.asarray(model.predict(np.load(sys.argv[4]), verbose=0)))
''')


def test_tf28_lambda_is_rebuilt_from_the_recorded_source(tf28, target, tmp_path):
    """The capture recorded the Lambda's source (its bytecode is Python 3.9's): the .keras holds
    a registered function of m_lambdas.py instead, loads with safe_mode=True in a fresh process
    and reproduces the reference; the SavedModel is verified too."""
    cap, _ = train_and_capture(tf28, tmp_path, "lambda", "lam.h5")
    (record,) = cap.get("load.lambdas")
    assert record["source"] == "lambda t: t * 2.0 + 1.0" and record["python"] == "3.9", record
    _, tgt, tcode, plan = migrate(tf28, target, cap, tmp_path)
    arts = by_format(tgt)
    assert tcode == 0 and arts["savedmodel"]["verified"]
    k = arts["keras"]
    assert k["verified"] and k["code"] == "m_lambdas.py", k
    assert any("rebuilt from the source the capture recorded" in t for t in k["translated"]), k
    assert k["custom_objects"] == {"m_lambdas>fn_lambda": "m_lambdas:fn_lambda"}, k
    import zipfile

    with zipfile.ZipFile(tmp_path / "target" / "m.keras") as z:
        assert "__lambda__" not in z.read("config.json").decode()     # no bytecode
    out = tmp_path / "fresh.npy"
    proc = subprocess.run([target, "-c", LAMBDA_FRESH, str(tmp_path / "target"),
                           str(tmp_path / "target" / "m.keras"), str(out),
                           plan["reference"]["inputs"][0]], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(np.load(out), np.load(plan["reference"]["outputs"][0]), **TOL)


def test_tf28_lambda_without_a_recorded_source_stays_blocked(tf28, target, tmp_path):
    cap, _ = train_and_capture(tf28, tmp_path, "lambda", "lam.h5")
    plan = source_plan(cap, tmp_path / "source")
    code, _ = run_entry(tf28, "migrate.source", plan, tmp_path / "run-source")
    assert code == 0
    tcode, tgt = run_entry(target, "migrate.target",
                           target_plan(plan, tmp_path / "source", tmp_path / "target"),
                           tmp_path / "run-target")
    arts = by_format(tgt)
    assert tcode == 0 and arts["savedmodel"]["verified"]
    assert arts["keras"]["written"] is False
    assert "the capture recorded no source for it" in arts["keras"]["why_not"]


def test_tf28_addons_group_norm_and_gelu_become_core_keras(tf28_addons, target, tmp_path):
    cap, trained = train_and_capture(tf28_addons, tmp_path, "addons", "addons.h5")
    src, tgt, tcode, plan = migrate(tf28_addons, target, cap, tmp_path)
    assert src["optimizer"]["class"] == "AdamW"
    assert_verified(tgt, tcode, 8)
    replaced = by_format(tgt)["keras"]["replaced"]
    assert "Addons>GroupNormalization -> keras.layers.GroupNormalization" in replaced
    assert any(r.startswith("Addons>gelu -> keras.activations.gelu(approximate=True)")
               for r in replaced)
    assert tgt["optimizer"]["class"] == "AdamW" and tgt["optimizer"]["replaced"]
    import zipfile

    with zipfile.ZipFile(tmp_path / "target" / "m.keras") as z:
        assert "Addons" not in z.read("config.json").decode()   # core Keras only


def test_tf28_addons_weight_normalization_becomes_its_inner_layer(tf28_addons, target, tmp_path):
    """tfa WeightNormalization around a Conv2D (data_init) and a Dense: each becomes its inner
    layer with the kernel tfa computes; the .keras is verified and holds no Addons object; the
    optimizer is compiled fresh, its state not carried, and the report says why."""
    cap, _ = train_and_capture(tf28_addons, tmp_path, "weightnorm", "wn.h5")
    src, tgt, tcode, plan = migrate(tf28_addons, target, cap, tmp_path)
    k = by_format(tgt)["keras"]
    assert tcode == 0 and k["verified"] and k["max_abs_diff"] <= 1e-5, k
    assert sum("Addons>WeightNormalization(" in r for r in k["replaced"]) == 2, k["replaced"]
    opt = tgt["optimizer"]
    assert not opt["carried"] and "WeightNormalization" in opt["why_not"], opt
    import zipfile

    with zipfile.ZipFile(tmp_path / "target" / "m.keras") as z:
        assert "Addons" not in z.read("config.json").decode()
    fresh_process_agrees(target, plan, tmp_path)


@pytest.mark.py38
def test_tf24_to_keras3(tf24, target, tmp_path):
    cap, trained = train_and_capture(tf24, tmp_path, "sequential", "seq.h5")
    src, tgt, tcode, plan = migrate(tf24, target, cap, tmp_path)
    assert src["versions"]["tensorflow"] == "2.4.1" and src["versions"]["python"].startswith("3.8")
    assert_verified(tgt, tcode, 8)
    fresh_process_agrees(target, plan, tmp_path)


def test_keras3_to_keras3(target, tmp_path):
    """A .keras model of this very Keras: nothing to translate, the optimizer state carried.
    Its custom layer edited after the capture, the source doesn't reproduce: exit 6 and nothing
    but source.json written."""
    cap, trained = train_and_capture(target, tmp_path, "functional", "func.keras")
    src, tgt, tcode, plan = migrate(target, target, cap, tmp_path)
    assert src["savedmodel"]["via"] == "keras.export.ExportArchive"
    assert_verified(tgt, tcode, 8)
    assert by_format(tgt)["keras"]["translated"] == []
    fresh_process_agrees(target, plan, tmp_path)

    layer = cap.root / "snapshot" / "custom_layers.py"
    layer.write_text(layer.read_text().replace("return tf.matmul(inputs, self.w) + self.b",
                                               "return tf.matmul(inputs, self.w) + self.b + 1.0"))
    drifted = source_plan(cap, tmp_path / "drifted")
    code, rep = run_entry(target, "migrate.source", drifted, tmp_path / "run-drifted")
    assert code == 6 and rep["reference"]["allclose"] is False and rep["mismatches"]
    assert sorted(os.listdir(tmp_path / "drifted")) == ["source.json"]


def run_bare(python, entry, plan, folder):
    """An entry point on a plan given whole in $ENVREPRO_PLAN."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ENVREPRO_DEBUG")}
    proc = subprocess.run(launch.host_argv(python, entry), capture_output=True, text=True,
                          env=dict(env, ENVREPRO_PLAN=json.dumps(plan)), timeout=300,
                          cwd=str(folder))
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX), (proc.stdout, proc.stderr[-2000:])
    return proc.returncode, json.loads(lines[0][len(PREFIX):])


def test_unusable_plans_and_sources(target, tmp_path):
    code, rep = run_bare(target, "migrate.target", {"out": str(tmp_path / "o")}, tmp_path)
    assert code == 70 and rep["error"]["type"] == "PlanError" and "source_dir" in \
        rep["error"]["first_line"]
    code, rep = run_bare(target, "migrate.target", {"source_dir": str(tmp_path / "none"),
                                                    "out": str(tmp_path / "o")}, tmp_path)
    assert code == 5 and rep["error"]["type"] == "SourceUnusable" and rep["artifacts"] == []
    code, rep = run_bare(target, "migrate.source", {"model_path": str(tmp_path / "m.h5")}, tmp_path)
    assert code == 70 and "migrate.out" in rep["error"]["first_line"]
    code, rep = run_bare(target, "migrate.source", {"model_path": str(tmp_path / "m.h5"),
                                                    "migrate": {"out": str(tmp_path / "s")}},
                         tmp_path)
    assert code == 5 and rep["error"]["stage"] == "load"
    assert json.loads((tmp_path / "s" / "source.json").read_text())["exit_code"] == 5
    assert sorted(os.listdir(tmp_path / "s")) == ["source.json"]
