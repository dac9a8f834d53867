"""The optimizer: its facts at capture time and the check at load time that its state came back.
"""
from __future__ import absolute_import, division, print_function

import os

from .facts import json_safe, short_error
from .modelformat import is_compiled
from .savedstate import saved_optimizer_state


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
    saved = saved_optimizer_state(model_path, fmt)
    if saved is not None:
        facts["state_saved"] = bool(saved["saved"])
        facts["state_saved_exact"] = True
        facts["saved_variables"] = saved["variables"]
        facts["saved_iterations"] = saved["iterations"]
        if fresh and fmt == "savedmodel" and not facts["iterations"] \
                and saved["iterations"] is not None:
            # Keras 2 restores SavedModel optimizer variables lazily (or not at all): the count
            # the file holds is in the checkpoint.
            facts["iterations"] = saved["iterations"]
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


def expected_state(expected, model_path, fmt, out):
    """The iterations and variable count the restored optimizer must show; None where unknown.

    A capture that recorded what the file holds (``saved_variables``/``saved_iterations``, read
    by savedstate) is compared with the same reader's answer now, on the file being loaded: like
    with like. The file must still say what the capture read (a changed answer is a problem).
    A file that holds no optimizer state (Keras 2.15 writes none for a legacy optimizer into a
    ``.keras``) restores a fresh optimizer: its iterations are not expected back (noted). An
    older capture keeps the old expectation: its live ``iterations`` and ``num_weights``.
    """
    iterations = expected.get("iterations")
    variables = expected.get("num_weights") if expected.get("state_saved") else None
    if "saved_variables" not in expected and "saved_iterations" not in expected:
        return iterations, variables
    recorded = {"variables": expected.get("saved_variables"),
                "iterations": expected.get("saved_iterations")}
    saved = saved_optimizer_state(model_path, fmt) if model_path else None
    if saved is None:
        saved = dict(recorded, saved=expected.get("state_saved"))
    else:
        out["saved"] = saved
        for key in ("variables", "iterations"):
            if recorded[key] is not None and saved[key] is not None and saved[key] != recorded[key]:
                out["problems"].append("the model file holds %s optimizer %s, the capture read %s"
                                       % (saved[key], key, recorded[key]))
    if saved["iterations"] is not None:
        iterations = saved["iterations"]
    elif saved.get("saved") is False:
        iterations = None
        out["note"] = ("the model file holds no optimizer state, so none is restored; only the "
                       "optimizer class is checked")
    if saved.get("saved") and saved["variables"] is not None:
        variables = saved["variables"]
    return iterations, variables


FORMAT_NAMES = {"h5": "H5", "keras": ".keras", "savedmodel": "SavedModel"}


def loaded_state(model, expected, model_path, fmt, want_iterations, want_variables, out):
    """The optimizer the loader ends up with, read into ``out`` (``iterations``,
    ``weights_restored``, ``restored_via``, ``note``); returns ``(optimizer, first, failed)``.

    That is load_model's optimizer, except for a Keras 2 SavedModel whose load_model left the
    state in the checkpoint: restored from there when the first reading differs from the file
    (``first`` is that reading, ``failed`` the restore's exception). The capture runs the same
    steps on the training environment's own load (``restored_facts``): like with like.
    """
    opt = model.optimizer
    first, failed = None, None
    if fmt == "savedmodel" and expected.get("state_saved") and model_path:
        first = {"problems": []}
        read_optimizer(opt, first)
        if first["iterations"] != want_iterations or first["weights_restored"] != want_variables:
            try:
                restore_savedmodel_optimizer(model, model_path)
                out["restored_via"] = "load_weights"
                out["note"] = ("load_model left the optimizer state behind (iterations %s, %s "
                               "variables); restored with model.load_weights(<model>/variables/"
                               "variables)" % (first["iterations"], first["weights_restored"]))
            except Exception as e:
                failed = e
                out["note"] = "restoring the SavedModel optimizer state failed: %s" % e
        opt = model.optimizer
    read_optimizer(opt, out)
    return opt, first, failed


def restored_facts(model, facts, model_path, fmt):
    """What this environment's load restores of the optimizer, for the capture's
    ``optimizer.restored``: ``{"class", "iterations", "variables", "via"}``, read by the
    loader's own steps (``loaded_state``) on ``model``, a copy just loaded from ``model_path``
    (never the training model); None when it has no optimizer. ``facts`` are the capture's
    optimizer facts, which the loader will be given: the same expectation drives the same steps.
    """
    if getattr(model, "optimizer", None) is None:
        return None
    out = {"problems": [], "restored_via": "load_model", "iterations": None,
           "weights_restored": None}
    want_iterations, want_variables = expected_state(facts, model_path, fmt,
                                                     {"problems": []})
    opt = loaded_state(model, facts, model_path, fmt, want_iterations, want_variables, out)[0]
    return {"class": type(opt).__name__, "iterations": out["iterations"],
            "variables": out["weights_restored"], "via": out["restored_via"]}


def _held_more(restored, held_iterations, held_variables):
    """What the file holds that the training environment's load does not bring back, in words;
    None when it brings back all of it."""
    parts = []
    got = restored.get("iterations")
    if held_iterations is not None and got is not None and int(got) != int(held_iterations):
        parts.append("iterations %s %s %s" % (got, "of the" if got < held_iterations
                                                 else "where", held_iterations))
    got = restored.get("variables")
    if held_variables is not None and got is not None and int(got) < int(held_variables):
        parts.append("%s of the %s optimizer variables" % (got, held_variables))
    return " and ".join(parts) or None


