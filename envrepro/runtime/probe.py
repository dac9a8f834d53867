"""envrepro runtime probe: record what a saved Keras model needs, from inside the training Python.

Why this file looks the way it does:

* It runs inside the user's *training* interpreter, which can be anything from Python 3.6 with
  TensorFlow 2.4 to Python 3.13 with Keras 3, and where envrepro itself (and its dependencies) may
  be absent. So it is one file, standard library only, Python 3.6 syntax, and it imports
  TensorFlow, Keras, numpy and h5py lazily inside the functions that need them. Importing this
  module never imports TensorFlow.
* It is used two ways: in-process by the save hook (``collect(path, out, model=model)``, the live
  model is passed so nothing is re-loaded), and as a script
  (``python probe.py --model PATH --out DIR``) run with the training interpreter from outside.
* ``importlib.metadata`` does not exist on 3.6/3.7, so installed distributions are found by
  reading ``*.dist-info`` / ``*.egg-info`` folders on ``sys.path`` directly, headers only; RECORD
  files are read only for the few files that must be mapped to a distribution. The hook's budget
  is a fraction of a second.
* Every part (distributions, custom objects, reference prediction, optimizer) is guarded: a
  failure becomes an entry in ``warnings``; the probe never takes the training job down.

The output (``facts.json``) is the contract consumed by envrepro's capture code; see ``collect``.
"""
from __future__ import absolute_import, division, print_function

import importlib
import json
import os
import platform
import re
import sys
import types

PROBE_VERSION = 1
DEFAULT_SEED = 1234
SAMPLE_BATCH = 2
FACTS_FILE = "facts.json"
REFERENCE_DIR = "reference"

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

_FLOAT_TOL = {"atol": 1e-5, "rtol": 1e-4}
_HALF_TOL = {"atol": 1e-2, "rtol": 1e-2}


class ProbeFailure(Exception):
    """A failure the script reports as one line: ``what`` plus the ``fix`` the user should try."""

    def __init__(self, what, fix=None):
        Exception.__init__(self, what)
        self.what = what
        self.fix = fix

    def __str__(self):
        if self.fix:
            return "%s (%s)" % (self.what, self.fix)
        return self.what


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

def _norm(path):
    """Absolute, normalised path used for every prefix comparison in this file."""
    return os.path.normcase(os.path.abspath(path))


def _under(path, folder):
    """True when ``path`` is ``folder`` itself or inside it (both already _norm'ed)."""
    if path == folder:
        return True
    if not folder.endswith(os.sep):
        folder = folder + os.sep
    return path.startswith(folder)


def canonical_name(name):
    """PEP 503 normalised distribution name (``Tensorflow_CPU`` -> ``tensorflow-cpu``)."""
    return re.sub(r"[-_.]+", "-", name or "").lower()


def _short_error(exc):
    """``Type: first line of message``, short enough for one warning line."""
    msg = str(exc).strip().splitlines()
    text = msg[0] if msg else ""
    if len(text) > 300:
        text = text[:297] + "..."
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


def _qualname(obj):
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)


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
        return "%s.%s" % (getattr(value, "__module__", "?"), _qualname(value))
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


# ---------------------------------------------------------------------------------------------
# Python and platform
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Installed distributions (importlib.metadata-free)
# ---------------------------------------------------------------------------------------------

def _read_headers(path):
    """Parse RFC 822 style metadata headers, stopping at the first blank line (the body is the
    long description, often hundreds of KB, and never needed). Returns {header: [values]}."""
    headers = {}
    last = None
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.rstrip("\r\n")
            if not line.strip():
                break
            if line[:1] in (" ", "\t"):
                if last is not None:  # continuation (old-style multi-line Description)
                    headers[last][-1] += "\n" + line.strip()
                continue
            key, sep, val = line.partition(":")
            if not sep:
                continue
            last = key.strip()
            headers.setdefault(last, []).append(val.strip())
    return headers


