"""The reference prediction: seeded sample inputs, one prediction saved at capture time, and the
comparison of a later prediction with it at load time.
"""
from __future__ import absolute_import, division, print_function

import math
import os
import re

from .facts import ProbeFailure, accepts, short_error
from .savedinputs import saved_input_specs

DEFAULT_SEED = 1234
SAMPLE_BATCH = 2
REFERENCE_DIR = "reference"
FLOAT_TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}
HALF_TOLERANCE = {"atol": 1e-2, "rtol": 1e-2}


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
                    return "single", ["input"], [(dims, _dtype_name(spec.dtype))]
        if shape is None:
            bsd = getattr(model, "_build_shapes_dict", None) or {}
            if len(bsd) == 1:
                shape = list(bsd.values())[0]
        dims = _shape_list(shape) if shape is not None and not isinstance(shape, dict) else None
        if dims and all(d is None or isinstance(d, int) for d in dims):
            return "single", ["input"], [(dims, "float32")]
        return None, None, None
    if isinstance(nested, dict):
        names = list(nested.keys())
        return "dict", names, [(_shape_list(nested[n].shape), _dtype_name(nested[n].dtype))
                               for n in names]
    if isinstance(nested, (list, tuple)):
        names = _input_names(model, len(nested))
        return "list", names, [(_shape_list(t.shape), _dtype_name(t.dtype)) for t in nested]
    names = _input_names(model, 1)
    return "single", names, [(_shape_list(nested.shape), _dtype_name(nested.dtype))]


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


def generate_sample(specs, seed, batch=SAMPLE_BATCH):
    """Seeded random arrays for fully defined input shapes (an undefined batch dimension ->
    ``batch`` rows)."""
    import numpy as np

    rng = np.random.RandomState(seed)
    arrays = []
    for index, (shape, dtype) in enumerate(specs):
        if shape is None:
            raise ProbeFailure("input %d has an unknown rank" % index)
        dims = list(shape)
        if dims and dims[0] is None:
            dims[0] = batch
        if any(d is None for d in dims):
            raise ProbeFailure("input %d has an undefined shape %s" % (index, shape))
        dtype = dtype.replace("tf.", "")
        if dtype in ("string", "object", "variant", "resource"):
            raise ProbeFailure("input %d has dtype %s" % (index, dtype))
        if dtype == "bool":
            arr = rng.randint(0, 2, size=dims).astype(bool)
        elif dtype.startswith(("int", "uint")):
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


def seeded_inputs(model, seed=DEFAULT_SEED, batch=SAMPLE_BATCH, model_path=None):
    """``(structure, names, arrays)``: seeded random inputs shaped by the model's own input specs,
    or, for a model loaded unbuilt from the SavedModel at ``model_path``, by the inputs its call
    was traced with (savedinputs.py). ProbeFailure when there are no defined inputs or an input
    can't be generated."""
    in_struct, in_names, specs = _input_structure(model)
    if in_struct is None and model_path is not None:
        in_struct, in_names, specs = saved_input_specs(model_path) or (None, None, None)
    if in_struct is None:
        raise ProbeFailure("the model has no defined inputs (subclassed and not built)")
    return in_struct, in_names, generate_sample(specs, seed, batch)


def load_sample(path):
    """``.npy`` -> one array; ``.npz`` -> a list (keys ``arr_0``...) or a dict (named keys)."""
    import numpy as np

    if path.lower().endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.keys())
            if keys and all(re.match(r"^arr_\d+$", k) for k in keys):
                keys.sort(key=lambda k: int(k[4:]))
                arrays = [data[k] for k in keys]
                return arrays[0] if len(arrays) == 1 else arrays
            return dict((k, data[k]) for k in keys)
    return np.load(path, allow_pickle=False)


def _to_numpy(value):
    import numpy as np

    if hasattr(value, "numpy"):
        try:
            value = value.numpy()
        except Exception:
            pass
    arr = np.asarray(value)
    if arr.dtype.kind == "V" or str(arr.dtype) == "bfloat16":
        arr = arr.astype("float32")  # bfloat16 can't be saved without pickle
    return arr


