"""The runtime probe against real TensorFlow.

In this interpreter (TF >= 2.16, Keras 3): the in-process path the save hook takes, with custom
objects written as module files. Under Python 3.8 + TF 2.4.1: the probe's entry point (launch.host_argv) on a
SavedModel with a custom layer and on an H5 Adam model, plus the in-process path on tf.keras 2.
"""
import importlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from envrepro.runtime import launch, modulesources, probe

from tf_helpers import LOSSES_KERAS3

pytestmark = pytest.mark.tf

REPO = Path(__file__).resolve().parents[2]
PY38 = os.environ.get("ENVREPRO_TEST_PY38", "")
CI = os.environ.get("CI", "").lower() == "true"

keras = pytest.importorskip("keras") if not CI else __import__("keras")
np = pytest.importorskip("numpy")


def _keras3():
    return int(keras.__version__.split(".")[0]) >= 3


needs_keras3 = pytest.mark.skipif(not _keras3(), reason="needs Keras 3")


CUSTOM_LAYERS = '''
import keras
from keras import ops
from p3_helpers import STDDEV


def scaled_tanh(x):
    return 1.7159 * ops.tanh(0.6666 * x)


class SmallInit(keras.initializers.Initializer):
    def __call__(self, shape, dtype=None):
        return keras.random.normal(shape, stddev=STDDEV, dtype=dtype, seed=1)

    def get_config(self):
        return {}


class MyCustomLayer(keras.layers.Layer):
    def __init__(self, units=64, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(name="kernel", shape=(int(input_shape[-1]), self.units),
                                 initializer=SmallInit())
        self.b = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, x):
        return ops.matmul(x, self.w) + self.b

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        cfg = super().get_config()
        cfg["units"] = self.units
        return cfg


class Block(keras.layers.Layer):
    """A layer holding another custom layer in an attribute."""

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.inner = MyCustomLayer(units)

    def call(self, x):
        return scaled_tanh(self.inner(x))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        cfg = super().get_config()
        cfg["units"] = self.units
        return cfg
'''

# Huberish (registered as team>Huberish) from tf_helpers, plus a registered function and a schedule.
LOSSES = LOSSES_KERAS3 + '''

@keras.saving.register_keras_serializable(package="team")
def peak_error(y_true, y_pred):
    return ops.max(ops.abs(y_true - y_pred), axis=-1)


class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, rate=0.01):
        self.rate = rate

    def __call__(self, step):
        return self.rate * ops.minimum(1.0, ops.cast(step + 1, "float32") / 10.0)

    def get_config(self):
        return {"rate": self.rate}
'''


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """Write the user's modules as files in a code folder, importable like in a project."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "p3_layers.py").write_text(textwrap.dedent(CUSTOM_LAYERS))
    (code / "p3_losses.py").write_text(textwrap.dedent(LOSSES))
    (code / "p3_helpers.py").write_text("STDDEV = 0.01\n")
    pkg = code / "p3pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "acts.py").write_text(
        "from keras import ops\nfrom ..helpers import K\n\n"
        "def shifted_relu(x):\n    return ops.relu(x) - K\n")
    (pkg / "helpers.py").write_text("K = 0.5\n")
    monkeypatch.syspath_prepend(str(code))
    names = ("p3_layers", "p3_losses", "p3_helpers", "p3pkg", "p3pkg.sub", "p3pkg.sub.acts", "p3pkg.helpers")
    for n in names:
        sys.modules.pop(n, None)
    yield code
    for n in names:
        sys.modules.pop(n, None)
    _forget_registrations(names)


def _forget_registrations(modules):
    """Keras' registry is process-global: the user modules' registrations (team>peak_error...)
    would otherwise show up as registered custom objects in later tests' captures."""
    try:
        from keras.src.saving import object_registration as reg
    except ImportError:
        return
    for key, obj in list(reg.GLOBAL_CUSTOM_OBJECTS.items()):
        if getattr(obj, "__module__", "").split(".")[0] in {m.split(".")[0] for m in modules}:
            reg.GLOBAL_CUSTOM_OBJECTS.pop(key, None)
            reg.GLOBAL_CUSTOM_NAMES.pop(obj, None)


def _by_name(facts):
    return {o["name"]: o for o in facts["custom_objects"]}


