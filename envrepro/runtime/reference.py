"""The reference prediction: seeded sample inputs, one prediction saved at capture time, and the
comparison of a later prediction with it at load time.

Every input the capture can load gets a seeded sample: numbers of its dtype (integers 0 and 1,
valid indices for any Embedding), booleans, and text (textinputs.py: words from the vocabulary of
the lookup layer the input feeds); a free dimension past the batch is given a length (8, then 32
if the model refuses it). A user's sample (samples.py) is checked against the model's inputs
first. Text is saved as fixed-width unicode arrays (no pickle) and fed back as bytes; text
outputs are compared for equality, numbers within the tolerance.
"""
from __future__ import absolute_import, division, print_function

import os

from . import samples, textinputs
from .facts import ProbeFailure, accepts, short_error
from .savedinputs import saved_input_specs

DEFAULT_SEED = 1234
SAMPLE_BATCH = 2
REFERENCE_DIR = "reference"
FLOAT_TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}
HALF_TOLERANCE = {"atol": 1e-2, "rtol": 1e-2}
FREE_DIMS = (8, 32)        # lengths tried, in order, for an input's undefined dimensions
SAMPLE_HINT = ("pass one with --sample FILE (.npy, .npz or .json) or "
               "envrepro.save(..., sample_input=...)")


class UndefinedShape(ProbeFailure):
    """An input with undefined dimensions past the batch, and no length given for them."""


def _shape_list(shape):
    if shape is None:
        return None
    if hasattr(shape, "as_list"):
        try:
            return shape.as_list()
        except ValueError:  # unknown rank
            return None
    try:
        return [None if d is None else int(d) for d in shape]
    except TypeError:
        return None


def _dtype_name(dtype):
    name = getattr(dtype, "name", dtype)
    return str(name) if name is not None else "float32"


def _input_structure(model):
    """``(structure, names, specs)`` of the model's symbolic inputs: specs are (shape, dtype).

    Functional models keep the structure the user built them with (list or dict): TF <= 2.15 in
    ``_nested_inputs``, Keras 3 in ``_inputs_struct``.
    """
    return _input_details(model)[:3]


def _input_details(model):
    """``_input_structure`` plus the symbolic input tensors (None each when there are none) and
    whether the dtypes are the model's own (False: a built subclassed model, float32 guessed)."""
    nested = None
    for attr in ("_inputs_struct", "_nested_inputs"):
        try:
            nested = getattr(model, attr, None)
        except Exception:
            nested = None
        if nested is not None:
            break
    if nested is None:
        try:
            inputs = model.inputs
        except Exception:
            inputs = None
        if inputs:
            nested = list(inputs) if len(inputs) > 1 else inputs[0]
    if nested is None:
        # A subclassed model built with model.build(shape): one input of that shape. One revived
        # from a SavedModel (recipes.py, "revive") keeps only the spec its call was traced with.
        shape = getattr(model, "_build_input_shape", None)
        if shape is None:
            spec = getattr(model, "_saved_model_inputs_spec", None)
            if spec is not None and hasattr(spec, "shape") and hasattr(spec, "dtype"):
                dims = _shape_list(spec.shape)
                if dims and all(d is None or isinstance(d, int) for d in dims):
                    return "single", ["input"], [(dims, _dtype_name(spec.dtype))], [None], True
        if shape is None:
            bsd = getattr(model, "_build_shapes_dict", None) or {}
            if len(bsd) == 1:
                shape = list(bsd.values())[0]
        dims = _shape_list(shape) if shape is not None and not isinstance(shape, dict) else None
        if dims and all(d is None or isinstance(d, int) for d in dims):
            return "single", ["input"], [(dims, "float32")], [None], False
        return None, None, None, None, False
    if isinstance(nested, dict):
        names = list(nested.keys())
        return ("dict", names, [(_shape_list(nested[n].shape), _dtype_name(nested[n].dtype))
                                for n in names], [nested[n] for n in names], True)
    if isinstance(nested, (list, tuple)):
        names = _input_names(model, len(nested))
        return ("list", names, [(_shape_list(t.shape), _dtype_name(t.dtype)) for t in nested],
                list(nested), True)
    names = _input_names(model, 1)
    return "single", names, [(_shape_list(nested.shape), _dtype_name(nested.dtype))], [nested], True


