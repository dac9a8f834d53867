"""tensorflow-addons objects that core Keras computes the same way, and how their configs map.

Only what was checked against tfa's own code is here:

- ``Addons>GroupNormalization`` -> ``GroupNormalization``: Keras' layer is tfa's, ported (the
  same reshape into groups, moments over the group's axes, ``(x - mean) * rsqrt(var + epsilon)``,
  then ``gamma``/``beta`` of shape (channels,), created in that order); same config keys, same
  default ``epsilon`` (1e-3).
- ``Addons>InstanceNormalization`` -> ``GroupNormalization(groups=-1)``: tfa's class is that
  very subclass (it forces ``groups=-1``: one group per channel, resolved at build).
- ``Addons>gelu`` / ``Addons>GELU``: tfa's default is ``approximate=True`` (the tanh form);
  Keras' ``gelu`` defaults to the exact (erf) form, so the replacement passes
  ``approximate=True`` explicitly through a Lambda calling ``keras.activations.gelu`` by name.
- ``Addons>mish``, ``Addons>tanhshrink``, ``Addons>hardshrink``, ``Addons>softshrink`` (their
  default bounds +-0.5, which a name in a config implies) -> Keras' ``mish``, ``tanh_shrink``,
  ``hard_shrink``, ``soft_shrink`` (threshold 0.5): the same formulas.
- ``Addons>WeightNormalization(layer)`` -> ``layer`` (Dense or a convolution) with the kernel
  tfa's ``call`` computes, ``l2_normalize(v, all axes but the last) * g`` (epsilon 1e-12), and
  the same bias: the same predictions. Training would no longer be weight-normalized, so the
  report says so and the optimizer's state (slots of ``g`` and ``v``) is not carried. A layer
  whose data-dependent initialization never ran (``initialized`` false) is not replaced: its
  first call would still change ``g`` and the bias.
- ``Addons>AdamW`` -> ``keras.optimizers.AdamW``: tfa subtracts ``weight_decay * var`` per step,
  Keras ``weight_decay * learning_rate * var``, both before the Adam step: the same update with
  Keras' ``weight_decay = tfa's / learning_rate`` when both are constants.

Python 3.6 syntax, standard library only.
"""

GELU_FUNCTION = {"module": "keras.activations", "class_name": "function", "config": "gelu",
                 "registered_name": "function"}

ADDONS_ACTIVATIONS = {
    "Addons>mish": "mish",
    "Addons>tanhshrink": "tanh_shrink",
    "Addons>hardshrink": "hard_shrink",
    "Addons>softshrink": "soft_shrink",
}

# Layers tfa's WeightNormalization wraps through their ``kernel`` (an RNN's is its cell's).
WEIGHT_NORM_INNER = ("Dense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
                     "Conv3DTranspose")
WEIGHT_NORM = "weight_norm"

GROUP_NORM_KEYS = ("name", "trainable", "dtype", "groups", "axis", "epsilon", "center", "scale",
                   "beta_initializer", "gamma_initializer", "beta_regularizer",
                   "gamma_regularizer", "beta_constraint", "gamma_constraint")


def translate_addons_layer(entry, ctx, keras3=True):
    """Replace a tfa layer entry in place by its core equivalent; False when there is none (or
    the target Keras lacks it). ``ctx`` collects the lines (translate._Context)."""
    name = entry.get("class_name")
    config = entry.get("config") or {}
    if name in ("Addons>GroupNormalization", "Addons>InstanceNormalization"):
        if not ctx.available("GroupNormalization"):
            return False
        new = dict((k, v) for k, v in config.items() if k in GROUP_NORM_KEYS)
        dropped = sorted(k for k in config if k not in GROUP_NORM_KEYS)
        if name == "Addons>InstanceNormalization":
            new["groups"] = -1
            ctx.add("replaced", "Addons>InstanceNormalization -> keras.layers.GroupNormalization"
                                "(groups=-1) (tfa's InstanceNormalization is that subclass)")
        else:
            ctx.add("replaced", "Addons>GroupNormalization -> keras.layers.GroupNormalization")
        if dropped:
            ctx.add("translated", "%s: %s dropped" % (name, ", ".join(dropped)))
        entry["class_name"] = "GroupNormalization"
        entry["config"] = new
        return True
    if name == "Addons>WeightNormalization":
        inner = config.get("layer")
        inner_name = inner.get("class_name") if isinstance(inner, dict) else None
        if inner_name not in WEIGHT_NORM_INNER or not isinstance(inner.get("config"), dict):
            return False
        new = dict(inner["config"])
        new["name"] = config.get("name", new.get("name"))
        for key in ("trainable", "dtype"):
            if key in config:
                new[key] = config[key]
        entry.clear()
        entry.update({"class_name": inner_name, "config": new})
        ctx.weight_maps[new["name"]] = WEIGHT_NORM
        ctx.add("replaced", "Addons>WeightNormalization(%s) '%s' -> keras.layers.%s with the "
                            "kernel tfa computes, l2_normalize(v) * g: the same predictions; "
                            "training is no longer weight-normalized" % (inner_name, new["name"],
                                                                         inner_name))
        return True
    if name == "Addons>GELU" and keras3 and ctx.available("gelu"):
        approximate = bool(config.get("approximate", True))
        entry["class_name"] = "Lambda"
        entry["config"] = {"name": config.get("name"), "trainable": config.get("trainable", True),
                           "dtype": config.get("dtype"), "function": dict(GELU_FUNCTION),
                           "arguments": {"approximate": approximate}}
        ctx.add("replaced", "Addons>GELU -> keras.activations.gelu(approximate=%s), in a Lambda "
                            "layer" % approximate)
        return True
    return False


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def translate_addons_optimizer(class_name, config):
    """``(keras class, config, lines, why_not)`` for a tfa optimizer; keras class None when it
    has no core equivalent."""
    short = str(class_name).split(">")[-1]
    if short != "AdamW":
        return None, config, [], ("%s (tensorflow-addons) has no core Keras equivalent"
                                  % class_name)
    config = dict(config)
    lr, wd = config.get("learning_rate"), config.get("weight_decay")
    lines = []
    if not (is_number(lr) and is_number(wd)):
        return None, config, [], ("tfa's AdamW subtracts weight_decay * var per step, Keras' "
                                  "AdamW weight_decay * learning_rate * var: with a schedule "
                                  "(learning_rate %r, weight_decay %r) no constant maps one to "
                                  "the other" % (lr, wd))
    config["weight_decay"] = float(wd) / float(lr) if lr else 0.0
    lines.append("Addons>AdamW -> keras.optimizers.AdamW (weight_decay %r = tfa's %r / "
                 "learning_rate %r: Keras scales it by the learning rate)"
                 % (config["weight_decay"], wd, lr))
    excluded = config.pop("exclude_from_weight_decay", None)
    if excluded:
        lines.append("Addons>AdamW: exclude_from_weight_decay %r not carried (tfa matches "
                     "variable names Keras 3 doesn't have)" % (excluded,))
    return "AdamW", config, lines, None
