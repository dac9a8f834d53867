"""Importing the user's modules and loading the model the way a user would, in this interpreter.
"""
from __future__ import absolute_import, division, print_function

import importlib
import json
import os
import sys
import types

from .customobjects import is_framework_module, registered_names, registries
from .distributions import Distributions
from .facts import ProbeFailure, short_error
from .kerasflavor import env_flavor
from .modelformat import detect_format
from .recipes import RecipesFailed, applicable, compiles, try_recipes


def module_custom_objects(modnames):
    """Classes and functions defined in the named modules, by class name and registered name,
    for ``load_model(custom_objects=...)``."""
    objs = {}
    reverse = registered_names(registries())
    for modname in modnames:
        mod = sys.modules.get(modname)
        if mod is None:
            continue
        for attr, value in list(vars(mod).items()):
            if attr.startswith("_") or getattr(value, "__module__", None) != modname:
                continue
            if isinstance(value, type) or isinstance(value, types.FunctionType):
                objs.setdefault(attr, value)
                for name in reverse.get(id(value), ()):
                    objs.setdefault(name, value)
    return objs


def config_modules(model_path, fmt):
    """User modules a Keras 3 ``.keras`` config names for its custom objects.

    Keras 3 records ``"module": "custom_layers"`` beside each custom class but does not import
    it; importing it here (the code paths are on sys.path) finds unregistered classes too, so
    ``envrepro capture --code-path DIR`` needs no ``--module`` for them.
    """
    if fmt != "keras":
        return []
    found = []
    try:
        import zipfile

        with zipfile.ZipFile(model_path) as zf:
            cfg = json.loads(zf.read("config.json").decode("utf-8"))
    except Exception:
        return found

    def walk(node):
        if isinstance(node, dict):
            mod = node.get("module")
            if isinstance(mod, str) and "class_name" in node and not is_framework_module(mod) \
                    and mod not in found and mod != "builtins":
                found.append(mod)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(cfg)
    return found


def import_config_modules(names, warnings):
    """Import the modules the model's config names; one missing here is a warning, not a
    failure."""
    imported = []
    for name in names:
        if name in sys.modules:
            imported.append(name)
            continue
        try:
            importlib.import_module(name)
            imported.append(name)
        except Exception as exc:
            warnings.append("the model names module %r for a custom object, but it can't be imported "
                            "here (%s); pass --code-path for its folder" % (name, short_error(exc)))
    return imported


def load_model(model_path, modules=(), warnings=None, dists=None, outcome=None, custom=None):
    """Load the model the way a user would, in this interpreter, trying the recipes of
    recipes.py in order (custom objects, SavedModel revival without them, then compile=False).
    ``outcome`` (a dict) receives the recipe that worked and why the earlier ones failed, for the
    manifest's ``load`` section. ``custom`` are custom objects passed besides those of
    ``modules``. Raises ProbeFailure with a fix."""
    warnings = warnings if warnings is not None else []
    fmt = detect_format(model_path)
    if fmt is None:
        raise ProbeFailure("%s is not a SavedModel folder, .h5 or .keras file" % model_path,
                           "pass the path given to model.save()")
    tf = None
    try:
        import tensorflow as tf
    except Exception:
        tf = None
    dists = dists if dists is not None else Distributions()
    flavor = env_flavor(getattr(tf, "__version__", None), dists) if tf is not None else "keras3"
    if fmt == "savedmodel" and flavor == "keras3":
        raise ProbeFailure(
            "%s is a legacy SavedModel folder, which Keras 3 load_model can't read" % model_path,
            "install tf_keras and set TF_USE_LEGACY_KERAS=1, use keras.layers.TFSMLayer for "
            "inference only, or re-save the model as .keras")
    if tf is not None:
        loader = tf.keras.models.load_model
    else:
        try:
            import keras
        except Exception:
            raise ProbeFailure("neither tensorflow nor keras can be imported here",
                               "run the probe with the training interpreter")
        loader = keras.models.load_model
    config_mods = import_config_modules(config_modules(model_path, fmt), warnings)
    found = module_custom_objects(list(modules) + [m for m in config_mods if m not in modules])
    found.update(custom or {})
    custom = found

    def unsafe_retry(exc, extra):
        if "safe_mode" in str(exc) and "safe_mode" not in extra:
            warnings.append("the model contains Python lambdas; loaded with safe_mode=False "
                            "(trusted: this is the training environment's own model)")
            return {"safe_mode": False}
        return None

    names = applicable(fmt, bool(custom))
    try:
        model, recipe, failed = try_recipes(loader, model_path, names, custom, retry=unsafe_retry)
    except RecipesFailed as exc:
        raise ProbeFailure("cannot load %s: %s" % (model_path, short_error(exc.last)),
                           "pass --module for each module defining custom objects and "
                           "--code-path for its folder, or --no-load")
    if failed:
        how = "recipe %s" % recipe if compiles(recipe) else "compile=False (recipe %s)" % recipe
        warnings.append("load_model failed with %s; loaded with %s"
                        % ("; ".join("%s (%s)" % (f["recipe"], f["error"]) for f in failed), how))
    if outcome is not None:
        outcome["recipe"] = recipe
        outcome["recipes_failed"] = failed
    return model, fmt


def resolve_custom_objects(entries):
    """``{name: object}`` for the probe's custom object entries (customobjects.py), found in
    the modules already imported: what the loader passes, resolving the manifest's
    ``module:attr`` specs."""
    out = {}
    for entry in entries:
        obj = sys.modules.get(entry.get("module") or "")
        attr = entry.get("attr") or ""
        if obj is None or not entry.get("name") or "<locals>" in attr:
            continue
        for part in attr.split("."):
            obj = getattr(obj, part, None)
        if obj is not None:
            out[entry["name"]] = obj
    return out


def file_recipe(model_path, entries, warnings, dists):
    """The recipe that loads the SAVED FILE of a model the caller holds live (the save hook), as
    ``load_model``'s outcome, or None when there is nothing to choose or nothing loads.

    The live model can't tell: a subclassed model without ``from_config`` saved as a SavedModel
    predicts fine in memory, yet ``load_model(path, custom_objects=...)`` raises ``KeyError:
    'layers'`` and only revival loads it (recipes.py). So the file is loaded here with the
    custom objects the loader will pass, in the loader's order, and the copy dropped.
    """
    custom = resolve_custom_objects(entries)
    if not custom:
        return None
    outcome = {}
    try:
        load_model(model_path, (), warnings, dists, outcome, custom=custom)
    except ProbeFailure as exc:
        warnings.append("the saved file does not load here with any recipe (%s): envrepro load "
                        "will fail the same way" % exc.what)
        return None
    return outcome


def import_modules(modules, code_paths, permanent):
    """Import the named modules (so their Keras registrations run), with ``code_paths`` on
    sys.path. In-process the path change is undone afterwards."""
    added = []
    for path in reversed(list(code_paths or ())):
        full = os.path.abspath(path)
        if full not in sys.path:
            sys.path.insert(0, full)
            added.append(full)
    errors = []
    try:
        import importlib

        for name in modules or ():
            try:
                importlib.import_module(name)
            except Exception as exc:
                errors.append((name, exc))
    finally:
        if not permanent:
            for full in added:
                try:
                    sys.path.remove(full)
                except ValueError:
                    pass
    return errors