def _read_lines(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            return [ln.strip() for ln in fh if ln.strip()]
    except (IOError, OSError):
        return []


def _egg_requires(path):
    """Turn an egg-info ``requires.txt`` (``[extra]`` / ``[extra:marker]`` / ``[:marker]``
    sections) into Requires-Dist style strings so both kinds of dist look the same."""
    out = []
    section = None
    for line in _read_lines(path):
        if line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if not section:
            out.append(line)
            continue
        extra, _, marker = section.partition(":")
        conds = []
        if extra:
            conds.append('extra == "%s"' % extra)
        if marker:
            conds.append("(%s)" % marker if extra else marker)
        out.append("%s; %s" % (line, " and ".join(conds)))
    return out


def _top_level_from_record(paths):
    """Import names a wheel provides, derived from its RECORD when top_level.txt is missing
    (hatchling, flit, maturin and others do not write it)."""
    tops = set()
    for rel in paths:
        first = rel.split("/", 1)[0]
        if not first or first in ("..", "__pycache__") or first.endswith(
                (".dist-info", ".egg-info", ".data", ".pth")):
            continue
        if "/" not in rel:
            if not first.endswith((".py", ".so", ".pyd")):
                continue
            first = first.split(".", 1)[0]
        tops.add(first)
    return sorted(tops)


def _read_record(path):
    """Relative paths listed in a RECORD (csv: path,hash,size) or egg installed-files.txt."""
    paths = []
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                if line.startswith('"'):  # quoted csv field (path with a comma)
                    import csv

                    row = next(csv.reader([line]))
                    rel = row[0] if row else ""
                else:
                    rel = line.split(",", 1)[0]
                if rel:
                    paths.append(rel)
    except (IOError, OSError):
        pass
    return paths


def _file_url_to_path(url):
    if not url or not url.startswith("file:"):
        return None
    try:
        from urllib.parse import unquote, urlparse
    except ImportError:  # pragma: no cover - py2 never reaches here
        return None
    parsed = urlparse(url)
    path = unquote(parsed.path)
    if os.name == "nt" and re.match(r"^/[A-Za-z]:", path):
        path = path[1:]
    return path


def _read_dist(location, name):
    """One ``*.dist-info`` / ``*.egg-info`` (folder or file) / ``EGG-INFO`` entry -> dict, or
    None when it has no usable metadata."""
    meta_dir = os.path.join(location, name)
    is_egg = name.endswith(".egg-info") or name == "EGG-INFO"
    files = []
    if os.path.isdir(meta_dir):
        try:
            files = os.listdir(meta_dir)
        except OSError:
            return None
        meta_file = "PKG-INFO" if is_egg else "METADATA"
        if meta_file not in files:
            return None
        headers = _read_headers(os.path.join(meta_dir, meta_file))
    elif is_egg and os.path.isfile(meta_dir):  # distutils writes a single PKG-INFO-like file
        headers = _read_headers(meta_dir)
    else:
        return None
    dist_name = (headers.get("Name") or [None])[0]
    if not dist_name:
        return None
    if is_egg:
        requires = (headers.get("Requires-Dist") or
                    (_egg_requires(os.path.join(meta_dir, "requires.txt"))
                     if "requires.txt" in files else []))
    else:
        requires = headers.get("Requires-Dist", [])
    installer = None
    if "INSTALLER" in files:
        lines = _read_lines(os.path.join(meta_dir, "INSTALLER"))
        installer = lines[0] if lines else None
    direct_url = None
    if "direct_url.json" in files:
        try:
            with open(os.path.join(meta_dir, "direct_url.json"), "r", encoding="utf-8") as fh:
                direct_url = json.load(fh)
        except (IOError, OSError, ValueError):
            direct_url = None
    editable = bool(isinstance(direct_url, dict) and
                    (direct_url.get("dir_info") or {}).get("editable"))
    top_level = None
    if "top_level.txt" in files:
        top_level = sorted(set(_read_lines(os.path.join(meta_dir, "top_level.txt"))))
    record = None
    if not is_egg and "RECORD" in files:
        record = os.path.join(meta_dir, "RECORD")
    elif is_egg and "installed-files.txt" in files:
        record = os.path.join(meta_dir, "installed-files.txt")
    if is_egg and not editable and name.endswith(".egg-info"):
        # ``setup.py develop`` leaves the egg-info in the project checkout, not in site-packages.
        editable = not _is_site_dir(location)
    dist = {
        "name": dist_name,
        "version": (headers.get("Version") or [None])[0],
        "requires": list(requires),
        "location": location,
        "installer": installer,
        "direct_url": direct_url,
        "editable": editable,
        "top_level": top_level,
        "metadata_dir": meta_dir,
        "requested": "REQUESTED" in files,
    }
    # Private bookkeeping for file mapping; stripped before the dict leaves this module.
    dist["_record"] = record
    dist["_egg"] = is_egg
    editable_root = None
    if editable and isinstance(direct_url, dict):
        editable_root = _file_url_to_path(direct_url.get("url"))
    elif editable and is_egg:
        editable_root = location
    dist["_editable_root"] = _norm(editable_root) if editable_root else None
    dist["_loc"] = _norm(location)
    return dist


def _is_site_dir(path):
    base = os.path.basename(os.path.normpath(path))
    return base in ("site-packages", "dist-packages")


def _path_entries(path_list=None):
    """sys.path entries as normalised absolute folders, first occurrence kept, '' -> cwd."""
    seen = set()
    out = []
    for entry in (sys.path if path_list is None else path_list):
        if not isinstance(entry, str):
            continue
        try:
            full = _norm(entry or os.getcwd())
        except OSError:
            continue
        if full in seen:
            continue
        seen.add(full)
        out.append(full)
    return out


class Distributions(object):
    """The distributions importable from a path list, scanned the way pip sees them (first
    occurrence of a name wins), with lazy file -> distribution mapping through RECORD."""

    def __init__(self, path_list=None):
        self.items = []
        self.by_name = {}
        self._records = {}
        for entry in _path_entries(path_list):
            for dist in self._scan_entry(entry):
                key = canonical_name(dist["name"])
                if key in self.by_name:
                    continue
                self.by_name[key] = dist
                self.items.append(dist)
        for dist in self.items:
            if dist["top_level"] is None:
                dist["top_level"] = (_top_level_from_record(self._record(dist))
                                     if dist["_record"] and not dist["_egg"] else [])

    @staticmethod
    def _scan_entry(entry):
        if entry.endswith(".egg") and os.path.isdir(os.path.join(entry, "EGG-INFO")):
            dist = _read_dist(entry, "EGG-INFO")
            return [dist] if dist else []
        try:
            names = sorted(os.listdir(entry))
        except OSError:  # missing folder or a zip file on sys.path
            return []
        found = []
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                try:
                    dist = _read_dist(entry, name)
                except (IOError, OSError, UnicodeError):
                    dist = None
                if dist:
                    found.append(dist)
        return found

    def get(self, name):
        return self.by_name.get(canonical_name(name))

    def _record(self, dist):
        key = dist["metadata_dir"]
        if key not in self._records:
            self._records[key] = _read_record(dist["_record"]) if dist["_record"] else []
        return self._records[key]

    def _record_set(self, dist):
        cache_key = ("set", dist["metadata_dir"])
        if cache_key not in self._records:
            base = dist["metadata_dir"] if dist["_egg"] else dist["location"]
            self._records[cache_key] = set(
                _norm(os.path.join(base, rel.replace("/", os.sep))) for rel in self._record(dist))
        return self._records[cache_key]

    def for_file(self, path):
        """The distribution that installed ``path``, or None (a user file, a snapshot candidate).

        Editable installs are matched by their direct_url.json ``file://`` folder (or the
        develop-mode egg-info folder); regular installs by the import name's top-level package
        and then RECORD, which is read only here and only for those few candidates.
        """
        if not path:
            return None
        full = _norm(path)
        if full.endswith((".pyc", ".pyo")):
            full = full[:-1]
        best = None
        for dist in self.items:
            root = dist["_editable_root"]
            if not root or not _under(full, root) or full == root:
                continue
            if dist["top_level"]:
                # Only files inside the project's own packages: a training script or a test
                # folder next to them is not part of the distribution.
                parts = full[len(root):].strip(os.sep).split(os.sep)
                if not any(p.split(".", 1)[0] in dist["top_level"] for p in parts):
                    continue
            if best is None or len(root) > len(best["_editable_root"]):
                best = dist
        if best is not None:
            return best
        for dist in self.items:
            loc = dist["_loc"]
            if full == loc or not _under(full, loc):
                continue
            rel = full[len(loc):].lstrip(os.sep)
            first = rel.split(os.sep, 1)[0]
            modname = first if os.sep in rel else first.split(".", 1)[0]
            if dist["top_level"] and modname not in dist["top_level"]:
                continue
            if dist["_record"]:
                if full in self._record_set(dist):
                    return dist
            elif dist["top_level"]:  # egg-info without installed-files.txt
                return dist
        return None

    def public(self):
        """The JSON form: private keys dropped, sorted by canonical name."""
        out = []
        for dist in sorted(self.items, key=lambda d: canonical_name(d["name"])):
            out.append(dict((k, v) for k, v in dist.items() if not k.startswith("_")))
        return out


_DIST_CACHE = {}


def cached_distributions():
    """``Distributions()`` for sys.path, reused while no path entry changed.

    The save hook captures on every checkpoint of a training run; the installed environment
    doesn't change between them, and an install or removal touches the site folder's mtime.
    """
    key = []
    for entry in sys.path:
        try:
            key.append((entry, os.stat(entry or ".").st_mtime_ns))
        except (OSError, AttributeError):
            key.append((entry, None))
    key = tuple(key)
    hit = _DIST_CACHE.get("key") == key and _DIST_CACHE.get("value")
    if hit:
        return hit
    value = Distributions()
    _DIST_CACHE.clear()
    _DIST_CACHE.update(key=key, value=value)
    return value


def scan_distributions(path_list=None):
    """Public entry point: a ``Distributions`` over ``path_list`` (default ``sys.path``)."""
    return Distributions(path_list)


def distribution_for_file(path, dists=None):
    """Name of the distribution that installed ``path``, or None."""
    dists = dists or Distributions()
    dist = dists.for_file(path)
    return dist["name"] if dist else None


# ---------------------------------------------------------------------------------------------
# Frameworks
# ---------------------------------------------------------------------------------------------

def _version_tuple(text):
    nums = []
    for part in re.split(r"[.+-]", text or ""):
        if not part.isdigit():
            break
        nums.append(int(part))
    return tuple(nums)


def _truthy(value):
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _flavor_of_module(mod):
    if mod.startswith("tf_keras"):
        return "tf_keras"
    if mod.startswith("tensorflow"):
        return "tf.keras"
    if mod == "keras" or mod.startswith("keras."):
        kmod = sys.modules.get("keras")
        ver = getattr(kmod, "__version__", "") if kmod else ""
        return "keras3" if _version_tuple(ver)[:1] >= (3,) else "tf.keras"
    return None


def _model_flavor(model):
    """Which Keras implementation made ``model``: ``tf.keras`` (Keras 2 inside or next to TF),
    ``keras3`` or ``tf_keras``, decided from the module of its first framework class (a
    subclassed model's own class lives in user code)."""
    for klass in type(model).__mro__:
        flavor = _flavor_of_module(klass.__module__ or "")
        if flavor:
            return flavor
    return None


def _env_flavor(tf_version, dists):
    """The Keras that ``tf.keras`` / ``load_model`` resolves to here, without importing it."""
    tfv = _version_tuple(tf_version)
    if tfv and tfv < (2, 16):
        return "tf.keras"
    if tfv and _truthy(os.environ.get("TF_USE_LEGACY_KERAS")) and dists.get("tf-keras"):
        return "tf_keras"
    keras_dist = dists.get("keras")
    if keras_dist and _version_tuple(keras_dist["version"])[:1] < (3,):
        return "tf.keras"
    return "keras3"


def framework_facts(dists, model=None, import_tf=False):
    """Versions of TensorFlow and of the Keras in use. TensorFlow is only imported when it
    already is (in-process) or ``import_tf`` asks for it (script mode)."""
    facts = {"tensorflow": None, "tensorflow_distribution": None, "keras": None,
             "keras_flavor": None, "tf_keras": None, "keras_package": None,
             "git_version": None, "build": {}}
    tf = sys.modules.get("tensorflow")
    if tf is None and import_tf:
        try:
            import tensorflow as tf  # noqa: F811
        except Exception:
            tf = None
    if tf is not None:
        facts["tensorflow"] = getattr(tf, "__version__", None)
        try:
            facts["git_version"] = tf.version.GIT_VERSION
        except Exception:
            pass
        try:
            facts["build"] = json_safe(dict(tf.sysconfig.get_build_info()))
        except Exception:
            facts["build"] = {}
        owner = None
        tf_file = getattr(tf, "__file__", None)
        candidates = [d for d in dists.items if "tensorflow" in (d["top_level"] or [])]
        if len(candidates) == 1:
            owner = candidates[0]
        elif tf_file:
            owner = dists.for_file(tf_file)
        if owner:
            facts["tensorflow_distribution"] = canonical_name(owner["name"])
    else:
        # Not imported (--no-load): the version of the installed distribution, no build info.
        owners = [d for d in dists.items if "tensorflow" in (d["top_level"] or [])]
        if len(owners) == 1:
            facts["tensorflow"] = owners[0]["version"]
            facts["tensorflow_distribution"] = canonical_name(owners[0]["name"])
    tfk = dists.get("tf-keras")
    facts["tf_keras"] = tfk["version"] if tfk else None
    kd = dists.get("keras")
    facts["keras_package"] = kd["version"] if kd else None
    flavor = _model_flavor(model) if model is not None else None
    if flavor is None:
        flavor = _env_flavor(facts["tensorflow"], dists)
    facts["keras_flavor"] = flavor
    if flavor == "tf_keras":
        mod = sys.modules.get("tf_keras")
        facts["keras"] = getattr(mod, "__version__", None) or facts["tf_keras"]
    elif flavor == "keras3":
        mod = sys.modules.get("keras")
        facts["keras"] = getattr(mod, "__version__", None) or facts["keras_package"]
    else:
        builtin = sys.modules.get("tensorflow.python.keras")
        if _version_tuple(facts["tensorflow"] or "") >= (2, 6) or builtin is None:
            facts["keras"] = facts["keras_package"] or getattr(builtin, "__version__", None)
        else:
            facts["keras"] = getattr(builtin, "__version__", None)
        if facts["keras"] is None and tf is not None:
            try:
                facts["keras"] = tf.keras.__version__
            except Exception:
                pass
    return facts


# ---------------------------------------------------------------------------------------------
# Model file
# ---------------------------------------------------------------------------------------------

def detect_format(path):
    """``savedmodel`` | ``h5`` | ``keras`` | None, from the folder layout or the file magic (the
    extension is only a fallback, for paths that don't exist yet: people save HDF5 as
    ``.model``)."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")) or os.path.exists(
                os.path.join(path, "saved_model.pbtxt")):
            return "savedmodel"
        return None
    if os.path.isfile(path):
        magic = b""
        try:
            with open(path, "rb") as fh:
                magic = fh.read(8)
        except (IOError, OSError):
            pass
        if magic == b"\x89HDF\r\n\x1a\n":
            return "h5"
        if magic[:4] == b"PK\x03\x04":
            return "keras"
        return None
    lower = path.lower()
    if lower.endswith((".h5", ".hdf5")):
        return "h5"
    if lower.endswith(".keras"):
        return "keras"
    return None


def _h5_static(path):
    """Class name and compile flag from an H5 file's attributes, without loading the model."""
    out = {}
    try:
        import h5py

        with h5py.File(path, "r") as fh:
            cfg = fh.attrs.get("model_config")
            if cfg is not None:
                if isinstance(cfg, bytes):
                    cfg = cfg.decode("utf-8")
                out["class_name"] = json.loads(cfg).get("class_name")
            out["compile"] = fh.attrs.get("training_config") is not None
            out["state_saved"] = "optimizer_weights" in fh
    except Exception:
        pass
    return out


def _keras_zip_static(path):
    """Class name and compile flag from a ``.keras`` zip's config.json."""
    out = {}
    try:
        import zipfile

        with zipfile.ZipFile(path) as zf:
            cfg = json.loads(zf.read("config.json").decode("utf-8"))
        out["class_name"] = cfg.get("class_name")
        out["compile"] = bool(cfg.get("compile_config"))
    except Exception:
        pass
    return out


def _is_compiled(model):
    if model is None or getattr(model, "optimizer", None) is None:
        return False
    for attr in ("compiled", "_is_compiled"):
        val = getattr(model, attr, None)
        if isinstance(val, bool):
            return val
    return True


# ---------------------------------------------------------------------------------------------
# Custom objects
# ---------------------------------------------------------------------------------------------

def _registries():
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

    gu = sys.modules.get("tensorflow.python.keras.utils.generic_utils")
    if gu is not None:
        add(gu.get_custom_objects)
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


def _kind_of_class(klass):
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


def _is_framework_module(modname):
    return not modname or modname.split(".", 1)[0] in FRAMEWORK_TOPS


def _is_revived(klass):
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
            if not _is_framework_module(getattr(value, "__module__", None)):
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
            ckind = _kind_of_class(value)
            if ckind or hasattr(value, "get_config"):
                if not _is_framework_module(value.__module__):
                    self.record(value, ckind or kind or "registered")
            return
        klass = type(value)
        ckind = _kind_of_class(klass)
        if ckind in ("layer", "model"):
            self.layers.append(value)
            return
        if ckind is None and not hasattr(value, "get_config"):
            return
        if not _is_framework_module(klass.__module__):
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
            kind = _kind_of_class(klass) or "layer"
            if _is_revived(klass):
                self.revived.append(klass.__name__)
            elif not _is_framework_module(klass.__module__):
                self.record(klass, kind)
                try:
                    self.visit(layer.get_config(), None)
                except Exception:
                    pass
            if klass.__name__ == "Lambda":
                self.lambda_layers.append(getattr(layer, "name", "?"))
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
    name = name.lower()
    for word in ("activation", "initializer", "regularizer", "constraint"):
        if word in name:
            return word
    return None


def _module_file(modname):
    mod = sys.modules.get(modname)
    path = getattr(mod, "__file__", None) if mod is not None else None
    if not path:
        return None
    if path.endswith((".pyc", ".pyo")):
        src = path[:-1]
        if os.path.exists(src):
            path = src
    return os.path.abspath(path)


def _object_file(target):
    path = _module_file(getattr(target, "__module__", None) or "")
    if path is None:
        try:
            import inspect

            path = inspect.getsourcefile(target)
        except Exception:
            path = None
    return os.path.abspath(path) if path else None


def _module_entry(modname, dists, via):
    """Where a module lives and what must be copied so it (and its relative imports) work:
    the whole top-level package folder, or the single module file."""
    path = _module_file(modname)
    top = modname.split(".", 1)[0]
    root = path
    if modname == "__main__":
        top = "__main__"
    else:
        topmod = sys.modules.get(top)
        topfile = getattr(topmod, "__file__", None) if topmod is not None else None
        if topfile and os.path.basename(topfile).startswith("__init__."):
            root = os.path.dirname(os.path.abspath(topfile))
        elif topmod is not None and hasattr(topmod, "__path__") and path:
            for entry in list(topmod.__path__):  # namespace package: the portion holding it
                if _under(_norm(path), _norm(entry)):
                    root = os.path.abspath(entry)
                    break
        elif topfile:
            root = os.path.abspath(topfile)
    dist = dists.for_file(path) if path else None
    return {
        "module": modname,
        "file": path,
        "distribution": dist["name"] if dist else None,
        "editable": bool(dist and dist["editable"]),
        "top": top,
        "root": root,
        "source_root": os.path.dirname(root) if root else None,
        "via": via,
    }


def _registered_name(target, reverse):
    names = reverse.get(id(target))
    if names:
        # Prefer the qualified registration ("team>Huberish") over a bare alias.
        return sorted(names, key=lambda n: (">" not in n, n))[0]
    return getattr(target, "__name__", None)


def custom_object_facts(model, dists, requested_modules=(), warnings=None):
    """``(custom_objects, modules, unresolved)`` for a model and the registries.

    An object is custom when its defining module is outside the TensorFlow/Keras packages.
    Registry entries are added when they come from user code (no distribution) or when the model
    uses them; an installed add-on package (tensorflow-addons) registering dozens of objects
    contributes only the ones the model needs.
    """
    warnings = warnings if warnings is not None else []
    regs = _registries()
    reverse = {}
    names = {}
    for reg in regs:
        for name, obj in list(reg.items()):
            reverse.setdefault(id(obj), set()).add(name)
            names.setdefault(name, obj)
    walker = _Walker(names)
    if model is not None:
        try:
            walker.walk_layers(model)
        except Exception as exc:
            warnings.append("walking the model's layers failed: %s" % _short_error(exc))
        try:
            walker.walk_compile(model)
        except Exception as exc:
            warnings.append("walking the model's compile state failed: %s" % _short_error(exc))
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
        if _is_framework_module(modname) or id(target) in seen:
            return
        path = _object_file(target)
        dist = dists.for_file(path) if path else None
        if from_registry and dist is not None and id(target) not in used:
            return
        seen.add(id(target))
        if isinstance(target, type):
            kind = _kind_of_class(target) or kind
        entries.append({
            "name": _registered_name(target, reverse),
            "module": modname,
            "attr": _qualname(target),
            "kind": kind,
            "file": path,
            "distribution": dist["name"] if dist else None,
        })
        if modname == "__main__":
            main_objects.append(_qualname(target))
        if "<locals>" in _qualname(target):
            warnings.append("custom object %s.%s is defined inside a function; it can't be "
                            "imported when loading (define it at module level)"
                            % (modname, _qualname(target)))

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
                        % (", ".join(sorted(main_objects)), _module_file("__main__") or
                           "(no file: interactive session)"))
    if walker.lambda_layers:
        warnings.append("Lambda layers (%s) store Python bytecode: loading needs Python %d.%d"
                        % (", ".join(walker.lambda_layers), sys.version_info[0],
                           sys.version_info[1]))
    for name in sorted(set(walker.revived)):
        warnings.append("layer class %s was revived from the SavedModel without its Python "
                        "class; pass --module for the module that defines it" % name)

    modules = []
    mod_seen = set()
    object_modules = [e["module"] for e in entries]
    for modname in object_modules + list(requested_modules or ()):
        if not modname or modname in mod_seen:
            continue
        mod_seen.add(modname)
        via = "custom_object" if modname in object_modules else "requested"
        modules.append(_module_entry(modname, dists, via))
    modules.extend(_sibling_modules(modules, dists))
    return entries, modules, sorted(set(walker.revived))