def against_restored(out, expected, loaded_class, fmt):
    """The comparison for a capture that recorded ``restored``: the optimizer restored here
    against what the training environment's own load restored from the same file (class,
    iterations, variables), not against what the file holds. Where the file holds state the
    training environment's load does not bring back (TF 2.12's H5 loader starts a
    LossScaleOptimizer afresh: iterations 0 of the 2 saved), that is said as ``warning``, not
    counted as a mismatch; state restored here that differs from the training environment's is.
    """
    want = expected["restored"]
    if out.get("note", "").startswith("the model file holds no optimizer state"):
        del out["note"]   # its "only the class is checked" is not so here
    if want.get("class") and short_class(want["class"]) != short_class(loaded_class):
        out["problems"].append("optimizer class %s, the training environment restores %s"
                               % (loaded_class, want["class"]))
    if want.get("iterations") is not None and out["iterations"] != int(want["iterations"]):
        out["problems"].append("iterations %s, expected %s (what the training environment "
                               "restores from this file)" % (out["iterations"], want["iterations"]))
    if want.get("variables") is not None and out["weights_restored"] != int(want["variables"]):
        out["problems"].append("%s optimizer variables restored, expected %s (what the training "
                               "environment restores from this file)"
                               % (out["weights_restored"], want["variables"]))
    held = out.get("saved") or {"iterations": expected.get("saved_iterations"),
                                "variables": expected.get("saved_variables")}
    more = _held_more(want, held.get("iterations"), held.get("variables"))
    if more:
        out["warning"] = ("the training environment's load_model %srestores %s the file holds "
                          "(%s in %s): compared with what it restores"
                          % ("" if out["problems"] else "also ", more,
                             short_class(want.get("class") or loaded_class),
                             FORMAT_NAMES.get(fmt, fmt)))
    trained = short_class(expected.get("class"))
    if trained and want.get("class") and trained != short_class(want["class"]):
        out["warning"] = ((out["warning"] + "; ") if out.get("warning") else "") + (
            "the training environment's load_model restores the optimizer as %s, not the %s "
            "the model was trained with" % (short_class(want["class"]), trained))
    out["compared_with"] = "training environment restore"
    out["ok"] = not out["problems"]
    return out


def check_optimizer(model, expected, model_path=None, fmt=None):
    """Did the optimizer come back as saved (class, iterations, variables)? Problems are listed,
    not raised: a mismatch is a verification result, not a load failure.

    Keras 2's SavedModel ``load_model`` leaves the optimizer state in the checkpoint; it is
    restored from there (``restored_via``). When that restore is impossible in this TensorFlow,
    the state was saved but not restored by this loader: said so (``state_restored`` False), not
    reported as a mismatch, because nothing restored differs from the file. So are variables the
    file holds that this loader does not bring back at all (Keras 3's H5 loader builds the
    optimizer without the model's variables: only ``iteration`` and ``learning_rate`` return),
    the iterations still checked. State that did come back and differs from the file is a
    mismatch.

    A capture that recorded what the training environment's own load restored (``restored``)
    is compared with that instead (``against_restored``): like with like.
    """
    out = {"expected": expected, "restored": None, "iterations": None, "weights_restored": None,
           "ok": False, "problems": [], "restored_via": "load_model"}
    opt = getattr(model, "optimizer", None)
    if opt is None:
        out["problems"].append("the loaded model has no optimizer")
        return out
    want_iterations, want_variables = expected_state(expected, model_path, fmt, out)
    opt, first, failed = loaded_state(model, expected, model_path, fmt, want_iterations,
                                      want_variables, out)
    inner = getattr(opt, "inner_optimizer", None)  # LossScaleOptimizer wraps the real one
    shown = inner if inner is not None and expected.get("class") != type(opt).__name__ else opt
    out["restored"] = type(shown).__name__
    if isinstance(expected.get("restored"), dict):
        return against_restored(out, expected, type(opt).__name__, fmt)
    if expected.get("class") and short_class(expected["class"]) != short_class(out["restored"]):
        out["problems"].append("optimizer class %s, expected %s" % (out["restored"], expected["class"]))
    unchanged = first is not None and not first["iterations"] and \
        (out["iterations"], out["weights_restored"]) == (first["iterations"], first["weights_restored"])
    if "saved" in out and (failed is not None or unchanged) and out["iterations"] != want_iterations:
        out["state_restored"] = False
        out["note"] = ("optimizer state saved (%s variables, iterations %s) but not restored by "
                       "this loader (%s); the weights and the reference prediction are verified"
                       % (want_variables, want_iterations,
                          failed or "the checkpoint restore brought nothing back"))
        out["ok"] = not out["problems"]
        return out
    if "saved" in out and first is None and want_variables is not None \
            and out["weights_restored"] is not None and out["weights_restored"] < int(want_variables):
        out["state_restored"] = False
        out["note"] = ("optimizer state saved (%s variables) but this loader restores %s of them, "
                       "as it does where the model was saved; iterations, weights and the "
                       "reference prediction are verified" % (want_variables, out["weights_restored"]))
        want_variables = None
    if want_iterations is not None and out["iterations"] != int(want_iterations):
        out["problems"].append("iterations %s, expected %s" % (out["iterations"], want_iterations))
    if want_variables is not None and out["weights_restored"] != int(want_variables):
        out["problems"].append("%s optimizer variables restored, expected %s"
                               % (out["weights_restored"], want_variables))
    out["ok"] = not out["problems"]
    return out
