"""Who needs whom among the installed distributions, for the training interpreter.

The lock pins what is installed (nothing is resolved); this module works out the ``# via``
annotations and the top-level distributions (``requirements.in``) from each distribution's
Requires-Dist, with the environment markers evaluated for the *training* Python and platform,
which may be another interpreter than this one (extras included).

``packaging`` is imported only when a lock is made, never at import time (the save hook imports
the capture path inside training jobs).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from envrepro.packages.pipcmd import packaging_module
from envrepro.packages.localwheels import classify
from envrepro.sidecar.lockfile import canonical_name

# Never pinned: pip comes with the image; envrepro itself is recorded in the manifest.
EXCLUDED = frozenset({"pip", "envrepro"})


def _marker_class() -> Any:
    return packaging_module("markers").Marker


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
class Dist:
    name: str                   # canonical
    version: str
    requires: Sequence[str]
    raw: Mapping[str, Any]
    kind: Optional[str] = None  # editable | local | vcs | url | None (index)
    source: Optional[str] = None


def collect_distributions(distributions: Iterable[Mapping[str, Any]]
             ) -> Tuple[Dict[str, Dist], Dict[str, str], List[str]]:
    """Installed dists by canonical name (first wins, like sys.path), the excluded ones."""
    dists: Dict[str, Dist] = {}
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
        kind, source = classify(raw)
        dists[key] = Dist(key, str(version), list(raw.get("requires") or ()), raw, kind, source)
    return dists, excluded, warnings


def dependency_graph(dists: Mapping[str, Dist], env: Dict[str, str], warnings: List[str]
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


def top_level_names(parents: Mapping[str, Set[str]]) -> Set[str]:
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