def _system_dirs():
    dirs = set()
    for attr in ("prefix", "base_prefix", "exec_prefix", "base_exec_prefix"):
        val = getattr(sys, attr, None)
        if val:
            dirs.add(_norm(val))
    return dirs


def _imported_tops(path):
    """Top-level module names a source file imports (absolute imports only)."""
    import ast

    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), filename=path)
    except Exception:
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.append(node.module.split(".")[0])
    return names


def _sibling_modules(modules, dists):
    """User modules imported from the same source folders as the custom modules.

    A custom layer file often imports a helper module sitting next to it (``from helpers import
    act``); copying only the layer's file would break the load. Only folders outside
    site-packages and the interpreter prefix are considered, so this stays cheap and never
    sweeps installed packages in.
    """
    roots = set()
    system = _system_dirs()
    for entry in modules:
        if entry["distribution"] or not entry["source_root"] or entry["top"] == "__main__":
            continue
        root = _norm(entry["source_root"])
        if _is_site_dir(root) or any(_under(root, s) for s in system) or root == _norm(os.sep):
            continue
        roots.add(root)
    if not roots:
        return []
    tops = set(e["top"] for e in modules)
    tops.update(("__main__", "envrepro"))
    # Follow the import statements of the custom modules (transitively), not everything the
    # training script happened to import from the same folder.
    pending = [e.get("file") for e in modules
               if not e["distribution"] and e.get("file") and e["top"] != "__main__"]
    seen_files = set()
    out = []
    while pending:
        path = pending.pop()
        if not path or path in seen_files or not path.endswith(".py"):
            continue
        seen_files.add(path)
        for name in _imported_tops(path):
            if name in tops:
                continue
            mod = sys.modules.get(name)
            mpath = getattr(mod, "__file__", None) if mod is not None else None
            if not mpath or not isinstance(mpath, str):
                continue
            full = _norm(mpath)
            if not any(full.startswith(root + os.sep) for root in roots):
                continue
            entry = _module_entry(name, dists, "sibling")
            if entry["distribution"] is None and entry["source_root"] and \
                    _norm(entry["source_root"]) in roots:
                out.append(entry)
                tops.add(name)
                pending.append(entry.get("file"))
    out.sort(key=lambda e: e["module"])
    return out


