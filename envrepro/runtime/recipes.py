"""The ways ``load_model`` is called on a captured model ("recipes"), tried in one order by the
probe at capture and by the loader at load time.

Why more than one: a model its own environment can load may still fail the obvious call. A
subclassed ``tf.keras.Model`` with ``get_config`` but no ``from_config``, saved as a SavedModel in
TF 2.8, raises ``KeyError: 'layers'`` when its class is passed in ``custom_objects`` (Keras calls
the inherited ``Model.from_config``), yet revives from the SavedModel's traced functions when it
is not passed (docs/failures.md). Keras-2 training configs often don't deserialize in newer Keras,
so compile=False is the last resort. The probe records the recipe that worked (manifest
``load.recipe``) and why the earlier ones failed (``load.recipes_failed``); the loader tries the
recorded one first, then the rest in this order.

Standard library only, Python 3.6 syntax: this module runs in the training interpreter and in the
container (see launch.py).
"""
from __future__ import absolute_import, division, print_function

from .facts import short_error

# name -> (passes the custom objects, compile): the order is the order of trial.
RECIPES = (
    ("custom_objects", True, True),
    ("revive", False, True),
    ("custom_objects_nocompile", True, False),
    ("revive_nocompile", False, False),
)
RECIPE_NAMES = tuple(r[0] for r in RECIPES)
_BY_NAME = dict((r[0], r) for r in RECIPES)


class RecipesFailed(Exception):
    """Every recipe failed; ``failed`` holds ``{recipe, error}`` for each, in the order tried,
    and ``last`` the last exception (its message is the most specific one)."""

    def __init__(self, failed, last):
        Exception.__init__(self, str(last))
        self.failed = failed
        self.last = last


def applicable(fmt, has_custom):
    """The recipes worth trying for this model, in order.

    Revival exists only for SavedModel folders, and without custom objects it is the very same
    call as the custom-objects recipe, so it is left out then: a model without custom objects
    is loaded exactly as before recipes existed.
    """
    return [name for name, custom, _ in RECIPES
            if custom or (fmt == "savedmodel" and has_custom)]


def ordered(first, names):
    """The recipe recorded at capture, then ``names`` without it. It comes first even when it
    isn't in ``names``: the manifest may list no custom objects for a revived model (its layers
    no longer name the user's class), yet "revive" is what worked. An unknown name is ignored."""
    if first in RECIPE_NAMES:
        return [first] + [n for n in names if n != first]
    return list(names)


def compiles(name):
    """Whether the recipe asks load_model to restore the training config (and optimizer)."""
    return _BY_NAME[name][2]


def try_recipes(load, model_path, names, custom, extra=None, retry=None):
    """Call ``load(model_path, **kwargs)`` for each recipe in ``names`` until one works.

    Returns ``(model, recipe, failed)``; raises RecipesFailed when none works. ``extra`` are
    keyword arguments for every call (safe_mode); ``retry(exc, extra)`` may return new extra
    arguments to retry the same recipe once with (the probe turns safe_mode off for lambdas).
    """
    extra = dict(extra or {})
    failed = []
    last = None
    for name in names:
        _, with_custom, compile_flag = _BY_NAME[name]
        while True:
            kwargs = dict(extra)
            kwargs["compile"] = compile_flag
            kwargs["custom_objects"] = (custom or None) if with_custom else None
            try:
                return load(model_path, **kwargs), name, failed
            except Exception as exc:
                more = retry(exc, extra) if retry is not None else None
                if more:
                    extra.update(more)
                    continue
                failed.append({"recipe": name, "error": short_error(exc)})
                last = exc
                break
    raise RecipesFailed(failed, last if last is not None else Exception("no recipe to try"))
