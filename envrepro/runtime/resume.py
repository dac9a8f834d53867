"""The resume check: one training step on the reference batch, recorded at capture and replayed at
load, so "training resumes identically" is verified rather than assumed.

Both sides do the same thing in the same order: seed Python, numpy and TensorFlow; load a fresh
copy of the model from its file (never the user's in-memory model, which is not touched); bring
back the optimizer state the file holds (Keras 2 leaves a SavedModel's in its checkpoint:
optimizer.restore_savedmodel_optimizer); run exactly one ``train_on_batch`` on the reference
inputs with recorded targets; read the loss, the updated weights and the optimizer's iteration
count. The capture writes the targets and the updated weights (bounded by ``max_weights_bytes``)
beside the reference; the loader compares with tolerances, because some ops are not
bit-deterministic (the digest says when the weights came out bit-identical).

Standard library only, Python 3.6 syntax; numpy and TensorFlow are imported inside functions.
"""
from __future__ import absolute_import, division, print_function

import contextlib
import hashlib
import math
import os
import random
import sys
import time

from .facts import accepts, short_error
from .modelformat import is_compiled
from .optimizer import restore_savedmodel_optimizer
from .comparison import compare, finite
from .reference import FLOAT_TOLERANCE, assemble_inputs
from .savedstate import saved_optimizer_state

WEIGHTS_FILE = "resume_weights.npz"
TARGET_FILE = "resume_target_%d.npy"
MAX_WEIGHTS_BYTES = 64 * 1024 * 1024
TARGET_NOISE = 0.1
# How targets are made from the reference outputs, tried in this order: the prediction plus
# seeded noise (any regression or probability loss), then its argmax (class labels; first for a
# sparse loss).
TARGET_KINDS = ("perturbed_prediction", "argmax_prediction")


class Skip(Exception):
    """The step can't be run on this model; ``reason`` says why, in words."""

    def __init__(self, reason):
        Exception.__init__(self, reason)
        self.reason = reason


def max_weights_bytes():
    """The largest weights file a capture writes (``ENVREPRO_RESUME_MAX_BYTES`` overrides)."""
    try:
        return int(os.environ.get("ENVREPRO_RESUME_MAX_BYTES", MAX_WEIGHTS_BYTES))
    except ValueError:
        return MAX_WEIGHTS_BYTES


@contextlib.contextmanager
def seeded(seed):
    """Python, numpy and TensorFlow seeded for the step. Afterwards Python's and numpy's states
    are put back, so the in-process check (``envrepro.save``) leaves the training run's draws as
    they were, and TensorFlow's global seed is reset to its old value (its op-seed counter
    restarts: a training run that set a seed draws its later op seeds afresh)."""
    import numpy as np

    tf = sys.modules.get("tensorflow")  # imported wherever a model is loaded with TF (not JAX)
    py_state, np_state = random.getstate(), np.random.get_state()
    previous = None
    if tf is not None:
        try:
            from tensorflow.python.eager import context

            previous = context.global_seed()
        except Exception:
            previous = None
    random.seed(seed)
    np.random.seed(seed)
    if tf is not None:
        tf.random.set_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        if tf is not None:
            tf.random.set_seed(previous)


def iterations_of(model):
    opt = model.optimizer
    return int(getattr(opt.iterations, "numpy", lambda: opt.iterations)())


def prepared_copy(load_copy, model_path, fmt):
    """A fresh copy, compiled, with the optimizer state its file holds; Skip when impossible."""
    try:
        model = load_copy()
    except Exception as exc:
        raise Skip("a copy of the model can't be loaded from its file: %s" % short_error(exc))
    if not is_compiled(model):
        raise Skip("the model loads only with compile=False here: no optimizer to train with")
    saved = saved_optimizer_state(model_path, fmt) or {}
    want = saved.get("iterations")
    if fmt == "savedmodel" and saved.get("saved") and want is not None \
            and iterations_of(model) != want:
        restore_savedmodel_optimizer(model, model_path)
        if iterations_of(model) != want:
            raise Skip("this TensorFlow does not restore the SavedModel's optimizer state "
                       "(iterations %s, the file holds %s)" % (iterations_of(model), want))
    return model


def train_step(model, x, y):
    """One ``train_on_batch``: (loss, updated weights, optimizer iterations)."""
    import numpy as np

    if accepts(model.train_on_batch, "return_dict"):
        logs = model.train_on_batch(x, y, return_dict=True)
    else:
        logs = model.train_on_batch(x, y)
    if isinstance(logs, dict):
        loss = logs["loss"]
    elif isinstance(logs, (list, tuple)):
        loss = logs[0]
    else:
        loss = logs
    weights = [np.asarray(w) for w in model.get_weights()]
    return float(np.asarray(loss)), weights, iterations_of(model)