def _split_structure(value, model, which):
    """``(structure, names, arrays)`` for a user sample or model outputs."""
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


def reference_facts(model, out_dir, sample_input=None, seed=DEFAULT_SEED, allow_stateful=False,
                    model_path=None):
    """Run one prediction and save inputs/outputs; returns (reference, skipped_reason).

    The in-process hook calls the live model: ``model(x, training=False)`` is fast (no
    tf.function tracing like ``predict``) and changes no state, except in stateful RNNs, which
    are skipped unless the model is the probe's own fresh copy. A model that doesn't know its
    inputs (subclassed, loaded unbuilt from a SavedModel) is fed what the SavedModel at
    ``model_path`` was traced with (savedinputs.py).
    """
    import numpy as np

    if model is None:
        return None, "model not loaded"
    if not allow_stateful:
        try:
            flat = model._flatten_layers(include_self=True, recursive=True)
            if any(getattr(layer, "stateful", False) is True for layer in flat):
                return None, ("model has stateful layers: a prediction here would change the "
                              "state of the training model")
        except Exception:
            pass
    seeded = sample_input is None
    if sample_input is not None:
        in_struct, in_names, in_arrays = _split_structure(sample_input, model, "input")
    else:
        try:
            in_struct, in_names, in_arrays = seeded_inputs(model, seed, model_path=model_path)
        except ProbeFailure as exc:
            return None, "%s; pass sample_input / --sample" % exc.what
    try:
        outputs = predict(model, assemble_inputs(in_struct, in_names, in_arrays))
    except Exception as exc:
        return None, "prediction failed: %s" % short_error(exc)
    out_struct, out_names, out_arrays = _split_structure(outputs, model, "output")
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
    return {
        "inputs": in_files,
        "outputs": out_files,
        "input_structure": in_struct,
        "input_names": in_names,
        "output_structure": out_struct,
        "output_names": out_names,
        "tolerance": tolerance(model, out_arrays),
        "seeded": seeded,
        "seed": seed if seeded else None,
    }, None


def assemble_inputs(structure, names, arrays):
    """The model's input in the structure it was built with: a dict by name, a list, or one array."""
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


def finite(x):
    """JSON has no inf/nan: keep them readable as strings."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return x


def flatten_outputs(np, out, ref):
    """Model output -> list of arrays in the order of the reference outputs."""
    if isinstance(out, dict):
        names = ref.get("output_names") or sorted(out)
        out = [out[n] for n in names]
    elif isinstance(out, (list, tuple)):
        out = list(out)
    else:
        out = [out]
    return [np.asarray(getattr(o, "numpy", lambda: o)()) for o in out]


def compare(np, got, expected, atol, rtol):
    """Max |diff| over all outputs and numpy.allclose per output, NaN equal to NaN."""
    shapes = {"expected": [list(a.shape) for a in expected], "got": [list(a.shape) for a in got]}
    result = {"checked": True, "max_abs_diff": None, "allclose": False, "atol": atol,
              "rtol": rtol, "shapes": shapes, "per_output": []}
    if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected)):
        result["problem"] = "output shapes differ from the reference"
        return result
    worst = 0.0
    close = True
    for g, e in zip(got, expected):
        gf = g.astype("float64")
        ef = e.astype("float64")
        both_nan = np.isnan(gf) & np.isnan(ef)
        diff = np.abs(gf - ef)
        diff[both_nan] = 0.0
        diff[np.isnan(diff)] = np.inf
        m = float(diff.max()) if diff.size else 0.0
        ok = bool(np.allclose(gf, ef, rtol=rtol, atol=atol, equal_nan=True))
        result["per_output"].append({"max_abs_diff": finite(m), "allclose": ok})
        worst = max(worst, m)
        close = close and ok
    result["max_abs_diff"] = finite(worst)
    result["allclose"] = close
    return result
