"""What the source writes about the model, read off the loaded model: its layers and weights
(the variables of ``model.layers``, in order), the compiled loss when it can be named, and two
corrections of ``model.to_json()`` that only the live model can make (tensorflow-addons
activations serialized by a bare name, lookup vocabularies kept outside the config).
Python 3.6 syntax; numpy is passed in.
"""
from .. import reference as refs
from ..facts import json_safe, short_error
from ..samples import storable


def addons_activations(model, config):
    """tensorflow-addons 0.2x serializes its activations by their bare name (``gelu``), which
    any Keras reads as its own function (``gelu`` without tfa's approximation): the config of a
    layer whose activation is tfa's names it ``Addons>NAME`` again. Returns what was changed."""
    entries = dict(((e.get("config") or {}).get("name"), e)
                   for e in (config.get("config") or {}).get("layers") or [] if isinstance(e, dict))
    notes = []
    for layer in model.layers:
        entry = entries.get(layer.name)
        for key in ("activation", "recurrent_activation"):
            fn = getattr(layer, key, None)
            name = getattr(fn, "__name__", None)
            if entry is None or not name or not str(getattr(fn, "__module__", "")).startswith(
                    "tensorflow_addons"):
                continue
            value = entry["config"].get(key)
            if isinstance(value, dict):
                value = value.get("config")
            if value == name:
                entry["config"][key] = "Addons>" + name
                notes.append("layer '%s': %s %r is tensorflow-addons' -> 'Addons>%s'"
                             % (layer.name, key, name, name))
    return notes


def vocabularies(model, config):
    """Lookup layers (StringLookup, IntegerLookup, TextVectorization) keep an adapted vocabulary
    in a table, not in their weights nor their config: it is put into the config (its
    ``vocabulary`` argument), special tokens first, as ``get_vocabulary()`` gives it."""
    entries = dict(((e.get("config") or {}).get("name"), e)
                   for e in (config.get("config") or {}).get("layers") or [] if isinstance(e, dict))
    notes = []
    for layer in model.layers:
        entry = entries.get(layer.name)
        if entry is None or not hasattr(layer, "get_vocabulary") or \
                entry["config"].get("vocabulary"):          # TF 2.8 writes [] when it had one
            continue
        if entry["config"].get("output_mode") == "tf_idf":
            notes.append("layer '%s': a tf_idf vocabulary is not carried" % layer.name)
            continue
        try:
            vocab = json_safe(list(layer.get_vocabulary()))
        except Exception as exc:
            notes.append("layer '%s': its vocabulary can't be read: %s"
                         % (layer.name, short_error(exc)))
            continue
        entry["config"]["vocabulary"] = vocab
        notes.append("layer '%s': its vocabulary (%d entries) put into its config"
                     % (layer.name, len(vocab)))
    return notes


def variables_of(layer):
    """The layer's weights that are variables (Keras 2's lookup layers list a vocabulary
    handler among them)."""
    return [w for w in layer.weights if hasattr(w, "numpy") and hasattr(w, "shape")]


def layer_weights(np, model):
    """``L<layer>/<weight>`` -> array for every layer of ``model.layers``."""
    arrays = {}
    for li, layer in enumerate(model.layers):
        for wi, w in enumerate(variables_of(layer)):
            arrays["L%d/%d" % (li, wi)] = storable(np.asarray(w.numpy()))
    return arrays


def describe(model, kmod, versions, plan):
    """The model's class, Keras, inputs and every layer with its weights (name, shape, dtype)."""
    structure, names = None, None
    try:
        structure, names = refs.model_inputs(model, plan.get("model_path"))[:2]
    except Exception:
        pass
    backend = None
    try:
        backend = kmod.backend.backend()
    except Exception:
        pass
    layers = []
    for li, layer in enumerate(model.layers):
        layers.append({"index": li, "name": layer.name, "class_name": type(layer).__name__,
                       "weights": [{"name": str(getattr(w, "path", None) or w.name),
                                    "shape": [int(d) for d in w.shape],
                                    "dtype": str(getattr(w.dtype, "name", w.dtype)),
                                    "trainable": bool(getattr(w, "trainable", True))}
                                   for w in variables_of(layer)]})
    return {"class_name": type(model).__name__, "keras_version": versions.get("keras"),
            "backend": backend, "input_structure": structure, "input_names": names,
            "output_names": None, "layers": layers}


def registered_name(obj):
    """The name Keras registered a custom function or class under (``package>name``), else its
    own name; None when it has neither (a custom loss instance: its class's)."""
    target = obj if callable(obj) and hasattr(obj, "__name__") else type(obj)
    import importlib

    for modname in ("keras.saving", "keras.utils", "tensorflow.keras.utils"):
        try:
            get = getattr(importlib.import_module(modname), "get_registered_name", None)
        except Exception:
            continue
        if get is not None:
            try:
                return str(get(target))
            except Exception:
                continue
    return getattr(target, "__name__", None)


def loss_of(model):
    """The compiled loss when it can be named (a string, or a Keras loss by its name); None."""
    loss = getattr(model, "loss", None)
    if isinstance(loss, str):
        return loss
    if isinstance(loss, (dict, list)) and all(isinstance(v, str) for v in (
            loss.values() if isinstance(loss, dict) else loss)):
        return loss
    module = str(getattr(type(loss), "__module__", "") if hasattr(loss, "get_config")
                 else getattr(loss, "__module__", ""))
    if loss is None:
        return None
    if not (module.startswith("keras") or module.startswith("tensorflow")):
        return registered_name(loss)        # a custom loss: the name it is registered under
    if hasattr(loss, "get_config"):     # a Keras Loss instance: its class and config
        try:
            return {"class_name": type(loss).__name__, "config": json_safe(loss.get_config())}
        except Exception:
            return None
    return getattr(loss, "__name__", None)
