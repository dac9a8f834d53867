"""What the training environment's own load_model restores of the optimizer (issue 20): recorded
at capture (runtime/restored.py, optimizer.restored_facts, probe.record_restored) and compared
with at load (optimizer.check_optimizer -> against_restored), on H5 files written with h5py and
fake optimizers. The real case (TF 2.12, mixed_float16, H5) is
tests/integration/test_runtime_restored_tf.py."""
import random
from types import SimpleNamespace

import numpy as np
import pytest

from envrepro.runtime import optimizer as opt_mod
from envrepro.runtime import probe, restored

h5py = pytest.importorskip("h5py")

LSO_NAMES = ["iteration:0"] + ["cond_1/Adam/%s/dense%s/%s:0" % (s, layer, w) for layer in ("", "_1")
                                for w in ("kernel", "bias") for s in "mv"]   # TF 2.12's names
ADAM_NAMES = ["Adam/iter:0", "Adam/dense/kernel/m:0", "Adam/dense/bias/m:0",
              "Adam/dense/kernel/v:0", "Adam/dense/bias/v:0"]


def write_h5(path, names, iterations):
    with h5py.File(str(path), "w") as fh:
        group = fh.create_group("optimizer_weights")
        group.attrs["weight_names"] = [n.encode() for n in names]
        for i, n in enumerate(names):
            leaf = n.split("/")[-1].split(":")[0]
            group[n] = np.int64(iterations) if leaf in ("iter", "iteration") else np.zeros(i + 1)
    return str(path)


class Var:
    def __init__(self, value):
        self.value = value

    def numpy(self):
        return self.value


class Adam:
    def __init__(self, iterations, n):
        self.iterations, self._vars = Var(iterations), list(range(n))

    def variables(self):
        return self._vars


class LossScaleOptimizerV3(Adam):
    def __init__(self, iterations, n):
        Adam.__init__(self, iterations, n)
        self.inner_optimizer = Adam(iterations, n)


class RMSprop(Adam):
    pass


def model(opt):
    return SimpleNamespace(optimizer=opt)


# --- the user's case: TF 2.12, mixed_float16 (LossScaleOptimizer), H5 ---------------------------

@pytest.fixture
def lso(tmp_path):
    """The file holds iterations 2 and 9 variables; TF 2.12's load_model restores iterations 0."""
    path = write_h5(tmp_path / "m.h5", LSO_NAMES, 2)
    expected = {"class": "LossScaleOptimizerV3", "iterations": 2, "state_saved": True,
                "num_weights": 9, "saved_variables": 9, "saved_iterations": 2,
                "restored": {"class": "LossScaleOptimizerV3", "iterations": 0, "variables": 9,
                             "via": "load_model"}}
    return path, expected


def test_a_reproduction_restoring_what_the_training_env_restores_passes_with_a_warning(lso):
    path, expected = lso
    out = opt_mod.check_optimizer(model(LossScaleOptimizerV3(0, 9)), expected, path, "h5")
    assert out["ok"] is True and out["problems"] == []
    assert (out["iterations"], out["weights_restored"]) == (0, 9)
    assert out["warning"] == ("the training environment's load_model also restores iterations 0 "
                              "of the 2 the file holds (LossScaleOptimizerV3 in H5): compared "
                              "with what it restores")
    assert out["compared_with"] == "training environment restore"
    assert out["saved"]["iterations"] == 2 and "state_restored" not in out


def test_a_reproduction_differing_from_the_training_env_restore_is_a_mismatch(lso):
    """Restoring what the file holds where the training environment does not: not the same."""
    path, expected = lso
    out = opt_mod.check_optimizer(model(LossScaleOptimizerV3(2, 9)), expected, path, "h5")
    assert out["ok"] is False
    assert out["problems"] == ["iterations 2, expected 0 (what the training environment "
                               "restores from this file)"]
    assert out["warning"].startswith("the training environment's load_model restores iterations "
                                     "0 of the 2")
    fewer = opt_mod.check_optimizer(model(LossScaleOptimizerV3(0, 3)), expected, path, "h5")
    assert fewer["problems"] == ["3 optimizer variables restored, expected 9 (what the training "
                                 "environment restores from this file)"]


