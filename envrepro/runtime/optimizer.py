"""The optimizer: its facts at capture time and the check at load time that its state came back.
"""
from __future__ import absolute_import, division, print_function

import os
import sys

from .facts import json_safe, short_error
from .modelformat import h5_static, is_compiled


def _saved_state(model_path, fmt):
    """Whether the saved file holds optimizer variables, read from the file itself; None when
    it can't be told.

    H5: an ``optimizer_weights`` group. ``.keras``: an ``optimizer`` group with variables in the
    zip's ``model.weights.h5`` (stored uncompressed, so h5py reads it in place). SavedModel: the
    checkpoint index (keys only, a few KB) names ``optimizer/...`` and ``.OPTIMIZER_SLOT`` keys.
    """
    try:
        if fmt == "h5" and os.path.isfile(model_path):
            static = h5_static(model_path)
            return static.get("state_saved")
        if fmt == "keras" and os.path.isfile(model_path):
            import zipfile

            import h5py

            with zipfile.ZipFile(model_path) as zf:
                names = zf.namelist()
                if "model.weights.h5" not in names:
                    return None
                with zf.open("model.weights.h5") as fh:
                    with h5py.File(fh, "r") as h5:
                        if "optimizer" not in h5:
                            return False
                        group = h5["optimizer"]
                        if "vars" in group:
                            return len(group["vars"].keys()) > 0
                        return len(group.keys()) > 0
        if fmt == "savedmodel" and os.path.isdir(model_path):
            index = os.path.join(model_path, "variables", "variables.index")
            if os.path.isfile(index) and os.path.getsize(index) < 64 * 1024 * 1024:
                with open(index, "rb") as fh:
                    return b"optimizer" in fh.read()
            return None
    except Exception:
        return None
    return None


