"""The optimizer's state across Keras versions: read per model variable in the source, written
into the target's optimizer of the same kind (optconfig.SLOTS says which slots carry over).

In ``optimizer.npz``: ``iterations`` and ``slot/<slot>/<t>``, the slot of the model's ``t``-th
trainable variable (``model.trainable_weights`` order); source.json says which layer and which of
its weights each ``t`` is, so the target finds its own variable by layer, not by name (names
differ between Keras versions). Python 3.6 syntax; TensorFlow objects are passed in.
"""
from ..facts import json_safe, short_error
from ..optimizer import optimizer_variables, restore_savedmodel_optimizer
from ..savedstate import saved_optimizer_state
from .optconfig import SLOTS, short_class


class NotCarried(Exception):
    """The optimizer's state can't be read or written here: the message says why."""


def _value(np, variable):
    value = variable.numpy() if hasattr(variable, "numpy") else variable
    return np.asarray(value)


def _variable_index(opt):
    """The Keras 2.11+ / Keras 3 optimizer's index of a model variable in its slot lists."""
    if hasattr(opt, "_get_variable_index"):
        return opt._get_variable_index
    if hasattr(opt, "_index_dict") and hasattr(opt, "_var_key"):
        return lambda var: opt._index_dict[opt._var_key(var)]
    return None


def _owners(model):
    """``id(variable) -> (layer index, layer name, weight index)`` over ``model.layers``."""
    owners = {}
    for li, layer in enumerate(model.layers):
        for wi, w in enumerate([w for w in layer.weights if hasattr(w, "numpy")]):
            owners.setdefault(id(w), (li, layer.name, wi))
    return owners


def restore_lazy_state(np, model, model_path, fmt):
    """Keras 2's SavedModel ``load_model`` leaves the optimizer's state in the checkpoint (the
    loader restores it only when the capture expects it): restored the loader's way when the
    file holds state and the optimizer shows none."""
    opt = getattr(model, "optimizer", None)
    if opt is None or fmt != "savedmodel" or not model_path:
        return
    try:
        if int(_value(np, opt.iterations)):
            return
        saved = saved_optimizer_state(model_path, fmt)
        if saved and saved.get("saved"):
            restore_savedmodel_optimizer(model, model_path)
    except Exception:
        pass    # read_state says what state there is


def read_state(np, model):
    """``(facts, arrays)`` of the compiled model's optimizer: class, JSON-safe config,
    iterations, the slots carried and the owner of each variable. NotCarried says why not."""
    opt = getattr(model, "optimizer", None)
    if opt is None:
        raise NotCarried("the model has no optimizer (not compiled, or loaded with compile=False)")
    name = type(opt).__name__
    facts = {"class": name, "module": type(opt).__module__, "config": None, "iterations": None,
             "slots": [], "variables": [], "num_variables": len(optimizer_variables(opt))}
    try:
        facts["config"] = json_safe(opt.get_config())
    except Exception as exc:
        raise NotCarried("its config can't be read: %s" % short_error(exc))
    table = SLOTS.get(short_class(name))
    if table is None:
        raise NotCarried("the state of %s is not carried (only %s)"
                         % (name, ", ".join(sorted(SLOTS))))
    iterations = _value(np, opt.iterations)
    facts["iterations"] = int(iterations)
    if not facts["iterations"]:
        raise NotCarried("the optimizer never stepped: it has no state to carry")
    owners = _owners(model)
    arrays = {"iterations": iterations.astype("int64")}
    index = None if hasattr(opt, "get_slot_names") else _variable_index(opt)
    if index is None and not hasattr(opt, "get_slot_names"):
        raise NotCarried("this %s keeps its slots where envrepro can't read them" % name)
    for t, var in enumerate(model.trainable_weights):
        owner = owners.get(id(var))
        if owner is None:
            raise NotCarried("trainable variable %s belongs to no layer of model.layers"
                             % getattr(var, "name", t))
        facts["variables"].append({"t": t, "layer": owner[0], "layer_name": owner[1],
                                   "weight": owner[2], "shape": list(_value(np, var).shape)})
        for slot, attr in sorted(table.items()):
            try:
                if index is None:
                    if slot not in opt.get_slot_names():
                        continue
                    value = opt.get_slot(var, slot)
                else:
                    lst = getattr(opt, attr, None)
                    if not lst:
                        continue
                    value = lst[index(var)]
            except Exception as exc:
                raise NotCarried("slot %s of %s can't be read: %s"
                                 % (slot, getattr(var, "name", t), short_error(exc)))
            arrays["slot/%s/%d" % (slot, t)] = _value(np, value)
            if slot not in facts["slots"]:
                facts["slots"].append(slot)
    if not facts["slots"]:
        raise NotCarried("the optimizer holds no slot variables")
    return facts, arrays


def _slot_getter(opt, table, variables):
    """``slot(var, name)``: the target optimizer's slot variable, once built on ``variables``:
    by ``get_slot`` (Keras 2's OptimizerV2) or in its per-variable lists (Keras 2.11+, 3)."""
    if hasattr(opt, "get_slot_names") and hasattr(opt, "_create_all_weights"):
        opt._create_all_weights(variables)
        return opt.get_slot
    if hasattr(opt, "build"):
        opt.build(variables)
    index = _variable_index(opt)
    if index is None:
        raise NotCarried("the target optimizer keeps its slots where envrepro can't set them")

    def slot(var, name):
        lst = getattr(opt, table[name], None)
        if not lst:
            raise NotCarried("the target %s has no %s slots (its config differs?)"
                             % (type(opt).__name__, name))
        return lst[index(var)]

    return slot


def write_state(model, opt, facts, arrays, source_of):
    """Build ``opt`` on ``model``'s trainable variables and assign the source's state.
    ``source_of(layer) -> source layer index`` (or None) pairs the layers. Returns a note; raises
    NotCarried when the state doesn't fit."""
    table = SLOTS.get(short_class(type(opt).__name__))
    if table is None:
        raise NotCarried("the target optimizer %s has no carried slots" % type(opt).__name__)
    variables = list(model.trainable_variables)
    slot_of = _slot_getter(opt, table, variables)
    by_owner = dict(((v["layer"], v["weight"]), v["t"]) for v in facts["variables"])
    t_of = {}
    for layer in model.layers:
        src = source_of(layer)
        for wi, w in enumerate(layer.weights):
            t_of[id(w)] = None if src is None else by_owner.get((src, wi))
    assigned = 0
    for var in variables:
        t = t_of.get(id(var))
        if t is None:
            raise NotCarried("variable %s has no counterpart in the source's optimizer state"
                             % getattr(var, "path", getattr(var, "name", "?")))
        for name in facts["slots"]:
            if name not in table:
                raise NotCarried("slot %s has no place in the target's %s"
                                 % (name, type(opt).__name__))
            try:
                target = slot_of(var, name)
            except NotCarried:
                raise
            except Exception as exc:
                raise NotCarried("slot %s of %s: %s" % (name, getattr(var, "name", t),
                                                        short_error(exc)))
            value = arrays.get("slot/%s/%d" % (name, t))
            if value is None or tuple(value.shape) != tuple(int(d) for d in target.shape):
                raise NotCarried("slot %s of variable %d: shape %s, the target's %s"
                                 % (name, t, None if value is None else list(value.shape),
                                    list(target.shape)))
            target.assign(value.astype(str(getattr(target.dtype, "name", target.dtype))))
            assigned += 1
    opt.iterations.assign(int(arrays["iterations"]))
    return "%d slot variables and iterations %d carried" % (assigned, int(arrays["iterations"]))
