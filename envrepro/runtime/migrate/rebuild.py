"""The ``.keras`` artifact: the source's architecture rebuilt by the target's Keras (translated
first, translate.py), its weights set layer by layer and checked, the optimizer carried when it
can be (optstate.py), saved, then loaded back fresh with ``load_model(safe_mode=True)``.

Layers are paired by name (a layer translate.py renamed keeps its source name in ``renamed``),
else by index; each pair must hold the same number of weights of the same shapes. Weights whose
names are the same set in another order (by last name part: ``kernel``, ``bias``...) are put in
the source's order. Python 3.6 syntax; TensorFlow and Keras are passed in.
"""
import inspect
import json

from ..facts import accepts, short_error
from .addons import WEIGHT_NORM
from .optconfig import translate_optimizer
from .translate import keras_major, translate
from . import optstate

BASE_LAYER_KEYS = ("name", "trainable", "dtype", "autocast", "input_shape", "batch_input_shape",
                   "batch_size", "input_dim", "weights", "activity_regularizer")


class RebuildFailed(Exception):
    """The model can't be rebuilt or its weights don't fit: the message is the why_not."""


def predicates(kmod, custom):
    """translate()'s ``builtin``, ``accepted`` and ``available`` for this Keras."""
    layers, activations = kmod.layers, kmod.activations

    def builtin(name):
        return name not in custom and isinstance(getattr(layers, str(name), None), type)

    def accepted(name):
        if not builtin(name):
            return None
        keys = set(BASE_LAYER_KEYS)
        for klass in inspect.getmro(getattr(layers, name)):
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            try:
                params = inspect.signature(init).parameters
            except (TypeError, ValueError):
                return None
            keys.update(p for p in params if p != "self")
        return keys

    def available(name):
        return hasattr(layers, name) or hasattr(activations, name)

    return builtin, accepted, available


def source_major(source, arch):
    """The major version of the Keras that wrote ``arch``: source.json says, else its shape."""
    version = str((source.get("versions") or {}).get("keras") or "")
    if version[:1].isdigit():
        return 3 if int(version.split(".")[0]) >= 3 else 2
    return keras_major(arch)


def build_model(kmod, arch, custom, target_major, major):
    """The model from a translated architecture: Keras 3 rebuilds a Keras 2 config through its
    legacy deserializer (what its H5 loader uses), a Keras 3 one through model_from_json."""
    if target_major >= 3 and major < 3:
        try:
            from keras.src.legacy.saving import saving_utils
        except ImportError:
            saving_utils = None
        if saving_utils is not None:
            return saving_utils.model_from_config(arch, custom_objects=custom)
    return kmod.models.model_from_json(json.dumps(arch), custom_objects=custom)


def _base(name):
    return str(name).split("/")[-1].split(":")[0]


def _ordered(layer_name, src_weights, arrays, targets, lines):
    """The source arrays in the target layer's weight order: by name when the names are the same
    set in another order, else as they come."""
    src = [_base(w["name"]) for w in src_weights]
    dst = [_base(getattr(w, "path", None) or w.name) for w in targets]
    if src != dst and sorted(src) == sorted(dst) and len(set(src)) == len(src):
        lines.append("layer '%s': weights put in the target's order by name" % layer_name)
        return [arrays[src.index(name)] for name in dst]
    return arrays


def weight_norm_arrays(layer_name, src_weights, arrays, lines):
    """tfa WeightNormalization's ``[g, v (kernel), bias, initialized, ...]`` as its inner layer's
    ``[kernel, bias]``: the kernel its ``call`` computes, ``v * rsqrt(max(sum(v^2), 1e-12)) * g``
    over all axes but the last."""
    import numpy as np

    names = [str(w["name"]).split(":")[0] for w in src_weights]

    def find(last, skip_data_init=True):
        for i, n in enumerate(names):
            if n.split("/")[-1] == last and not (skip_data_init and "data_dep_init" in n):
                return arrays[i]
        raise RebuildFailed("layer '%s': tfa WeightNormalization has no weight %r here (%s)"
                            % (layer_name, last, ", ".join(names)))

    g, v = find("g"), find("kernel")
    try:
        initialized = bool(np.asarray(find("initialized")))
    except RebuildFailed:
        initialized = True
    if not initialized:
        raise RebuildFailed("layer '%s': tfa WeightNormalization's data-dependent initialization "
                            "never ran (its first call would still change g and the bias): its "
                            "code is needed" % layer_name)
    v64 = v.astype("float64")
    axes = tuple(range(v.ndim - 1))
    norm = np.sqrt(np.maximum((v64 * v64).sum(axis=axes, keepdims=True), 1e-12))
    kernel = (v64 / norm * g.astype("float64")).astype(v.dtype)
    out = [kernel]
    if any(n.split("/")[-1] == "bias" and "data_dep_init" not in n for n in names):
        out.append(find("bias"))
    lines.append("layer '%s': kernel = l2_normalize(v) * g of tfa's WeightNormalization, "
                 "computed once" % layer_name)
    return out


