"""The lock: every distribution installed in the training interpreter, pinned ``==``.

Nothing is resolved here. The probe reports what is installed in the training interpreter (which
may be another Python than this one: a Python 3.8 / TF 2.4 venv probed from a Python 3.11 host),
and the installed versions *are* the pins. This module turns that list into

- ``requirements.lock`` laid out as ``pip-compile --generate-hashes`` would: sorted by canonical
  name, ``name==version``, ``--hash`` continuation lines when the index could be reached, and
  ``# via`` annotations computed from the Requires-Dist graph with the markers evaluated for the
  *training* Python and platform (extras included);
- ``requirements.in`` with the top-level distributions (those no other installed one requires).

Hashes come from pip-tools (``PyPIRepository.get_hashes``, what ``pip-compile --generate-hashes``
uses), honouring the host's pip configuration, but only its http(s) indexes: local
``file://`` indexes and ``--find-links`` folders are ignored, their files would not be reachable
from the image build. Offline, or with ``hashes=False``, the lock has exact pins and no hashes.

Editable and local-path installs (PEP 610 ``direct_url.json``) are built into wheels with the
training interpreter (``wheels/`` in the capture) and locked as ``name @ file:///envrepro/
capture/wheels/<wheel>``; VCS installs are locked as ``name @ git+<url>@<commit>``.

Import cost matters (the save hook imports the capture path inside training jobs): this module
imports neither pip nor pip-tools at import time, and ``packaging`` only when a lock is made.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import (Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set,
                    Tuple, Union)

from envrepro.errors import CaptureError
from envrepro.fsutil import atomic_write_text, sha256_file

__all__ = [
    "LockResult", "LockEntry", "write_lock", "parse_lock", "split_closure", "has_hashes",
    "lock_options", "render_entries", "canonical_lock", "render_lock_text", "lookup_index",
    "IndexInfo", "canonical_name",
    "build_local_wheels", "marker_environment", "HEAVY_ROOTS",
]

LOCK_FILE = "requirements.lock"          # same names as envrepro.sidecar.manifest (not imported: yaml)
REQUIREMENTS_IN = "requirements.in"
WHEELS_DIR = "wheels"
CAPTURE_MOUNT = "/envrepro/capture"      # where the build mounts the capture folder

# Distributions whose closure is the heavy (first, shared) layer of an environment image: every
# TensorFlow flavour, and Keras.
HEAVY_ROOTS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel",
               "tensorflow-macos", "tensorflow-aarch64", "tensorflow-cpu-aws", "intel-tensorflow",
               "tf-nightly", "tf-nightly-cpu", "tf-nightly-gpu", "tf-keras", "keras")
# TensorFlow's usual dependencies: the heavy closure of a lock that has no "# via" lines to follow
# (a pip-freeze style lock).
HEAVY_KNOWN_DEPS = frozenset({
    "absl-py", "astunparse", "flatbuffers", "gast", "google-pasta", "grpcio", "h5py", "keras",
    "keras-preprocessing", "libclang", "ml-dtypes", "numpy", "opt-einsum", "packaging", "protobuf",
    "six", "tensorboard", "tensorboard-data-server", "tensorboard-plugin-wit",
    "tensorflow-estimator", "tensorflow-io-gcs-filesystem", "termcolor", "typing-extensions",
    "wrapt", "optree", "rich", "namex",
})
# Pinned in a trailing, commented section, as pip-compile does for "unsafe" packages.
UNSAFE = frozenset({"setuptools", "wheel", "distribute"})
# Never pinned: pip comes with the image; envrepro itself is recorded in the manifest.
EXCLUDED = frozenset({"pip", "envrepro"})

# The image build runs in python:X.Y-slim (Debian bookworm, glibc 2.36) unless overridden; wheel
# compatibility ("sdist_only") is judged for a Linux container of the training Python/arch.
DEFAULT_TARGET_GLIBC = (2, 36)

HASH_WORKERS = 8
REACHABILITY_TIMEOUT = 3.0
INDEX_TIMEOUT = 15           # pip's per-socket timeout while hashing
INDEX_RETRIES = 2
WHEEL_BUILD_TIMEOUT = 900

MESSAGE_UNSAFE = "# The following packages are considered to be unsafe in a requirements file:"
FROM_IN = "-r " + REQUIREMENTS_IN

_log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"[-_.]+")


def canonical_name(name: str) -> str:
    """PEP 503 normalised name (same as packaging.utils.canonicalize_name)."""
    return _NAME_RE.sub("-", name).lower()


# ---------------------------------------------------------------------------------------------
# Public result types
# ---------------------------------------------------------------------------------------------

@dataclass
class LockResult:
    """What ``write_lock`` wrote, for the manifest and the capture report."""

    count: int                              # entries pinned in the lock (unsafe section excluded)
    hashes: bool                            # the lock carries --hash lines
    hashes_reason: str                      # why (not), in one line
    missing_hashes: List[str]               # when hashes: pinned entries left without a hash
    sdist_only: Optional[List[str]]         # no wheel for the Linux target (None: unknown/offline)
    unavailable: Optional[List[str]]        # neither a wheel for the target nor an sdist
    local: List[Dict[str, Any]]             # editable/local/vcs/url installs (manifest metadata)
    top_level: List[str]                    # canonical names written to requirements.in
    lock_sha256: str
    unsafe: Dict[str, str] = field(default_factory=dict)     # setuptools/wheel: commented pins
    excluded: Dict[str, str] = field(default_factory=dict)   # pip, envrepro: not pinned
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LockEntry:
    """One requirement of a lock. Unpacks as ``name, version, hashes, url``."""

    name: str                       # canonical name
    version: Optional[str]          # None for a VCS URL (or a URL without a version in it)
    hashes: Tuple[str, ...]         # "sha256:..." strings
    url: Optional[str]              # direct reference (``name @ url``), else None
    via: Tuple[str, ...] = ()       # parents from the "# via" annotation ("-r requirements.in" too)
    unsafe: bool = False            # from the commented "unsafe" section
    spec: str = ""                  # the requirement as written (extras, marker), no hash/comment

    @property
    def requirement(self) -> str:
        """What pip is given: the line as written, else rebuilt from the fields."""
        if self.spec:
            return self.spec
        if self.url:
            return f"{self.name} @ {self.url}"
        return f"{self.name}=={self.version}" if self.version else self.name

    @property
    def parents(self) -> List[str]:
        """Canonical names of the distributions that need this one (``-r``/``-c`` dropped)."""
        return [canonical_name(v.split()[0]) for v in self.via
                if v.strip() and not v.strip().startswith("-")]

    def _tuple(self) -> Tuple[str, Optional[str], Tuple[str, ...], Optional[str]]:
        return (self.name, self.version, self.hashes, self.url)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._tuple())

    def __getitem__(self, index: int) -> Any:
        return self._tuple()[index]

    def __len__(self) -> int:
        return 4


# ---------------------------------------------------------------------------------------------
# Requirements, markers and the dependency graph (fast path: no pip, no network)
# ---------------------------------------------------------------------------------------------

def _packaging_module(name: str) -> Any:
    """``packaging.<name>``, or the copy vendored in pip when packaging isn't installed."""
    import importlib

    try:
        return importlib.import_module(f"packaging.{name}")
    except ImportError:  # pragma: no cover - pip-tools depends on packaging
        return importlib.import_module(f"pip._vendor.packaging.{name}")


