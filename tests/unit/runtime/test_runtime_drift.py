"""runtime/drift.py: the source tree against a SavedModel's traced graphs, on fake Keras objects
(the real thing runs in tests/integration/test_runtime_drift_tf.py)."""
import sys
import types

import numpy as np

from envrepro.runtime import drift


class Layer(object):
    """A Keras layer running Python: ``y = x * scale`` (sub-layers applied first)."""

    __module__ = "keras.engine.base_layer"    # the framework's own

    def __init__(self, name, scale=1.0, children=(), shape=(None, 3), config=None):
        self.name, self.scale, self.children = name, scale, list(children)
        self._build_input_shape = shape
        self.config = config or {}

    def _flatten_layers(self, include_self=False, recursive=False):
        return list(self.children)

    def get_config(self):
        return dict(self.config, name=self.name)

    def __call__(self, x, training=False):
        for child in self.children:
            x = child(x)
        return x * self.scale


class RevivedLayer(Layer):
    """What Keras revives from the saved graph when the class can't be found."""

    __module__ = "keras.saving.saved_model.load"


class Scale(Layer):
    __module__ = "lay"                        # the source tree's


class Tensor(object):
    def __init__(self, shape):
        self.shape, self.dtype, self.name = shape, "float32", "x"


class Model(Layer):
    __module__ = "lay"

    def __init__(self, layers):
        Layer.__init__(self, "model", children=layers)
        self.inputs = [Tensor((None, 3))]


def _pair(saved_scale, source_scale, activation_layer=False):
    if activation_layer:   # a built-in layer whose activation is a custom function
        Dense = type("Dense", (Layer,), {"__module__": "keras.layers.core"})
        source = Model([Dense("dense", source_scale, config={"activation": "my_act"})])
    else:
        source = Model([Layer("plain", 2.0), Scale("scale", source_scale)])
    traced = Model([Layer("plain", 2.0), RevivedLayer("dense" if activation_layer else "scale", saved_scale)])
    return source, traced


def test_only_savedmodels_with_custom_objects_can_be_checked():
    assert "H5 file stores no traced graph" in drift.applicable("h5", ["Scale"])
    assert "a .keras file" in drift.applicable("keras", ["Scale"])
    assert "names no custom objects" in drift.applicable("savedmodel", [])
    assert drift.applicable("savedmodel", ["Scale"]) is None
    assert drift.check(np, None, None, "/m.h5", "h5", ["Scale"], 1)["checked"] is False


def test_unchanged_source_matches_and_edited_source_is_named():
    source, traced = _pair(3.0, 3.0)
    res = drift.check(np, lambda path, compile: traced, source, "/m", "savedmodel", ["Scale"], 1)
    assert res["checked"] and res["ok"] and res["differs"] == [] and res["model"]["allclose"]
    assert [(e["layer"], e["class"], e["allclose"]) for e in res["layers"]] == [("scale", "Scale", True)]
    source, traced = _pair(3.0, 3.5)
    res = drift.check(np, lambda path, compile: traced, source, "/m", "savedmodel", ["Scale"], 1)
    assert res["checked"] and res["ok"] is False and res["model"]["allclose"] is False
    assert len(res["differs"]) == 1 and res["differs"][0].startswith("Scale (layer scale, max |diff| ")
    assert drift.message(res).startswith("the source tree no longer matches the code the model was saved with: Scale")


def test_a_builtin_layer_running_a_custom_function_names_the_function():
    source, traced = _pair(1.0, 2.0, activation_layer=True)
    res = drift.check(np, lambda path, compile: traced, source, "/m", "savedmodel", ["Custom>my_act"], 1)
    assert res["layers"][0]["uses"] == ["my_act"] and res["differs"][0].startswith("Dense with my_act (layer dense")


def test_whole_model_difference_without_a_layer_to_blame_names_the_custom_objects():
    source, traced = _pair(3.0, 3.0)
    source.scale = 2.0   # the model's own call changed (a subclassed model)
    res = drift.check(np, lambda path, compile: traced, source, "/m", "savedmodel", ["Outer", "Scale"], 1)
    assert res["ok"] is False and res["differs"] == ["the model's custom objects Outer, Scale"]