def test_an_old_capture_without_restored_keeps_todays_verdict_exactly(lso):
    path, expected = lso
    old = {k: v for k, v in expected.items() if k != "restored"}
    out = opt_mod.check_optimizer(model(LossScaleOptimizerV3(0, 9)), old, path, "h5")
    assert out["ok"] is False and out["problems"] == ["iterations 0, expected 2"]
    assert "warning" not in out and "compared_with" not in out
    # and the oldest captures (no saved_* either) too
    oldest = {k: v for k, v in old.items() if not k.startswith("saved_")}
    out = opt_mod.check_optimizer(model(LossScaleOptimizerV3(0, 9)), oldest, path, "h5")
    assert out["problems"] == ["iterations 0, expected 2"] and "saved" not in out


def test_the_file_changed_since_capture_is_still_a_problem(lso):
    path, expected = lso
    moved = dict(expected, saved_iterations=4)
    out = opt_mod.check_optimizer(model(LossScaleOptimizerV3(0, 9)), moved, path, "h5")
    assert out["problems"] == ["the model file holds 2 optimizer iterations, the capture read 4"]


# --- where the training environment restores everything: the same verdicts as before ------------

def test_a_full_restore_compares_iterations_exactly_and_warns_nothing(tmp_path):
    path = write_h5(tmp_path / "m.h5", ADAM_NAMES, 12)
    expected = {"class": "Adam", "iterations": 12, "state_saved": True, "num_weights": 5,
                "saved_variables": 5, "saved_iterations": 12,
                "restored": {"class": "Adam", "iterations": 12, "variables": 5, "via": "load_model"}}
    ok = opt_mod.check_optimizer(model(Adam(12, 5)), expected, path, "h5")
    assert ok["ok"] and ok["problems"] == [] and "warning" not in ok
    bad = opt_mod.check_optimizer(model(Adam(11, 5)), expected, path, "h5")
    assert bad["problems"] == ["iterations 11, expected 12 (what the training environment "
                               "restores from this file)"]


def test_variables_the_training_env_leaves_behind_are_a_warning(tmp_path):
    """Keras 3's H5 loader: 2 of the file's 10 variables come back, there and here."""
    names = ["adam/iteration", "adam/learning_rate"] + ["adam/slot_%d" % i for i in range(8)]
    path = write_h5(tmp_path / "m.h5", names, 5)
    expected = {"class": "Adam", "iterations": 5, "state_saved": True, "num_weights": 10,
                "saved_variables": 10, "saved_iterations": 5,
                "restored": {"class": "Adam", "iterations": 5, "variables": 2, "via": "load_model"}}
    out = opt_mod.check_optimizer(model(Adam(5, 2)), expected, path, "h5")
    assert out["ok"] and out["problems"] == []
    assert out["warning"] == ("the training environment's load_model also restores 2 of the 10 "
                              "optimizer variables the file holds (Adam in H5): compared with "
                              "what it restores")


def test_the_class_is_compared_with_the_training_env_restore(tmp_path):
    path = write_h5(tmp_path / "m.h5", ADAM_NAMES, 12)
    expected = {"class": "Adam", "iterations": 12, "state_saved": True, "num_weights": 5,
                "saved_variables": 5, "saved_iterations": 12,
                "restored": {"class": "RMSprop", "iterations": 12, "variables": 5}}
    same = opt_mod.check_optimizer(model(RMSprop(12, 5)), expected, path, "h5")
    assert same["ok"] and same["warning"] == (
        "the training environment's load_model restores the optimizer as RMSprop, not the Adam "
        "the model was trained with")
    other = opt_mod.check_optimizer(model(Adam(12, 5)), expected, path, "h5")
    assert other["problems"] == ["optimizer class Adam, the training environment restores RMSprop"]