def _marker_class() -> Any:
    return _packaging_module("markers").Marker


_LENIENT_RE = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[([^\]]*)\])?")


@functools.lru_cache(maxsize=8192)
def _parse_requirement(raw: str) -> Optional[Tuple[str, Tuple[str, ...], Any]]:
    """(canonical name, canonical extras, Marker or None); None if the name is unreadable.

    Only the name, the extras and the marker matter here (the pins are the installed
    versions), so the version part is not parsed: old metadata has specifiers that today's
    ``packaging`` rejects, and the parse is cheaper. The marker is parsed by ``packaging``.
    """
    head, _, marker_text = raw.partition(";")
    m = _LENIENT_RE.match(head)
    if not m:
        return None
    extras = tuple(sorted(canonical_name(e.strip()) for e in (m.group(2) or "").split(",")
                          if e.strip()))
    marker = None
    marker_text = marker_text.strip()
    if marker_text:
        try:
            marker = _marker_class()(marker_text)
        except Exception:
            marker = _UNREADABLE_MARKER  # keep the edge (annotations only, never pins)
    return (canonical_name(m.group(1)), extras, marker)


class _UnreadableMarker:
    """Stands for a marker ``packaging`` can't parse: always true."""

    def evaluate(self, environment: Optional[Dict[str, str]] = None) -> bool:
        return True

    def __str__(self) -> str:
        return "<unreadable marker>"


_UNREADABLE_MARKER = _UnreadableMarker()


_PLATFORM_SYSTEM = {"linux": "Linux", "darwin": "Darwin", "win32": "Windows",
                    "cygwin": "CYGWIN_NT", "aix": "AIX"}


def marker_environment(python_facts: Mapping[str, Any]) -> Dict[str, str]:
    """PEP 508 marker environment for the training interpreter, from the probe's facts.

    Facts: ``version`` (full, e.g. "3.8.18"), ``sys_platform``, ``machine``, ``implementation``
    ("CPython"); any marker variable given by its own name in the facts wins.
    """
    version = str(python_facts.get("version") or python_facts.get("python_full_version")
                  or "3")
    short = ".".join(re.findall(r"\d+", version)[:2]) or version
    sys_platform = str(python_facts.get("sys_platform") or "linux")
    impl = str(python_facts.get("implementation") or "CPython")
    impl_name = {"cpython": "cpython", "pypy": "pypy"}.get(impl.lower(), impl.lower())
    env = {
        "implementation_name": impl_name,
        "implementation_version": str(python_facts.get("implementation_version") or version),
        "os_name": "nt" if sys_platform == "win32" else "posix",
        "platform_machine": str(python_facts.get("machine") or "x86_64"),
        "platform_python_implementation": {"cpython": "CPython", "pypy": "PyPy"}.get(
            impl.lower(), impl),
        "platform_release": "",
        "platform_system": _PLATFORM_SYSTEM.get(sys_platform, sys_platform.capitalize()),
        "platform_version": "",
        "python_full_version": version,
        "python_version": short,
        "sys_platform": sys_platform,
        "extra": "",
    }
    for key in env:
        if key != "extra" and python_facts.get(key) is not None:
            env[key] = str(python_facts[key])
    return env


def _marker_true(marker: Any, env: Dict[str, str], extra: str,
                 cache: Dict[Tuple[str, str], bool], warnings: List[str]) -> bool:
    key = (str(marker), extra)
    hit = cache.get(key)
    if hit is not None:
        return hit
    try:
        value = bool(marker.evaluate(dict(env, extra=extra)))
    except Exception as exc:  # undefined comparison etc.: keep the edge
        warnings.append(f"marker {key[0]!r} could not be evaluated ({exc}); edge kept")
        value = True
    cache[key] = value
    return value


@dataclass
class _Dist:
    name: str                   # canonical
    version: str
    requires: Sequence[str]
    raw: Mapping[str, Any]
    kind: Optional[str] = None  # editable | local | vcs | url | None (index)
    source: Optional[str] = None