def test_revival_failure_and_uncomparable_models_are_not_checked():
    def fails(path, compile):
        raise ValueError("no traced functions\nmore")

    res = drift.check(np, fails, Model([]), "/m", "savedmodel", ["Scale"], 1)
    assert res["checked"] is False and "could not be revived" in res["reason"] and "ValueError: no traced" in res["reason"]
    source, traced = _pair(3.0, 3.0)
    source.inputs, source._build_input_shape = [], None
    source.children[1]._build_input_shape = None
    res = drift.check(np, lambda path, compile: traced, source, "/m", "savedmodel", ["Scale"], 1)
    assert res["checked"] is False and "nothing could be compared" in res["reason"]
    assert res["layers"][0]["skipped"] == "input shape unknown"


def test_registrations_are_hidden_during_revival_and_restored(monkeypatch):
    user = type("RegScale", (), {"__module__": "lay"})
    framework = type("Adam", (), {"__module__": "keras.optimizers"})
    registry = {"matrix>RegScale": user, "Custom>Adam": framework}
    for name in list(sys.modules):
        if name.split(".")[0] in ("keras", "tf_keras") or name.startswith("tensorflow.python.keras"):
            monkeypatch.delitem(sys.modules, name)
    mod = types.ModuleType("keras.utils.generic_utils")
    mod.get_custom_objects = lambda: registry
    monkeypatch.setitem(sys.modules, "keras.utils.generic_utils", mod)
    seen = []
    drift.revive(lambda path, compile: seen.append((dict(registry), compile)), "/m")
    assert seen == [({"Custom>Adam": framework}, False)]
    assert registry == {"matrix>RegScale": user, "Custom>Adam": framework}


def test_nested_layers_are_paired_by_path():
    inner_src, inner_saved = Scale("inner", 2.0), RevivedLayer("inner", 2.0)
    source = Model([Layer("outer", children=[inner_src], shape=(None, 3))])
    traced = Model([Layer("outer", children=[inner_saved], shape=(None, 3)), Layer("extra")])
    assert [(p, a, b) for p, a, b in drift.layer_pairs(source, traced)] == [
        ("outer", source.children[0], traced.children[0]), ("outer/inner", inner_src, inner_saved)]
    many = Layer("multi", shape=[(None, 3), (None, 4)])
    assert [a.shape for a in drift.layer_inputs(many, 1)] == [(drift.ROWS, 3), (drift.ROWS, 4)]


def test_several_seeded_inputs_so_one_lucky_input_hides_nothing():
    """A ReLU added to a layer changes nothing on an input whose outputs are all positive: the
    comparison runs on several seeded inputs and keeps the worst."""
    class Relu(Scale):
        def __call__(self, x, training=False):
            return np.maximum(x, 0.0)

    source = Model([Relu("scale", shape=(1, 1))])
    traced = Model([RevivedLayer("scale", 1.0, shape=(1, 1))])
    res = drift.check(np, lambda path, compile: traced, source, "/m", "savedmodel", ["Scale"], 1)
    assert res["ok"] is False and res["layers"][0]["allclose"] is False


def test_a_model_running_none_of_the_source_is_not_checked():
    """Revived from its traced graphs (the issue-8 subclassed model, loaded by the revive recipe):
    both sides run the same graphs, so agreeing proves nothing about the source tree."""
    Revived = type("TwoLayer", (RevivedLayer,), {})
    source = Revived("two_layer", children=[Layer("dense")])
    source.inputs = [Tensor((None, 3))]
    traced = Revived("two_layer", children=[Layer("dense")])
    res = drift.check(np, lambda path, compile: traced, source, "/m", "savedmodel", ["TwoLayer"], 1)
    assert res["checked"] is False and "runs none of the source tree's code" in res["reason"]
    assert drift.runs_source(Model([])) and not drift.runs_source(source)


def test_a_layer_revived_with_the_source_class_anyway_is_said_not_compared():
    source = Model([Scale("scale", 3.0)])
    traced = Model([Scale("scale", 3.0)])    # a registration the check could not hide
    res = drift.check(np, lambda path, compile: traced, source, "/m", "savedmodel", ["Scale"], 1)
    assert res["layers"] == [{"layer": "scale", "class": "Scale", "uses": [],
                              "skipped": "revived with the source tree's class all the same (a registration "
                                         "the check could not hide)"}]
