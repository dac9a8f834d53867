"""What optimizer state a saved model FILE holds, read from the file, never from a loaded model.

Why this exists: what a freshly loaded model's optimizer shows is not what was saved. TF 2.4's
SavedModel loader leaves the optimizer state in the checkpoint (a fresh ``load_model`` shows one
variable, ``iter``, at 0), so a capture that recorded the fresh optimizer expected 1 variable
and the loader, which does bring the state back, then reported a false mismatch. The probe
records this reader's answer (``saved_variables``, ``saved_iterations``) and the loader compares
the restored optimizer with the same reader's answer at load time: like with like.

The counts are those of the optimizer's own variable list after a restore (Keras 2
``OptimizerV2.variables()``: ``iter`` and the slots; Keras 3 ``Optimizer.variables``):

* H5: the ``optimizer_weights`` group's ``weight_names`` (Keras 2 writes ``optimizer.weights``).
* ``.keras``: the ``optimizer/vars`` entries of the zip's ``model.weights.h5`` (stored
  uncompressed, so h5py reads it in place); ``vars/0`` is the iteration count.
* SavedModel: the checkpoint (``variables/variables.index``, read with TensorFlow's checkpoint
  reader, TensorFlow being imported wherever a model is loaded). Keras 2 ``OptimizerV2``
  (TF <= 2.10, and ``tf.keras.optimizers.legacy`` later): ``optimizer/iter`` plus every
  ``.OPTIMIZER_SLOT/optimizer/`` key; hyperparameters (``optimizer/learning_rate``...) are
  checkpointed but are not in ``variables()``, so they are not counted. Keras 2.11-2.15's
  optimizer (and tf_keras): its ``variables`` list is tracked as ``optimizer/_variables/N``,
  but a variable gets one key, under the first path to it, so the iteration count listed at
  ``_variables/0`` is keyed ``optimizer/_iterations``: the list is counted in the checkpoint's
  object graph (``_CHECKPOINTABLE_OBJECT_GRAPH``), the distinct nodes under
  ``optimizer/_variables``. ``_learning_rate`` is not in the list and not counted. When the graph
  can't be read, ``variables`` is None and the loader falls back to the capture's live count.

h5py and TensorFlow are imported lazily: importing this module imports neither.
"""
from __future__ import absolute_import, division, print_function

import os
import sys

ITERATION_NAMES = ("iter", "iterations", "iteration")
SLOT_MARK = "/.OPTIMIZER_SLOT/optimizer/"
VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
NEW_OPTIMIZER_PREFIX = "optimizer/_variables/"
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
MAX_INDEX_BYTES = 64 * 1024 * 1024


def _state(saved, variables=None, iterations=None, source=None):
    return {"saved": saved, "variables": variables, "iterations": iterations, "source": source}


def _as_int(value):
    """A stored scalar as int, or None (an array, a string: not an iteration count)."""
    try:
        if getattr(value, "shape", ()) not in ((), None):
            return None
        kind = getattr(getattr(value, "dtype", None), "kind", "i")
        if kind not in ("i", "u"):
            return None
        return int(value)
    except (TypeError, ValueError):
        return None


def _h5_state(path):
    import h5py

    with h5py.File(path, "r") as fh:
        if "optimizer_weights" not in fh:
            return _state(False, 0, None, "h5 optimizer_weights")
        group = fh["optimizer_weights"]
        names = [n.decode("utf-8") if isinstance(n, bytes) else str(n)
                 for n in group.attrs.get("weight_names", [])]
        iterations = None
        for name in names:
            if name.split("/")[-1].split(":")[0] in ITERATION_NAMES and name in group:
                iterations = _as_int(group[name][()])
                break
        return _state(bool(names), len(names), iterations, "h5 optimizer_weights")


def _keras_state(path):
    import zipfile

    import h5py

    with zipfile.ZipFile(path) as zf:
        if "model.weights.h5" not in zf.namelist():
            return None
        with zf.open("model.weights.h5") as raw:
            with h5py.File(raw, "r") as h5:
                if "optimizer" not in h5:
                    return _state(False, 0, None, "keras model.weights.h5")
                group = h5["optimizer"]
                group = group["vars"] if "vars" in group else group
                keys = list(group.keys())
                iterations = _as_int(group["0"][()]) if "0" in keys else None
                return _state(bool(keys), len(keys), iterations, "keras model.weights.h5")


def _savedmodel_state(path):
    prefix = os.path.join(path, "variables", "variables")
    index = prefix + ".index"
    if not os.path.isfile(index):
        return None
    tf = sys.modules.get("tensorflow")
    if tf is None:  # no reader for the values: whether the index names optimizer keys at all
        if os.path.getsize(index) >= MAX_INDEX_BYTES:
            return None
        with open(index, "rb") as fh:
            return _state(b"optimizer" in fh.read(), source="savedmodel checkpoint index")
    reader = tf.train.load_checkpoint(prefix)
    keys = [k for k in reader.get_variable_to_shape_map() if k.endswith(VALUE_SUFFIX)]
    iterations = None
    for name in ITERATION_NAMES + ("_iterations",):
        key = "optimizer/%s%s" % (name, VALUE_SUFFIX)
        if key in keys:
            iterations = _as_int(reader.get_tensor(key))
            break
    opt_keys = [k for k in keys if k.startswith("optimizer/") or SLOT_MARK in k]
    if any(k.startswith(NEW_OPTIMIZER_PREFIX) for k in opt_keys):
        return _state(True, _listed_variables(_object_graph(reader)), iterations,
                      "savedmodel checkpoint")
    slots = [k for k in keys if SLOT_MARK in k]
    variables = len(slots) + (1 if iterations is not None else 0)
    return _state(bool(opt_keys), variables, iterations, "savedmodel checkpoint")


def _object_graph(reader):
    """The checkpoint's object graph (a ``TrackableObjectGraph``), or None when unreadable."""
    try:
        from tensorflow.core.protobuf import trackable_object_graph_pb2

        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH_KEY))
        return graph
    except Exception:
        return None


def _child(graph, node, name):
    for ref in node.children:
        if ref.local_name == name and 0 <= ref.node_id < len(graph.nodes):
            return graph.nodes[ref.node_id]
    return None


def _listed_variables(graph):
    """How many variables the Keras >= 2.11 optimizer lists (``optimizer.variables``): the
    distinct objects under the root's ``optimizer/_variables``; None when the graph says
    nothing about it."""
    if graph is None or not len(graph.nodes):
        return None
    opt = _child(graph, graph.nodes[0], "optimizer")
    listed = _child(graph, opt, "_variables") if opt is not None else None
    if listed is None:
        return None
    return len(set(ref.node_id for ref in listed.children))


def saved_optimizer_state(model_path, fmt):
    """``{"saved", "variables", "iterations", "source"}`` of the file at ``model_path``; None
    when the file can't be read. ``saved`` is whether any optimizer state is in the file;
    ``variables``/``iterations`` are None when this reader can't tell them."""
    try:
        if fmt == "h5" and os.path.isfile(model_path):
            return _h5_state(model_path)
        if fmt == "keras" and os.path.isfile(model_path):
            return _keras_state(model_path)
        if fmt == "savedmodel" and os.path.isdir(model_path):
            return _savedmodel_state(model_path)
    except Exception:
        return None
    return None