def target_kinds(model):
    """TARGET_KINDS in the order worth trying for the compiled loss: labels first for a sparse
    one (Keras would also accept perturbed probabilities there, and train on nonsense)."""
    loss = getattr(model, "loss", None)
    losses = list(loss.values()) if isinstance(loss, dict) else (
        list(loss) if isinstance(loss, (list, tuple)) else [loss])
    text = " ".join(str(getattr(l, "name", None) or getattr(l, "__name__", None) or l)
                    for l in losses).lower()
    return TARGET_KINDS[::-1] if "sparse" in text else TARGET_KINDS


def make_targets(np, outputs, seed, kind):
    """Targets of the right shape from the reference outputs (TARGET_KINDS)."""
    rng = np.random.RandomState(seed)
    targets = []
    for out in outputs:
        if kind == "argmax_prediction" and out.ndim >= 2 and out.shape[-1] > 1:
            targets.append(np.argmax(out, axis=-1).astype("int64"))
        elif out.dtype.kind == "f":
            noise = TARGET_NOISE * rng.standard_normal(out.shape)
            targets.append((out.astype("float64") + noise).astype(out.dtype))
        else:
            targets.append(out.copy())
    return targets


def weights_summary(np, weights):
    """Count, parameters, sum and sum of |w| over the numeric weights, and a sha256 of all."""
    digest = hashlib.sha256()
    total, absolute, params = 0.0, 0.0, 0
    for w in weights:
        arr = np.ascontiguousarray(w)
        digest.update(("%s%s" % (arr.dtype, arr.shape)).encode("utf-8"))
        digest.update(arr.tobytes())
        params += int(arr.size)
        if arr.dtype.kind in "fiub":
            as64 = arr.astype("float64")
            total += float(as64.sum())
            absolute += float(np.abs(as64).sum())
    return {"arrays": len(weights), "params": params, "sum": finite(total),
            "abs_sum": finite(absolute), "sha256": digest.hexdigest()}


def _load_arrays(np, folder, names):
    return [np.load(os.path.join(folder, name), allow_pickle=False) for name in names]


def record(load_copy, model_path, fmt, ref_dir, reference, seed):
    """Capture side: run the step on a fresh copy and write its targets and weights into
    ``ref_dir`` (beside the reference); returns the facts. Raises Skip."""
    import numpy as np

    t0 = time.time()
    x = assemble_inputs(reference["input_structure"], reference["input_names"],
                        _load_arrays(np, ref_dir, reference["inputs"]))
    outputs = _load_arrays(np, ref_dir, reference["outputs"])
    failed, kinds = [], TARGET_KINDS
    for attempt in range(len(TARGET_KINDS)):
        with seeded(seed):
            model = prepared_copy(load_copy, model_path, fmt)
            kinds = target_kinds(model) if attempt == 0 else kinds
            kind = kinds[attempt]
            targets = make_targets(np, outputs, seed, kind)
            y = assemble_inputs(reference["output_structure"], reference["output_names"], targets)
            before = iterations_of(model)
            try:
                loss, weights, iterations = train_step(model, x, y)
                break
            except Exception as exc:
                failed.append("%s targets: %s" % (kind.replace("_", " "), short_error(exc)))
            finally:
                del model
    else:
        raise Skip("the training step failed (%s)" % "; ".join(failed))
    if math.isnan(loss) or math.isinf(loss):
        raise Skip("the training step gave a non-finite loss (%s)" % loss)
    names = []
    for i, arr in enumerate(targets):
        names.append(TARGET_FILE % i)
        np.save(os.path.join(ref_dir, names[-1]), arr, allow_pickle=False)
    size = sum(int(w.nbytes) for w in weights)
    weights_file, weights_skipped = None, None
    if any(w.dtype.kind not in "fiub" for w in weights):
        weights_skipped = "some weights are not numeric: compared by their summary only"
    elif size > max_weights_bytes():
        weights_skipped = ("the updated weights take {:,} bytes, above the limit of {:,} "
                           "(ENVREPRO_RESUME_MAX_BYTES): compared by their summary only"
                           .format(size, max_weights_bytes()))
    else:
        weights_file = WEIGHTS_FILE
        with open(os.path.join(ref_dir, WEIGHTS_FILE), "wb") as fh:
            np.savez(fh, **dict(("w%05d" % i, w) for i, w in enumerate(weights)))
    tol = dict(reference.get("tolerance") or FLOAT_TOLERANCE)
    return {"loss": loss, "iterations_before": before, "iterations": iterations,
            "targets": names, "target_kind": kind, "weights_file": weights_file,
            "weights_skipped": weights_skipped, "weights": weights_summary(np, weights),
            "atol": float(tol["atol"]), "rtol": float(tol["rtol"]), "seed": seed,
            "seconds": round(time.time() - t0, 3)}