def _direct_url(raw: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    du = raw.get("direct_url")
    if isinstance(du, (str, bytes)):
        try:
            du = json.loads(du)
        except ValueError:
            return None
    return du if isinstance(du, dict) else None


def _file_url_to_path(url: str) -> str:
    import urllib.request

    parsed = urllib.parse.urlsplit(url)
    path = urllib.request.url2pathname(urllib.parse.unquote(parsed.path))
    if parsed.netloc and parsed.netloc != "localhost":  # UNC-ish file://host/share
        path = "//" + parsed.netloc + path
    return path


def _legacy_develop(raw: Mapping[str, Any]) -> bool:
    meta = str(raw.get("metadata_dir") or "").rstrip("/\\")
    location = str(raw.get("location") or "").rstrip("/\\")
    return (meta.endswith(".egg-info") and bool(location) and os.path.isdir(meta)
            and os.path.basename(location) not in ("site-packages", "dist-packages")
            and (os.path.isfile(os.path.join(location, "setup.py"))
                 or os.path.isfile(os.path.join(location, "pyproject.toml"))))


def _classify(raw: Mapping[str, Any]) -> Tuple[Optional[str], Optional[str]]:
    """(kind, source) from PEP 610 direct_url.json; (None, None) for an index install."""
    du = _direct_url(raw)
    if not du:
        if raw.get("editable") or _legacy_develop(raw):
            # ``setup.py develop`` / egg-link installs have no direct_url.json: the project
            # folder is on sys.path and holds the .egg-info.
            return "editable", str(raw.get("location") or "")
        return None, None
    url = str(du.get("url") or "")
    sub = du.get("subdirectory")
    if "vcs_info" in du:
        info = du["vcs_info"] or {}
        ref = info.get("commit_id") or info.get("requested_revision")
        vcs = info.get("vcs", "git")
        source = url if url.startswith(vcs + "+") else f"{vcs}+{url}"
        if ref:
            source += f"@{ref}"
        if sub:
            source += f"#subdirectory={sub}"
        return "vcs", source
    is_file = url.startswith("file:")
    if "dir_info" in du:
        path = _file_url_to_path(url) if is_file else url
        if sub:
            path = os.path.join(path, sub)
        editable = bool((du.get("dir_info") or {}).get("editable")) or bool(raw.get("editable"))
        return ("editable" if editable else "local"), path
    # archive_info
    if is_file:
        return "local", _file_url_to_path(url)
    return "url", url


def _archive_sha256(raw: Mapping[str, Any]) -> Optional[str]:
    du = _direct_url(raw) or {}
    info = du.get("archive_info") or {}
    hashes = info.get("hashes") or {}
    if hashes.get("sha256"):
        return str(hashes["sha256"])
    legacy = str(info.get("hash") or "")
    if legacy.startswith("sha256="):
        return legacy.split("=", 1)[1]
    return None


def _collect(distributions: Iterable[Mapping[str, Any]]
             ) -> Tuple[Dict[str, _Dist], Dict[str, str], List[str]]:
    """Installed dists by canonical name (first wins, like sys.path), the excluded ones."""
    dists: Dict[str, _Dist] = {}
    excluded: Dict[str, str] = {}
    warnings: List[str] = []
    for raw in distributions:
        name = raw.get("name")
        version = raw.get("version")
        if not name or not version:
            warnings.append(f"skipped a distribution without name/version: {dict(raw)!r:.120}")
            continue
        key = canonical_name(str(name))
        if key in EXCLUDED:
            excluded.setdefault(key, str(version))
            continue
        if key in dists:
            if dists[key].version != str(version):
                warnings.append(f"{key}: several versions installed ({dists[key].version} "
                                f"shadows {version}); pinned the first on sys.path")
            continue
        kind, source = _classify(raw)
        dists[key] = _Dist(key, str(version), list(raw.get("requires") or ()), raw, kind, source)
    return dists, excluded, warnings


def dependency_graph(dists: Mapping[str, _Dist], env: Dict[str, str], warnings: List[str]
                     ) -> Dict[str, Set[str]]:
    """parents[name] = installed dists whose Requires-Dist pull ``name`` in, for ``env``.

    Extras propagate: ``foo[bar]`` activates foo's requirements marked ``extra == 'bar'``
    (and those may request more extras, also of foo itself).
    """
    parents: Dict[str, Set[str]] = {name: set() for name in dists}
    cache: Dict[Tuple[str, str], bool] = {}
    done: Set[Tuple[str, str]] = set()
    todo: List[Tuple[str, str]] = [(name, "") for name in dists]
    while todo:
        item = todo.pop()
        if item in done:
            continue
        done.add(item)
        name, extra = item
        for raw in dists[name].requires:
            parsed = _parse_requirement(raw)
            if parsed is None:
                warnings.append(f"{name}: unreadable requirement {raw!r} ignored")
                continue
            dep, dep_extras, marker = parsed
            if dep not in dists:
                continue
            if marker is None:
                if extra:
                    continue  # unconditional: handled by the base pass
            else:
                if extra and "extra" not in str(marker):
                    continue  # not extra-specific: handled by the base pass
                if not _marker_true(marker, env, extra, cache, warnings):
                    continue
            if dep != name:
                parents[dep].add(name)
            for dep_extra in dep_extras:
                if (dep, dep_extra) not in done:
                    todo.append((dep, dep_extra))
    return parents


def _roots(parents: Mapping[str, Set[str]]) -> Set[str]:
    """Dists nothing requires, plus one member of every cycle unreachable from those."""
    children: Dict[str, Set[str]] = {name: set() for name in parents}
    for child, ps in parents.items():
        for p in ps:
            children[p].add(child)
    roots = {name for name, ps in parents.items() if not ps}
    seen: Set[str] = set()

    def walk(start: Iterable[str]) -> None:
        stack = [s for s in start if s not in seen]
        seen.update(stack)
        while stack:
            for c in children[stack.pop()]:
                if c not in seen:
                    seen.add(c)
                    stack.append(c)

    walk(roots)
    for name in sorted(parents):
        if name not in seen:
            roots.add(name)
            walk([name])
    return roots


# ---------------------------------------------------------------------------------------------
# Rendering and parsing the lock
# ---------------------------------------------------------------------------------------------

def _annotation(required_by: Iterable[str]) -> str:
    """pip-compile's "split" annotation style."""
    items = sorted(set(required_by))
    if len(items) == 1:
        return "# via " + items[0]
    return "\n    ".join(["# via"] + ["#   " + item for item in items])


def _format_entry(spec: str, hashes: Iterable[str], via: Iterable[str]) -> str:
    line = spec
    for h in sorted(set(hashes)):
        line += f" \\\n    --hash={h}"
    via = list(via)
    if via:
        line += "\n    " + _annotation(via)
    return line


def _header(python_facts: Mapping[str, Any], with_hashes: bool, has_local: bool,
            hashless: Sequence[str] = ()) -> List[str]:
    impl = python_facts.get("implementation") or "CPython"
    where = " ".join(str(x) for x in (python_facts.get("sys_platform"),
                                      python_facts.get("machine")) if x)
    install = "pip install --no-deps " + ("--require-hashes " if with_hashes else "") \
        + "-r " + LOCK_FILE
    lines = [
        "#",
        "# This file is autogenerated by envrepro from the installed environment",
        f"# ({impl} {python_facts.get('version', '?')}{', ' + where if where else ''}):"
        " every installed distribution",
        "# pinned ==, nothing resolved. To reproduce it:",
        "#",
        f"#    {install}",
        "#",
    ]
    if has_local:
        lines[-1:-1] = [f"# (with this capture folder mounted at {CAPTURE_MOUNT} for the wheels)"]
    if with_hashes and hashless:
        # pip's hash checking is all-or-nothing: the hashless lines need their own install.
        lines[-1:-1] = ["# except the entries without a hash, installed after the others by a",
                        "# separate `pip install --no-deps` (no hash to check): "
                        + ", ".join(hashless)]
    return lines


def _render_lock(dists: Mapping[str, _Dist], specs: Mapping[str, str],
                 hashes: Mapping[str, Iterable[str]], via: Mapping[str, List[str]],
                 python_facts: Mapping[str, Any], with_hashes: bool,
                 hashless: Sequence[str] = ()) -> str:
    has_local = any(spec.startswith(f"{name} @ file://{CAPTURE_MOUNT}")
                    for name, spec in specs.items())
    lines = _header(python_facts, with_hashes, has_local, hashless)
    for name in sorted(dists):
        if name in UNSAFE:
            continue
        lines.append(_format_entry(specs[name], hashes.get(name, ()) if with_hashes else (),
                                   via.get(name, ())))
    unsafe = sorted(n for n in dists if n in UNSAFE)
    if unsafe:
        lines.append("")
        lines.append(MESSAGE_UNSAFE)
        lines.extend(f"# {n}=={dists[n].version}" for n in unsafe)
    return "\n".join(lines) + "\n"


def render_lock_text(entries: Iterable[LockEntry], header: Sequence[str] = ()) -> str:
    """A lock file in pip-compile's layout (sorted, ``--hash`` lines, ``# via`` annotations) from
    parsed entries, e.g. a lock translated for Linux; ``header``: comment lines, ``#`` added."""
    lines = [("# " + h).rstrip() for h in header]
    for e in sorted(entries, key=lambda e: e.name):
        if not e.unsafe:
            lines.append(_format_entry(e.requirement, e.hashes, e.via))
    return "\n".join(lines) + "\n"


_WHEEL_VERSION_RE = re.compile(r"^[^-]+-([^-]+)-")
_UNSAFE_PIN_RE = re.compile(r"^#\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(\S+)\s*$")


def _version_from_url(url: str) -> Optional[str]:
    path = urllib.parse.urlsplit(url).path
    filename = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    if filename.endswith(".whl"):
        m = _WHEEL_VERSION_RE.match(filename)
        if m:
            return m.group(1)
    return None


def _logical_lines(text: str) -> Iterator[Tuple[str, str]]:
    """(kind, line): "req" for a requirement or option line with its ``\\`` continuations
    joined, "comment" for a comment line (kept as written, indentation included)."""
    logical = ""
    for physical in text.splitlines():
        stripped = physical.strip()
        if logical:                       # continuation of a requirement line
            logical += " " + stripped
        elif not stripped:
            yield "blank", ""
            continue
        elif stripped.startswith("#"):
            yield "comment", physical.rstrip()
            continue
        else:
            logical = stripped
        if logical.endswith("\\"):
            logical = logical[:-1].rstrip()
            continue
        yield "req", logical
        logical = ""
    if logical:
        yield "req", logical


def _split_requirement_line(line: str) -> Tuple[str, List[str], str]:
    """(spec, hashes, inline comment) of one logical requirement line.

    ``--hash=x`` and ``--hash x`` both count; a ``#`` starting a token ends the requirement
    (pip's own comment rule: URL fragments like ``#egg=`` are inside a token).
    """
    tokens = line.split()
    spec: List[str] = []
    hashes: List[str] = []
    comment = ""
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("#"):
            comment = " ".join(tokens[i:])
            break
        if tok == "--hash" and i + 1 < len(tokens):
            hashes.append(tokens[i + 1])
            i += 2
            continue
        if tok.startswith("--hash="):
            hashes.append(tok.split("=", 1)[1])
        else:
            spec.append(tok)
        i += 1
    return " ".join(spec), hashes, comment


def parse_lock(text: str, include_unsafe: bool = False) -> List[LockEntry]:
    """Entries of a lock (ours, or any pip-compile output): name, version, hashes, url, via.

    ``include_unsafe`` also returns the commented pins of the trailing "unsafe" section
    (``# setuptools==x``) with ``unsafe=True``. Option lines (``--index-url``...) are not
    entries (see :func:`lock_options`); ``-e URL#egg=name`` is read as ``name @ URL``.
    """
    entries: List[LockEntry] = []
    pending: Optional[Dict[str, Any]] = None
    via_open = False        # after a bare "# via", "#   x" lines add parents
    in_unsafe = False

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            entries.append(LockEntry(pending["name"], pending["version"],
                                     tuple(pending["hashes"]), pending["url"],
                                     tuple(pending["via"]), pending["unsafe"], pending["spec"]))
            pending = None

    for kind, physical in _logical_lines(text):
        if kind == "blank":
            via_open = False
            continue
        if kind == "comment":
            stripped = physical.strip()
            body = stripped[1:].strip()
            if pending is not None and physical[:1].isspace():
                if body == "via":
                    via_open = True
                    continue
                if body.startswith("via "):
                    pending["via"].extend(s.strip() for s in body[4:].split(",") if s.strip())
                    via_open = False
                    continue
                if via_open and stripped.startswith("#   "):
                    pending["via"].append(body)
                    continue
            via_open = False
            if stripped == MESSAGE_UNSAFE or stripped.startswith("# WARNING: The following "
                                                                 "packages were not pinned"):
                flush()
                in_unsafe = True
                continue
            m = _UNSAFE_PIN_RE.match(stripped)
            if in_unsafe and m and include_unsafe:
                flush()
                pending = {"name": canonical_name(m.group(1)), "version": m.group(2),
                           "hashes": [], "url": None, "via": [], "unsafe": True,
                           "spec": f"{m.group(1)}=={m.group(2)}"}
            continue
        line = physical
        via_open = False
        if line.startswith(("-e ", "--editable ", "--editable=")):
            editable_url = re.split(r"[ =]", line, 1)[1].strip().split()[0]
            egg = re.search(r"[#&]egg=([^&]+)", editable_url)
            line = f"{egg.group(1) if egg else editable_url} @ {editable_url}"
        elif line.startswith("-"):        # options (--index-url ...): not requirements
            flush()
            continue
        flush()
        spec, hashes, comment = _split_requirement_line(line)
        req = spec.split(" ;", 1)[0].split(";", 1)[0].strip()
        url: Optional[str] = None
        version: Optional[str] = None
        if " @ " in req:
            name, url = (s.strip() for s in req.split(" @ ", 1))
            version = _version_from_url(url)
        elif "==" in req:
            name, version = (s.strip() for s in req.split("==", 1))
            version = version.lstrip("=").strip()
        else:
            name = req
        name = name.split("[", 1)[0].strip()
        via = [v.strip() for v in comment.lstrip("#").strip()[4:].split(",") if v.strip()] \
            if re.match(r"^#\s*via\s", comment) else []
        pending = {"name": canonical_name(name), "version": version, "hashes": hashes,
                   "url": url, "via": via, "unsafe": False, "spec": spec}
    flush()
    return entries


_INDEX_OPTS = ("--index-url", "-i", "--extra-index-url", "--find-links", "-f", "--trusted-host")
_LONG_OPTS = {"-i": "--index-url", "-f": "--find-links"}


def lock_options(text: str) -> List[str]:
    """The pip options a lock carries that still make sense inside an image build, in order:
    http(s) index and find-links URLs, trusted hosts and the others (``--only-binary``...);
    local paths, ``-r``/``-c`` and editables are dropped."""
    options: List[str] = []
    for kind, line in _logical_lines(text):
        if kind != "req" or not line.startswith("-"):
            continue
        opt = line.split()[0].split("=")[0]
        if opt in _INDEX_OPTS:
            value = line[len(opt):].strip(" =")
            if opt == "--trusted-host" or _http_url(value):
                options.append(f"{_LONG_OPTS.get(opt, opt)} {value}")
        elif not opt.startswith(("-e", "--editable", "-r", "-c", "--requirement",
                                 "--constraint", "--hash")):
            options.append(line)
    return options


def render_entries(entries: Iterable[LockEntry], options: Sequence[str] = ()) -> str:
    """Canonical text of some entries: the options, then one requirement per entry sorted by
    name with its sorted hashes, no comments ("" for no entries).

    Byte-stable on purpose: the image key hashes it, and the heavy/rest files of a build
    context are rendered by it, so an unchanged TensorFlow closure keeps its cached layer.
    """
    chosen = sorted(entries, key=lambda e: e.name)
    if not chosen:
        return ""
    out = [o + "\n" for o in options]
    for e in chosen:
        out.append(" \\\n".join([e.requirement] + [f"    --hash={h}"
                                                     for h in sorted(set(e.hashes))]) + "\n")
    return "".join(out)


def canonical_lock(text: str) -> str:
    """The lock without comments or ordering noise: what the image key hashes."""
    return render_entries(parse_lock(text), lock_options(text))


def has_hashes(lock_entries: Union[str, Sequence[LockEntry]]) -> bool:
    """True when every requirement of the lock carries a hash (so ``--require-hashes`` works).

    pip's hash checking is all-or-nothing: a lock where only some lines have hashes can't be
    installed in one ``pip install`` call (see ``LockResult.missing_hashes``; the image build
    installs the hashless ones in a separate, unverified step).
    """
    entries = parse_lock(lock_entries) if isinstance(lock_entries, str) else list(lock_entries)
    entries = [e for e in entries if not e.unsafe]
    return bool(entries) and all(e.hashes for e in entries)


def split_closure(lock_entries: Union[str, Sequence[LockEntry]],
                  roots: Sequence[str] = HEAVY_ROOTS) -> Tuple[List[LockEntry], List[LockEntry]]:
    """(heavy, rest): the roots present in the lock and everything they pull in (from the
    ``# via`` graph), then the others, each in lock order. For a two-layer image build.

    A lock without any ``# via`` parent (pip-freeze style) puts the roots and TensorFlow's
    usual dependencies (``HEAVY_KNOWN_DEPS``) in the heavy part.
    """
    entries = parse_lock(lock_entries) if isinstance(lock_entries, str) else list(lock_entries)
    children: Dict[str, Set[str]] = {}
    for e in entries:
        for parent in e.parents:
            children.setdefault(parent, set()).add(e.name)
    present = {e.name for e in entries}
    heavy: Set[str] = set()
    stack = [canonical_name(r) for r in roots if canonical_name(r) in present]
    if stack and not children:
        heavy = set(stack) | (set(HEAVY_KNOWN_DEPS) & present)
        stack = []
    while stack:
        name = stack.pop()
        if name in heavy:
            continue
        heavy.add(name)
        stack.extend(c for c in children.get(name, ()) if c not in heavy)
    return ([e for e in entries if e.name in heavy], [e for e in entries if e.name not in heavy])


# ---------------------------------------------------------------------------------------------
# Hashes from the index, with pip-tools
# ---------------------------------------------------------------------------------------------

@dataclass
class IndexInfo:
    """What the index has for one ``name==version``, judged for a Linux target."""

    hashes: Set[str]
    wheel_ok: bool = False       # a wheel compatible with the Linux target exists
    sdist: bool = False
    found: bool = False          # the index has files for name==version
    error: Optional[str] = None


_IndexInfo = IndexInfo


def _split_urls(value: Any) -> List[str]:
    if not value:
        return []
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value]