def _input_names(model, count):
    names = None
    try:
        names = list(getattr(model, "input_names", None) or [])
    except Exception:
        names = None
    if not names or len(names) != count:
        try:
            names = [getattr(t, "name", None) for t in model.inputs]
        except Exception:
            names = None
    if not names or len(names) != count or any(not n for n in names):
        names = ["input_%d" % i for i in range(count)]
    return [str(n).split(":")[0] for n in names]


def generate_sample(specs, seed, batch=SAMPLE_BATCH, names=None, hints=None, free=None):
    """Seeded arrays for the input ``specs`` ((shape, dtype) each): an undefined batch dimension
    -> ``batch`` rows, other undefined dimensions -> ``free`` (ProbeFailure naming the input when
    ``free`` is None). ``hints`` (textinputs.vocabulary_hints) make text and IntegerLookup ids
    from the model's vocabularies; text without one is plain words. Text is a ``U`` array."""
    import numpy as np

    rng = np.random.RandomState(seed)
    arrays = []
    for index, (shape, dtype) in enumerate(specs):
        label = "input '%s'" % names[index] if names else "input %d" % index
        hint = hints[index] if hints else None
        dtype = str(dtype).replace("tf.", "")
        if shape is None and dtype == "string":
            shape = [None]          # text of unknown rank: a batch of texts
        if shape is None:
            raise ProbeFailure("%s (%s) has an unknown rank" % (label, dtype))
        dims = list(shape)
        if dims and dims[0] is None:
            dims[0] = batch
        if any(d is None for d in dims):
            if free is None:
                raise UndefinedShape("%s has an undefined shape %s" % (label, shape))
            dims = [free if d is None else d for d in dims]
        if dtype in ("object", "variant", "resource"):
            raise ProbeFailure("%s has dtype %s" % (label, dtype))
        if dtype == "string":
            arr = textinputs.strings(rng, dims, hint)
        elif dtype == "bool":
            arr = rng.randint(0, 2, size=dims).astype(bool)
        elif dtype.startswith(("int", "uint")):
            if hint is not None and hint["kind"] == "integers":
                arr = textinputs.integers(rng, dims, dtype, hint)
            else:
                arr = rng.randint(0, 2, size=dims).astype(dtype)  # valid indices for any Embedding
        else:
            arr = rng.standard_normal(size=dims).astype("float32")
            if dtype != "float32":
                try:
                    arr = arr.astype(dtype)
                except TypeError:
                    pass
        arrays.append(arr)
    return arrays


def model_inputs(model, model_path=None):
    """``(structure, names, specs, tensors, dtypes_known)`` of the model's inputs, or, for a
    model loaded unbuilt from the SavedModel at ``model_path``, of the inputs its call was traced
    with (savedinputs.py); structure None when neither says."""
    details = _input_details(model)
    if details[0] is None and model_path is not None:
        found = saved_input_specs(model_path)
        if found:
            return found[0], found[1], found[2], [None] * len(found[2]), True
    return details


def seeded_inputs(model, seed=DEFAULT_SEED, batch=SAMPLE_BATCH, model_path=None, free=None):
    """``(structure, names, arrays)``: seeded inputs shaped by the model's own input specs (see
    model_inputs), text drawn from the vocabularies the model holds. ProbeFailure when there
    are no defined inputs or an input can't be generated."""
    in_struct, in_names, specs, tensors, _ = model_inputs(model, model_path)
    if in_struct is None:
        raise ProbeFailure("the model has no defined inputs (subclassed and not built)")
    hints = textinputs.vocabulary_hints(model, tensors, [d for _, d in specs])
    return in_struct, in_names, generate_sample(specs, seed, batch, in_names, hints, free)


