"""runtime/resume.py without TensorFlow: the targets, the weights summary and the comparison the
loader makes after replaying the training step (the step itself: tests/integration)."""
from types import SimpleNamespace

import pytest

from envrepro.runtime import resume

np = pytest.importorskip("numpy")


def test_targets_have_the_outputs_shapes_and_are_seeded():
    outputs = [np.full((2, 3), 0.5, "float32"), np.array([[1], [0]], "int32")]
    first = resume.make_targets(np, outputs, 1234, "perturbed_prediction")
    again = resume.make_targets(np, outputs, 1234, "perturbed_prediction")
    assert [t.shape for t in first] == [(2, 3), (2, 1)] and first[0].dtype == np.float32
    assert all((a == b).all() for a, b in zip(first, again))
    assert not (first[0] == outputs[0]).all() and (first[1] == outputs[1]).all()  # only floats get noise
    assert not (resume.make_targets(np, outputs, 99, "perturbed_prediction")[0] == first[0]).all()
    labels = resume.make_targets(np, [np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], "float32")], 1234,
                                 "argmax_prediction")
    assert labels[0].tolist() == [1, 0] and labels[0].dtype == np.int64


def test_sparse_losses_get_class_labels_first():
    sparse_name = SimpleNamespace(loss="sparse_categorical_crossentropy")
    sparse_object = SimpleNamespace(loss=SimpleNamespace(name="SparseCategoricalCrossentropy"))
    per_output = SimpleNamespace(loss={"a": "mse", "b": "sparse_categorical_crossentropy"})
    for model in (sparse_name, sparse_object, per_output):
        assert resume.target_kinds(model) == ("argmax_prediction", "perturbed_prediction")
    assert resume.target_kinds(SimpleNamespace(loss="mse")) == resume.TARGET_KINDS
    assert resume.target_kinds(SimpleNamespace(loss=None)) == resume.TARGET_KINDS


def test_weights_summary_digest_sees_one_changed_bit():
    weights = [np.ones((2, 2), "float32"), -np.ones(3, "float32")]
    summary = resume.weights_summary(np, weights)
    assert (summary["arrays"], summary["params"], summary["sum"], summary["abs_sum"]) == (2, 7, 1.0, 7.0)
    changed = [weights[0].copy(), weights[1]]
    changed[0][0, 0] = np.nextafter(np.float32(1), np.float32(2))
    assert resume.weights_summary(np, changed)["sha256"] != summary["sha256"]


def _out():
    return {"problems": [], "atol": 1e-05, "rtol": 1e-04}


def test_weights_compared_with_the_recorded_file(tmp_path):
    weights = [np.linspace(-1, 1, 6, dtype="float32").reshape(2, 3), np.zeros(3, "float32")]
    path = tmp_path / "w.npz"
    np.savez(path, **{"w%05d" % i: w for i, w in enumerate(weights)})
    expected = {"weights_file": str(path), "weights": resume.weights_summary(np, weights)}
    out = _out()
    resume.compare_weights(np, expected, [w.copy() for w in weights], out)
    assert out["problems"] == [] and out["bit_identical"] and out["max_abs_diff"] == 0.0
    assert out["compared"] == "weights"
    noisy = [weights[0] + np.float32(1e-7), weights[1]]
    out = _out()
    resume.compare_weights(np, expected, noisy, out)
    assert out["problems"] == [] and not out["bit_identical"]  # within tolerance: not bit-identical
    out = _out()
    resume.compare_weights(np, expected, [weights[0] + np.float32(0.01), weights[1]], out)
    assert out["problems"] and "the weights after one training step differ (max |dw| 0.01" in out["problems"][0]
    out = _out()
    resume.compare_weights(np, expected, [weights[0]], out)
    assert "other shapes than at capture" in out["problems"][0]


def test_weights_compared_by_summary_when_the_file_was_too_large():
    weights = [np.linspace(-1, 1, 1000, dtype="float32")]
    expected = {"weights_file": None, "weights": resume.weights_summary(np, weights)}
    out = _out()
    resume.compare_weights(np, expected, [weights[0] + np.float32(1e-7)], out)
    assert out["problems"] == [] and out["compared"] == "summary"
    out = _out()
    resume.compare_weights(np, expected, [weights[0] + np.float32(1e-3)], out)
    assert "the sum of the weights after one training step differs by" in out["problems"][0]
    out = _out()
    resume.compare_weights(np, expected, [weights[0][:10]], out)
    assert "1 weight arrays (10 parameters), at capture 1 (1000)" in out["problems"][0]


def test_weights_file_limit(monkeypatch):
    monkeypatch.delenv("ENVREPRO_RESUME_MAX_BYTES", raising=False)
    assert resume.max_weights_bytes() == resume.MAX_WEIGHTS_BYTES
    monkeypatch.setenv("ENVREPRO_RESUME_MAX_BYTES", "0")
    assert resume.max_weights_bytes() == 0
    monkeypatch.setenv("ENVREPRO_RESUME_MAX_BYTES", "lots")
    assert resume.max_weights_bytes() == resume.MAX_WEIGHTS_BYTES


def test_seeded_puts_the_generators_back():
    import random

    random.seed(3)
    np.random.seed(3)
    expected = (random.random(), float(np.random.rand()))
    random.seed(3)
    np.random.seed(3)
    with resume.seeded(1234):
        inside = (random.random(), float(np.random.rand()))
    with resume.seeded(1234):
        assert (random.random(), float(np.random.rand())) == inside  # the step's draws repeat
    assert (random.random(), float(np.random.rand())) == expected   # the caller's continue as before