def _pip_args(pip_settings: Optional[Mapping[str, Any]]) -> List[str]:
    args = ["--timeout", str(INDEX_TIMEOUT), "--retries", str(INDEX_RETRIES), "--no-input",
            "--disable-pip-version-check"]
    s = dict(pip_settings or {})
    if s.get("index_url"):
        args += ["--index-url", str(s["index_url"])]
    for url in _split_urls(s.get("extra_index_urls") or s.get("extra_index_url")):
        args += ["--extra-index-url", url]
    for host in _split_urls(s.get("trusted_hosts") or s.get("trusted_host")):
        args += ["--trusted-host", host]
    for key, flag in (("cert", "--cert"), ("client_cert", "--client-cert"), ("proxy", "--proxy")):
        if s.get(key):
            args += [flag, str(s[key])]
    if s.get("timeout"):
        args[1] = str(int(float(s["timeout"])))
    return args


def _http_url(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in ("http", "https")


def _strip_userinfo(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _reachable(url: str, cert: Optional[str], client_cert: Optional[str],
               trusted_hosts: Sequence[str], proxy: Optional[str],
               timeout: float = REACHABILITY_TIMEOUT) -> Optional[str]:
    """None if the index answers at all (any HTTP status), else the error in one line."""
    import ssl
    import urllib.error
    import urllib.request

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # a redirect is an answer: don't follow it (it may be a big page)

    url = _strip_userinfo(url)
    host = urllib.parse.urlsplit(url).hostname or ""
    ctx = ssl.create_default_context(cafile=cert if cert and os.path.isfile(cert) else None,
                                     capath=cert if cert and os.path.isdir(cert) else None)
    if any(host == t.split(":")[0] for t in trusted_hosts):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert:
        with contextlib.suppress(Exception):
            ctx.load_cert_chain(client_cert)
    handlers: List[Any] = [urllib.request.HTTPSHandler(context=ctx), _NoRedirect()]
    if proxy:
        handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, method="HEAD",
                                     headers={"User-Agent": "envrepro (reachability check)"})
    try:
        with opener.open(request, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None      # it answered: reachable (401/403/404/405 included)
    except Exception as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def _linux_target_tags(python_facts: Mapping[str, Any]) -> Set[Tuple[str, str, str]]:
    """(interpreter, abi, platform) tags a Linux container of the training Python accepts."""
    tags = _packaging_module("tags")

    nums = [int(x) for x in re.findall(r"\d+", str(python_facts.get("version") or "3"))[:2]]
    major, minor = (nums + [0, 0])[:2]
    machine = str(python_facts.get("machine") or "x86_64").lower()
    arch = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "i386": "i686",
            "x86": "i686"}.get(machine, machine)
    glibc = python_facts.get("target_glibc") or DEFAULT_TARGET_GLIBC
    if isinstance(glibc, str):
        glibc = tuple(int(x) for x in re.findall(r"\d+", glibc)[:2])
    gmajor, gminor = int(glibc[0]), int(glibc[1])
    platforms = [f"manylinux_{gmajor}_{m}_{arch}" for m in range(gminor, 4, -1)]
    legacy = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
    for (lm, ln), alias in legacy.items():
        if (gmajor, gminor) >= (lm, ln):
            platforms.append(f"{alias}_{arch}")
    platforms.append(f"linux_{arch}")
    impl = str(python_facts.get("implementation") or "CPython").lower()
    result: List[Any] = []
    version = (major, minor)
    if impl == "cpython":
        abi = f"cp{major}{minor}" + ("m" if version < (3, 8) else "")
        result.extend(tags.cpython_tags(version, abis=[abi], platforms=platforms))
        interpreter = f"cp{major}{minor}"
    else:
        interpreter = f"pp{major}{minor}" if impl == "pypy" else None
    result.extend(tags.compatible_tags(version, interpreter=interpreter, platforms=platforms))
    return {(t.interpreter, t.abi, t.platform) for t in result}


def _wheel_tags(filename: str) -> Set[Tuple[str, str, str]]:
    parts = filename[:-4].split("-")
    if len(parts) < 5:
        return set()
    pys, abis, plats = parts[-3], parts[-2], parts[-1]
    return {(p, a, pl) for p in pys.split(".") for a in abis.split(".") for pl in plats.split(".")}


def _python_ok(requires_python: Optional[str], version: str) -> bool:
    if not requires_python:
        return True
    try:
        SpecifierSet = _packaging_module("specifiers").SpecifierSet
        return SpecifierSet(requires_python).contains(version, prereleases=True)
    except Exception:
        return True


@contextlib.contextmanager
def _pip_logging_contained() -> Iterator[None]:
    """pip-tools calls ``logging.basicConfig()`` on import and pip's ``setup_logging``
    (``dictConfig``, which closes existing handlers) when a repository is made: keep both away
    from the training process's logging."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    pip_logger = logging.getLogger("pip")
    pip_level = pip_logger.level
    pip_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        pip_logger.setLevel(pip_level)


def _make_repository(pip_settings: Optional[Mapping[str, Any]], warnings: List[str]
                     ) -> Tuple[Any, List[str], Dict[str, Any]]:
    """A pip-tools PyPIRepository on the host's pip configuration; (repo, http index urls,
    connection settings). Import and construction happen here, lazily."""
    import warnings as _warnings

    with _pip_logging_contained(), _warnings.catch_warnings():
        _warnings.simplefilter("ignore", DeprecationWarning)  # pkg_resources, via pip-tools
        import piptools.repositories.pypi as pypi_mod
        from piptools.locations import CACHE_DIR

        class _Repository(pypi_mod.PyPIRepository):  # type: ignore[misc, valid-type]
            """pip-tools' repository, also taking the sha256 the index publishes with each
            file link (PEP 503 ``#sha256=`` / PEP 691 ``hashes``).

            pip-tools asks the index's JSON API for hashes and downloads and hashes every file
            it can't find there; that API is a PyPI extension (mirrors and proxies often lack
            it), and downloading every wheel of a TensorFlow release takes minutes. The set of
            files and the resulting hashes are the same.
            """

            _matching: Dict[Tuple[str, str], Any] = {}

            def _get_matching_candidates(self, ireq: Any) -> Any:
                # pip-tools filters thousands of candidates (grpcio, numpy) with a specifier,
                # several times per pin: once is enough.
                key = (canonical_name(ireq.name), str(ireq.specifier))
                found = self._matching.get(key)
                if found is None:
                    found = self._matching[key] = super()._get_matching_candidates(ireq)
                return found

            def _get_hashes_from_pypi(self, ireq: Any) -> Dict[str, str]:
                by_link: Dict[str, str] = {}
                matching = self._get_matching_candidates(ireq)
                for candidate in matching:
                    digest = _link_sha256(candidate.link)
                    if digest:
                        by_link[candidate.link.url] = f"sha256:{digest}"
                if len(by_link) < len(matching):
                    for url, digest in super()._get_hashes_from_pypi(ireq).items():
                        by_link.setdefault(url, digest)
                return by_link

        original = pypi_mod.setup_logging
        pypi_mod.setup_logging = lambda *a, **k: None
        try:
            repo = _Repository(_pip_args(pip_settings), cache_dir=CACHE_DIR)
        finally:
            pypi_mod.setup_logging = original
    opts = repo.options
    if pip_settings and ("extra_index_urls" in pip_settings
                         or "extra_index_url" in pip_settings):
        opts.extra_index_urls = _split_urls(pip_settings.get("extra_index_urls")
                                            or pip_settings.get("extra_index_url"))
    urls = [] if getattr(opts, "no_index", False) else \
        [opts.index_url] + list(opts.extra_index_urls or [])
    http_urls = [u for u in dict.fromkeys(urls) if _http_url(u)]
    conn = {"cert": opts.cert, "client_cert": opts.client_cert,
            "trusted_hosts": list(opts.trusted_hosts or []), "proxy": opts.proxy}
    return repo, http_urls, conn


def _link_sha256(link: Any) -> Optional[str]:
    """The sha256 the index published with a file link, if any."""
    published = getattr(link, "_hashes", None)
    if isinstance(published, dict) and published.get("sha256"):
        return str(published["sha256"])
    if getattr(link, "hash_name", None) == "sha256" and getattr(link, "hash", None):
        return str(link.hash)
    return None


def _use_only(repo: Any, index_urls: List[str], warnings: List[str]) -> None:
    """Point the repository's finder at the reachable http(s) indexes only (no file:// indexes,
    no find-links), accepting files for any Python (the target is not this interpreter)."""
    opts = repo.options
    opts.index_url = index_urls[0]
    opts.extra_index_urls = index_urls[1:]
    opts.find_links = []
    opts.no_index = False
    try:
        finder = repo.command._build_package_finder(options=opts, session=repo.session,
                                                    ignore_requires_python=True)
        if not hasattr(repo, "_finder"):
            raise AttributeError("PyPIRepository._finder")
        repo._finder = finder
    except Exception as exc:  # pragma: no cover - other pip-tools internals
        warnings.append(f"could not restrict pip-tools to the http(s) indexes ({exc}); "
                        "hashes may include files from local indexes")


def _index_info(repo: Any, name: str, version: str, target_tags: Set[Tuple[str, str, str]],
                target_version: str) -> _IndexInfo:
    from pip._internal.req.constructors import install_req_from_line

    info = _IndexInfo(hashes=set())
    try:
        ireq = install_req_from_line(f"{name}=={version}")
        try:
            candidates = list(repo._get_matching_candidates(ireq))
        except IndexError:  # pip-tools: no candidate has that version
            candidates = []
        if not candidates:
            info.error = "not on the index"
            return info
        info.found = True
        for c in candidates:
            link = c.link
            if link.is_wheel:
                if (_wheel_tags(link.filename) & target_tags
                        and _python_ok(link.requires_python, target_version)):
                    info.wheel_ok = True
            else:
                info.sdist = True
        info.hashes = set(repo.get_hashes(ireq))
    except Exception as exc:
        info.error = _redact(f"{type(exc).__name__}: {exc}")
    return info


def _redact(text: str) -> str:
    """Drop credentials from URLs in a message."""
    return re.sub(r"(//)[^/@\s]+@", r"\1", text)


def _hash_from_index(dists: Mapping[str, _Dist], names: Sequence[str],
                     python_facts: Mapping[str, Any], pip_settings: Optional[Mapping[str, Any]],
                     warnings: List[str]) -> Tuple[Optional[Dict[str, IndexInfo]], str]:
    """({name: info}, reason) or (None, reason) when the index can't be reached."""
    return lookup_index({n: dists[n].version for n in names}, python_facts, pip_settings,
                        warnings)


