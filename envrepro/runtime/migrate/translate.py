"""A saved model's architecture (``model.to_json()``) made buildable by another Keras: pure
functions over dicts, no TensorFlow, each change listed in words.

Keras 2 configs (TF 2.4 .. 2.15) are rebuilt by Keras 3 through its legacy deserializer (the one
its H5 loader uses), which takes layers whose config holds no ``module`` key. What it does not
take is translated here: keys Keras 3 renamed or dropped (``batch_input_shape``, ``time_major``,
``groups`` of depthwise convolutions...), the 2.13 .. 2.15 serialization (``module``,
``registered_name``, functions as ``{"class_name": "function"}``, dtype policies as dicts), and
wrapped layers, which Keras 3 deserializes the new way (builtins need ``module``).

Known tensorflow-addons objects are replaced by core Keras ones that compute the same thing:
``Addons>GroupNormalization`` (same moments, ``epsilon`` and ``gamma``/``beta``),
``Addons>InstanceNormalization`` (tfa's own subclass of it with ``groups=-1``: one group per
channel), ``Addons>gelu`` (tfa's default is the tanh approximation: a ``Lambda`` calling
``keras.activations.gelu`` with ``approximate=True``, a named function, no bytecode) and a few
activations with the same formula. Anything else of tfa needs its code.

A Lambda whose function is bytecode (every Keras 2 Lambda of a Python function, every Keras 3
``lambda``) is never rebuilt from that bytecode. For a Keras 3 target, ``lambdas`` maps a layer
name to the named function rebuilt from the source the capture recorded (migrate/lambdas.py):
its serialized reference replaces the bytecode. Without one, ``blocked`` says why. Python 3.6
syntax, standard library only.
"""
import copy

from .addons import ADDONS_ACTIVATIONS, translate_addons_layer
from .graph import MODEL_CLASSES, split_gelu, tensor_kwargs

WRAPPERS = ("Bidirectional", "TimeDistributed")
RNN_CLASSES = ("RNN", "SimpleRNN", "LSTM", "GRU", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D",
               "CuDNNLSTM", "CuDNNGRU")
DEPTHWISE = ("DepthwiseConv1D", "DepthwiseConv2D")
SEPARABLE = ("SeparableConv1D", "SeparableConv2D")
TRANSPOSE = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
POLICY_CLASSES = ("Policy", "DTypePolicy", "PolicyV1", "FloatDTypePolicy")
SERIALIZATION_KEYS = ("module", "registered_name", "build_config", "compile_config",
                      "shared_object_id")


def keras_major(arch):
    """2 or 3: the Keras that wrote ``arch`` (architecture.json), by its ``keras_version``,
    else by its shape (Keras 3 layers carry ``module`` and dict ``inbound_nodes``)."""
    version = str(arch.get("keras_version") or "")
    if version[:1].isdigit():
        return 3 if int(version.split(".")[0]) >= 3 else 2
    if "module" in arch:        # Keras 3's to_json: no keras_version, a module at the top
        return 3
    text = repr(arch.get("config"))
    return 3 if "'args'" in text and "__keras_tensor__" in text else 2


class _Context(object):
    """The lines a translation collects, deduplicated in order."""

    def __init__(self, custom_names, builtin, accepted, available, lambdas=None):
        self.custom_names = set(custom_names or ())
        self.lambdas = dict(lambdas or {})
        self.builtin = builtin or (lambda name: ">" not in name and name not in self.custom_names)
        self.accepted = accepted or (lambda name: None)
        self.available = available or (lambda name: True)
        self.translated, self.replaced, self.blocked, self.needs_code = [], [], [], []
        self.renamed = {}
        self.weight_maps = {}       # layer name -> how its source weights become its own

    def add(self, which, line):
        target = getattr(self, which)
        if line not in target:
            target.append(line)