def load_sample(path):
    """samples.load_sample: ``.npy``, ``.npz`` or ``.json``."""
    return samples.load_sample(path)


def _to_numpy(value):
    import numpy as np

    if hasattr(value, "numpy"):
        try:
            value = value.numpy()
        except Exception:
            pass
    return samples.storable(np.asarray(value))   # text as U/S, bfloat16 as float32


def _split_structure(value, model, which="output"):
    """``(structure, names, arrays)`` of model outputs (or a sample taken as given)."""
    if isinstance(value, dict):
        names = list(value.keys())
        return "dict", [str(n) for n in names], [_to_numpy(value[n]) for n in names]
    if isinstance(value, (list, tuple)):
        names = None
        if which == "output":
            try:
                names = list(model.output_names)
            except Exception:
                names = None
        else:
            names = _input_names(model, len(value))
        if not names or len(names) != len(value):
            names = ["%s_%d" % (which, i) for i in range(len(value))]
        return "list", [str(n) for n in names], [_to_numpy(v) for v in value]
    if which == "output":
        try:
            names = list(model.output_names)[:1]
        except Exception:
            names = []
        names = names or ["output_0"]
    else:
        names = _input_names(model, 1)
    return "single", [str(n) for n in names], [_to_numpy(value)]


def tolerance(model, arrays):
    """Comparison tolerance for the reference: loose for half-precision outputs or compute
    dtypes."""
    loose = False
    for arr in arrays:
        if str(arr.dtype) in ("float16", "bfloat16"):
            loose = True
    for attr in ("compute_dtype", "_compute_dtype"):
        try:
            val = getattr(model, attr, None)
        except Exception:
            val = None
        if val is not None:
            if _dtype_name(val) in ("float16", "bfloat16", "mixed_float16", "mixed_bfloat16"):
                loose = True
            break
    return dict(HALF_TOLERANCE if loose else FLOAT_TOLERANCE)


def _described(names, arrays):
    """``text string [2, 1], ids int32 [2, 8]``: the inputs a failed prediction was given."""
    return ", ".join("%s %s %s" % (n, "string" if a.dtype.kind in "US" else a.dtype, list(a.shape))
                     for n, a in zip(names, arrays))


def _stateful(model):
    try:
        flat = model._flatten_layers(include_self=True, recursive=True)
        return any(getattr(layer, "stateful", False) is True for layer in flat)
    except Exception:
        return False


def _seeded_attempts(model, seed, model_path):
    """``(structure, names, arrays, free, hints)`` to try in order: the seeded inputs, and when
    an input has undefined dimensions, one per length of FREE_DIMS. ProbeFailure (naming the
    input) when none can be made."""
    in_struct, in_names, specs, tensors, _ = model_inputs(model, model_path)
    if in_struct is None:
        raise ProbeFailure("the model has no defined inputs (subclassed and not built), so no "
                           "sample can be made for it")
    hints = textinputs.vocabulary_hints(model, tensors, [d for _, d in specs])
    try:
        return [(in_struct, in_names, generate_sample(specs, seed, SAMPLE_BATCH, in_names, hints),
                 None, hints)]
    except UndefinedShape:
        pass
    return [(in_struct, in_names, generate_sample(specs, seed, SAMPLE_BATCH, in_names, hints, n),
             n, hints) for n in FREE_DIMS]