def lookup_index(pins: Mapping[str, str], python_facts: Mapping[str, Any],
                 pip_settings: Optional[Mapping[str, Any]] = None,
                 warnings: Optional[List[str]] = None
                 ) -> Tuple[Optional[Dict[str, IndexInfo]], str]:
    """Ask the host's http(s) indexes about each ``name==version`` of ``pins``: its sha256
    hashes, and whether a wheel for a Linux container of ``python_facts`` (version, machine,
    implementation) or an sdist exists. ``({name: info}, reason)``, or ``(None, reason)``
    when no index answers (~3 s). Used for the capture's hashes and for translating a macOS
    or Windows lock for Linux (``envrepro.build.platforms``).
    """
    import concurrent.futures

    warnings = warnings if warnings is not None else []
    try:
        repo, http_urls, conn = _make_repository(pip_settings, warnings)
    except Exception as exc:
        return None, _redact(f"could not set up pip-tools ({type(exc).__name__}: {exc})")
    if not http_urls:
        return None, "no http(s) package index configured"
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(http_urls)) as pool:
        errors = list(pool.map(lambda u: _reachable(u, conn["cert"], conn["client_cert"],
                                                    conn["trusted_hosts"], conn["proxy"]),
                               http_urls))
    reachable = [u for u, e in zip(http_urls, errors) if e is None]
    if not reachable:
        return None, "offline: " + "; ".join(f"{_strip_userinfo(u)} unreachable ({e})"
                                             for u, e in zip(http_urls, errors))
    for u, e in zip(http_urls, errors):
        if e is not None:
            warnings.append(f"index {_strip_userinfo(u)} unreachable ({e}); hashed without it")
    _use_only(repo, reachable, warnings)
    target_tags = _linux_target_tags(python_facts)
    target_version = str(python_facts.get("version") or "")
    infos: Dict[str, IndexInfo] = {}
    with _pip_logging_contained(), repo.allow_all_wheels():
        with concurrent.futures.ThreadPoolExecutor(max_workers=HASH_WORKERS) as pool:
            futures = {pool.submit(_index_info, repo, n, v, target_tags, target_version): n
                       for n, v in pins.items()}
            for future in concurrent.futures.as_completed(futures):
                infos[futures[future]] = future.result()
    where = ", ".join(_strip_userinfo(u) for u in reachable)
    return infos, f"sha256 of every file of each release on {where} (pip-tools)"


