"""Edits of a Keras 2 model's layer list that need the layers around them (translate.py does
the per-layer ones): a tfa gelu activation split into a Lambda after its layer, and call
arguments that are tensors (``MultiHeadAttention``'s ``value``) rewritten the way Keras 3 reads
them. Pure functions over dicts, Python 3.6 syntax.
"""
from .addons import GELU_FUNCTION

MODEL_CLASSES = ("Sequential", "Functional", "Model")


def _is_ref(value, names):
    """A Keras 2 serialized tensor: ``[layer name, node index, tensor index]``."""
    return isinstance(value, list) and len(value) == 3 and value[0] in names and \
        isinstance(value[1], int) and isinstance(value[2], int)


def _tensor(ref):
    # Keras 3 replaces this placeholder by the tensor ``keras_history`` names (functional.py
    # deserialize_node); its shape and dtype are not used.
    return {"class_name": "__keras_tensor__",
            "config": {"shape": [], "dtype": "float32", "keras_history": list(ref[:3])}}


def _tensors_in(value, names):
    if _is_ref(value, names):
        return _tensor(value)
    if isinstance(value, list):
        return [_tensors_in(v, names) for v in value]
    if isinstance(value, dict):
        return dict((k, _tensors_in(v, names)) for k, v in value.items())
    return value


def _has_ref(value, names):
    if _is_ref(value, names):
        return True
    if isinstance(value, list):
        return any(_has_ref(v, names) for v in value)
    if isinstance(value, dict):
        return any(_has_ref(v, names) for v in value.values())
    return False


def tensor_kwargs(layers, ctx):
    """Keras 3 reads a Keras 2 node (a list of inbound tensors and the call's kwargs) but keeps
    the kwargs as they are: a tensor among them stays a ``[name, node, tensor]`` list. Such nodes
    are rewritten in Keras 3's form (``{"args", "kwargs"}`` of tensor references)."""
    names = set(l.get("name") for l in layers if isinstance(l, dict))
    for layer in layers:
        nodes = layer.get("inbound_nodes") if isinstance(layer, dict) else None
        if not isinstance(nodes, list):
            continue
        for n, node in enumerate(nodes):
            if not isinstance(node, list) or not node:
                continue
            kwargs = {}
            for item in node:
                if isinstance(item, list) and len(item) == 4 and isinstance(item[3], dict):
                    kwargs.update(item[3])
            if not _has_ref(kwargs, names):
                continue
            inputs = [_tensor(item) for item in node]
            nodes[n] = {"args": [inputs[0] if len(inputs) == 1 else inputs],
                        "kwargs": _tensors_in(kwargs, names)}
            ctx.add("translated", "%s: a call whose arguments hold tensors (%s) in Keras 3's "
                                  "node form" % (layer.get("class_name"),
                                                 ", ".join(sorted(kwargs))))


def _gelu_lambda(name, dtype, trainable=True):
    ctx_config = {"name": name, "trainable": trainable, "function": dict(GELU_FUNCTION),
                  "arguments": {"approximate": True}}
    if dtype is not None:
        ctx_config["dtype"] = dtype
    return {"class_name": "Lambda", "config": ctx_config}


def unique(name, taken):
    """``name``, or ``name_1``, ``name_2``...: the first not in ``taken`` (which gains it)."""
    candidate, n = name, 1
    while candidate in taken:
        candidate = "%s_%d" % (name, n)
        n += 1
    taken.add(candidate)
    return candidate


def split_gelu(layers, ctx):
    """``Addons>gelu`` (tanh approximation): an Activation layer becomes the Lambda; a layer with
    it as activation gets ``linear`` and a new name, and the Lambda takes its name, so the layers
    that consume it, the outputs and the output names don't change."""
    taken = set(l.get("config", {}).get("name") or l.get("name") for l in layers
                if isinstance(l, dict))
    i = 0
    while i < len(layers):
        layer = layers[i]
        config = layer.get("config") if isinstance(layer, dict) else None
        if not isinstance(config, dict) or config.get("activation") != "Addons>gelu" \
                or layer.get("class_name") in MODEL_CLASSES:
            i += 1
            continue
        if not ctx.available("gelu"):
            ctx.add("needs_code", "Addons>gelu: this Keras has no gelu: its code is needed")
            i += 1
            continue
        name = config.get("name")
        if layer.get("class_name") == "Activation":
            new = _gelu_lambda(name, config.get("dtype"), config.get("trainable", True))
            for key in ("name", "inbound_nodes"):
                if key in layer:
                    new[key] = layer[key]
            layers[i] = new
            ctx.add("replaced", "Addons>gelu -> keras.activations.gelu(approximate=True) "
                                "(tfa's default), in a Lambda layer")
            i += 1
            continue
        linear = unique("%s_linear" % name, taken)
        config["activation"] = "linear"
        config["name"] = linear
        ctx.renamed[linear] = name
        new = _gelu_lambda(name, config.get("dtype"))
        if "name" in layer:
            layer["name"] = linear
            new["name"] = name
        if "inbound_nodes" in layer:
            nodes = layer.get("inbound_nodes") or []
            new["inbound_nodes"] = [[[linear, n, 0, {}]] for n in range(len(nodes))]
        layers.insert(i + 1, new)
        ctx.add("replaced", "Addons>gelu -> keras.activations.gelu(approximate=True) "
                            "(tfa's default), in a Lambda layer after the layer")
        ctx.add("translated", "%s '%s': activation Addons>gelu -> linear, renamed '%s'; a "
                              "Lambda named '%s' applies the gelu"
                % (layer.get("class_name"), name, linear, name))
        i += 2
