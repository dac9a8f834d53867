"""The installed packages behind the registered names a model's config uses.

Keras finds an object saved as ``Addons>GroupNormalization`` only once the package that registered
it (``@register_keras_serializable(package="Addons")``, tensorflow-addons) has been imported;
nothing in the file says which package that is. A user who saved such a model expects the tool
to know, so the probe reads the ``Prefix>Name`` strings of the model's config (H5
``model_config`` / ``training_config``, ``.keras`` ``config.json``, SavedModel Keras metadata)
and imports, for each prefix, the module that provides it: from ``KNOWN`` (real registration
prefixes of public packages), else the lowercased prefix when that is exactly the top-level
module of an installed distribution (``keras_cv>``, ``keras_hub>``). The module is recorded like
a ``--module`` (the loader imports it in the container too) and the capture says so.

The model file is untrusted input: it only ever selects among modules the training
environment has INSTALLED (a distribution in the scan lists the top-level name, and the module
Python would import is that distribution's file, not a same-named file in the working directory
or on a code path), named by ``KNOWN`` or by that exact match; no path or module name is taken
from the file (docs/threat-model.md).

Standard library only, Python 3.6 syntax; h5py is imported lazily, for H5 files.
"""
from __future__ import absolute_import, division, print_function

import importlib
import os
import re

from .customobjects import FRAMEWORK_TOPS, registries
from .facts import short_error

# Registration prefix -> the modules whose import registers its names, tried in order.
KNOWN = {
    "Addons": ("tensorflow_addons",),
    "Text": ("tensorflow_text", "official.nlp.modeling"),  # tf-models-official's NLP layers too
    "Vision": ("official.vision",),
    "Similarity": ("tensorflow_similarity",),
}
# Keras' own default package (register_keras_serializable() without one): user code, no package.
NOT_PACKAGES = frozenset(["Custom", "custom"])
MAX_BYTES = 256 * 1024 * 1024
_NAME = re.compile(r'"([A-Za-z_][A-Za-z0-9_.\-]*)>([A-Za-z_][A-Za-z0-9_.]*)"')


def _texts(model_path, fmt):
    """The model's config JSON, as text, from wherever the format keeps it."""
    if fmt == "h5":
        import h5py

        with h5py.File(model_path, "r") as fh:
            for key in ("model_config", "training_config"):
                value = fh.attrs.get(key)
                if value is not None:
                    yield value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    elif fmt == "keras":
        import zipfile

        with zipfile.ZipFile(model_path) as zf:
            yield zf.read("config.json").decode("utf-8", "replace")
    elif fmt == "savedmodel":
        # Keras 2.5+ keeps its metadata in keras_metadata.pb; TF 2.4 inside saved_model.pb. The
        # JSON strings are stored as they are, so they are read without decoding the protobuf.
        for name in ("keras_metadata.pb", "saved_model.pb"):
            path = os.path.join(model_path, name)
            if os.path.isfile(path) and os.path.getsize(path) <= MAX_BYTES:
                with open(path, "rb") as fh:
                    yield fh.read().decode("utf-8", "replace")
                return


def registered_names(model_path, fmt):
    """``{prefix: [full names]}`` of the ``Prefix>Name`` strings in the model's config."""
    found = {}
    for text in _texts(model_path, fmt):
        for prefix, name in _NAME.findall(text):
            names = found.setdefault(prefix, [])
            full = "%s>%s" % (prefix, name)
            if full not in names:
                names.append(full)
    return dict((p, sorted(n)) for p, n in found.items())


def candidates(prefix):
    """The modules that may provide ``prefix``: the known ones, else the lowercased prefix."""
    if prefix in NOT_PACKAGES:
        return ()
    if prefix in KNOWN:
        return KNOWN[prefix]
    lower = prefix.lower()
    return (lower,) if re.match(r"^[a-z_][a-z0-9_]*$", lower) else ()


def installed(modname, dists):
    """The installed distribution whose module ``modname``'s top-level package is, or None: its
    metadata lists the top-level name and the file Python would import belongs to it."""
    top = modname.split(".", 1)[0]
    if top in FRAMEWORK_TOPS:
        return None
    owners = [d for d in dists.items if top in (d.get("top_level") or ())]
    if not owners:
        return None
    try:
        import importlib.util

        spec = importlib.util.find_spec(top)
    except Exception:
        return None
    if spec is None:
        return None
    where = spec.origin if spec.origin not in (None, "namespace") else None
    if where is None:
        for folder in list(spec.submodule_search_locations or []):
            where = os.path.join(folder, "__init__.py")
            break
    dist = dists.for_file(where) if where else None
    if dist is None:
        # A namespace package has no file of its own: one of its owners' files will do.
        locations = list(spec.submodule_search_locations or [])
        for owner in owners:
            if any(os.path.dirname(os.path.normpath(f)) == owner["_loc"] for f in locations):
                dist = owner
    return dist if dist in owners else None


def import_providers(model_path, fmt, dists, warnings, skip=()):
    """Import the installed module behind each registration prefix the model's config uses and
    whose names aren't registered yet; returns the modules that registered some of them, for
    the manifest's modules. Each import is said in ``warnings`` (the capture's notes)."""
    try:
        wanted = registered_names(model_path, fmt)
    except Exception as exc:
        warnings.append("could not read the model's registered names: %s" % short_error(exc))
        return []
    imported = []
    for prefix in sorted(wanted):
        missing = _unregistered(wanted[prefix])
        if not missing:
            continue
        for modname in candidates(prefix):
            if modname in skip:
                continue
            dist = installed(modname, dists)
            if dist is None:
                continue
            try:
                importlib.import_module(modname)
            except Exception as exc:
                warnings.append("the model's config uses %s, registered by %s (installed: %s %s), "
                                "but importing it failed: %s" % (", ".join(missing), modname,
                                dist["name"], dist["version"], short_error(exc)))
                continue
            now = _unregistered(missing)
            if len(now) < len(missing):
                imported.append(modname)
                warnings.append("imported %s (installed: %s %s) for the registered prefix %s> "
                                "the model's config uses (%s); the loader imports it too"
                                % (modname, dist["name"], dist["version"], prefix,
                                   ", ".join(x for x in missing if x not in now)))
            missing = now
            if not missing:
                break
    return imported


def _unregistered(names):
    regs = registries()
    return [n for n in names if not any(n in reg for reg in regs)]
