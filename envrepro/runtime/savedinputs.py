"""The inputs a Keras SavedModel's own call was traced with, read from its ``saved_model.pb``: what
the seeded reference feeds a subclassed model that loads unbuilt.

Why this exists: TF 2.4's ``load_model`` rebuilds a subclassed model whose class is found (passed
in ``custom_objects`` or registered) from its config and leaves it unbuilt: no ``inputs``, no
``_build_input_shape``, no save spec, so the model itself can't say what to feed it (TF 2.8 and
later build it from the Keras metadata's ``build_input_shape``). The SavedModel knows: Keras
traced the model's ``__call__`` when saving, and the object graph keeps that function's input
signature, ``function_spec.input_signature`` when it had one, else each concrete function's
``canonicalized_input_signature`` (``(args, kwargs)``). The first argument is ``inputs``: one
tensor, a list or a dict of them.

Nothing is loaded and no code of the model runs: the file is parsed with TensorFlow's generated
protobuf classes (TensorFlow is imported wherever a model is loaded), and a signature this module
can't turn into shapes and dtypes (ragged or sparse specs, nested structures) gives None, so the
reference is skipped with the usual reason. Standard library only besides that, Python 3.6 syntax.
"""
from __future__ import absolute_import, division, print_function

import os

# The model's call functions in the object graph, most specific first.
CALL_FUNCTIONS = ("__call__", "call_and_return_conditional_losses",
                  "call_and_return_all_conditional_losses")
MAX_PB_BYTES = 512 * 1024 * 1024
_UNSUPPORTED = object()


class _Spec(object):
    def __init__(self, name, shape, dtype):
        self.name, self.shape, self.dtype = name, shape, dtype


def _dtype_name(enum):
    import tensorflow as tf

    return tf.dtypes.as_dtype(enum).name


def _decode(value):
    """A ``StructuredValue`` as Python: _Spec for tensor specs, lists for tuples and lists,
    dicts, scalars; _UNSUPPORTED for what a seeded sample can't be made of."""
    kind = value.WhichOneof("kind")
    if kind in ("tensor_spec_value", "bounded_tensor_spec_value"):
        spec = getattr(value, kind)
        shape = None if spec.shape.unknown_rank else [
            None if d.size < 0 else int(d.size) for d in spec.shape.dim]
        return _Spec(spec.name or None, shape, _dtype_name(spec.dtype))
    if kind in ("tuple_value", "list_value"):
        return [_decode(v) for v in getattr(value, kind).values]
    if kind == "dict_value":
        return dict((k, _decode(v)) for k, v in value.dict_value.fields.items())
    if kind == "none_value":
        return None
    if kind in ("bool_value", "int64_value", "float64_value", "string_value"):
        return getattr(value, kind)
    return _UNSUPPORTED


def _structure(inputs):
    """``(structure, names, specs)`` for the reference, or None."""
    if isinstance(inputs, _Spec):
        return "single", [inputs.name or "input"], [(inputs.shape, inputs.dtype)]
    if isinstance(inputs, list) and inputs and all(isinstance(s, _Spec) for s in inputs):
        return ("list", [s.name or "input_%d" % i for i, s in enumerate(inputs)],
                [(s.shape, s.dtype) for s in inputs])
    if isinstance(inputs, dict) and inputs and all(isinstance(s, _Spec) for s in inputs.values()):
        names = sorted(inputs)
        return "dict", names, [(inputs[n].shape, inputs[n].dtype) for n in names]
    return None


def _read(model_path):
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(model_path, "saved_model.pb")
    if not os.path.isfile(pb) or os.path.getsize(pb) > MAX_PB_BYTES:
        return None
    saved = saved_model_pb2.SavedModel()
    with open(pb, "rb") as fh:
        saved.ParseFromString(fh.read())
    return saved


def _signatures(graph, node):
    """The argument lists the function was traced with: its declared input signature, then
    those of its concrete functions."""
    out = []
    spec = node.function.function_spec
    if spec.HasField("input_signature"):
        args = _decode(spec.input_signature)
        if isinstance(args, list):
            out.append(args)
    for name in node.function.concrete_functions:
        if name not in graph.concrete_functions:
            continue
        both = _decode(graph.concrete_functions[name].canonicalized_input_signature)
        if isinstance(both, list) and both and isinstance(both[0], list):
            out.append(both[0])
    return out


def saved_input_specs(model_path):
    """``(structure, names, specs)`` of the ``inputs`` the SavedModel at ``model_path`` was traced
    with (specs are ``(shape, dtype)``, None for an unknown dimension), or None when the file
    doesn't say it in a form a seeded sample can be made for. Raises nothing."""
    try:
        saved = _read(model_path)
        if saved is None or not saved.meta_graphs:
            return None
        graph = saved.meta_graphs[0].object_graph_def
        if not graph.nodes:
            return None
        children = dict((c.local_name, c.node_id) for c in graph.nodes[0].children)
        for fname in CALL_FUNCTIONS:
            node_id = children.get(fname)
            if node_id is None or graph.nodes[node_id].WhichOneof("kind") != "function":
                continue
            for args in _signatures(graph, graph.nodes[node_id]):
                found = _structure(args[0]) if args else None
                if found is not None:
                    return found
    except Exception:
        return None
    return None