def capture_facts(facts, load_copy, model_path, fmt, out_dir, ref_dir_name, seed, warnings):
    """The manifest's ``resume_check`` for the probe: the recorded step, or ``{"skipped": why}``
    when the model has no optimizer state to resume from or the step can't be run."""
    opt, ref = facts.get("optimizer"), facts.get("reference")
    if not opt or not (facts.get("model") or {}).get("compile"):
        return {"skipped": "the model has no optimizer (saved without compile): no training to "
                           "resume"}
    if not opt.get("state_saved"):
        return {"skipped": "the model file holds no optimizer state (saved with "
                           "include_optimizer=False, or before any training step)"}
    if not ref:
        return {"skipped": "no reference batch to train on (%s)" % facts.get("reference_skipped")}
    try:
        return record(load_copy, model_path, fmt, os.path.join(out_dir, ref_dir_name), ref, seed)
    except Skip as exc:
        return {"skipped": exc.reason}
    except Exception as exc:
        reason = "the resume check failed: %s" % short_error(exc)
        warnings.append(reason)
        return {"skipped": reason}


def _close(got, want, atol, rtol):
    return abs(got - want) <= atol + rtol * abs(want)


def compare_weights(np, expected, weights, out):
    """The updated weights against the recorded file, or against its summary when the file was
    too large to keep (sums within the per-element tolerance added up)."""
    atol, rtol = out["atol"], out["rtol"]
    summary = weights_summary(np, weights)
    want = expected.get("weights") or {}
    out["bit_identical"] = summary["sha256"] == want.get("sha256")
    if expected.get("weights_file"):
        with np.load(expected["weights_file"], allow_pickle=False) as data:
            recorded = [data[k] for k in sorted(data.files)]
        result = compare(np, weights, recorded, atol, rtol)
        out["compared"] = "weights"
        out["max_abs_diff"] = result["max_abs_diff"]
        if result.get("problem"):
            out["problems"].append("the weights after one training step have other shapes than "
                                   "at capture (%s vs %s)" % (result["shapes"]["got"],
                                                             result["shapes"]["expected"]))
        elif not result["allclose"]:
            out["problems"].append("the weights after one training step differ (max |dw| %s, atol "
                                   "%s, rtol %s)" % (result["max_abs_diff"], atol, rtol))
        return
    out["compared"] = "summary"
    if (summary["arrays"], summary["params"]) != (want.get("arrays"), want.get("params")):
        out["problems"].append("the model has %s weight arrays (%s parameters), at capture %s (%s)"
                               % (summary["arrays"], summary["params"], want.get("arrays"),
                                  want.get("params")))
        return
    bound = atol * summary["params"] + rtol * float(want.get("abs_sum") or 0.0)
    diff = abs(float(summary["sum"]) - float(want.get("sum") or 0.0))
    out["sum_diff"] = finite(diff)
    if not diff <= bound:
        out["problems"].append("the sum of the weights after one training step differs by %s "
                               "(allowed %s)" % (out["sum_diff"], bound))


def replay(expected, x, load_copy, model_path, fmt):
    """Load side: the same step on a fresh copy, compared with the recorded one. Problems are
    listed, not raised: a difference is a verification result (exit 6), not a load failure."""
    import numpy as np

    if expected.get("skipped"):
        return {"skipped": expected["skipped"], "ok": None, "problems": []}
    out = {"ok": False, "problems": [], "expected_loss": expected.get("loss"),
           "expected_iterations": expected.get("iterations"), "loss": None, "iterations": None,
           "max_abs_diff": None, "compared": None, "bit_identical": None,
           "atol": float(expected.get("atol", FLOAT_TOLERANCE["atol"])),
           "rtol": float(expected.get("rtol", FLOAT_TOLERANCE["rtol"]))}
    targets = [np.load(p, allow_pickle=False) for p in expected.get("targets") or []]
    y = assemble_inputs(expected.get("target_structure") or "single",
                        expected.get("target_names") or [], targets)
    try:
        with seeded(int(expected.get("seed") or 0)):
            model = prepared_copy(load_copy, model_path, fmt)
            loss, weights, iterations = train_step(model, x, y)
    except Skip as exc:
        out["problems"].append("training can't resume here: %s" % exc.reason)
        return out
    except Exception as exc:
        out["problems"].append("the training step failed here: %s" % short_error(exc))
        return out
    out["loss"], out["iterations"] = finite(loss), iterations
    if not _close(loss, float(expected["loss"]), out["atol"], out["rtol"]):
        out["problems"].append("the loss of one training step is %s, at capture %s (atol %s, "
                               "rtol %s)" % (out["loss"], expected["loss"], out["atol"],
                                             out["rtol"]))
    if iterations != expected.get("iterations"):
        out["problems"].append("the optimizer counts %s iterations after the step, at capture %s"
                               % (iterations, expected.get("iterations")))
    compare_weights(np, expected, weights, out)
    out["ok"] = not out["problems"]
    return out
