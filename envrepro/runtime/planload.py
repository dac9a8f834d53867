"""Loading the model a plan names, the one way the loader and the model server both do it.

The plan (written by the host, envrepro/sandbox/loadplan.py ``make_plan``) says where the model is,
which Keras saved it, which environment switches and user modules it needs, which custom objects
to pass and which ``load_model`` recipe worked at capture. ``PlanLoad.run`` applies the switches,
puts the capture's snapshot on sys.path, imports TensorFlow and the user's modules, resolves the
custom objects and calls ``load_model`` through the recipes (recipes.py), filling a state dict as
it goes: ``stage``, ``versions``, ``timings`` and ``load``. The loader passes its report as that
dict, so a failure at any step leaves the report saying how far the load got.

Standard library only, Python 3.6 syntax (see launch.py); TensorFlow and numpy are imported by
``run``.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import platform
import sys
import time

from . import lambdaglobals
from .facts import accepts
from .kerasflavor import keras_version, pick_keras
from .recipes import RecipesFailed, applicable, compiles, ordered, try_recipes


class PlanError(Exception):
    """The plan is unusable: a bug or version skew on the host side, not the model's fault."""


def entry_arguments(argv, environ):
    """``(argv, environ, debug)`` of an entry point that runs a plan (loader, server), with
    TensorFlow's C++ logging quiet unless ENVREPRO_DEBUG=1 and no bytecode written."""
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    debug = environ.get("ENVREPRO_DEBUG") == "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if debug else "2")
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return argv, environ, debug


def plan_json(argv, environ):
    """What ``--plan FILE`` or ``$ENVREPRO_PLAN`` holds, parsed (any JSON value); PlanError when
    there is none or it can't be read. Every entry point that runs a plan reads it here."""
    path = None
    if "--plan" in argv:
        i = argv.index("--plan")
        if i + 1 >= len(argv):
            raise PlanError("--plan needs a file")
        path = argv[i + 1]
    try:
        if path is not None:
            with open(path, "r") as f:
                plan = json.load(f)
        elif environ.get("ENVREPRO_PLAN"):
            plan = json.loads(environ["ENVREPRO_PLAN"])
        else:
            raise PlanError("no plan: pass --plan FILE or set ENVREPRO_PLAN")
    except (OSError, ValueError) as e:
        raise PlanError("unreadable plan: %s" % e)
    return plan


def read_plan(argv, environ):
    """The plan from ``--plan FILE`` or ``$ENVREPRO_PLAN``; PlanError when unusable."""
    plan = plan_json(argv, environ)
    if not isinstance(plan, dict) or not plan.get("model_path"):
        raise PlanError("plan has no model_path")
    return plan


def resolve_attr(spec):
    """'pkg.mod:Outer.Inner' -> the object (imports the module)."""
    import importlib

    if ":" not in spec:
        raise PlanError("custom object %r is not 'module:attr'" % spec)
    mod_name, attr = spec.split(":", 1)
    obj = importlib.import_module(mod_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def new_state(plan):
    """The fields a load fills in: where it is (``stage``), the versions it found, how long each
    step took and how ``load_model`` was called."""
    return {
        "stage": "import",
        "versions": {"python": platform.python_version(), "tensorflow": None, "keras": None,
                     "keras_module": None, "numpy": None},
        "timings": {},
        "load": {"ok": False, "format": plan.get("format"), "compile": bool(plan.get("compile", True)),
                 "safe_mode": plan.get("safe_mode"), "recipe": None,
                 "recorded_recipe": plan.get("recipe"),
                 "custom_objects": sorted((plan.get("custom_objects") or {}).keys())},
    }


class PlanLoad(object):
    """One load of the plan's model. ``state`` (a dict with new_state's keys, e.g. the loader's
    report) receives the progress; after ``run`` the modules in use are attributes."""

    def __init__(self, plan, state=None):
        self.plan = plan
        self.state = state if state is not None else new_state(plan)
        self.compiled = bool(plan.get("compile", True))
        self.tf = self.np = self.kmod = None
        self.custom = None

    def timed(self, key, func, *args):
        t = time.time()
        try:
            return func(*args)
        finally:
            self.state["timings"][key] = round(time.time() - t, 4)

    def run(self):
        """Environment, imports, custom objects, ``load_model``: returns the model."""
        plan, state = self.plan, self.state
        # Environment switches must be set before TensorFlow is imported.
        for k, v in (plan.get("env") or {}).items():
            if v is not None:
                os.environ[str(k)] = str(v)
        snap = plan.get("snapshot_dir")
        if snap and snap not in sys.path:
            sys.path.insert(0, snap)

        state["stage"] = "import"
        self.tf = self.timed("import_tf", __import__, "tensorflow")
        import numpy as np

        self.np = np
        versions = state["versions"]
        versions["tensorflow"] = getattr(self.tf, "__version__", None)
        versions["numpy"] = np.__version__
        self.kmod, kname = pick_keras(self.tf, plan.get("keras_flavor"))
        versions["keras_module"] = kname
        versions["keras"] = keras_version(self.kmod, self.tf)
        self.timed("import_modules", self.import_modules)
        self.custom = self.timed("resolve_custom_objects", self.custom_objects)
        given, problems = lambdaglobals.provide(plan.get("lambda_globals"), resolve_attr)
        if given or problems:
            state["load"]["lambda_globals"] = {"given": given, "problems": problems}

        state["stage"] = "load"
        model = self.timed("load", self.load_with_aliases, self.kmod, self.custom)
        state["load"]["ok"] = True
        state["load"]["compile"] = self.compiled
        return model

    def import_modules(self):
        import importlib

        for name in self.plan.get("modules") or []:
            importlib.import_module(name)

    def custom_objects(self):
        return dict((name, resolve_attr(spec))
                    for name, spec in sorted((self.plan.get("custom_objects") or {}).items()))

    def load_with_aliases(self, kmod, custom):
        """load_model; a NameError for a usual alias a Lambda's bytecode expects in the training
        script's globals (``tf``, ``np``...) gives ``__main__`` that module and loads again
        (lambdaglobals.py), saying so in the report."""
        guessed = []
        while True:
            try:
                return self.load_model(kmod, custom)
            except NameError as exc:
                found = lambdaglobals.alias_for(exc, self.tf)
                if found is None or len(guessed) >= len(lambdaglobals.ALIASES):
                    raise
                lambdaglobals.give(*found)
                guessed.append("%s = %s" % found)
                self.state["load"]["lambda_globals_guessed"] = list(guessed)

    def load_model(self, kmod, custom):
        """The recipe recorded at capture first, then the others in recipes.py's order; a plan
        without a recipe (an older capture) makes the one call it always made, unless it asks
        for all of them (an inferred capture: nothing loaded the model at capture)."""
        load = kmod.models.load_model
        extra = {}
        if self.plan.get("safe_mode") is not None and accepts(load, "safe_mode"):
            extra["safe_mode"] = bool(self.plan["safe_mode"])
        recorded = self.plan.get("recipe")
        if not recorded and not self.plan.get("all_recipes"):
            return load(self.plan["model_path"], custom_objects=custom, compile=self.compiled,
                        **extra)
        names = ordered(recorded, applicable(self.plan.get("format"), bool(custom)))
        try:
            model, recipe, failed = try_recipes(load, self.plan["model_path"], names, custom, extra)
        except RecipesFailed as exc:
            self.state["load"]["recipes_failed"] = exc.failed
            raise exc.last
        self.state["load"].update({"recipe": recipe, "recipes_failed": failed})
        self.compiled = compiles(recipe)
        return model
