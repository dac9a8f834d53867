"""runtime/customobjects.py: the Keras registries, found without importing any Keras."""
import sys
import types

from envrepro.runtime import customobjects


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