def translate(arch, target_major=3, custom_names=(), builtin=None, accepted=None, available=None,
              source_major=None, lambdas=None):
    """``arch`` (architecture.json: class_name, config, keras_version) for a Keras of
    ``target_major``. Returns a dict: ``config`` (the new architecture), ``translated`` and
    ``replaced`` (lines), ``blocked`` (why it can't be rebuilt at all), ``needs_code`` (objects
    only their own code builds), ``renamed`` (target layer name -> source layer name).

    ``builtin(class_name)``: a core Keras layer here; ``accepted(class_name)``: the config keys
    its constructor takes (None: unknown); ``available(name)``: a core layer or activation of
    that name exists in the target. The target passes all three; the defaults guess.
    ``source_major``: the Keras that wrote it (source.json's), else keras_major(arch).
    ``lambdas``: layer name -> ``{"function": serialized named function, "source": text}`` or
    ``{"why_not": text}`` (migrate/lambdas.py).
    """
    ctx = _Context(custom_names, builtin, accepted, available, lambdas)
    arch = copy.deepcopy(arch)
    source_major = source_major or keras_major(arch)
    if source_major >= 3 and target_major < 3:
        ctx.add("blocked", "a Keras 3 model can't be rebuilt by Keras %d" % target_major)
    elif source_major >= 3:
        _scan_keras3(arch, ctx)
    elif target_major >= 3:
        _entry(arch, ctx)
    else:
        _scan_keras2_for_keras2(arch, ctx)
    return {"config": arch, "translated": ctx.translated, "replaced": ctx.replaced,
            "blocked": ctx.blocked, "needs_code": ctx.needs_code, "renamed": ctx.renamed,
            "weight_maps": ctx.weight_maps}


# -- Keras 3 source, Keras 3 target: nothing to rename, only what must not be rebuilt -----------

def _walk_dicts(value):
    if isinstance(value, dict):
        yield value
        for v in value.values():
            for d in _walk_dicts(v):
                yield d
    elif isinstance(value, list):
        for v in value:
            for d in _walk_dicts(v):
                yield d


def _scan_keras3(arch, ctx):
    for d in _walk_dicts(arch):
        config = d.get("config")
        if d.get("class_name") == "Lambda" and isinstance(config, dict):
            _check_lambda(config, ctx)
    for d in _walk_dicts(arch):
        if d.get("class_name") == "__lambda__" and not ctx.blocked:
            ctx.add("blocked", "a Lambda layer's function is Python bytecode: it needs its source "
                               "code")


def _scan_keras2_for_keras2(arch, ctx):
    """Keras 2 into Keras 2 (TF 2.12 .. 2.15): the config is read as it is; bytecode Lambdas and
    tensorflow-addons objects are what stands in the way."""
    for d in _walk_dicts(arch):
        name = d.get("class_name")
        config = d.get("config")
        if name == "Lambda" and isinstance(config, dict):
            _check_lambda(config, ctx, rebuild=False)
        elif isinstance(name, str) and name.startswith("Addons>") and isinstance(config, dict):
            done = translate_addons_layer(d, ctx, keras3=False)
            if not done:
                ctx.add("needs_code", _needs_code_line(name))
        if isinstance(config, dict):
            for key in ("activation", "recurrent_activation"):
                value = config.get(key)
                if isinstance(value, str) and value.startswith("Addons>"):
                    ctx.add("needs_code", "%s '%s': %s %s is tensorflow-addons': its code is "
                                          "needed in Keras 2" % (name, config.get("name"), key,
                                                                  value))


# -- Keras 2 source, Keras 3 target -------------------------------------------------------------

def _needs_code_line(name):
    return ("%s (tensorflow-addons) has no core Keras equivalent: its code is needed "
            "(--code-path)" % name)


def _is_bytecode(config, key):
    value = config.get(key)
    return isinstance(value, list) and key == "function" or (
        isinstance(value, list) and config.get(key + "_type") == "lambda") or (
        isinstance(value, dict) and value.get("class_name") == "__lambda__")


def _check_lambda(config, ctx, rebuild=True):
    """A Lambda's bytecode function replaced by its function rebuilt from source (``rebuild``:
    a Keras 3 target), else blocked with the reason."""
    layer = config.get("name")
    if _is_bytecode(config, "function"):
        found = ctx.lambdas.get(layer) or {}
        if rebuild and found.get("function"):
            config["function"] = dict(found["function"])
            for key in ("function_type", "module"):
                config.pop(key, None)
            ctx.add("translated", "Lambda '%s': its function rebuilt from the source the capture "
                                  "recorded (%s), as %s (not from bytecode)"
                    % (layer, _short(found.get("source")), found["function"].get("config")))
        else:
            why = found.get("why_not") or ("the capture recorded no source for it"
                                           if rebuild else "Keras 2 writes any Lambda function "
                                           "as bytecode again: a .keras without bytecode needs "
                                           "a Keras 3 target")
            ctx.add("blocked", "Lambda layer '%s': its function is Python bytecode of the "
                               "source's Python and can't be rebuilt from source: %s"
                    % (layer, why))
    for key in ("output_shape", "mask"):
        if _is_bytecode(config, key):
            ctx.add("blocked", "Lambda layer '%s': its %s is Python bytecode of the source's "
                               "Python: it needs its source code" % (layer, key))
    if rebuild and config.get("output_shape_type") == "raw":
        for key in ("output_shape_type", "output_shape_module"):
            if key in config:
                ctx.add("translated", "Lambda: %s=%r dropped (Keras 2's marker of a plain "
                                      "output_shape)" % (key, config.pop(key)))