def test_a_file_without_state_compares_the_fresh_optimizer(tmp_path):
    path = str(tmp_path / "m.h5")
    with h5py.File(path, "w"):
        pass
    expected = {"class": "Adam", "iterations": 5, "state_saved": False, "num_weights": 9,
                "saved_variables": 0, "saved_iterations": None,
                "restored": {"class": "Adam", "iterations": 0, "variables": 1}}
    out = opt_mod.check_optimizer(model(Adam(0, 1)), expected, path, "h5")
    assert out["ok"] and "note" not in out and "warning" not in out
    assert opt_mod.check_optimizer(model(Adam(3, 1)), expected, path, "h5")["problems"] == [
        "iterations 3, expected 0 (what the training environment restores from this file)"]


class SavedModelKeras2:
    """load_model left the state behind; load_weights fails (after None) or brings ``after``."""

    def __init__(self, after=None):
        self.optimizer, self.after, self.trainable_variables = Adam(0, 1), after, []

    def load_weights(self, prefix):
        if self.after is None:
            raise ValueError("no checkpoint restore in this TensorFlow")
        self.optimizer = Adam(*self.after)


@pytest.fixture
def savedmodel(monkeypatch):
    state = {"saved": True, "variables": 13, "iterations": 8, "source": "savedmodel checkpoint"}
    monkeypatch.setattr(opt_mod, "saved_optimizer_state", lambda path, fmt: dict(state))
    return {"class": "Adam", "iterations": 8, "state_saved": True, "num_weights": 1,
            "saved_variables": 13, "saved_iterations": 8}


def test_savedmodel_restored_from_the_checkpoint_on_both_sides(savedmodel):
    """The capture reads the restore by the loader's own steps (load_weights): like with like."""
    restored_there = opt_mod.restored_facts(SavedModelKeras2(after=(8, 13)), savedmodel, "/m",
                                            "savedmodel")
    assert restored_there == {"class": "Adam", "iterations": 8, "variables": 13,
                              "via": "load_weights"}
    expected = dict(savedmodel, restored=restored_there)
    out = opt_mod.check_optimizer(SavedModelKeras2(after=(8, 13)), expected, "/m", "savedmodel")
    assert out["ok"] and out["restored_via"] == "load_weights" and "warning" not in out


def test_savedmodel_state_the_training_env_cannot_restore_either(savedmodel):
    restored_there = opt_mod.restored_facts(SavedModelKeras2(), savedmodel, "/m", "savedmodel")
    assert restored_there == {"class": "Adam", "iterations": 0, "variables": 1, "via": "load_model"}
    out = opt_mod.check_optimizer(SavedModelKeras2(), dict(savedmodel, restored=restored_there),
                                  "/m", "savedmodel")
    assert out["ok"] and "state_restored" not in out
    assert out["warning"] == ("the training environment's load_model also restores iterations 0 "
                              "of the 8 and 1 of the 13 optimizer variables the file holds (Adam "
                              "in SavedModel): compared with what it restores")


# --- the capture side ---------------------------------------------------------------------------

def test_restored_facts_reads_the_loaded_optimizer(lso):
    path, expected = lso
    facts = {k: v for k, v in expected.items() if k != "restored"}
    assert opt_mod.restored_facts(model(LossScaleOptimizerV3(0, 9)), facts, path, "h5") == \
        expected["restored"]
    assert opt_mod.restored_facts(model(None), facts, path, "h5") is None


def test_the_probe_reads_its_own_copy(lso):
    path, expected = lso
    facts = {k: v for k, v in expected.items() if k != "restored"}

    def never():
        raise AssertionError("the probe's copy is used, no other is loaded")
    got = restored.capture_restored(model(LossScaleOptimizerV3(0, 9)), True, facts, path, "h5", never)
    assert got == (expected["restored"], None)
    assert restored.capture_restored(None, True, None, path, "h5", never) == (None, None)


