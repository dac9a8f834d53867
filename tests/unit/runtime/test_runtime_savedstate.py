"""What optimizer state a saved file holds (envrepro/runtime/savedstate.py) and the loader's check
against it (runtime/optimizer.check_optimizer), on files written with h5py and fake optimizers.
The real-model proofs are tests/integration/test_runtime_loader_tf.py (TF 2.4 SavedModel) and
tests/integration/test_runtime_savedstate_tf.py (Keras 2.12, 2.15 and 3, every format)."""
import io
import sys
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest

from envrepro.runtime import optimizer as opt_mod
from envrepro.runtime import savedstate

h5py = pytest.importorskip("h5py")

ADAM_H5_NAMES = ["Adam/iter:0", "Adam/dense/kernel/m:0", "Adam/dense/bias/m:0",
                 "Adam/dense/kernel/v:0", "Adam/dense/bias/v:0"]


def write_h5(path, names=ADAM_H5_NAMES, iterations=12):
    with h5py.File(path, "w") as fh:
        if names is None:
            return path
        group = fh.create_group("optimizer_weights")
        group.attrs["weight_names"] = [n.encode() for n in names]
        for n in names:
            group[n] = np.int64(iterations) if n.split("/")[-1] in ("iter:0", "iteration") else np.zeros(3, "float32")
    return path


def write_keras(path, n_vars=6, iterations=8):
    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        h5.create_group("layers")
        vars_ = h5.create_group("optimizer").create_group("vars")
        vars_["0"] = np.int64(iterations)
        for i in range(1, n_vars):
            vars_[str(i)] = np.zeros(2, "float32")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("model.weights.h5", buf.getvalue())
    return path


def test_h5_counts_the_optimizer_weights_and_reads_iter(tmp_path):
    got = savedstate.saved_optimizer_state(str(write_h5(tmp_path / "m.h5")), "h5")
    assert got == {"saved": True, "variables": 5, "iterations": 12, "source": "h5 optimizer_weights"}
    none = savedstate.saved_optimizer_state(str(write_h5(tmp_path / "n.h5", names=None)), "h5")
    assert none["saved"] is False and none["variables"] == 0


def test_keras_archive_counts_optimizer_vars(tmp_path):
    got = savedstate.saved_optimizer_state(str(write_keras(tmp_path / "m.keras")), "keras")
    assert got == {"saved": True, "variables": 6, "iterations": 8, "source": "keras model.weights.h5"}