def set_weights(model, source_layers, weights, renamed, lines, weight_maps=None):
    """Every source layer's weights into its target layer; RebuildFailed on any mismatch.
    Returns ``source_of(layer) -> source layer index`` for the optimizer."""
    by_name = dict((l["name"], l) for l in source_layers)
    added = set(renamed.values())       # names a translation gave to the layers it added
    used, pairs = set(), {}
    for li, layer in enumerate(model.layers):
        targets = list(layer.weights)
        if layer.name in renamed or layer.name not in added:
            src = by_name.get(renamed.get(layer.name, layer.name))
            if src is None and li < len(source_layers) and source_layers[li]["name"] not in \
                    used and source_layers[li]["class_name"] == type(layer).__name__:
                src = source_layers[li]     # renamed by the rebuild: paired by place and class
        else:
            src = None
        if src is None:
            if targets:
                raise RebuildFailed("layer '%s' (%s) has %d weights and no source layer of that "
                                    "name" % (layer.name, type(layer).__name__, len(targets)))
            continue
        used.add(src["name"])
        pairs[id(layer)] = src["index"]
        keys = ["L%d/%d" % (src["index"], wi) for wi in range(len(src["weights"]))]
        missing = [k for k in keys if k not in weights]
        if missing:
            raise RebuildFailed("weights.npz lacks %s" % ", ".join(missing[:4]))
        arrays = [weights[k] for k in keys]
        if (weight_maps or {}).get(layer.name) == WEIGHT_NORM:
            arrays = weight_norm_arrays(layer.name, src["weights"], arrays, lines)
            pairs.pop(id(layer), None)      # no optimizer slot of g or v is this kernel's
        if len(arrays) != len(targets):
            raise RebuildFailed("layer '%s' (%s): %d weights in the source, %d here"
                                % (layer.name, type(layer).__name__, len(arrays), len(targets)))
        arrays = _ordered(layer.name, src["weights"], arrays, targets, lines)
        for w, a in zip(targets, arrays):
            if tuple(int(d) for d in w.shape) != tuple(a.shape):
                raise RebuildFailed("layer '%s': weight %s has shape %s here, %s in the source"
                                    % (layer.name, _base(w.name), list(w.shape), list(a.shape)))
        if arrays:
            layer.set_weights(arrays)
    left = [l["name"] for l in source_layers if l["weights"] and l["name"] not in used]
    if left:
        raise RebuildFailed("source layers with weights have no counterpart here: %s"
                            % ", ".join(left[:6]))
    return lambda layer: pairs.get(id(layer))


def carry_optimizer(kmod, model, facts, arrays, source_of, source_major, target_major, custom):
    """Compile ``model`` with the source's optimizer and state when possible. Returns the
    optimizer report: carried, class, why_not, translated/replaced lines, loss."""
    rep = {"carried": False, "class": facts.get("class"), "why_not": None, "translated": [],
           "replaced": [], "loss": None}
    if facts.get("why_not"):
        rep["why_not"] = "the source wrote no optimizer state: %s" % facts["why_not"]
        return rep
    spec = translate_optimizer(facts.get("class"), facts.get("module"), facts.get("config"),
                               source_major, target_major)
    rep["translated"], rep["replaced"] = spec["translated"], spec["replaced"]
    if spec["why_not"]:
        rep["why_not"] = spec["why_not"]
        return rep

    def make():
        return kmod.optimizers.deserialize({"class_name": spec["class_name"],
                                            "config": dict(spec["config"])},
                                           custom_objects=custom or None)

    try:
        opt = make()
    except Exception as exc:
        rep["why_not"] = "the optimizer can't be built here: %s" % short_error(exc)
        return rep
    rep["class"] = type(opt).__name__
    loss = facts.get("loss")
    try:
        # A custom loss by the name the source registered it under: its object from the code.
        model.compile(optimizer=opt, loss=custom.get(loss, loss) if isinstance(loss, str) and
                      custom else loss)
        rep["loss"] = loss
    except Exception as exc:
        rep["loss_why_not"] = "loss %r not carried: %s" % (loss, short_error(exc))
        opt = make()
        model.compile(optimizer=opt)
    if facts.get("blocked"):        # compiled with a fresh optimizer, its state not carried
        rep["why_not"] = facts["blocked"]
        return rep
    try:
        rep["note"] = optstate.write_state(model, opt, facts, arrays, source_of)
        rep["carried"] = True
    except Exception as exc:
        rep["why_not"] = str(exc) if isinstance(exc, optstate.NotCarried) else short_error(exc)
        model.compile(optimizer=make(), loss=rep["loss"])    # a fresh one, not half the state
    return rep