def _short(text, limit=80):
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _plain(value, ctx, owner):
    """Nested serialized objects (initializers, regularizers, functions, dtype policies) in the
    legacy form: no ``module``/``registered_name``; a function as its registered name."""
    if isinstance(value, list):
        return [_plain(v, ctx, owner) for v in value]
    if not isinstance(value, dict):
        return value
    if "class_name" in value and "config" in value:
        name = value.get("class_name")
        if name == "function" and isinstance(value.get("config"), str):
            ctx.add("translated", "%s: function {'class_name': 'function', 'config': %r} -> its "
                                  "name" % (owner, value["config"]))
            return value["config"]
        if name in POLICY_CLASSES and isinstance(value.get("config"), dict):
            policy = value["config"].get("name")
            ctx.add("translated", "%s: dtype policy %s -> %r" % (owner, name, policy))
            return policy
        out = {}
        module = value.get("module")
        registered = value.get("registered_name")
        for k, v in value.items():
            if k in SERIALIZATION_KEYS:
                continue
            out[k] = v if k == "class_name" else _plain(v, ctx, owner)
        if registered and registered != name and module and not str(module).startswith("keras"):
            out["class_name"] = registered
        return out
    return dict((k, _plain(v, ctx, owner)) for k, v in value.items())


def _entry(entry, ctx, first_in_sequential=False):
    """One serialized layer (or model) of a Keras 2 config, translated in place."""
    name = entry.get("class_name")
    module = entry.get("module")
    registered = entry.get("registered_name")
    for key in SERIALIZATION_KEYS:
        entry.pop(key, None)
    if registered and registered != name and module and not str(module).startswith("keras"):
        entry["class_name"] = name = registered
    config = entry.get("config")
    if not isinstance(config, dict):
        return entry
    if name in MODEL_CLASSES and isinstance(config.get("layers"), list):
        _model(entry, ctx)
        return entry
    if isinstance(name, str) and name.startswith("Addons>"):
        if not translate_addons_layer(entry, ctx, keras3=True):
            ctx.add("needs_code", _needs_code_line(name))
        name, config = entry["class_name"], entry["config"]
    layer = config.get("name", name)
    for key in list(config):
        config[key] = _plain(config[key], ctx, name)
    _rules(name, config, ctx, first_in_sequential)
    if name in WRAPPERS:
        for key in ("layer", "backward_layer"):
            inner = config.get(key)
            if isinstance(inner, dict) and "class_name" in inner:
                _entry(inner, ctx)
                if ctx.builtin(inner["class_name"]):
                    # Keras 3 deserializes a wrapped layer the new way: builtins need their module.
                    inner["module"] = "keras.layers"
                    inner["registered_name"] = None
                if _activation_of(inner.get("config")) == "Addons>gelu":
                    ctx.add("needs_code", "%s '%s' wraps a layer with activation Addons>gelu: its "
                                          "code is needed" % (name, layer))
    if name == "Lambda":
        _check_lambda(config, ctx)
    _activations(name, config, ctx)
    _unknown_keys(name, config, ctx)
    return entry


def _activation_of(config):
    return config.get("activation") if isinstance(config, dict) else None


