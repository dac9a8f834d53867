"""Installed distributions, found without importlib.metadata (absent on Python 3.6/3.7).

``*.dist-info`` / ``*.egg-info`` folders on ``sys.path`` are read directly, headers only; RECORD
files are read only for the few files that must be mapped to a distribution, which keeps the
save hook's budget at a fraction of a second.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import re
import sys

from .facts import canonical_name, is_under, norm_path


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
    """Local folder of a ``file://`` direct_url (an editable install's project), or None."""
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
        editable = not is_site_dir(location)
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
    dist["_editable_root"] = norm_path(editable_root) if editable_root else None
    dist["_loc"] = norm_path(location)
    return dist


def is_site_dir(path):
    """An installation folder (site-packages / dist-packages), as opposed to a project checkout."""
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
            full = norm_path(entry or os.getcwd())
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
                norm_path(os.path.join(base, rel.replace("/", os.sep))) for rel in self._record(dist))
        return self._records[cache_key]

    def for_file(self, path):
        """The distribution that installed ``path``, or None (a user file, a snapshot candidate).

        Editable installs are matched by their direct_url.json ``file://`` folder (or the
        develop-mode egg-info folder); regular installs by the import name's top-level package
        and then RECORD, which is read only here and only for those few candidates.
        """
        if not path:
            return None
        full = norm_path(path)
        if full.endswith((".pyc", ".pyo")):
            full = full[:-1]
        best = None
        for dist in self.items:
            root = dist["_editable_root"]
            if not root or not is_under(full, root) or full == root:
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
            if full == loc or not is_under(full, loc):
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