def _checkpoint_iterations(model_path):
    """The iteration count stored in a SavedModel's checkpoint (TensorFlow already imported), or
    None."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return None
    try:
        reader = tf.train.load_checkpoint(os.path.join(model_path, "variables", "variables"))
        for key in ("optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE",
                    "optimizer/iterations/.ATTRIBUTES/VARIABLE_VALUE"):
            if reader.has_tensor(key):
                return int(json_safe(reader.get_tensor(key)))
    except Exception:
        return None
    return None


def optimizer_facts(model, model_path, fmt, warnings, fresh=False):
    """Class, JSON-safe config, iteration count and whether its state is in the saved file.

    ``state_saved`` comes from the saved file when it can be read (``state_saved_exact``),
    otherwise it is approximated by "compiled and the optimizer has variables". ``fresh`` means
    the model is the probe's own copy: then reading ``iterations`` may create the variable
    (Keras 2 restores optimizer state lazily); on the training model that side effect is avoided.
    """
    opt = getattr(model, "optimizer", None) if model is not None else None
    if opt is None:
        return None
    facts = {"class": type(opt).__name__, "module": type(opt).__module__, "config": None,
             "iterations": None, "state_saved": False, "num_weights": 0,
             "state_saved_exact": False}
    try:
        facts["config"] = json_safe(opt.get_config())
    except Exception as exc:
        warnings.append("optimizer config unavailable: %s" % short_error(exc))
    try:
        if hasattr(opt, "_hyper") and not fresh:  # Keras 2 OptimizerV2: property creates it
            it = getattr(opt, "_iterations", None)
        else:
            it = opt.iterations
        facts["iterations"] = int(json_safe(it)) if it is not None else 0
    except Exception as exc:
        warnings.append("optimizer iterations unavailable: %s" % short_error(exc))
    facts["num_weights"] = len(optimizer_variables(opt))
    if fresh and fmt == "savedmodel" and not facts["iterations"]:
        # Keras 2 restores SavedModel optimizer variables lazily (or not at all): the count the
        # file holds is in the checkpoint.
        saved_iter = _checkpoint_iterations(model_path)
        if saved_iter is not None:
            facts["iterations"] = saved_iter
    saved = _saved_state(model_path, fmt)
    if saved is not None:
        facts["state_saved"] = bool(saved)
        facts["state_saved_exact"] = True
    else:
        facts["state_saved"] = bool(is_compiled(model) and facts["num_weights"] > 0)
    return facts


def optimizer_variables(opt):
    """Optimizer variables across APIs: OptimizerV2.weights/variables(), Keras 3 .variables."""
    for name in ("variables", "weights"):
        try:
            v = getattr(opt, name, None)
            if callable(v):
                v = v()
        except Exception:
            v = None
        if v is not None:
            return list(v)
    return []


def short_class(name):
    """'Custom>Adam', 'keras.optimizers.Adam' -> 'Adam'."""
    name = str(name or "")
    return name.replace(">", ".").split(".")[-1]


def restore_savedmodel_optimizer(model, model_path):
    """Keras 2 does not restore a SavedModel's optimizer state in load_model: the optimizer's
    variables are created lazily, after the restore has passed. Loading the SavedModel's own
    checkpoint again and creating the slots brings it back, as a user resuming training would."""
    status = model.load_weights(os.path.join(model_path, "variables", "variables"))
    getattr(status, "expect_partial", lambda: None)()
    opt = model.optimizer
    if hasattr(opt, "_create_all_weights"):  # OptimizerV2 (TF <= 2.10, tf_keras legacy)
        opt._create_all_weights(model.trainable_variables)
    elif hasattr(opt, "build"):
        opt.build(model.trainable_variables)


def read_optimizer(opt, out):
    """Iterations and variable count of the loaded optimizer into ``out``."""
    try:
        out["iterations"] = int(getattr(opt.iterations, "numpy", lambda: opt.iterations)())
    except Exception as e:
        out["problems"].append("can't read iterations (%s)" % e)
    out["weights_restored"] = len(optimizer_variables(opt))


def check_optimizer(model, expected, model_path=None, fmt=None):
    """Did the optimizer come back as captured (class, iterations, variables)? Problems are
    listed, not raised: a mismatch is a verification result, not a load failure."""
    out = {"expected": expected, "restored": None, "iterations": None, "weights_restored": None,
           "ok": False, "problems": [], "restored_via": "load_model"}
    opt = getattr(model, "optimizer", None)
    if opt is None:
        out["problems"].append("the loaded model has no optimizer")
        return out
    if fmt == "savedmodel" and expected.get("state_saved") and model_path:
        first = {"problems": []}
        read_optimizer(opt, first)
        if first["iterations"] != expected.get("iterations") or \
                first["weights_restored"] != expected.get("num_weights"):
            try:
                restore_savedmodel_optimizer(model, model_path)
                out["restored_via"] = "load_weights"
                out["note"] = ("load_model left the optimizer state behind (iterations %s, %s "
                               "variables); restored with model.load_weights(<model>/variables/"
                               "variables)" % (first["iterations"], first["weights_restored"]))
            except Exception as e:
                out["note"] = "restoring the SavedModel optimizer state failed: %s" % e
        opt = model.optimizer
    inner = getattr(opt, "inner_optimizer", None)  # LossScaleOptimizer wraps the real one
    shown = inner if inner is not None and expected.get("class") != type(opt).__name__ else opt
    out["restored"] = type(shown).__name__
    read_optimizer(opt, out)
    if expected.get("class") and short_class(expected["class"]) != short_class(out["restored"]):
        out["problems"].append("optimizer class %s, expected %s" % (out["restored"], expected["class"]))
    if expected.get("iterations") is not None and out["iterations"] != int(expected["iterations"]):
        out["problems"].append("iterations %s, expected %s" % (out["iterations"], expected["iterations"]))
    if expected.get("state_saved") and expected.get("num_weights") is not None \
            and out["weights_restored"] != int(expected["num_weights"]):
        out["problems"].append("%s optimizer variables restored, expected %s"
                               % (out["weights_restored"], expected["num_weights"]))
    out["ok"] = not out["problems"]
    return out