def _rules(name, config, ctx, first_in_sequential):
    """Keys Keras 3 renamed or dropped, by class."""
    def drop(key, harmless, why):
        if key not in config:
            return
        if config[key] in harmless:
            ctx.add("translated", "%s: %s=%r dropped (%s)" % (name, key, config.pop(key), why))
        else:
            ctx.add("blocked", "%s '%s': %s=%r has no Keras 3 equivalent (%s)"
                    % (name, config.get("name"), key, config[key], why))

    if name in ("TFOpLambda", "SlicingOpLambda"):
        ctx.add("blocked", "%s '%s': a TensorFlow function (%s) called on a Keras tensor; "
                           "Keras 3 has no such layer: the model's code must wrap it in a layer"
                % (name, config.get("name"), config.get("function")))
        return
    if name == "InputLayer":
        if "batch_input_shape" in config:
            config["batch_shape"] = config.pop("batch_input_shape")
            ctx.add("translated", "InputLayer: batch_input_shape -> batch_shape")
        drop("ragged", (False, None), "Keras 3 has no ragged inputs")
        return
    if "batch_input_shape" in config and not first_in_sequential:
        config.pop("batch_input_shape")
        ctx.add("translated", "%s: batch_input_shape dropped (the model's InputLayer holds the "
                              "input shape)" % name)
    if name in DEPTHWISE + SEPARABLE + TRANSPOSE:
        drop("groups", (1, None), "Keras 3's %s takes no groups" % name)
    if name in SEPARABLE:
        for key in ("kernel_initializer", "kernel_regularizer", "kernel_constraint"):
            if key in config:
                config.pop(key)
                ctx.add("translated", "%s: %s dropped (unused: separable convolutions have "
                                      "depthwise and pointwise kernels)" % (name, key))
    if name in RNN_CLASSES:
        drop("time_major", (False, None), "Keras 3 RNNs are batch-major")
    if name == "MultiHeadAttention":
        for key in ("query_shape", "key_shape", "value_shape"):
            if key in config:
                config.pop(key)
                ctx.add("translated", "MultiHeadAttention: %s dropped (Keras 3 builds from "
                                      "the call's shapes)" % key)
    if name == "Embedding" and "input_length" in config:
        config.pop("input_length")
        ctx.add("translated", "Embedding: input_length dropped (Keras 3 has none)")
    if name == "LeakyReLU" and "alpha" in config:
        config["negative_slope"] = config.pop("alpha")
        ctx.add("translated", "LeakyReLU: alpha -> negative_slope")
    if name in ("Attention", "AdditiveAttention"):
        drop("causal", (False, None), "Keras 3 takes use_causal_mask when called")


def _unknown_keys(name, config, ctx):
    """Keys the target's constructor doesn't take: dropped when off (None or False), which is
    what an absent argument means; any other value is kept (the rebuild then names it)."""
    known = ctx.accepted(name)
    if known is None:
        return
    for key in sorted(set(config) - set(known)):
        if config[key] is None or config[key] is False:
            config.pop(key)
            ctx.add("translated", "%s: %s dropped (not a Keras 3 argument; it was off)"
                    % (name, key))


def _activations(name, config, ctx):
    """tensorflow-addons activations named in a layer's config."""
    for key in ("activation", "recurrent_activation"):
        value = config.get(key)
        if not isinstance(value, str) or not value.startswith("Addons>"):
            continue
        core = ADDONS_ACTIVATIONS.get(value)
        if core and ctx.available(core):
            config[key] = core
            ctx.add("replaced", "%s -> keras.activations.%s" % (value, core))
        elif value == "Addons>gelu" and (name == "Activation" or key == "activation"):
            pass    # split into a Lambda by _model (it needs the layer's place in the model)
        else:
            ctx.add("needs_code", "%s '%s': %s %s has no core Keras equivalent: its code is "
                                  "needed" % (name, config.get("name"), key, value))


def _model(entry, ctx):
    """A Sequential or Functional config: its layers, then tfa gelu activations split out."""
    config = entry["config"]
    layers = config["layers"]
    sequential = entry.get("class_name") == "Sequential"
    has_input = bool(layers) and isinstance(layers[0], dict) and \
        layers[0].get("class_name") == "InputLayer"
    for i, layer in enumerate(layers):
        if isinstance(layer, dict):
            _entry(layer, ctx, first_in_sequential=sequential and i == 0 and not has_input)
    if sequential and layers and not has_input:
        first = layers[0].get("config") or {}
        shape = first.pop("batch_input_shape", None)
        if shape is not None:
            layers.insert(0, {"class_name": "InputLayer", "config": {
                "batch_shape": shape, "dtype": first.get("dtype"),
                "name": "%s_input" % first.get("name", "input")}})
            ctx.add("translated", "Sequential: the first layer's batch_input_shape -> an "
                                  "InputLayer")
    split_gelu(layers, ctx)
    if not sequential:
        tensor_kwargs(layers, ctx)
