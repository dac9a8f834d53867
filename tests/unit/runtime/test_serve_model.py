"""What the server makes of a loaded Keras model (runtime/serve/model.py), with Keras-shaped fakes
instead of TensorFlow: input structure and names, output names, the warm-up's reference check and
its choice between model(x, training=False) and predict_on_batch."""
import numpy as np
import pytest

from envrepro.runtime.serve import model as servemodel


class Sym(object):
    """A symbolic tensor: name, shape, dtype."""

    def __init__(self, name, shape, dtype="float32"):
        self.name, self.shape, self.dtype = name, shape, dtype


class History(object):
    def __init__(self, name):
        self.operation = type("Layer", (), {"name": name})()


class DictModel(object):
    """Two named inputs, two named outputs; ``pob`` decides what predict_on_batch does."""

    def __init__(self, pob="same", delay_call=0):
        self._inputs_struct = {"a": Sym("a", [None, 2]), "b": Sym("b", [None, 1], "int64")}
        self.output_names = ["sum", "neg"]
        self.outputs = [Sym("sum", [None, 1]), Sym("neg", [None, 2])]
        self.pob = pob
        self.calls = []

    def __call__(self, x, training=None):
        assert training is False
        self.calls.append("call")
        return {"sum": (x["a"].sum(axis=1, keepdims=True) + x["b"]).astype("float32"), "neg": -x["a"]}

    def predict_on_batch(self, x):
        self.calls.append("pob")
        if self.pob == "raises":
            raise RuntimeError("no")
        out = self(x, training=False)
        if self.pob == "differs":
            out["neg"] = out["neg"] + 1.0
        return out


class SequentialLike(object):
    """One input, one output, no output_names (Keras 3 Sequential): the output layer names it."""

    def __init__(self):
        self.inputs = [Sym("input_layer", [None, 3])]
        out = Sym("keras_tensor_4", [None, 2])
        out._keras_history = History("dense_1")
        self.outputs = [out]

    def __call__(self, x, training=None):
        return x[:, :2] * 3


def test_dict_model_signature_and_predict():
    s = servemodel.KerasServable(DictModel(), {"model_path": "/m.keras"}, {"tensorflow": "2.x", "keras": "3.y"})
    assert [i.describe() for i in s.signature.inputs] == ["a float32 [-1, 2]", "b int64 [-1, 1]"]
    lines = s.warmup()
    assert [o.describe() for o in s.signature.outputs] == ["sum float32 [-1, 1]", "neg float32 [-1, 2]"]
    assert any(line.startswith("predict call: ") for line in lines)
    out = s.predict({"a": np.array([[1.0, 2.0]], "float32"), "b": np.array([[3]], "int64")})
    assert [n for n, _ in out] == ["sum", "neg"] and out[0][1].tolist() == [[6.0]]
    assert s.info["tensorflow"] == "2.x" and s.info["call"] in ("call", "predict_on_batch")


@pytest.mark.parametrize("pob, note", [("differs", "predict_on_batch differs, not used"),
                                       ("raises", "predict_on_batch fails (RuntimeError), not used")])
def test_predict_on_batch_used_only_when_it_gives_the_same_outputs(pob, note):
    model = DictModel(pob=pob)
    s = servemodel.KerasServable(model, {"model_path": "/m.keras"})
    line = [ln for ln in s.warmup() if ln.startswith("predict call")][0]
    assert note in line and s.call_name == "call" and s.info["call"] == "call"
    model.calls[:] = []
    s.predict({"a": np.zeros((1, 2), "float32"), "b": np.zeros((1, 1), "int64")})
    assert model.calls == ["call"]


def test_faster_equal_call_is_kept(monkeypatch):
    times = iter([0.005, 0.001])   # the direct call measured first, then predict_on_batch
    monkeypatch.setattr(servemodel, "_timed", lambda func: next(times))
    model = DictModel()
    s = servemodel.KerasServable(model, {"model_path": "/m.keras"})
    s.warmup()
    assert s.call_name == "predict_on_batch"
    model.calls[:] = []
    s.predict({"a": np.zeros((1, 2), "float32"), "b": np.zeros((1, 1), "int64")})
    assert model.calls == ["pob", "call"]   # pob delegates to the call in this fake


def test_reference_check_and_output_layer_names(tmp_path):
    x = np.arange(6, dtype="float32").reshape(2, 3)
    np.save(tmp_path / "in.npy", x)
    np.save(tmp_path / "good.npy", x[:, :2] * 3)
    np.save(tmp_path / "bad.npy", x[:, :2] * 3 + 1)
    ref = {"inputs": [str(tmp_path / "in.npy")], "input_structure": "single", "atol": 1e-5, "rtol": 1e-4}
    s = servemodel.KerasServable(SequentialLike(), {"model_path": "/m.keras",
                                                    "reference": dict(ref, outputs=[str(tmp_path / "good.npy")])})
    lines = s.warmup()
    assert lines[0] == "warm-up: the capture's reference prediction matches (max |diff| 0.0)"
    assert s.signature.output_names() == ["dense_1"] and s.signature.input_names() == ["input_layer"]
    s = servemodel.KerasServable(SequentialLike(), {"model_path": "/m.keras",
                                                    "reference": dict(ref, outputs=[str(tmp_path / "bad.npy")])})
    assert s.warmup()[0].startswith("WARNING: the capture's reference prediction differs (max |diff| 1.0")


def test_seeded_inputs_cover_every_dtype():
    from envrepro.runtime.serve.tensors import Signature, TensorSpec

    sig = Signature([TensorSpec("f", "float16", [None, 2]), TensorSpec("i", "int32", [None, None]),
                     TensorSpec("t", "string", [None]), TensorSpec("k", "bool", [])], [])
    x = servemodel.seeded_inputs(sig, 2)
    assert x["f"].shape == (2, 2) and x["f"].dtype == np.float16
    assert x["i"].shape == (2, 1) and x["i"].dtype == np.int32
    assert x["t"].tolist() == [b"", b""] and x["k"].shape == () and x["k"].dtype == np.bool_
    assert servemodel.seeded_inputs(sig, 2)["f"].tolist() == x["f"].tolist()   # seeded


def test_model_without_inputs_is_refused():
    class Unbuilt(object):
        pass

    with pytest.raises(ValueError, match="no defined inputs"):
        servemodel.KerasServable(Unbuilt(), {"model_path": "/nonexistent/model"})