def _load_ref(out, facts):
    ref = facts["reference"]
    ins = [np.load(out / "reference" / f) for f in ref["inputs"]]
    outs = [np.load(out / "reference" / f) for f in ref["outputs"]]
    return ref, ins, outs


# --- Keras 3, in-process (the save hook's path) ---------------------------------------------


@needs_keras3
def test_custom_layers_nested_and_wrapped(user_modules, tmp_path):
    layers = importlib.import_module("p3_layers")
    acts = importlib.import_module("p3pkg.sub.acts")
    inner_in = keras.Input((6,))
    inner = keras.Model(inner_in, layers.Block(5)(inner_in), name="inner")
    inp = keras.Input((3, 6), name="seq")
    x = keras.layers.TimeDistributed(layers.MyCustomLayer(6))(inp)
    x = keras.layers.TimeDistributed(inner)(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(2, activation=acts.shifted_relu,
                             kernel_initializer=layers.SmallInit())(x)
    model = keras.Model(inp, out)
    path = tmp_path / "m.keras"
    model.save(path)

    facts = probe.collect(str(path), str(tmp_path / "out"), model=model)
    objs = _by_name(facts)
    assert objs["MyCustomLayer"]["module"] == "p3_layers"
    assert objs["MyCustomLayer"]["kind"] == "layer" and objs["MyCustomLayer"]["attr"] == "MyCustomLayer"
    assert objs["MyCustomLayer"]["file"] == str(user_modules / "p3_layers.py")
    assert objs["MyCustomLayer"]["distribution"] is None
    assert objs["Block"]["kind"] == "layer"
    assert objs["SmallInit"]["kind"] == "initializer"
    assert "scaled_tanh" not in objs  # only called in Block.call: Keras never looks it up
    assert objs["shifted_relu"]["kind"] == "activation"
    assert objs["shifted_relu"]["module"] == "p3pkg.sub.acts"
    assert not any(o["module"].startswith(("keras", "tensorflow")) for o in facts["custom_objects"])

    mods = {m["module"]: m for m in facts["modules"]}
    assert mods["p3_layers"]["root"] == str(user_modules / "p3_layers.py")
    assert mods["p3_layers"]["source_root"] == str(user_modules)
    assert mods["p3_layers"]["top"] == "p3_layers" and mods["p3_layers"]["distribution"] is None
    # A module inside a package: the whole top-level package is the root (relative imports).
    assert mods["p3pkg.sub.acts"]["top"] == "p3pkg"
    assert mods["p3pkg.sub.acts"]["root"] == str(user_modules / "p3pkg")
    assert mods["p3pkg.sub.acts"]["source_root"] == str(user_modules)
    # A plain module imported by the custom layer file, next to it: needed at load time too.
    assert mods["p3_helpers"]["via"] == "sibling"
    assert mods["p3_helpers"]["root"] == str(user_modules / "p3_helpers.py")
    assert mods["p3_layers"]["via"] == "custom_object"

    assert facts["model"] == {"path": str(path), "format": "keras", "class_name": "Functional",
                              "loaded_by_probe": False, "compile": False}
    assert facts["frameworks"]["keras_flavor"] == "keras3"
    assert facts["frameworks"]["keras"] == keras.__version__
    ref, ins, outs = _load_ref(tmp_path / "out", facts)
    assert ref["input_structure"] == "single" and ref["input_names"] == ["seq"]
    assert ins[0].shape == (2, 3, 6) and outs[0].shape == (2, 2)
    np.testing.assert_allclose(np.asarray(model(ins[0], training=False)), outs[0], rtol=1e-6)
    assert facts["optimizer"] is None and facts["reference_skipped"] is None
    assert json.loads((tmp_path / "out" / "facts.json").read_text()) == facts


@needs_keras3
def test_registered_loss_metric_and_schedule(user_modules, tmp_path):
    losses = importlib.import_module("p3_losses")
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    model.compile(optimizer=keras.optimizers.Adam(losses.WarmUp(0.02)), loss=losses.Huberish(0.5),
                  metrics=[losses.peak_error, "mae"])
    model.fit(np.random.rand(20, 4).astype("float32"), np.random.rand(20, 1).astype("float32"),
              batch_size=10, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)

    facts = probe.collect(str(path), str(tmp_path / "out"), model=model)
    objs = _by_name(facts)
    assert objs["team>Huberish"]["attr"] == "Huberish" and objs["team>Huberish"]["kind"] == "loss"
    assert objs["team>Huberish"]["module"] == "p3_losses"
    assert objs["team>peak_error"]["kind"] == "metric"
    assert objs["WarmUp"]["kind"] == "schedule"
    opt = facts["optimizer"]
    assert opt["class"] == "Adam" and opt["iterations"] == 2
    assert opt["state_saved"] is True and opt["state_saved_exact"] is True and opt["num_weights"] > 0
    assert opt["config"]["learning_rate"]["class_name"] == "WarmUp"
    assert facts["model"]["compile"] is True
    json.dumps(facts)


@needs_keras3
def test_registry_entries_from_user_code_are_reported_even_if_unused(user_modules, tmp_path):
    importlib.import_module("p3_losses")
    inp = keras.Input((2,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    facts = probe.collect(str(tmp_path / "m.keras"), str(tmp_path / "out"), model=model)
    objs = _by_name(facts)
    assert objs["team>Huberish"]["kind"] == "loss"
    assert objs["team>peak_error"]["kind"] == "registered"


@needs_keras3
def test_multi_input_dict_and_list_outputs(tmp_path):
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b", dtype="int32")
    emb = keras.layers.Flatten()(keras.layers.Embedding(4, 2)(b))
    x = keras.layers.Concatenate()([a, emb])
    out1 = keras.layers.Dense(2, name="head1")(x)
    out2 = keras.layers.Dense(1, name="head2")(x)
    model = keras.Model({"a": a, "b": b}, [out1, out2])
    facts = probe.collect(str(tmp_path / "m.keras"), str(tmp_path / "out"), model=model)
    ref, ins, outs = _load_ref(tmp_path / "out", facts)
    assert ref["input_structure"] == "dict" and sorted(ref["input_names"]) == ["a", "b"]
    assert ref["output_structure"] == "list" and ref["output_names"] == ["head1", "head2"]
    assert ref["seeded"] is True and ref["seed"] == probe.DEFAULT_SEED
    assert ref["tolerance"] == {"atol": 1e-5, "rtol": 1e-4}
    feed = dict(zip(ref["input_names"], ins))
    assert feed["b"].dtype == np.int32 and feed["a"].shape == (2, 3)
    again = model(feed, training=False)
    for want, got in zip(outs, again):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
    # Same seed, same sample: the reference is reproducible.
    facts2 = probe.collect(str(tmp_path / "m.keras"), str(tmp_path / "out2"), model=model)
    _, ins2, _ = _load_ref(tmp_path / "out2", facts2)
    for x1, x2 in zip(ins, ins2):
        np.testing.assert_array_equal(x1, x2)


@needs_keras3
def test_user_sample_list_input(tmp_path):
    a, b = keras.Input((3,)), keras.Input((2,))
    model = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()([a, b])))
    sample = [np.ones((5, 3), "float32"), np.zeros((5, 2), "float32")]
    facts = probe.collect(str(tmp_path / "m.keras"), str(tmp_path / "out"), model=model,
                          sample_input=sample)
    ref, ins, outs = _load_ref(tmp_path / "out", facts)
    assert ref["input_structure"] == "list" and ref["seeded"] is False and ref["seed"] is None
    assert [x.shape for x in ins] == [(5, 3), (5, 2)] and outs[0].shape == (5, 1)


@needs_keras3
def test_undefined_shapes_get_a_length_and_unknown_inputs_skip_reference(tmp_path):
    class Sub(keras.Model):
        def call(self, x):
            return x * 2.0

    inp = keras.Input((None, 3))
    varlen = keras.Model(inp, keras.layers.Dense(1)(inp))
    facts = probe.collect(str(tmp_path / "v.keras"), str(tmp_path / "o1"), model=varlen)
    ref, ins, outs = _load_ref(tmp_path / "o1", facts)
    assert ref["free_dimension"] == 8 and ins[0].shape == (2, 8, 3) and outs[0].shape == (2, 8, 1)
    facts = probe.collect(str(tmp_path / "s.keras"), str(tmp_path / "o2"), model=Sub())
    assert facts["reference"] is None and "--sample" in facts["reference_skipped"]
    assert not (tmp_path / "o2" / "reference").exists()


@needs_keras3
def test_float16_tolerance_and_h5_optimizer_state(tmp_path):
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2, dtype="float16")(inp))
    model.compile("adam", "mse")
    model.fit(np.random.rand(8, 4), np.random.rand(8, 2), epochs=1, verbose=0)
    path = tmp_path / "m.h5"
    model.save(path)
    facts = probe.collect(str(path), str(tmp_path / "out"), model=model)
    assert facts["reference"]["tolerance"]["atol"] >= 1e-3
    assert facts["model"]["format"] == "h5"
    assert facts["optimizer"]["state_saved_exact"] is True