# ---------------------------------------------------------------------------------------------
# Local, editable and VCS installs
# ---------------------------------------------------------------------------------------------

def _wheel_build_cmd(python: str, target: str, source: str, isolated: bool) -> List[str]:
    cmd = [python, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
           "--no-input", "-w", target]
    if not isolated:
        cmd.append("--no-build-isolation")
    else:
        cmd += ["--timeout", str(INDEX_TIMEOUT), "--retries", "1"]
    return cmd + [source]


def build_local_wheels(dists: Iterable[Mapping[str, Any]], wheels_dir: Union[str, Path],
                       python_executable: Optional[str] = None) -> List[Dict[str, Any]]:
    """Build (or copy) a wheel for each local, local-archive or editable distribution into
    ``wheels_dir`` with the *training* interpreter's pip; return the manifest entries
    ``{name, version, kind, source, wheel: "wheels/<file>", sha256}``.

    ``pip wheel --no-deps --no-build-isolation`` first (offline-friendly, uses the training
    environment's build backend), then with build isolation. Raises ``CaptureError`` naming the
    distribution and its path when neither works or the source is gone.
    """
    python = python_executable or sys.executable
    wheels_dir = Path(wheels_dir)
    wheels_dir.mkdir(parents=True, exist_ok=True)
    out: List[Dict[str, Any]] = []
    for raw in dists:
        name = canonical_name(str(raw.get("name")))
        version = str(raw.get("version"))
        kind, source = _classify(raw)
        if kind not in ("editable", "local") or not source:
            raise ValueError(f"{name}: not a local or editable install ({kind})")
        if not os.path.exists(source):
            raise CaptureError(f"{name} {version} was installed from {source}, which no longer "
                               "exists: can't build its wheel", path=source,
                               fix="reinstall it from an index, or restore the source")
        if os.path.isfile(source) and source.endswith(".whl"):
            built = wheels_dir / os.path.basename(source)
            shutil.copyfile(source, built)
        else:
            built = _pip_wheel(python, name, version, source, wheels_dir)
        out.append({"name": name, "version": version, "kind": kind, "source": source,
                    "wheel": f"{WHEELS_DIR}/{built.name}", "sha256": sha256_file(built)})
    return out


