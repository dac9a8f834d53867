"""The globals a Keras 2 Lambda layer's bytecode expects.

Keras 2 loads a Lambda's function from bytecode with the globals of the module it was defined in,
looked up by name at load time: for a lambda written in a training script that module is
``__main__``, which in any other process (the loader's, the model server's) is not the training
script, so ``lambda t: tf.math.tanh(t)`` fails with ``NameError: name 'tf' is not defined`` even
in the very environment that saved it. Two remedies, both confined to the sandboxed process:

- ``provide(recorded)``: the names the capture recorded with each Lambda's source (manifest
  ``load.lambdas``, runtime/lambdasource.py: modules, objects of importable modules, constants)
  given to ``__main__`` where it lacks them, before ``load_model``.
- ``alias_for(error)``: without a record (an inferred capture), a ``NameError`` for one of the
  aliases everybody uses (``tf``, ``np``, ``K``, ``keras``, ``math``) names the module to give;
  the load is retried once per name, and the report says which were guessed.

Standard library only, Python 3.6 syntax.
"""
from __future__ import absolute_import

import importlib
import re
import sys

ALIASES = {"tf": "tensorflow", "np": "numpy", "math": "math", "keras": "keras",
           "K": "keras.backend"}
NAME_ERROR = re.compile(r"name '([A-Za-z_][A-Za-z0-9_]*)' is not defined")


def _resolve(entry, resolve_attr):
    key, value = list(entry.items())[0]
    if key == "module":
        return importlib.import_module(value)
    if key == "object":
        return resolve_attr(value)
    return value


def provide(recorded, resolve_attr):
    """Give ``__main__`` each recorded name it lacks; returns ``(given, problems)``."""
    main = sys.modules.get("__main__")
    given, problems = [], []
    if main is None:
        return given, problems
    for name, entry in sorted((recorded or {}).items()):
        if not isinstance(entry, dict) or len(entry) != 1 or hasattr(main, name):
            continue
        try:
            setattr(main, name, _resolve(entry, resolve_attr))
            given.append(name)
        except Exception as exc:
            problems.append("%s: %s: %s" % (name, type(exc).__name__, str(exc)[:200]))
    return given, problems


def alias_for(exc, tf=None):
    """``(name, module)`` when ``exc`` is a NameError for a usual alias ``__main__`` lacks."""
    if not isinstance(exc, NameError):
        return None
    found = NAME_ERROR.search(str(exc))
    main = sys.modules.get("__main__")
    if not found or main is None or hasattr(main, found.group(1)):
        return None
    name = found.group(1)
    module = ALIASES.get(name)
    if module is None:
        return None
    if name in ("keras", "K") and tf is not None and not _keras3(tf):
        module = "tensorflow.keras" if name == "keras" else "tensorflow.keras.backend"
    return name, module


def _keras3(tf):
    version = str(getattr(getattr(tf, "keras", None), "__version__", "") or "")
    return version[:1].isdigit() and int(version.split(".")[0]) >= 3


def give(name, module):
    setattr(sys.modules["__main__"], name, importlib.import_module(module))