def reload(kmod, path, custom, safe_mode=True):
    """The saved ``.keras`` loaded back as anyone would load it (safe mode on)."""
    load = kmod.models.load_model
    extra = {"safe_mode": bool(safe_mode)} if accepts(load, "safe_mode") else {}
    return load(path, custom_objects=custom or None, **extra)


def by_short_names(custom):
    """The custom objects, also under their class name where Keras 2 registered them under
    ``package>Name``: a Keras 2 config names a model's own class bare."""
    out = dict(custom)
    for name, obj in custom.items():
        out.setdefault(name.split(">")[-1], obj)
    return out


def _unbuilt(model, source_layers):
    """Layers the source has weights for but which have none yet (a subclassed model is built
    by its first call)."""
    wanted = dict((l["name"], len(l["weights"])) for l in source_layers)
    return [l.name for l in model.layers if wanted.get(l.name) and not l.weights] or \
        (not model.layers and any(wanted.values()))


def rebuild(kmod, arch, source, weights, optimizer_arrays, custom, target_major, artifact,
            call=None, lambdas=None):
    """Translate, build, set weights and carry the optimizer; fills ``artifact`` (translated,
    replaced, needs_code) and returns ``(model, optimizer report)``. RebuildFailed says why not.
    ``call(model)`` runs the model on the sample: it builds a model its config leaves unbuilt.
    ``lambdas``: translate()'s, the Lambda functions rebuilt from source (lambdas.py)."""
    custom = by_short_names(custom)
    builtin, accepted, available = predicates(kmod, custom)
    major = source_major(source, arch)
    tr = translate(arch, target_major, sorted(custom), builtin, accepted, available, major,
                   lambdas=lambdas)
    artifact["translated"], artifact["replaced"] = tr["translated"], tr["replaced"]
    artifact["needs_code"] = tr["needs_code"]
    if tr["blocked"]:
        raise RebuildFailed("; ".join(tr["blocked"]))
    try:
        model = build_model(kmod, tr["config"], custom, target_major, major)
    except Exception as exc:
        why = "the architecture can't be rebuilt here: %s" % short_error(exc)
        if tr["needs_code"]:
            why += "; " + "; ".join(tr["needs_code"])
        raise RebuildFailed(why)
    if call is not None and _unbuilt(model, source["model"]["layers"]):
        try:
            call(model)
            artifact["translated"].append("the model was built by a call on the sample (its "
                                          "config doesn't build it)")
        except Exception as exc:
            raise RebuildFailed("the rebuilt model can't be built by a call on the sample: %s"
                                % short_error(exc))
    lines = []
    source_of = set_weights(model, source["model"]["layers"], weights, tr["renamed"], lines,
                            tr["weight_maps"])
    artifact["translated"].extend(lines)
    facts = source.get("optimizer") or {"why_not": "source.json says nothing of an optimizer"}
    if tr["weight_maps"] and not facts.get("why_not"):
        facts = dict(facts, blocked="its slots belong to tfa WeightNormalization's g and v, which "
                                    "the layers that replaced it (%s) don't have"
                     % ", ".join(sorted(tr["weight_maps"])))
    opt = carry_optimizer(kmod, model, facts, optimizer_arrays or {}, source_of,
                          major, target_major, custom)
    return model, opt