def _pip_wheel(python: str, name: str, version: str, source: str, wheels_dir: Path) -> Path:
    import subprocess
    import tempfile

    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.pop("PYTHONPATH", None)
    failures = []
    for isolated in (False, True):
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=str(wheels_dir)))
        try:
            try:
                proc = subprocess.run(_wheel_build_cmd(python, str(tmp), source, isolated),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      env=env, timeout=WHEEL_BUILD_TIMEOUT, cwd=str(tmp))
                output = proc.stdout.decode("utf-8", "replace")
                ok = proc.returncode == 0
            except (OSError, subprocess.TimeoutExpired) as exc:
                ok, output = False, f"{type(exc).__name__}: {exc}"
            wheels = sorted(tmp.glob("*.whl"))
            if ok and len(wheels) == 1:
                final = wheels_dir / wheels[0].name
                os.replace(wheels[0], final)
                return final
            tail = "\n".join(output.strip().splitlines()[-12:])
            failures.append(f"[{'with' if isolated else 'without'} build isolation] {tail}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    raise CaptureError(f"building a wheel of {name} {version} ({source}) with {python} failed:\n"
                       + "\n".join(failures), path=source,
                       fix="make `pip wheel --no-deps` work for it in the training environment")


# ---------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------

def _same_version(a: str, b: str) -> bool:
    try:
        Version = _packaging_module("version").Version
        return bool(Version(a) == Version(b))
    except Exception:
        return a == b


