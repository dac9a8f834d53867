"""Shared small facts and helpers of the runtime: the interpreter, path tests, error text, and the
JSON-safe form of whatever a model's config holds.

Everything in runtime/ runs inside foreign interpreters (Python 3.6 .. 3.13, with or without
TensorFlow), so this is standard library only and Python 3.6 syntax; numpy is imported lazily.
"""
from __future__ import absolute_import, division, print_function

import os
import platform
import re
import sys


class ProbeFailure(Exception):
    """A failure the probe reports as one line: ``what`` plus the ``fix`` the user should try."""

    def __init__(self, what, fix=None):
        Exception.__init__(self, what)
        self.what = what
        self.fix = fix

    def __str__(self):
        if self.fix:
            return "%s (%s)" % (self.what, self.fix)
        return self.what


def norm_path(path):
    """Absolute, normalised path: every prefix comparison in the runtime compares these."""
    return os.path.normcase(os.path.abspath(path))


def is_under(path, folder):
    """True when ``path`` is ``folder`` itself or inside it (both already norm_path'ed)."""
    if path == folder:
        return True
    if not folder.endswith(os.sep):
        folder = folder + os.sep
    return path.startswith(folder)


def canonical_name(name):
    """PEP 503 normalised distribution name (``Tensorflow_CPU`` -> ``tensorflow-cpu``)."""
    return re.sub(r"[-_.]+", "-", name or "").lower()


def short_error(exc):
    """``Type: first line of message``, short enough for one warning line."""
    msg = str(exc).strip().splitlines()
    text = msg[0] if msg else ""
    if len(text) > 300:
        text = text[:297] + "..."
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


def qualname(obj):
    """``Outer.Inner`` for classes and functions (what ``module:attr`` specs and warnings name)."""
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)


def accepts(func, name):
    """Whether ``func`` names the parameter (a bare ``**kwargs`` may reject it: not counted)."""
    import inspect

    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def truthy(value):
    """An environment switch set on (``1``, ``true``, ``yes``, ``on``)."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def version_tuple(text):
    """``"2.15.0rc1"`` -> ``(2, 15, 0)``: the leading numeric parts, enough to compare releases."""
    nums = []
    for part in re.split(r"[.+-]", text or ""):
        if not part.isdigit():
            break
        nums.append(int(part))
    return tuple(nums)


def json_safe(value, _depth=0):
    """Return a JSON-serialisable copy of ``value``.

    Optimizer and schedule configs contain numpy scalars, tensors, variables, schedule objects and
    sometimes functions; the capture is JSON/YAML, so each becomes its closest plain form:
    numpy/TF scalars -> Python numbers, objects with ``get_config`` -> ``{"class_name", "config"}``,
    callables -> ``"module.qualname"``, anything else -> ``repr``. Non-finite floats become
    strings (strict JSON has no NaN).
    """
    if _depth > 20:
        return repr(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return dict((str(k), json_safe(v, _depth + 1)) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        if isinstance(value, (set, frozenset)):
            try:
                items = sorted(items)
            except TypeError:
                pass
        return [json_safe(v, _depth + 1) for v in items]
    # numpy scalars and 0-d arrays, TF eager tensors / variables, Keras 3 variables.
    tname = type(value).__module__ or ""
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        try:
            arr = value.numpy() if hasattr(value, "numpy") else value
            import numpy as np  # lazily: only reached when numpy objects exist

            arr = np.asarray(arr)
            if arr.ndim == 0:
                if arr.dtype.kind == "f" and arr.dtype.itemsize < 8:
                    # float32 0.9 -> 0.9, not 0.8999999761581421 (shortest round-trip repr)
                    try:
                        return json_safe(float(str(arr[()])), _depth + 1)
                    except ValueError:
                        pass
                return json_safe(arr.item(), _depth + 1)
            if arr.size <= 1000:
                return json_safe(arr.tolist(), _depth + 1)
            return "<array shape=%s dtype=%s>" % (list(arr.shape), arr.dtype)
        except Exception:
            return repr(value)
    if hasattr(value, "item") and tname.startswith("numpy"):
        try:
            return json_safe(value.item(), _depth + 1)
        except Exception:
            return repr(value)
    if isinstance(value, type) or (callable(value) and not hasattr(value, "get_config")):
        return "%s.%s" % (getattr(value, "__module__", "?"), qualname(value))
    if hasattr(value, "get_config"):
        try:
            return {"class_name": type(value).__name__,
                    "module": type(value).__module__,
                    "config": json_safe(value.get_config(), _depth + 1)}
        except Exception:
            return {"class_name": type(value).__name__, "module": type(value).__module__,
                    "config": None}
    if hasattr(value, "name") and tname.startswith("tensorflow"):  # tf.DType
        return str(value.name)
    return repr(value)


def _libc():
    """``glibc 2.36`` / ``musl`` / None, without scanning the interpreter binary.

    ``platform.libc_ver()`` reads the whole executable on Python < 3.8; ``os.confstr`` answers
    instantly on glibc, and musl is recognised by its loader.
    """
    try:
        value = os.confstr("CS_GNU_LIBC_VERSION")
        if value:
            return value
    except (AttributeError, ValueError, OSError):
        pass
    try:
        for name in os.listdir("/lib"):
            if name.startswith("ld-musl-"):
                return "musl"
    except OSError:
        pass
    return None


def python_facts():
    """The interpreter the model was trained with (the image's base Python comes from this)."""
    try:
        plat = platform.platform()
    except Exception:
        plat = None
    impl = getattr(sys, "implementation", None)
    impl_version = None
    if impl is not None:
        info = impl.version
        impl_version = "%d.%d.%d" % (info.major, info.minor, info.micro)
        if info.releaselevel != "final":
            impl_version += info.releaselevel[0] + str(info.serial)
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "implementation_version": impl_version,
        "sys_platform": sys.platform,
        "platform": plat,
        "machine": platform.machine(),
        "libc": _libc(),
        "executable": sys.executable,
        "prefix": sys.prefix,
    }
