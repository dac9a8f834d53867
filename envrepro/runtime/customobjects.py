"""The Python objects a model refers to that Keras must find by name when loading: the registries,
the walk over layers and compile state, and the modules that define them.
"""
from __future__ import absolute_import, division, print_function

import sys
import types

from .facts import qualname, short_error
from .lambdasource import lambda_record
from .modulesources import module_entry, module_file, object_file, sibling_modules

# Top-level packages whose objects are "the framework": available wherever the same
# TensorFlow/Keras is installed, so never custom.
FRAMEWORK_TOPS = frozenset(["tensorflow", "tensorflow_core", "keras", "tf_keras", "builtins"])

# Base class names (in framework modules) that tell what kind of Keras object a class is.
# Order matters: Model before Layer, Loss before the generic wrappers.
_KIND_BASES = (
    ("model", ("Model", "Functional", "Sequential", "Network")),
    ("layer", ("Layer",)),
    ("loss", ("Loss",)),
    ("metric", ("Metric",)),
    ("initializer", ("Initializer",)),
    ("regularizer", ("Regularizer",)),
    ("constraint", ("Constraint",)),
    ("schedule", ("LearningRateSchedule",)),
    ("optimizer", ("OptimizerV2", "Optimizer", "BaseOptimizer")),
)


def registries():
    """The custom-object registries of every Keras already imported (never imports one).

    TF <= 2.5 keeps its registry in ``tensorflow.python.keras``; Keras 2.6-2.15 and Keras 3 in
    ``keras``; tf-keras in ``tf_keras``. Registered names like ``team>Huberish`` live here.
    """
    regs = []
    seen = set()

    def add(getter):
        try:
            reg = getter()
        except Exception:
            return
        if isinstance(reg, dict) and id(reg) not in seen:
            seen.add(id(reg))
            regs.append(reg)

    # TF <= 2.5 in TF itself; Keras 2.6 .. 2.11 keep it in generic_utils and export no
    # ``keras.utils.get_custom_objects`` (only ``tf.keras.utils`` does); Keras 2.12 moved it.
    for name in ("tensorflow.python.keras.utils.generic_utils", "keras.utils.generic_utils",
                 "keras.saving.object_registration"):
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, "get_custom_objects"):
            add(mod.get_custom_objects)
    for top in ("keras", "tf_keras"):
        mod = sys.modules.get(top)
        if mod is None:
            continue
        src = sys.modules.get(top + ".src.saving.object_registration")
        if src is not None:
            add(src.get_custom_objects)
            continue
        add(lambda m=mod: m.saving.get_custom_objects())
        add(lambda m=mod: m.utils.get_custom_objects())
    return regs


def registered_names(regs):
    """``id(object) -> {names}`` over the registries: an object registered as ``team>Huberish`` is
    found under that name, not its class name."""
    reverse = {}
    for reg in regs:
        for name, obj in list(reg.items()):
            reverse.setdefault(id(obj), set()).add(name)
    return reverse


def kind_of_class(klass):
    """Keras kind of a class from its framework base classes, or None."""
    try:
        mro = klass.__mro__
    except AttributeError:
        return None
    names = set()
    for base in mro:
        mod = base.__module__ or ""
        if mod.split(".", 1)[0] in FRAMEWORK_TOPS:
            names.add(base.__name__)
    for kind, bases in _KIND_BASES:
        if names.intersection(bases):
            return kind
    return None


def is_framework_module(modname):
    """Objects from TensorFlow/Keras modules exist wherever the same framework is installed, so
    they are never custom."""
    return not modname or modname.split(".", 1)[0] in FRAMEWORK_TOPS


def is_revived(klass):
    """TF <= 2.15 revives a SavedModel layer whose class can't be found as a dynamic subclass
    of RevivedLayer/RevivedNetwork: it predicts, but the original class is not known."""
    try:
        return any(b.__name__.startswith("Revived") for b in klass.__mro__)
    except AttributeError:
        return False


