"""runtime/savedinputs.py: the reference input of a subclassed model that TF 2.4's ``load_model``
rebuilds from its config and leaves unbuilt, read from the SavedModel's traced call.

Real Python 3.8 + tensorflow-cpu 2.4.1: registered subclassed models with ``from_config`` (one
input; a dict of a float and an int input) trained and saved as SavedModels, captured with
``envrepro capture --python`` (which used to skip the reference: "the model has no defined
inputs"), then loaded by the loader on the host under the same interpreter, which compares.
The reader itself on the same models saved by TF 2.8.4 (Python 3.9)."""
import json
import os
import subprocess
import textwrap

import pytest

from envrepro.sidecar import layout, manifest
from support import REPO, envrepro_cli
from tf_helpers import run_loader

pytestmark = [pytest.mark.tf]

NETS = '''
import tensorflow as tf

register = tf.keras.utils.register_keras_serializable(package="nets")


@register
class OneInput(tf.keras.Model):
    def __init__(self, units=8, **kwargs):
        super(OneInput, self).__init__(**kwargs)
        self.units = units
        self.hidden = tf.keras.layers.Dense(units, activation="tanh")
        self.head = tf.keras.layers.Dense(1)

    def call(self, inputs):
        return self.head(self.hidden(inputs))

    def get_config(self):
        return {"units": self.units, "name": self.name}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


@register
class TwoInputs(OneInput):
    def call(self, inputs):
        both = tf.concat([inputs["a"], tf.cast(inputs["b"], tf.float32)], axis=-1)
        return self.head(self.hidden(both))
'''

MAKE = '''
import os, sys
import numpy as np
import tensorflow as tf
import nets

out = sys.argv[1]
tf.random.set_seed(0)
rng = np.random.RandomState(0)
y = rng.rand(16, 1).astype("float32")
one = nets.OneInput(units=8)
one.compile(optimizer="adam", loss="mse")
one.fit(rng.rand(16, 4).astype("float32"), y, batch_size=8, verbose=0)
one.save(os.path.join(out, "one"), save_format="tf")
two = nets.TwoInputs(units=8)
two.compile(optimizer="adam", loss="mse")
two.fit({"a": rng.rand(16, 3).astype("float32"), "b": rng.randint(0, 3, (16, 2)).astype("int32")},
        y, batch_size=8, verbose=0)
two.save(os.path.join(out, "two"), save_format="tf")
'''

READ = '''
import json, sys
sys.path.insert(0, sys.argv[2])
from envrepro.runtime.savedinputs import saved_input_specs
print(json.dumps(saved_input_specs(sys.argv[1])))
'''


def _make(python, folder):
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "nets.py").write_text(NETS)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(folder / "code"))
    proc = subprocess.run([python, "-c", textwrap.dedent(MAKE), str(folder)], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def tf24_nets(py38_tf24, tmp_path_factory):
    """The two models under TF 2.4.1, each captured with --python; name -> (path, capture run)."""
    folder = _make(py38_tf24, tmp_path_factory.mktemp("tf24nets"))
    return dict((name, (folder / name, envrepro_cli(
        "capture", folder / name, "--python", py38_tf24, "--code-path", folder / "code",
        "--module", "nets", env={"ENVREPRO_OFFLINE": "1"}))) for name in ("one", "two"))


def _read(python, model):
    proc = subprocess.run([python, "-c", READ, str(model), str(REPO)], capture_output=True,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _captured(tf24_nets, name):
    model, run = tf24_nets[name]
    assert run.returncode == 0, run.stderr[-3000:]
    return manifest.read(layout.sidecar_for(model))


def test_tf24_single_input_subclassed_savedmodel_gets_a_reference(py38_tf24, tf24_nets, tmp_path):
    cap = _captured(tf24_nets, "one")
    d = cap.data
    assert d["frameworks"]["tensorflow"] == "2.4.1" and d["load"]["recipe"] == "custom_objects"
    assert d["reference_skipped"] is None
    ref = d["reference"]
    assert ref["input_structure"] == "single" and ref["seeded"] is True
    assert ref["inputs"] == ["reference/input_0.npy"] and ref["outputs"] == ["reference/output_0.npy"]
    code, rep = run_loader(py38_tf24, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    assert rep["reference"]["allclose"] and rep["reference"]["max_abs_diff"] == 0
    assert rep["reference"]["shapes"] == {"expected": [[2, 1]], "got": [[2, 1]]}


def test_tf24_dict_input_subclassed_savedmodel_keeps_names_and_dtypes(py38_tf24, tf24_nets, tmp_path):
    import numpy as np

    cap = _captured(tf24_nets, "two")
    ref = cap.data["reference"]
    assert cap.data["reference_skipped"] is None
    assert ref["input_structure"] == "dict" and ref["input_names"] == ["a", "b"]
    a, b = (np.load(cap.root / f) for f in ref["inputs"])
    assert a.shape == (2, 3) and a.dtype == np.float32
    assert b.shape == (2, 2) and b.dtype == np.int32
    code, rep = run_loader(py38_tf24, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    assert rep["reference"]["allclose"] and rep["reference"]["max_abs_diff"] == 0


def test_reader_on_tf24_and_tf28_savedmodels(py38_tf24, py39_tf28, tf24_nets, tmp_path):
    """What the reader returns, on the TF 2.4 files and on the same models saved by TF 2.8 (whose
    object graph keeps the call's signature in its concrete functions only)."""
    tf28 = _make(py39_tf28, tmp_path / "tf28")
    for python, folder in ((py38_tf24, tf24_nets["one"][0].parent), (py39_tf28, tf28)):
        assert _read(python, folder / "one") == ["single", ["input_1"], [[[None, 4], "float32"]]]
        assert _read(python, folder / "two") == ["dict", ["a", "b"], [[[None, 3], "float32"],
                                                                      [[None, 2], "int32"]]]
    assert _read(py39_tf28, tmp_path / "no_such_model") is None
