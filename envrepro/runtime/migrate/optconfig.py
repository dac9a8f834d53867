"""An optimizer's class and config for another Keras, and where its state lives: pure functions
and tables, no TensorFlow (optstate.py reads and writes the state itself).

The state carried is the per-variable slots whose meaning every Keras shares (the same update
rules, checked against their code): Adam/AdamW ``m``, ``v`` (and ``vhat`` with amsgrad), SGD's
``momentum``, RMSprop's ``rms``, ``momentum``, ``mg`` (centered) and Adagrad's ``accumulator``,
plus the iteration count. Keras 2's OptimizerV2 names them by slot (``get_slot``); Keras 2.11+
and Keras 3 keep lists aligned with the optimizer's variable index, under the attribute names
below. Python 3.6 syntax, standard library only.
"""
from .addons import is_number, translate_addons_optimizer

# class -> {slot name (OptimizerV2's): attribute of the list in Keras 2.11+ and Keras 3}
SLOTS = {
    "Adam": {"m": "_momentums", "v": "_velocities", "vhat": "_velocity_hats"},
    "AdamW": {"m": "_momentums", "v": "_velocities", "vhat": "_velocity_hats"},
    "SGD": {"momentum": "momentums"},
    "RMSprop": {"rms": "_velocities", "momentum": "_momentums", "mg": "_average_gradients"},
    "Adagrad": {"accumulator": "_accumulators"},
}
DROPPED_KEYS = ("jit_compile", "is_legacy_optimizer")
SCHEDULES = ("ExponentialDecay", "PiecewiseConstantDecay", "PolynomialDecay", "InverseTimeDecay",
             "CosineDecay", "CosineDecayRestarts")


def short_class(name):
    """'Addons>AdamW', 'keras.optimizers.Adam', 'Custom>Adam' -> the last part."""
    return str(name or "").replace(">", ".").split(".")[-1]


def is_addons(class_name, module):
    return str(class_name or "").startswith("Addons>") or \
        str(module or "").startswith("tensorflow_addons")


def translate_optimizer(class_name, module, config, source_major, target_major=3):
    """``{"class_name", "config", "translated", "replaced", "why_not"}``: the optimizer to build
    in the target (``why_not`` set and class_name None when none can be)."""
    out = {"class_name": short_class(class_name), "config": dict(config or {}), "translated": [],
           "replaced": [], "why_not": None}
    short = out["class_name"]
    if short == "LossScaleOptimizer" or "inner_optimizer" in out["config"]:
        out.update(class_name=None, why_not="a LossScaleOptimizer (mixed precision) is not "
                                            "carried over")
        return out
    if is_addons(class_name, module):
        keras_class, cfg, lines, why = translate_addons_optimizer(class_name, out["config"])
        if keras_class is None:
            out.update(class_name=None, why_not=why)
            return out
        out.update(class_name=keras_class, config=cfg)
        out["replaced"].extend(lines)
    if source_major >= 3:
        return out
    cfg = out["config"]
    if "lr" in cfg and "learning_rate" not in cfg:
        cfg["learning_rate"] = cfg.pop("lr")
        out["translated"].append("optimizer: lr -> learning_rate")
    for key in DROPPED_KEYS:
        if key in cfg:
            cfg.pop(key)
            out["translated"].append("optimizer: %s dropped (not a Keras %d argument)"
                                     % (key, target_major))
    decay = cfg.pop("decay", None)
    if decay:
        lr = cfg.get("learning_rate")
        if not is_number(lr):
            out.update(class_name=None, why_not="Keras 2's decay=%r on a learning-rate schedule "
                                                "has no Keras 3 form" % decay)
            return out
        cfg["learning_rate"] = {"module": "keras.optimizers.schedules",
                                "class_name": "InverseTimeDecay", "registered_name": None,
                                "config": {"initial_learning_rate": lr, "decay_steps": 1,
                                           "decay_rate": decay, "staircase": False}}
        out["translated"].append("optimizer: decay=%r -> learning_rate InverseTimeDecay(%r, "
                                 "decay_steps=1, decay_rate=%r) (Keras 2's lr / (1 + decay * "
                                 "iterations))" % (decay, lr, decay))
    elif decay is not None:
        out["translated"].append("optimizer: decay=%r dropped (Keras %d has none)"
                                 % (decay, target_major))
    lr = cfg.get("learning_rate")
    if isinstance(lr, dict) and lr.get("class_name") in SCHEDULES and not lr.get("module"):
        lr = dict(lr, module="keras.optimizers.schedules", registered_name=None)
        cfg["learning_rate"] = lr
        out["translated"].append("optimizer: learning_rate schedule %s given its Keras 3 module"
                                 % lr["class_name"])
    return out


def slot_table(class_name):
    """The carried slots of an optimizer class (by short name), or None."""
    return SLOTS.get(short_class(class_name))
