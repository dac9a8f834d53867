"""envrepro/runtime/customobjects.py: what a layer revived from a SavedModel without its Python
class means, told by the recipe that loaded the model; the Keras registries, found without
importing any Keras (fake Keras classes and modules, no TensorFlow)."""
import sys
import types

from envrepro.runtime import customobjects
from envrepro.runtime.customobjects import custom_object_facts


class NoDistributions:
    def for_file(self, path):
        return None


class RevivedLayer:          # TF <= 2.15 revives an unknown layer class as a subclass of this
    pass


class Sequential:
    """A framework model (its module is Keras's) holding one revived layer."""

    def __init__(self, *layers):
        self.layers = list(layers)


Sequential.__module__ = RevivedLayer.__module__ = "keras.saving.legacy.saved_model.load"
MyCustomLayer = type("MyCustomLayer", (RevivedLayer,), {"__module__": RevivedLayer.__module__})


def facts(recipe):
    warnings = []
    objs, mods, unresolved = custom_object_facts(Sequential(MyCustomLayer()), NoDistributions(),
                                                 warnings=warnings, recipe=recipe)
    assert (objs, mods, unresolved) == ([], [], ["MyCustomLayer"])
    return warnings


def test_revived_without_its_module_asks_for_it():
    """Loaded with the custom-objects recipe but none were given: the module is missing."""
    for recipe in (None, "custom_objects", "custom_objects_nocompile"):
        assert facts(recipe) == ["layer class MyCustomLayer was revived from the SavedModel "
                                 "without its Python class; pass --module for the module that "
                                 "defines it"]


def test_revived_on_purpose_says_so_and_asks_for_nothing():
    """The revive recipe loaded it after passing the classes failed (issue 8): --module was given
    already, and the loader will revive it the same way."""
    for recipe in ("revive", "revive_nocompile"):
        (warning,) = facts(recipe)
        assert warning == ("layer class MyCustomLayer is revived from the SavedModel's traced "
                           "functions on purpose: recipe %s loads the model without its custom "
                           "objects (loading with them failed) and the loader does the same; "
                           "methods defined only in Python are not available" % recipe)
        assert "--module" not in warning



def _module(monkeypatch, name, **attrs):
    mod = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(mod, k, v)
    monkeypatch.setitem(sys.modules, name, mod)
    return mod


def test_registries_of_keras_2_6_to_2_11_live_in_generic_utils(monkeypatch):
    """Keras 2.8 exports no keras.utils.get_custom_objects: its registry (where
    @register_keras_serializable puts 'matrix>RegScale') is found in generic_utils."""
    for name in list(sys.modules):
        if name.split(".")[0] in ("keras", "tf_keras") or name.startswith("tensorflow.python.keras"):
            monkeypatch.delitem(sys.modules, name)
    registry = {"matrix>RegScale": object}
    _module(monkeypatch, "keras", utils=types.SimpleNamespace(), saving=types.SimpleNamespace())
    _module(monkeypatch, "keras.utils.generic_utils", get_custom_objects=lambda: registry)
    regs = customobjects.registries()
    assert regs == [registry]
    assert customobjects.registered_names(regs) == {id(object): {"matrix>RegScale"}}


def test_registries_are_listed_once_and_never_imported(monkeypatch):
    for name in list(sys.modules):
        if name.split(".")[0] in ("keras", "tf_keras") or name.startswith("tensorflow.python.keras"):
            monkeypatch.delitem(sys.modules, name)
    assert customobjects.registries() == []
    shared = {"team>Huberish": int}
    _module(monkeypatch, "tensorflow.python.keras.utils.generic_utils", get_custom_objects=lambda: shared)
    _module(monkeypatch, "keras", saving=types.SimpleNamespace(get_custom_objects=lambda: shared),
            utils=types.SimpleNamespace(get_custom_objects=lambda: shared))
    assert customobjects.registries() == [shared]
    assert "keras.utils.generic_utils" not in sys.modules