_SKIP_ATTRS = frozenset([
    "_inbound_nodes", "_outbound_nodes", "_inbound_nodes_value", "_outbound_nodes_value",
    "_trainable_weights", "_non_trainable_weights", "_trainable_variables",
    "_non_trainable_variables", "_variables", "_tracker", "_tracked", "_layers",
    "_self_tracked_trackables", "_metrics", "_losses", "_callable_losses", "_updates",
    "_thread_local", "_obj_reference_counts_dict", "_call_signature", "_call_fn_args",
    "_call_full_argspec", "_call_spec", "_saved_model_inputs_spec", "_saved_model_arg_spec",
    "_input_spec", "_compiled_trainable_state", "_distribution_strategy", "_network_nodes",
    "_nodes_by_depth", "_operations", "_layer_call_argspecs", "_output_layers", "_input_layers",
    "_output_coordinates", "_input_coordinates", "_functional", "call_signature_parameters",
    "_dtype_policy", "_jit_compile", "_trackable_saver", "history", "stop_training",
])


class _Walker(object):
    """Collects every Python object a model refers to that Keras must find by name when loading.

    Layers are walked recursively (sub-models, wrappers, layers held in attributes); for each
    layer its attributes (activation functions, initializer/regularizer/constraint objects) are
    inspected; then the compiled loss and metrics, the optimizer and its learning-rate schedule.
    """

    def __init__(self, registry_names):
        self.found = []            # (target, kind)
        self.seen_targets = set()
        self.seen_objs = set()
        self.layers = []
        self.registry_names = registry_names
        self.used_names = set()
        self.lambda_layers = []
        self.lambda_sources = []
        self.revived = []

    # -- recording ---------------------------------------------------------------------------
    def record(self, target, kind):
        key = id(target)
        if key in self.seen_targets:
            return
        self.seen_targets.add(key)
        self.found.append((target, kind))

    def visit(self, value, kind, depth=0):
        """Record ``value`` (class, function, Keras object, or container of them)."""
        if value is None or isinstance(value, (bool, int, float, bytes)) or depth > 3:
            return
        if isinstance(value, str):
            if value in self.registry_names:
                self.used_names.add(value)
            return
        if isinstance(value, (list, tuple, set, frozenset)):
            if len(value) > 256:
                return
            for item in value:
                self.visit(item, kind, depth + 1)
            return
        if isinstance(value, dict):
            if len(value) > 256:
                return
            for item in list(value.values()):
                self.visit(item, kind, depth + 1)
            return
        if isinstance(value, types.ModuleType):
            return
        if id(value) in self.seen_objs:
            return
        self.seen_objs.add(id(value))
        if type(value).__name__ == "partial" and hasattr(value, "func"):
            self.visit(value.func, kind, depth + 1)
            return
        if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
            if not is_framework_module(getattr(value, "__module__", None)):
                if value.__name__ == "<lambda>":
                    return  # serialized as bytecode, not by name
                qual = getattr(value, "__qualname__", "") or ""
                if "." in qual and "<locals>" not in qual:
                    return  # a method (Keras 3 wraps ``build`` per instance): not a custom object
                self.record(value, kind or "function")
            return
        if isinstance(value, types.MethodType):
            return
        if isinstance(value, type):
            ckind = kind_of_class(value)
            if ckind or hasattr(value, "get_config"):
                if not is_framework_module(value.__module__):
                    self.record(value, ckind or kind or "registered")
            return
        klass = type(value)
        ckind = kind_of_class(klass)
        if ckind in ("layer", "model"):
            self.layers.append(value)
            return
        if ckind is None and not hasattr(value, "get_config"):
            return
        if not is_framework_module(klass.__module__):
            self.record(klass, ckind or kind or "registered")
        if ckind in ("metric", "loss"):  # wrappers around a plain function
            for attr in ("_fn", "fn"):
                self.visit(getattr(value, attr, None), ckind, depth + 1)
        if ckind == "optimizer":
            self.visit_optimizer(value)

    # -- layers ------------------------------------------------------------------------------
    def walk_layers(self, root):
        seen = set()
        queue = [root]
        while queue:
            layer = queue.pop(0)
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            klass = type(layer)
            kind = kind_of_class(klass) or "layer"
            if is_revived(klass):
                self.revived.append(klass.__name__)
            elif not is_framework_module(klass.__module__):
                self.record(klass, kind)
                try:
                    self.visit(layer.get_config(), None)
                except Exception:
                    pass
            if klass.__name__ == "Lambda":
                self.lambda_layers.append(getattr(layer, "name", "?"))
                self.lambda_sources.append(lambda_record(getattr(layer, "name", "?"),
                                                         getattr(layer, "function", None)))
            self.layers = []
            try:
                attrs = list(vars(layer).items())
            except TypeError:
                attrs = []
            for name, value in attrs:
                if name in _SKIP_ATTRS or name.startswith("_self_"):
                    continue
                try:
                    self.visit(value, _attr_kind(name))
                except Exception:
                    continue
            children = list(self.layers)
            try:
                flat = getattr(layer, "_flatten_layers", None)
                if flat is not None:
                    children.extend(flat(include_self=False, recursive=False))
                else:
                    children.extend(getattr(layer, "layers", None) or [])
            except Exception:
                pass
            queue.extend(c for c in children if id(c) not in seen)

    # -- compile state -----------------------------------------------------------------------
    def walk_compile(self, model):
        self.visit(getattr(model, "loss", None), "loss")
        for cont_name, attrs in (("compiled_loss", ("_user_losses",)),
                                 ("_compile_loss", ("_user_loss",)),
                                 ("compiled_metrics", ("_user_metrics", "_user_weighted_metrics")),
                                 ("_compile_metrics", ("_user_metrics", "_user_weighted_metrics"))):
            try:
                cont = getattr(model, cont_name, None)
            except Exception:
                cont = None
            if cont is None:
                continue
            kind = "loss" if "loss" in cont_name else "metric"
            for attr in attrs:
                self.visit(getattr(cont, attr, None), kind)
        try:
            metrics = list(getattr(model, "metrics", None) or [])
        except Exception:
            metrics = []
        for metric in metrics:
            self.visit(metric, "metric")
        opt = getattr(model, "optimizer", None)
        if opt is not None:
            self.visit(opt, "optimizer")

    def visit_optimizer(self, opt):
        inner = getattr(opt, "inner_optimizer", None)
        if inner is not None and inner is not opt:
            self.visit(inner, "optimizer")
        lr = None
        hyper = getattr(opt, "_hyper", None)  # Keras 2 OptimizerV2
        if isinstance(hyper, dict):
            lr = hyper.get("learning_rate")
        if lr is None:
            lr = getattr(opt, "_learning_rate", None)  # Keras 3 / new tf.keras optimizers
        if lr is not None and not hasattr(lr, "dtype"):
            self.visit(lr, "schedule")