def test_unreadable_or_wrong_files_say_none(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    assert savedstate.saved_optimizer_state(str(bad), "h5") is None
    assert savedstate.saved_optimizer_state(str(tmp_path / "missing.keras"), "keras") is None
    assert savedstate.saved_optimizer_state(str(tmp_path), "savedmodel") is None


class FakeReader:
    def __init__(self, keys, iterations):
        self.keys, self.iterations = keys, iterations

    def get_variable_to_shape_map(self):
        return {k: [] for k in self.keys}

    def get_tensor(self, key):
        return np.int64(self.iterations)


def savedmodel(tmp_path, index=b"...optimizer/iter..."):
    (tmp_path / "sm" / "variables").mkdir(parents=True)
    (tmp_path / "sm" / "variables" / "variables.index").write_bytes(index)
    return str(tmp_path / "sm")


def test_savedmodel_counts_iter_and_slots_not_hyperparameters(tmp_path, monkeypatch):
    v = "/.ATTRIBUTES/VARIABLE_VALUE"
    keys = ["_CHECKPOINTABLE_OBJECT_GRAPH", "layer_with_weights-0/kernel" + v,
            "optimizer/iter" + v, "optimizer/learning_rate" + v, "optimizer/beta_1" + v,
            "layer_with_weights-0/kernel/.OPTIMIZER_SLOT/optimizer/m" + v,
            "layer_with_weights-0/kernel/.OPTIMIZER_SLOT/optimizer/v" + v]
    tf = SimpleNamespace(train=SimpleNamespace(load_checkpoint=lambda prefix: FakeReader(keys, 8)))
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    got = savedstate.saved_optimizer_state(savedmodel(tmp_path), "savedmodel")
    assert got == {"saved": True, "variables": 3, "iterations": 8, "source": "savedmodel checkpoint"}
    # Keras >= 2.11's optimizer layout is counted in the object graph: unreadable, unknown
    keys.append("optimizer/_variables/1" + v)
    assert savedstate.saved_optimizer_state(savedmodel(tmp_path / "b"), "savedmodel")["variables"] is None


def node(*children, key=None):
    """A TrackableObjectGraph node: ``children`` as (local_name, node_id)."""
    return SimpleNamespace(children=[SimpleNamespace(local_name=n, node_id=i) for n, i in children],
                           attributes=[SimpleNamespace(name="VARIABLE_VALUE", checkpoint_key=key)]
                           if key else [])


def test_savedmodel_of_the_keras_2_11_optimizer_counts_its_variables_list(tmp_path, monkeypatch):
    """The layout Keras 2.12 and 2.15 write (tests/integration/test_runtime_savedstate_tf.py has
    the real files): the optimizer lists iterations and 8 slots under ``_variables``; iterations is
    keyed ``optimizer/_iterations`` (its first path), so only 8 ``_variables/N`` keys exist."""
    v = "/.ATTRIBUTES/VARIABLE_VALUE"
    keys = ["_CHECKPOINTABLE_OBJECT_GRAPH", "layer_with_weights-0/kernel" + v,
            "optimizer/_iterations" + v, "optimizer/_learning_rate" + v] + \
        ["optimizer/_variables/%d%s" % (i, v) for i in range(1, 9)]
    tf = SimpleNamespace(train=SimpleNamespace(load_checkpoint=lambda prefix: FakeReader(keys, 5)))
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    nodes = [node(("layer_with_weights-0", 1), ("optimizer", 2)), node(),
             node(("_variables", 3), ("_iterations", 4), ("_learning_rate", 5), ("_momentums", 6)),
             node(*[(str(i), 4 if i == 0 else 6 + i) for i in range(9)]),
             node(key="optimizer/_iterations" + v), node(key="optimizer/_learning_rate" + v),
             node(("0", 7), ("1", 9))] + [node() for _ in range(8)]
    monkeypatch.setattr(savedstate, "_object_graph", lambda reader: SimpleNamespace(nodes=nodes))
    got = savedstate.saved_optimizer_state(savedmodel(tmp_path), "savedmodel")
    assert got == {"saved": True, "variables": 9, "iterations": 5, "source": "savedmodel checkpoint"}
    nodes[2] = node(("_iterations", 4))     # no variables list in the graph: unknown, not 0
    assert savedstate.saved_optimizer_state(savedmodel(tmp_path / "b"), "savedmodel")["variables"] is None


def test_savedmodel_without_tensorflow_only_says_whether(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    got = savedstate.saved_optimizer_state(savedmodel(tmp_path), "savedmodel")
    assert got["saved"] is True and got["variables"] is None and got["iterations"] is None


class Var:
    def __init__(self, v):
        self.v = v

    def numpy(self):
        return self.v


class Adam:  # OptimizerV2 style
    def __init__(self, iterations, n):
        self.iterations, self.weights = Var(iterations), list(range(n))

    def variables(self):
        return self.weights


def test_check_compares_with_the_file_not_the_fresh_count(tmp_path):
    """The TF 2.4 false alarm: the capture's live count was 1 (a fresh load), the file holds 5."""
    path = str(write_h5(tmp_path / "m.h5"))
    exp = {"class": "Adam", "iterations": 12, "state_saved": True, "num_weights": 1,
           "saved_variables": 5, "saved_iterations": 12}
    ok = opt_mod.check_optimizer(SimpleNamespace(optimizer=Adam(12, 5)), exp, path, "h5")
    assert ok["ok"] and ok["saved"]["variables"] == 5, ok["problems"]
    bad = opt_mod.check_optimizer(SimpleNamespace(optimizer=Adam(3, 5)), exp, path, "h5")
    assert bad["problems"] == ["iterations 3, expected 12"]
    # the file no longer says what the capture read
    moved = opt_mod.check_optimizer(SimpleNamespace(optimizer=Adam(12, 5)),
                                    dict(exp, saved_iterations=4), path, "h5")
    assert moved["problems"] == ["the model file holds 12 optimizer iterations, the capture read 4"]


def test_a_file_without_optimizer_state_expects_a_fresh_optimizer(tmp_path):
    """Keras 2.15 writes no state for a legacy optimizer into .keras: the capture's live count (5
    iterations) can't come back from that file, so it is not expected (a note says so)."""
    path = str(write_h5(tmp_path / "m.h5", names=None))
    exp = {"class": "Adam", "iterations": 5, "state_saved": False, "num_weights": 9,
           "saved_variables": 0, "saved_iterations": None}
    out = opt_mod.check_optimizer(SimpleNamespace(optimizer=Adam(0, 1)), exp, path, "h5")
    assert out["ok"] and out["problems"] == [] and "holds no optimizer state" in out["note"]
    wrong = opt_mod.check_optimizer(SimpleNamespace(optimizer=Adam(0, 1)),
                                    dict(exp, **{"class": "SGD"}), path, "h5")
    assert wrong["problems"] == ["optimizer class Adam, expected SGD"]


def test_variables_this_loader_never_restores_are_said_not_failed(tmp_path):
    """Keras 3's H5 loader: the file holds 10 variables, the loaded optimizer has 2 (iteration,
    learning_rate), iterations restored. Said (state_restored False), not a mismatch; a wrong
    iteration count still is one."""
    names = ["adam/iteration", "adam/learning_rate"] + ["adam/slot_%d" % i for i in range(8)]
    path = str(write_h5(tmp_path / "m.h5", names=names, iterations=5))
    exp = {"class": "Adam", "iterations": 5, "state_saved": True, "num_weights": 10,
           "saved_variables": 10, "saved_iterations": 5}
    out = opt_mod.check_optimizer(SimpleNamespace(optimizer=Adam(5, 2)), exp, path, "h5")
    assert out["saved"] == {"saved": True, "variables": 10, "iterations": 5,
                            "source": "h5 optimizer_weights"}
    assert out["ok"] and out["state_restored"] is False and out["problems"] == []
    assert out["note"].startswith("optimizer state saved (10 variables) but this loader restores 2")
    wrong = opt_mod.check_optimizer(SimpleNamespace(optimizer=Adam(0, 2)), exp, path, "h5")
    assert wrong["problems"] == ["iterations 0, expected 5"]


def test_old_capture_keeps_the_old_comparison(tmp_path):
    path = str(write_h5(tmp_path / "m.h5"))
    exp = {"class": "Adam", "iterations": 12, "state_saved": True, "num_weights": 1}
    out = opt_mod.check_optimizer(SimpleNamespace(optimizer=Adam(12, 5)), exp, path, "h5")
    assert out["problems"] == ["5 optimizer variables restored, expected 1"] and "saved" not in out


class SavedModelKeras2:
    """load_model left the state behind; load_weights either fails or brings ``after`` back."""

    def __init__(self, after=None):
        self.optimizer, self.after, self.trainable_variables = Adam(0, 1), after, []

    def load_weights(self, prefix):
        if self.after is None:
            raise ValueError("no checkpoint restore in this TensorFlow")
        self.optimizer = Adam(*self.after)


@pytest.fixture
def file_says(monkeypatch):
    state = {"saved": True, "variables": 13, "iterations": 8, "source": "savedmodel checkpoint"}
    monkeypatch.setattr(opt_mod, "saved_optimizer_state", lambda path, fmt: dict(state))
    return {"class": "Adam", "iterations": 8, "state_saved": True, "num_weights": 1,
            "saved_variables": 13, "saved_iterations": 8}


def test_savedmodel_state_not_restored_by_this_loader_is_said_not_failed(file_says):
    out = opt_mod.check_optimizer(SavedModelKeras2(), file_says, "/m", "savedmodel")
    assert out["ok"] and out["state_restored"] is False and out["problems"] == []
    assert out["note"].startswith("optimizer state saved (13 variables, iterations 8) but not "
                                  "restored by this loader (no checkpoint restore")


def test_savedmodel_state_restored_from_the_checkpoint(file_says):
    out = opt_mod.check_optimizer(SavedModelKeras2(after=(8, 13)), file_says, "/m", "savedmodel")
    assert out["ok"] and out["restored_via"] == "load_weights" and "state_restored" not in out


def test_savedmodel_state_restored_but_different_is_a_mismatch(file_says):
    out = opt_mod.check_optimizer(SavedModelKeras2(after=(5, 13)), file_says, "/m", "savedmodel")
    assert not out["ok"] and out["problems"] == ["iterations 5, expected 8"]