def _wheel_url(wheel_rel: str) -> str:
    return f"file://{CAPTURE_MOUNT}/" + urllib.parse.quote(wheel_rel, safe="/+!")


def write_lock(distributions: Iterable[Mapping[str, Any]], python_facts: Mapping[str, Any],
               out_dir: Union[str, Path], hashes: bool = True,
               pip_settings: Optional[Mapping[str, Any]] = None,
               training_python: Optional[str] = None) -> LockResult:
    """Write ``requirements.lock`` and ``requirements.in`` into ``out_dir`` (the capture folder
    being written; local wheels go to ``out_dir/wheels``) and describe them.

    ``distributions``: the probe's list (name, version, requires, direct_url, editable, ...).
    ``python_facts``: the training interpreter (version, sys_platform, machine, implementation).
    ``hashes``: ask the index for hashes (offline is detected within ~3 s and is not an error).
    ``pip_settings``: overrides of the host's pip configuration: index_url, extra_index_urls,
    trusted_hosts, cert, client_cert, proxy, timeout.
    ``training_python``: interpreter used to build local/editable wheels (default: this one).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dists, excluded, warnings = _collect(distributions)
    env = marker_environment(python_facts)
    parents = dependency_graph(dists, env, warnings)
    roots = _roots(parents)
    via = {name: sorted(parents[name]) + ([FROM_IN] if name in roots else [])
           for name in dists}

    # Which pins the index is asked about: everything installed from an index, and local /
    # URL archives (pinned from the index when it has that very file).
    query = sorted(n for n, d in dists.items() if d.kind in (None, "local", "url")
                   and not (d.kind == "local" and d.source and os.path.isdir(d.source)))
    infos: Optional[Dict[str, _IndexInfo]] = None
    if not hashes:
        reason = "offline capture: hashing turned off"
    elif not query:
        infos, reason = {}, "nothing to look up on an index"
    else:
        infos, reason = _hash_from_index(dists, query, python_facts, pip_settings, warnings)
    online = infos is not None

    specs: Dict[str, str] = {}
    entry_hashes: Dict[str, Set[str]] = {}
    to_build: List[Mapping[str, Any]] = []
    local: List[Dict[str, Any]] = []
    for name, d in dists.items():
        info = infos.get(name) if infos else None
        specs[name] = f"{name}=={d.version}"
        if info is not None and info.hashes:
            entry_hashes[name] = set(info.hashes)
        if d.kind is None:
            continue
        if d.kind in ("local", "url") and info is not None and info.hashes:
            archive = _archive_sha256(d.raw)
            if archive is None or f"sha256:{archive}" in info.hashes:
                continue  # the index has this very release: a plain pin
        entry_hashes.pop(name, None)
        if d.kind == "vcs":
            specs[name] = f"{name} @ {d.source}"
            local.append({"name": name, "version": d.version, "kind": "vcs",
                          "source": d.source, "wheel": None, "sha256": None})
        elif d.kind == "url":
            specs[name] = f"{name} @ {d.source}"
            archive = _archive_sha256(d.raw)
            if archive:
                entry_hashes[name] = {f"sha256:{archive}"}
            local.append({"name": name, "version": d.version, "kind": "url",
                          "source": d.source, "wheel": None, "sha256": archive})
        else:
            to_build.append(d.raw)
    if to_build:
        for item in build_local_wheels(to_build, out_dir / WHEELS_DIR, training_python):
            name = item["name"]
            built = _version_from_url(item["wheel"])
            if built and not _same_version(built, item["version"]):
                warnings.append(f"{name}: installed as {item['version']} but its source now "
                                f"builds {built} (locked the wheel built from the source)")
            specs[name] = f"{name} @ {_wheel_url(item['wheel'])}"
            entry_hashes[name] = {f"sha256:{item['sha256']}"}
            local.append(item)
    local.sort(key=lambda e: e["name"])

    pinned = [n for n in dists if n not in UNSAFE]
    with_hashes = online and any(entry_hashes.get(n) for n in pinned)
    missing = sorted(n for n in pinned if not entry_hashes.get(n)) if with_hashes else []
    if online and not with_hashes and pinned:
        reason = "the index had no files for any pin (" + reason + ")"
    sdist_only: Optional[List[str]] = None
    unavailable: Optional[List[str]] = None
    if online:
        sdist_only = sorted(n for n, i in infos.items()
                            if n not in UNSAFE and specs[n].startswith(f"{n}==")
                            and i.found and not i.wheel_ok and i.sdist)
        unavailable = sorted(n for n, i in infos.items()
                             if n not in UNSAFE and specs[n].startswith(f"{n}==")
                             and i.found and not i.wheel_ok and not i.sdist)
    for n in missing:
        info = infos.get(n) if infos else None
        why = info.error if info is not None and info.error else {
            "vcs": "VCS checkout: no file to hash"}.get(dists[n].kind or "", "no hash")
        warnings.append(f"{n}: no hash ({why})")

    lock_text = _render_lock(dists, specs, entry_hashes, via, python_facts, with_hashes, missing)
    top_level = sorted(n for n in roots if n not in UNSAFE)
    in_text = ("# Top-level distributions of the captured environment (envrepro).\n"
               + "".join(specs[n] + "\n" for n in top_level))
    atomic_write_text(out_dir / REQUIREMENTS_IN, in_text)
    atomic_write_text(out_dir / LOCK_FILE, lock_text)
    return LockResult(
        count=len(pinned),
        hashes=with_hashes,
        hashes_reason=reason,
        missing_hashes=missing,
        sdist_only=sdist_only,
        unavailable=unavailable,
        local=local,
        top_level=top_level,
        lock_sha256=hashlib.sha256(lock_text.encode("utf-8")).hexdigest(),
        unsafe={n: dists[n].version for n in sorted(dists) if n in UNSAFE},
        excluded=dict(sorted(excluded.items())),
        warnings=warnings,
    )