# ---------------------------------------------------------------------------------------------
# Reference prediction
# ---------------------------------------------------------------------------------------------

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
        # A subclassed model built with model.build(shape): one input of that shape.
        shape = getattr(model, "_build_input_shape", None)
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


def _generate_sample(specs, seed):
    """Seeded random arrays for fully defined input shapes (batch dimension -> 2)."""
    import numpy as np

    rng = np.random.RandomState(seed)
    arrays = []
    for index, (shape, dtype) in enumerate(specs):
        if shape is None:
            raise ProbeFailure("input %d has an unknown rank" % index)
        dims = list(shape)
        if dims and dims[0] is None:
            dims[0] = SAMPLE_BATCH
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


def _tolerance(model, arrays):
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
    return dict(_HALF_TOL if loose else _FLOAT_TOL)


def reference_facts(model, out_dir, sample_input=None, seed=DEFAULT_SEED, allow_stateful=False):
    """Run one prediction and save inputs/outputs; returns (reference, skipped_reason).

    The in-process hook calls the live model: ``model(x, training=False)`` is fast (no
    tf.function tracing like ``predict``) and changes no state, except in stateful RNNs, which
    are skipped unless the model is the probe's own fresh copy.
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
        in_struct, in_names, specs = _input_structure(model)
        if in_struct is None:
            return None, ("the model has no defined inputs (subclassed and not built); pass "
                          "sample_input / --sample")
        try:
            in_arrays = _generate_sample(specs, seed)
        except ProbeFailure as exc:
            return None, "%s; pass sample_input / --sample" % exc.what
    if in_struct == "dict":
        feed = dict(zip(in_names, in_arrays))
    elif in_struct == "list":
        feed = list(in_arrays)
    else:
        feed = in_arrays[0]
    try:
        outputs = model(feed, training=False)
    except Exception as exc:
        try:
            outputs = model.predict(feed, verbose=0)
        except Exception:
            return None, "prediction failed: %s" % _short_error(exc)
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
        "tolerance": _tolerance(model, out_arrays),
        "seeded": seeded,
        "seed": seed if seeded else None,
    }, None


# ---------------------------------------------------------------------------------------------
# Optimizer
# ---------------------------------------------------------------------------------------------

def _saved_state(model_path, fmt):
    """Whether the saved file holds optimizer variables, read from the file itself; None when
    it can't be told.

    H5: an ``optimizer_weights`` group. ``.keras``: an ``optimizer`` group with variables in the
    zip's ``model.weights.h5`` (stored uncompressed, so h5py reads it in place). SavedModel: the
    checkpoint index (keys only, a few KB) names ``optimizer/...`` and ``.OPTIMIZER_SLOT`` keys.
    """
    try:
        if fmt == "h5" and os.path.isfile(model_path):
            static = _h5_static(model_path)
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
        warnings.append("optimizer config unavailable: %s" % _short_error(exc))
    try:
        if hasattr(opt, "_hyper") and not fresh:  # Keras 2 OptimizerV2: property creates it
            it = getattr(opt, "_iterations", None)
        else:
            it = opt.iterations
        facts["iterations"] = int(json_safe(it)) if it is not None else 0
    except Exception as exc:
        warnings.append("optimizer iterations unavailable: %s" % _short_error(exc))
    try:
        variables = getattr(opt, "variables", None)
        if callable(variables):
            variables = variables()
        if variables is None:
            variables = opt.weights
        facts["num_weights"] = len(list(variables))
    except Exception:
        try:
            facts["num_weights"] = len(opt.weights)
        except Exception:
            pass
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
        facts["state_saved"] = bool(_is_compiled(model) and facts["num_weights"] > 0)
    return facts


# ---------------------------------------------------------------------------------------------
# Loading (script mode)
# ---------------------------------------------------------------------------------------------

def _module_custom_objects(modnames):
    """Classes and functions defined in the named modules, by class name and registered name,
    for ``load_model(custom_objects=...)``."""
    objs = {}
    regs = _registries()
    reverse = {}
    for reg in regs:
        for name, obj in reg.items():
            reverse.setdefault(id(obj), set()).add(name)
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


def _config_modules(model_path, fmt):
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
            if isinstance(mod, str) and "class_name" in node and not _is_framework_module(mod) \
                    and mod not in found and mod != "builtins":
                found.append(mod)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(cfg)
    return found


def _import_config_modules(names, warnings):
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
                            "here (%s); pass --code-path for its folder" % (name, _short_error(exc)))
    return imported


def load_model(model_path, modules=(), warnings=None, dists=None):
    """Load the model the way a user would, in this interpreter: ``tf.keras.models.load_model``
    with compile=True, falling back to compile=False (Keras-2 training configs often don't
    deserialize in newer Keras). Raises ProbeFailure with a fix."""
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
    flavor = _env_flavor(getattr(tf, "__version__", None), dists) if tf is not None else "keras3"
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
    config_mods = _import_config_modules(_config_modules(model_path, fmt), warnings)
    custom = _module_custom_objects(list(modules) + [m for m in config_mods if m not in modules])
    kwargs = {"custom_objects": custom or None}

    def attempt(compile_flag, extra):
        args = dict(kwargs)
        args.update(extra)
        return loader(model_path, compile=compile_flag, **args)

    extra = {}
    try:
        return attempt(True, extra), fmt
    except Exception as first:
        if "safe_mode" in str(first):
            extra = {"safe_mode": False}
            warnings.append("the model contains Python lambdas; loaded with safe_mode=False "
                            "(trusted: this is the training environment's own model)")
            try:
                return attempt(True, extra), fmt
            except Exception as exc:
                first = exc
        try:
            model = attempt(False, extra)
        except Exception as exc:
            raise ProbeFailure("cannot load %s: %s" % (model_path, _short_error(exc)),
                               "pass --module for each module defining custom objects and "
                               "--code-path for its folder, or --no-load")
        warnings.append("load_model(compile=True) failed (%s); loaded with compile=False"
                        % _short_error(first))
        return model, fmt


# ---------------------------------------------------------------------------------------------
# collect
# ---------------------------------------------------------------------------------------------

def _import_modules(modules, code_paths, permanent):
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


def _write_json_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=repr)
        fh.write("\n")
    os.replace(tmp, path)


def collect(model_path, out_dir, model=None, sample_input=None, modules=(), code_paths=(),
            load=True, seed=DEFAULT_SEED, loaded_by_probe=False, import_tf=None,
            warnings=None, dists=None):
    """Probe everything; write ``out_dir/facts.json`` and ``out_dir/reference/*.npy``.

    ``model`` is the live model (the save hook); without it the model is loaded here when
    ``load`` is true. Only an unwritable ``out_dir`` raises: every other failure is a warning,
    so a capture never breaks training. Returns the facts dict.

    Script mode passes the model it loaded (``loaded_by_probe=True``), the warnings of that load
    and its distribution scan, so nothing is done twice.
    """
    warnings = list(warnings or [])
    model_path = os.path.abspath(model_path)
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)

    errors = _import_modules(modules, code_paths, permanent=loaded_by_probe)
    for name, exc in errors:
        warnings.append("cannot import module %s: %s" % (name, _short_error(exc)))
    fmt = detect_format(model_path) if os.path.exists(model_path) else None
    if fmt is None:
        lower = model_path.lower()
        fmt = "h5" if lower.endswith((".h5", ".hdf5")) else (
            "keras" if lower.endswith(".keras") else "savedmodel")
        if not os.path.exists(model_path):
            warnings.append("model path %s does not exist; format guessed from its name"
                            % model_path)

    if dists is None:
        try:
            dists = cached_distributions()
        except Exception as exc:  # should not happen: every read is guarded
            warnings.append("distribution scan failed: %s" % _short_error(exc))
            dists = Distributions([])

    if model is None and load and os.path.exists(model_path):
        try:
            model, fmt = load_model(model_path, modules, warnings, dists)
            loaded_by_probe = True
        except ProbeFailure as exc:
            warnings.append(str(exc))
        except Exception as exc:
            warnings.append("loading the model failed: %s" % _short_error(exc))

    facts = {"probe_version": PROBE_VERSION}
    facts["python"] = python_facts()
    try:
        facts["frameworks"] = framework_facts(
            dists, model, import_tf=bool(import_tf if import_tf is not None else model is None))
    except Exception as exc:
        warnings.append("framework versions unavailable: %s" % _short_error(exc))
        facts["frameworks"] = None
    facts["env"] = {"TF_USE_LEGACY_KERAS": os.environ.get("TF_USE_LEGACY_KERAS"),
                    "KERAS_BACKEND": os.environ.get("KERAS_BACKEND")}
    facts["distributions"] = dists.public()

    model_facts = {"path": model_path, "format": fmt,
                   "class_name": type(model).__name__ if model is not None else None,
                   "loaded_by_probe": bool(loaded_by_probe and model is not None),
                   "compile": False}
    try:
        model_facts["compile"] = _is_compiled(model)
    except Exception as exc:
        warnings.append("compile state unknown: %s" % _short_error(exc))
    if model is None:
        static = {}
        if fmt == "h5":
            static = _h5_static(model_path)
        elif fmt == "keras":
            static = _keras_zip_static(model_path)
        model_facts["class_name"] = static.get("class_name")
        model_facts["compile"] = bool(static.get("compile", False))
    facts["model"] = model_facts

    try:
        objs, mods, unresolved = custom_object_facts(model, dists, modules, warnings)
    except Exception as exc:
        warnings.append("custom object discovery failed: %s" % _short_error(exc))
        objs, mods, unresolved = [], [], []
    facts["custom_objects"] = objs
    facts["modules"] = mods
    facts["unresolved_custom_objects"] = unresolved

    reference, skipped = None, None
    if model is None:
        skipped = "model not loaded (--no-load or load failed)"
    else:
        try:
            reference, skipped = reference_facts(model, out_dir, sample_input, seed,
                                                 allow_stateful=loaded_by_probe)
        except Exception as exc:
            skipped = "reference prediction failed: %s" % _short_error(exc)
            warnings.append(skipped)
    facts["reference"] = reference
    facts["reference_skipped"] = skipped

    try:
        facts["optimizer"] = optimizer_facts(model, model_path, fmt, warnings,
                                             fresh=loaded_by_probe)
    except Exception as exc:
        warnings.append("optimizer facts unavailable: %s" % _short_error(exc))
        facts["optimizer"] = None
    if facts["optimizer"] and not facts["optimizer"]["state_saved_exact"]:
        warnings.append("optimizer state_saved could not be read from the %s file; approximated "
                        "as compiled and the optimizer has variables" % fmt)
    facts["warnings"] = warnings
    _write_json_atomic(os.path.join(out_dir, FACTS_FILE), facts)
    return facts


# ---------------------------------------------------------------------------------------------
# Script entry point
# ---------------------------------------------------------------------------------------------

def _parse_args(argv):
    import argparse

    parser = argparse.ArgumentParser(
        prog="probe.py",
        description="Record the environment a saved Keras model needs (envrepro runtime probe).")
    parser.add_argument("--model", required=True, help="SavedModel folder, .h5 or .keras file")
    parser.add_argument("--out", required=True, help="folder for facts.json and reference/")
    parser.add_argument("--module", action="append", default=[],
                        help="module to import first (custom objects, registrations)")
    parser.add_argument("--code-path", action="append", default=[],
                        help="folder to put on sys.path (where those modules live)")
    parser.add_argument("--sample", help=".npy or .npz input for the reference prediction")
    parser.add_argument("--no-load", action="store_true",
                        help="don't load the model: environment facts only")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    return parser.parse_args(argv)


def _run(args):
    model_path = os.path.abspath(args.model)
    if not os.path.exists(model_path):
        raise ProbeFailure("no model at %s" % model_path, "pass the path given to model.save()")
    for path in args.code_path:
        full = os.path.abspath(path)
        if not os.path.isdir(full):
            raise ProbeFailure("code path %s is not a folder" % full,
                               "pass the folder that holds your modules")
        if full not in sys.path:
            sys.path.insert(0, full)
    for name, exc in _import_modules(args.module, (), permanent=True):
        raise ProbeFailure("cannot import module %s: %s" % (name, _short_error(exc)),
                           "check --module and add its folder with --code-path")
    sample = None
    if args.sample:
        try:
            sample = load_sample(args.sample)
        except Exception as exc:
            raise ProbeFailure("cannot read sample %s: %s" % (args.sample, _short_error(exc)),
                               "pass a .npy or .npz file saved with numpy")
    warnings = []
    dists = Distributions()
    model = None
    if not args.no_load:
        model, _ = load_model(model_path, args.module, warnings, dists)
    collect(model_path, args.out, model=model, sample_input=sample, modules=args.module,
            load=False, seed=args.seed, loaded_by_probe=model is not None,
            import_tf=not args.no_load,
            warnings=warnings, dists=dists)
    return os.path.join(os.path.abspath(args.out), FACTS_FILE)


def main(argv=None):
    """Script mode: exit 0 and print the facts.json path; on failure one line on stderr, exit 2.

    stdout is reserved for that path: TensorFlow's Python-level chatter during import and
    loading is redirected to stderr, and its C++ logging is turned down before import.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    here = os.path.dirname(os.path.abspath(__file__))
    # Running as a script puts this folder first on sys.path; it must not shadow user modules
    # (a user module named ``loader`` vs the runtime's loader.py) or count as a code folder.
    if sys.path and sys.path[0] and _norm(sys.path[0]) == _norm(here):
        sys.path.pop(0)
    debug = _truthy(os.environ.get("ENVREPRO_DEBUG"))
    args = _parse_args(argv)
    real_stdout = sys.stdout
    saved_fd = None
    try:
        try:
            sys.stdout.flush()
            saved_fd = os.dup(1)
            os.dup2(2, 1)
        except (OSError, AttributeError, ValueError):
            saved_fd = None
        sys.stdout = sys.stderr
        try:
            out_path = _run(args)
        finally:
            sys.stdout = real_stdout
            if saved_fd is not None:
                try:
                    sys.stderr.flush()
                    os.dup2(saved_fd, 1)
                    os.close(saved_fd)
                except OSError:
                    pass
    except ProbeFailure as exc:
        if debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write("envrepro-probe: error: %s\n" % exc)
        return 2
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write("envrepro-probe: error: %s (set ENVREPRO_DEBUG=1 for the traceback)\n"
                         % _short_error(exc))
        return 2
    real_stdout.write(out_path + "\n")
    real_stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