def test_in_process_a_small_file_is_loaded_once_and_the_random_draws_are_kept(lso):
    path, expected = lso
    facts = {k: v for k, v in expected.items() if k != "restored"}
    loads = []

    def load_copy():
        loads.append(1)
        random.random(), np.random.rand()   # building the copy draws initial weights
        return model(LossScaleOptimizerV3(0, 9))
    random.seed(3), np.random.seed(3)
    want = (random.random(), float(np.random.rand()))
    random.seed(3), np.random.seed(3)
    training = model(LossScaleOptimizerV3(2, 9))
    got = restored.capture_restored(training, False, facts, path, "h5", load_copy)
    assert got == (expected["restored"], None) and loads == [1]
    assert (random.random(), float(np.random.rand())) == want
    assert training.optimizer.iterations.value == 2   # the training model is not touched


def test_in_process_a_large_file_is_not_loaded(lso, monkeypatch):
    path, expected = lso
    monkeypatch.setenv("ENVREPRO_RESTORED_MAX_BYTES", "100")
    got, why = restored.capture_restored(model(Adam(2, 9)), False, expected, path, "h5",
                                         lambda: pytest.fail("must not load"))
    assert got is None and "above the 100 a copy is loaded for" in why
    assert "ENVREPRO_RESTORED_MAX_BYTES" in why and "envrepro capture --python" in why
    monkeypatch.setenv("ENVREPRO_RESTORED_MAX_BYTES", "0")
    got, why = restored.capture_restored(model(Adam(2, 9)), False, expected, path, "h5",
                                         lambda: pytest.fail("must not load"))
    assert got is None and why.startswith("ENVREPRO_RESTORED_MAX_BYTES=0: no copy is loaded")
    monkeypatch.setenv("ENVREPRO_RESTORED_MAX_BYTES", "not a number")
    assert restored.max_reload_bytes() == restored.MAX_RELOAD_BYTES


def test_in_process_a_copy_that_does_not_load_or_has_no_optimizer_is_said(lso):
    path, expected = lso

    def broken():
        raise ValueError("Unknown layer: Scale")
    got, why = restored.capture_restored(model(Adam(2, 9)), False, expected, path, "h5", broken)
    assert got is None and why == ("a copy of the model can't be loaded from its file here: "
                                   "ValueError: Unknown layer: Scale")
    got, why = restored.capture_restored(model(Adam(2, 9)), False, expected, path, "h5",
                                         lambda: model(None))
    assert got is None and "loads only with compile=False" in why
    missing = restored.capture_restored(model(Adam(2, 9)), False, expected, path + ".gone", "h5",
                                        broken)
    assert missing == (None, "the saved file is not there to load")


def test_saved_size_counts_a_folder(tmp_path):
    (tmp_path / "sm" / "variables").mkdir(parents=True)
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"x" * 10)
    (tmp_path / "sm" / "variables" / "variables.index").write_bytes(b"x" * 5)
    assert restored.saved_size(str(tmp_path / "sm")) == 15


def test_probe_records_restored_or_why_not(lso, monkeypatch):
    path, expected = lso
    facts = {k: v for k, v in expected.items() if k != "restored"}
    warnings = []
    probe.record_restored(facts, model(LossScaleOptimizerV3(0, 9)), True, path, "h5", None, warnings)
    assert facts["restored"] == expected["restored"] and "restored_skipped" not in facts
    facts2 = dict(expected)
    del facts2["restored"]
    monkeypatch.setenv("ENVREPRO_RESTORED_MAX_BYTES", "0")
    probe.record_restored(facts2, model(Adam(2, 9)), False, path, "h5", None, warnings)
    assert "restored" not in facts2 and facts2["restored_skipped"].startswith("ENVREPRO_RESTORED_MAX_BYTES=0")

    def boom(*args):
        raise RuntimeError("odd optimizer")
    monkeypatch.setattr(probe, "capture_restored", boom)
    facts3 = {}
    probe.record_restored(facts3, None, True, path, "h5", None, warnings)
    assert facts3 == {"restored_skipped": "reading it failed: RuntimeError: odd optimizer"}
    assert warnings == ["what load_model restores of the optimizer is unknown: RuntimeError: "
                        "odd optimizer"]