@needs_keras3
def test_main_module_objects_warn(tmp_path):
    class MainLayer(keras.layers.Layer):
        def call(self, x):
            return x

    MainLayer.__module__ = "__main__"
    MainLayer.__qualname__ = "MainLayer"
    inp = keras.Input((2,))
    model = keras.Model(inp, MainLayer()(inp))
    facts = probe.collect(str(tmp_path / "m.keras"), str(tmp_path / "out"), model=model)
    objs = _by_name(facts)
    assert objs["MainLayer"]["module"] == "__main__"
    assert any("__main__" in w and "importable" in w for w in facts["warnings"])
    mods = {m["module"]: m for m in facts["modules"]}
    assert mods["__main__"]["top"] == "__main__"
    assert mods["__main__"]["file"] == modulesources.module_file("__main__")


@needs_keras3
def test_collect_is_fast_on_a_medium_model(tmp_path, monkeypatch):
    """Without the optimizer-restore copy (runtime/restored.py, bounded by
    ENVREPRO_RESTORED_MAX_BYTES): that load of the saved file is the hook's one deliberate cost
    beyond reading facts, measured by benchmarks/capture_bench.py, not here."""
    monkeypatch.setenv("ENVREPRO_RESTORED_MAX_BYTES", "0")
    inp = keras.Input((32,))
    x = inp
    for _ in range(40):
        x = keras.layers.Dense(32, activation="relu")(x)
    model = keras.Model(inp, keras.layers.Dense(1)(x))
    model.compile("adam", "mse")
    path = tmp_path / "m.keras"
    model.save(path)
    probe.collect(str(path), str(tmp_path / "warm"), model=model)
    t = time.perf_counter()
    probe.collect(str(path), str(tmp_path / "out"), model=model)
    assert time.perf_counter() - t < 0.5