def reference_facts(model, out_dir, sample_input=None, seed=DEFAULT_SEED, allow_stateful=False,
                    model_path=None, sample_source="sample_input"):
    """Run one prediction and save inputs/outputs; returns (reference, skipped_reason).

    The in-process hook calls the live model: ``model(x, training=False)`` is fast (no
    tf.function tracing like ``predict``) and changes no state, except in stateful RNNs, which
    are skipped unless the model is the probe's own fresh copy. A model that doesn't know its
    inputs (subclassed, loaded unbuilt from a SavedModel) is fed what the SavedModel at
    ``model_path`` was traced with (savedinputs.py). A user's ``sample_input`` (named
    ``sample_source`` in messages) that doesn't fit the model's inputs raises SampleMismatch: a
    reference can't be made of it, and the capture stops. The skip reason is one line that names
    what is missing and how to give it.
    """
    import numpy as np

    if model is None:
        return None, "model not loaded"
    if not allow_stateful and _stateful(model):
        return None, ("model has stateful layers: a prediction here would change the state of "
                      "the training model; capture with --python (a fresh copy is loaded)")
    seeded = sample_input is None
    if not seeded:
        in_struct, in_names, specs, _, known = model_inputs(model, model_path)
        attempts = [samples.resolve(sample_input, in_struct, in_names, specs, sample_source,
                                    dtypes_known=known) + (None, None)]
    else:
        try:
            attempts = _seeded_attempts(model, seed, model_path)
        except ProbeFailure as exc:
            return None, "%s; %s" % (exc.what, SAMPLE_HINT)
    failure = None
    for in_struct, in_names, in_arrays, free, hints in attempts:
        try:
            outputs = predict(model, assemble_inputs(in_struct, in_names, in_arrays))
            break
        except Exception as exc:
            failure = failure or (in_names, in_arrays, exc)
    else:
        names, arrays, exc = failure
        if not seeded:
            return None, "the prediction on %s (%s) failed: %s" % (
                sample_source, _described(names, arrays), short_error(exc))
        tried = "" if free is None else ", undefined dimensions %s long" % " then ".join(
            str(n) for n in FREE_DIMS)
        return None, "the prediction on seeded inputs (%s%s) failed: %s; %s" % (
            _described(names, arrays), tried, short_error(exc), SAMPLE_HINT)
    try:
        out_struct, out_names, out_arrays = _split_structure(outputs, model, "output")
    except ValueError as exc:
        return None, "the model's outputs can't be saved: %s" % exc
    ref_dir = os.path.join(out_dir, REFERENCE_DIR)
    if not os.path.isdir(ref_dir):
        os.makedirs(ref_dir)
    in_files, out_files = [], []
    for i, arr in enumerate(in_arrays):
        name = "input_%d.npy" % i
        np.save(os.path.join(ref_dir, name), arr, allow_pickle=False)
        in_files.append(name)
    for i, arr in enumerate(out_arrays):
        name = "output_%d.npy" % i
        np.save(os.path.join(ref_dir, name), arr, allow_pickle=False)
        out_files.append(name)
    ref = {
        "inputs": in_files,
        "outputs": out_files,
        "input_structure": in_struct,
        "input_names": in_names,
        "output_structure": out_struct,
        "output_names": out_names,
        "tolerance": tolerance(model, out_arrays),
        "seeded": seeded,
        "seed": seed if seeded else None,
    }
    vocab = dict((n, textinputs.describe(h)) for n, h in zip(in_names, hints or []) if h)
    if vocab:
        ref["vocabularies"] = vocab
    if free is not None:
        ref["free_dimension"] = free
    return ref, None


def assemble_inputs(structure, names, arrays):
    """The model's input in the structure it was built with: a dict by name, a list, or one
    array; text as bytes (samples.feedable)."""
    arrays = [samples.feedable(a) for a in arrays]
    if structure == "dict":
        return dict(zip(names, arrays))
    if structure == "list":
        return list(arrays)
    return arrays[0]


def predict(model, inputs):
    """``model(x, training=False)`` at capture and at load alike, so a difference means the
    environment, not the call path: it is fast (no tf.function tracing) and changes no state.
    ``predict`` is the fallback for models that can't be called directly; its error is raised."""
    try:
        return model(inputs, training=False)
    except Exception:
        if accepts(model.predict, "verbose"):
            return model.predict(inputs, verbose=0)
        return model.predict(inputs)