def _attr_kind(name):
    """The kind a layer attribute's name implies (``kernel_initializer`` -> initializer)."""
    name = name.lower()
    for word in ("activation", "initializer", "regularizer", "constraint"):
        if word in name:
            return word
    return None


def _registered_name(target, reverse):
    """The name Keras will look the object up by when loading."""
    names = reverse.get(id(target))
    if names:
        # Prefer the qualified registration ("team>Huberish") over a bare alias.
        return sorted(names, key=lambda n: (">" not in n, n))[0]
    return getattr(target, "__name__", None)


def _revived_warning(name, recipe):
    """What a layer revived from the SavedModel without its Python class means. Under a revive
    recipe it is the load chosen on purpose (passing the classes failed), and the loader loads
    it the same way: no module is missing, only Python-only behaviour is absent."""
    if recipe in ("revive", "revive_nocompile"):
        return ("layer class %s is revived from the SavedModel's traced functions on purpose: "
                "recipe %s loads the model without its custom objects (loading with them failed) "
                "and the loader does the same; methods defined only in Python are not available"
                % (name, recipe))
    return ("layer class %s was revived from the SavedModel without its Python class; pass "
            "--module for the module that defines it" % name)


def custom_object_facts(model, dists, requested_modules=(), warnings=None, recipe=None,
                        lambdas=None):
    """``(custom_objects, modules, unresolved)`` for a model and the registries.

    An object is custom when its defining module is outside the TensorFlow/Keras packages.
    Registry entries are added when they come from user code (no distribution) or when the model
    uses them; an installed add-on package (tensorflow-addons) registering dozens of objects
    contributes only the ones the model needs. ``recipe`` is how the model was loaded
    (runtime/recipes.py): a revived layer class is a missing module only when revival was not
    chosen on purpose. ``lambdas`` (a list) gets each Lambda layer's source record
    (lambdasource.py).
    """
    warnings = warnings if warnings is not None else []
    regs = registries()
    reverse = registered_names(regs)
    names = {}
    for reg in regs:
        for name, obj in list(reg.items()):
            names.setdefault(name, obj)
    walker = _Walker(names)
    if model is not None:
        try:
            walker.walk_layers(model)
        except Exception as exc:
            warnings.append("walking the model's layers failed: %s" % short_error(exc))
        try:
            walker.walk_compile(model)
        except Exception as exc:
            warnings.append("walking the model's compile state failed: %s" % short_error(exc))
    used = dict((id(t), k) for t, k in walker.found)
    for name in walker.used_names:
        obj = names.get(name)
        if obj is not None and id(obj) not in used:
            walker.visit(obj, "registered")
            used = dict((id(t), k) for t, k in walker.found)

    entries = []
    seen = set()
    main_objects = []

    def add(target, kind, from_registry):
        modname = getattr(target, "__module__", None)
        if is_framework_module(modname) or id(target) in seen:
            return
        path = object_file(target)
        dist = dists.for_file(path) if path else None
        if from_registry and dist is not None and id(target) not in used:
            return
        seen.add(id(target))
        if isinstance(target, type):
            kind = kind_of_class(target) or kind
        entries.append({
            "name": _registered_name(target, reverse),
            "module": modname,
            "attr": qualname(target),
            "kind": kind,
            "file": path,
            "distribution": dist["name"] if dist else None,
        })
        if modname == "__main__":
            main_objects.append(qualname(target))
        if "<locals>" in qualname(target):
            warnings.append("custom object %s.%s is defined inside a function; it can't be "
                            "imported when loading (define it at module level)"
                            % (modname, qualname(target)))

    for target, kind in walker.found:
        add(target, kind, False)
    for reg in regs:
        for name, obj in list(reg.items()):
            if isinstance(obj, (type, types.FunctionType)):
                add(obj, "registered", True)
    entries.sort(key=lambda e: (e["module"] or "", e["name"] or ""))

    if main_objects:
        warnings.append("custom objects defined in __main__ (%s): they can only be reproduced "
                        "if the script %s is importable; move them into a module"
                        % (", ".join(sorted(main_objects)), module_file("__main__") or
                           "(no file: interactive session)"))
    if walker.lambda_layers:
        warnings.append("Lambda layers (%s) store Python bytecode: loading needs Python %d.%d"
                        % (", ".join(walker.lambda_layers), sys.version_info[0],
                           sys.version_info[1]))
    if lambdas is not None:
        lambdas.extend(walker.lambda_sources)
    warnings.extend(_revived_warning(name, recipe) for name in sorted(set(walker.revived)))

    modules = []
    mod_seen = set()
    object_modules = [e["module"] for e in entries]
    for modname in object_modules + list(requested_modules or ()):
        if not modname or modname in mod_seen:
            continue
        mod_seen.add(modname)
        via = "custom_object" if modname in object_modules else "requested"
        modules.append(module_entry(modname, dists, via))
    modules.extend(sibling_modules(modules, dists))
    return entries, modules, sorted(set(walker.revived))