@needs_keras3
def test_script_keras3(user_modules, tmp_path):
    importlib.import_module("p3_layers")
    layers = sys.modules["p3_layers"]
    inp = keras.Input((6,))
    model = keras.Model(inp, layers.MyCustomLayer(3)(inp))
    model.compile("adam", "mse")
    path = tmp_path / "m.keras"
    model.save(path)
    out = tmp_path / "out"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("ENVREPRO_DEBUG", None)
    proc = subprocess.run(launch.host_argv(sys.executable, "probe", [
                           "--model", path, "--out", out, "--module", "p3_layers", "--code-path", user_modules]),
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == str(out / "facts.json") + "\n"  # nothing else on stdout
    facts = json.loads((out / "facts.json").read_text())
    assert facts["model"]["loaded_by_probe"] is True and facts["model"]["compile"] is True
    assert _by_name(facts)["MyCustomLayer"]["file"] == str(user_modules / "p3_layers.py")
    ref, ins, outs = _load_ref(out, facts)
    np.testing.assert_allclose(np.asarray(model(ins[0])), outs[0], rtol=1e-5, atol=1e-6)

    # The same model without its module: load fails, one line with the fix.
    proc = subprocess.run(launch.host_argv(sys.executable, "probe", ["--model", path, "--out", tmp_path / "o2"]),
                          capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("envrepro-probe: error: cannot load") and "--module" in last
    assert "Traceback" not in proc.stderr


@needs_keras3
def test_script_legacy_savedmodel_under_keras3(tmp_path):
    sm = tmp_path / "old_model"
    (sm / "variables").mkdir(parents=True)
    (sm / "saved_model.pb").write_bytes(b"\x08\x01")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.run(launch.host_argv(sys.executable, "probe", ["--model", sm, "--out", tmp_path / "out"]),
                          capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("envrepro-probe: error: ")
    assert "TFSMLayer" in line and "TF_USE_LEGACY_KERAS" in line


# --- TensorFlow 2.4.1 under Python 3.8 --------------------------------------------------------

MAKE_TF24 = '''
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
out = sys.argv[1]
sys.path.insert(0, os.path.join(out, "code"))
import numpy as np
import tensorflow as tf
from custom_layers import MyCustomLayer

rng = np.random.RandomState(0)
m = tf.keras.Sequential([tf.keras.Input((8,)), MyCustomLayer(units=64), tf.keras.layers.Dense(1)])
m.compile(optimizer="adam", loss="mse")
m.fit(rng.rand(32, 8).astype("float32"), rng.rand(32, 1).astype("float32"), batch_size=8,
      epochs=1, verbose=0)
m.save(os.path.join(out, "custom_model"))

a = tf.keras.Sequential([tf.keras.Input((5,)), tf.keras.layers.Dense(3, activation="relu"),
                         tf.keras.layers.Dense(1)])
a.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
a.fit(rng.rand(64, 5).astype("float32"), rng.rand(64, 1).astype("float32"), batch_size=8,
      epochs=1, verbose=0)
a.save(os.path.join(out, "adam_model.h5"))
'''

TF24_LAYER = '''
import tensorflow as tf


class MyCustomLayer(tf.keras.layers.Layer):
    def __init__(self, units=64, **kwargs):
        super(MyCustomLayer, self).__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(name="kernel", shape=(int(input_shape[-1]), self.units),
                                 initializer="random_normal", trainable=True)
        self.b = self.add_weight(name="bias", shape=(self.units,), initializer="zeros",
                                 trainable=True)
        super(MyCustomLayer, self).build(input_shape)

    def call(self, inputs):
        return tf.matmul(inputs, self.w) + self.b

    def get_config(self):
        config = super(MyCustomLayer, self).get_config()
        config.update({"units": self.units})
        return config
'''

INPROC_TF24 = '''
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
out = sys.argv[1]
sys.path.insert(0, sys.argv[2])
sys.path.insert(0, os.path.join(out, "code"))
import numpy as np
import tensorflow as tf
from custom_layers import MyCustomLayer
from envrepro.runtime import probe

@tf.keras.utils.register_keras_serializable(package="team")
class Huberish(tf.keras.losses.Loss):
    def call(self, y_true, y_pred):
        return tf.reduce_mean(tf.abs(y_true - y_pred), axis=-1)

a = tf.keras.Input((3,), name="a")
b = tf.keras.Input((8,), name="b")
x = tf.keras.layers.Concatenate()([a, MyCustomLayer(units=4)(b)])
model = tf.keras.Model({"a": a, "b": b}, tf.keras.layers.Dense(1)(x))
model.compile(optimizer="adam", loss=Huberish())
model.fit({"a": np.zeros((4, 3)), "b": np.zeros((4, 8))}, np.zeros((4, 1)), verbose=0)
path = os.path.join(out, "dict_model.h5")
model.save(path)
facts = probe.collect(path, os.path.join(out, "inproc"), model=model)
print(json.dumps(facts))
'''


@pytest.fixture(scope="module")
def py38(request):
    if os.path.exists(PY38):
        return PY38
    return request.getfixturevalue("py38_tf24")  # builds the cached venv, or skips / fails in CI


@pytest.fixture(scope="module")
def tf24_models(py38, tmp_path_factory):
    out = tmp_path_factory.mktemp("tf24")
    (out / "code").mkdir()
    (out / "code" / "custom_layers.py").write_text(TF24_LAYER)
    (out / "make.py").write_text(MAKE_TF24)
    proc = subprocess.run([py38, str(out / "make.py"), str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _run_py38(py38, *args):
    env = dict(os.environ)
    env.pop("ENVREPRO_DEBUG", None)
    env.pop("PYTHONPATH", None)
    return subprocess.run(launch.host_argv(py38, "probe", args), capture_output=True,
                          text=True, env=env, timeout=600)


def test_tf24_savedmodel_custom_layer_script(py38, tf24_models):
    out = tf24_models / "out_sm"
    proc = _run_py38(py38, "--model", tf24_models / "custom_model", "--out", out,
                     "--module", "custom_layers", "--code-path", tf24_models / "code")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == str(out / "facts.json") + "\n"
    facts = json.loads((out / "facts.json").read_text())
    assert facts["python"]["version"].startswith("3.8.")
    fw = facts["frameworks"]
    assert fw["tensorflow"] == "2.4.1" and fw["tensorflow_distribution"] == "tensorflow-cpu"
    assert fw["keras_flavor"] == "tf.keras" and fw["keras"] == "2.4.0"
    assert fw["git_version"].startswith("v2.4.") and fw["build"].get("is_cuda_build") is False
    dists = {d["name"]: d for d in facts["distributions"]}
    assert dists["numpy"]["version"] == "1.19.5" and dists["h5py"]["version"] == "2.10.0"
    assert dists["termcolor"]["metadata_dir"].endswith(".egg-info")  # egg-info in TF 2.4 venvs
    assert facts["model"] == {"path": str(tf24_models / "custom_model"), "format": "savedmodel",
                              "class_name": "Sequential", "loaded_by_probe": True,
                              "compile": True}
    assert facts["custom_objects"] == [{
        "name": "MyCustomLayer", "module": "custom_layers", "attr": "MyCustomLayer",
        "kind": "layer", "file": str(tf24_models / "code" / "custom_layers.py"),
        "distribution": None}]
    mod = facts["modules"][0]
    assert mod["module"] == "custom_layers" and mod["root"] == mod["file"]
    assert mod["source_root"] == str(tf24_models / "code")
    ref, ins, outs = _load_ref(out, facts)
    assert ins[0].shape == (2, 8) and ins[0].dtype == np.float32 and outs[0].shape == (2, 1)
    opt = facts["optimizer"]
    assert opt["class"] == "Adam" and opt["iterations"] == 4
    assert opt["state_saved"] is True and opt["state_saved_exact"] is True


def test_tf24_savedmodel_without_module_reports_revived_layer(py38, tf24_models):
    out = tf24_models / "out_revived"
    proc = _run_py38(py38, "--model", tf24_models / "custom_model", "--out", out)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads((out / "facts.json").read_text())
    assert facts["unresolved_custom_objects"] == ["MyCustomLayer"]
    assert facts["custom_objects"] == []
    assert any("MyCustomLayer" in w and "--module" in w for w in facts["warnings"])


def test_tf24_h5_adam_script(py38, tf24_models):
    out = tf24_models / "out_h5"
    proc = _run_py38(py38, "--model", tf24_models / "adam_model.h5", "--out", out)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads((out / "facts.json").read_text())
    assert facts["model"]["format"] == "h5" and facts["model"]["compile"] is True
    assert facts["custom_objects"] == [] and facts["modules"] == []
    opt = facts["optimizer"]
    assert opt["class"] == "Adam" and opt["module"].startswith("tensorflow.python.keras")
    assert opt["iterations"] == 8 and opt["num_weights"] == 9
    assert opt["state_saved"] is True and opt["state_saved_exact"] is True
    assert abs(opt["config"]["learning_rate"] - 0.001) < 1e-9
    assert facts["warnings"] == []


def test_tf24_inprocess_dict_inputs_and_registered_loss(py38, tf24_models):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    (tf24_models / "inproc.py").write_text(INPROC_TF24)
    proc = subprocess.run([py38, str(tf24_models / "inproc.py"), str(tf24_models), str(REPO)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    objs = _by_name(facts)
    assert objs["team>Huberish"]["kind"] == "loss" and objs["team>Huberish"]["module"] == "__main__"
    assert objs["MyCustomLayer"]["kind"] == "layer"
    assert any("__main__" in w for w in facts["warnings"])
    ref = facts["reference"]
    assert ref["input_structure"] == "dict" and sorted(ref["input_names"]) == ["a", "b"]
    assert facts["optimizer"]["iterations"] == 1 and facts["optimizer"]["state_saved"] is True
    assert facts["model"]["compile"] is True and facts["model"]["loaded_by_probe"] is False


@needs_keras3
def test_tf24_h5_loaded_by_keras3_falls_back_to_compile_false(tf24_models, tmp_path):
    """Failure class 4c (docs/failures.md): a Keras-2 training config doesn't deserialize in Keras 3."""
    out = tmp_path / "out"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(launch.host_argv(sys.executable, "probe", ["--model", tf24_models / "adam_model.h5",
                                                                      "--out", out]),
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads((out / "facts.json").read_text())
    assert facts["model"]["loaded_by_probe"] is True and facts["model"]["compile"] is False
    assert any("compile=False" in w for w in facts["warnings"])
    assert facts["optimizer"] is None and facts["reference"]["outputs"] == ["output_0.npy"]
