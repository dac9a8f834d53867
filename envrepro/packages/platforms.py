"""Captures made on macOS or Windows translated for Linux, and any capture translated for a GPU
image (``--gpus``), before an image is built.

A lock resolved on macOS or Windows is not a Linux lock (docs/architecture.md): it pins
``tensorflow-macos`` or ``tensorflow-intel``, GPU plugins such as ``tensorflow-metal``, packages
that only those platforms need, and misses what only Linux needs. A lock with ``tensorflow-cpu``
has no GPU kernels. envrepro images are Linux, so such a capture is built from a *translated* lock:

1. the mapping table: TensorFlow's platform builds become the Linux distribution of the same
   version (``tensorflow-cpu`` when it has a Linux wheel for the captured Python and no GPU is
   asked for, else ``tensorflow``), or are dropped when the lock already pins that Linux
   distribution (``tensorflow`` 2.13+ on macOS requires ``tensorflow-macos``); platform-only
   packages (``tensorflow-metal``, ``pywin32``, ``pyobjc``...) are dropped. For a GPU image,
   TensorFlow becomes its GPU build of the same version (``envrepro.packages.gpu``:
   ``tensorflow[and-cuda]`` from 2.14, whose CUDA comes as pip wheels);
2. the rest is re-resolved for Linux with pip-tools (``envrepro.packages.compile``): the captured top-level
   distributions pinned ``==``, every other captured pin a constraint, so most pins stay
   identical; what only macOS/Windows needed (``colorama`` through ``click`` on Windows,
   ``appnope``) falls out, what Linux (or the GPU build: ``nvidia-*``) needs more is added;
3. hashes come from the index (``envrepro.packages.lockwriter.lookup_index``), which also checks that every
   pin has a Linux wheel or an sdist.

The translated lock and its differences are cached on the host (``envrepro.packages.translation``).
Packages that can't be had for Linux stop the load before anything is built, all named at once
(``errors.PlatformError``, exit code 4).
"""
from __future__ import annotations

import dataclasses
import platform as _platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from envrepro.packages import gpu as gpus
from envrepro.packages.compile import ResolutionFailed
from envrepro.packages.pipconfig import pip_mapping
from envrepro.packages.translation import (FOREIGN, TARGET_NAMES, Change, Translation, cache_folder, cached,
                                        diff, platform_name, store)
from envrepro.packages import indexhashes
from envrepro.errors import PlatformError
from envrepro.sidecar import layout, lockfile
from envrepro.sidecar.manifest import Capture

__all__ = ["Change", "Translation", "diff", "translate", "make_plan", "is_foreign", "FOREIGN"]
# TensorFlow built for one platform, replaced by the Linux distribution of the same version.
TF_PLATFORM_BUILDS = {"tensorflow-macos": "macOS", "tensorflow-intel": "Windows"}
LINUX_TF = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu")
# Dropped wherever they appear (as top-level distributions too), with the reason shown.
DROPPED = {
    "tensorflow-metal": "Apple GPU plugin (Metal), no Linux build",
    "tensorflow-directml-plugin": "DirectML GPU plugin for Windows, no Linux build",
    "jax-metal": "Apple GPU plugin (Metal), no Linux build",
    "mlx": "Apple silicon only", "mlx-metal": "Apple silicon only",
    "appnope": "macOS only", "pyobjc": "macOS only", "pyobjc-core": "macOS only",
    "pywin32": "Windows only", "pywin32-ctypes": "Windows only", "pypiwin32": "Windows only",
    "pywinpty": "Windows only", "wmi": "Windows only", "comtypes": "Windows only",
    "windows-curses": "Windows only",
}
DROPPED_PREFIXES = {"pyobjc-framework-": "macOS only"}
# Platform plugins whose captured pin may lack a Linux wheel for the captured Python: constrained
# only when it has one, else left to the resolver (the difference is reported).
SOFT = frozenset({"tensorflow-io-gcs-filesystem"})

Say = Callable[[str], None]
Resolver = Callable[[str, str, str], str]          # (requirements.in, constraints.txt, X.Y)
Lookup = Callable[[Mapping[str, str], Mapping[str, Any]],
                  Tuple[Optional[Dict[str, indexhashes.IndexInfo]], str]]


# -- detection -----------------------------------------------------------------------------------
def capture_platform(capture: Capture) -> str:
    """``sys.platform`` of the training interpreter (``python.sys_platform``, else the prefix of
    ``lock.platform``); "" when the manifest doesn't say."""
    value = capture.get("python.sys_platform") or str(capture.get("lock.platform") or "").split("_")[0]
    return str(value or "").lower()


def is_foreign(capture: Capture) -> bool:
    """True for a capture made on macOS or Windows: its lock must be translated for Linux."""
    return capture_platform(capture) in FOREIGN


def linux_target(capture: Capture, machine: Optional[str] = None) -> Dict[str, Any]:
    """Marker/tag facts of the image: the captured Python, Linux, this host's machine (the local
    engine builds for it, whatever the training machine was)."""
    return {"version": str(capture.get("python.version") or ""), "sys_platform": "linux",
            "machine": machine or _platform.machine() or "x86_64",
            "implementation": str(capture.get("python.implementation") or "CPython")}


# -- the mapping table ---------------------------------------------------------------------------
@dataclass
class Plan:
    """What goes to the resolver, from the captured entries and the mapping table."""

    requirements: List[str]             # top-level pins (mapped names), one a line
    constraints: List[str]              # every other captured pin that Linux may need
    keep: List[lockfile.LockEntry]       # direct references (local wheels, VCS, URLs), as captured
    changes: List[Change]               # mapped and dropped by the table
    unavailable: List[str]              # "name version: why" of what Linux can't have


def dropped_reason(name: str) -> Optional[str]:
    if name in DROPPED:
        return DROPPED[name]
    return next((why for prefix, why in DROPPED_PREFIXES.items() if name.startswith(prefix)), None)


def tf_candidates(gpu: bool, version: str = "") -> Tuple[str, ...]:
    """Linux TensorFlow distributions to try for ``version``, in order (tensorflow-cpu has no
    release for some versions; a GPU image needs the GPU build: ``envrepro.packages.gpu``)."""
    return (gpus.gpu_distribution(version),) if gpu else ("tensorflow-cpu", "tensorflow")


def _roots(entries: Sequence[lockfile.LockEntry]) -> Set[str]:
    """Top-level distributions (``# via -r requirements.in``), plus what the kept direct
    references need; every entry when the lock has no annotations at all."""
    if not any(e.via for e in entries):
        return {e.name for e in entries}
    roots = {e.name for e in entries if any(v.strip().startswith("-r") for v in e.via)}
    direct = {e.name for e in entries if e.url}
    return roots | {e.name for e in entries if set(e.parents) & direct}


def _wheel_ok_for_linux(url: str, target_tags: Set[Tuple[str, str, str]]) -> bool:
    filename = url.rsplit("/", 1)[-1].split("#", 1)[0]
    return not filename.endswith(".whl") or bool(indexhashes.wheel_tags(filename) & target_tags)


def make_plan(entries: Sequence[lockfile.LockEntry], platform: str,
              choose_tf: Callable[[str], Optional[str]], keep_soft: Callable[[str, str], bool],
              target_tags: Optional[Set[Tuple[str, str, str]]] = None, gpu: bool = False) -> Plan:
    """Apply the mapping table. ``choose_tf(version)``: the Linux TensorFlow distribution that
    has that version (None: none has); ``keep_soft(name, version)``: keep a SOFT pin; ``gpu``:
    TensorFlow becomes its GPU build. The commented "unsafe" pins (setuptools, wheel) are
    constraints only."""
    unsafe = [e for e in entries if e.unsafe and e.version]
    entries = [e for e in entries if not e.unsafe]
    roots = _roots(entries)
    linux_tf = {e.version for e in entries if e.name in LINUX_TF and e.version}
    plan = Plan([], [], [], [], [])
    where = platform_name(platform)
    for e in sorted(entries, key=lambda e: e.name):
        why = dropped_reason(e.name)
        to_gpu = gpus.mapped_for_gpu(e, entries) if gpu else None
        if why:
            plan.changes.append(Change("dropped", e.name, e.version, reason=why))
        elif to_gpu:
            if gpus.base_name(to_gpu) != e.name and choose_tf(e.version or "") is None:
                plan.unavailable.append(f"{e.name} {e.version}: no Linux GPU build of TensorFlow "
                                        f"{e.version} for this Python")
                continue
            libs = gpus.libraries(to_gpu)
            plan.changes.append(Change("mapped", e.name, e.version, to_gpu, e.version, libs
                                       if gpus.base_name(to_gpu) == e.name
                                       else f"GPU build of the same version, {libs}"))
            plan.requirements.append(f"{to_gpu}=={e.version}")
        elif e.name in TF_PLATFORM_BUILDS:
            if e.version in linux_tf:
                plan.changes.append(Change("dropped", e.name, e.version, reason=(
                    f"{TF_PLATFORM_BUILDS[e.name]} build of tensorflow {e.version}, "
                    "which the lock pins for Linux")))
                continue
            new = choose_tf(e.version or "")
            if new is None:
                plan.unavailable.append(f"{e.name} {e.version}: no Linux {'GPU ' if gpu else ''}"
                                        f"build of TensorFlow {e.version} for this Python")
                continue
            why = f"Linux build of the {where} TensorFlow"
            if gpu:
                new = gpus.gpu_requirement(new, e.version or "")
                why = f"Linux GPU build of the {where} TensorFlow, {gpus.libraries(new)}"
            plan.changes.append(Change("mapped", e.name, e.version, new, e.version, why))
            plan.requirements.append(f"{new}=={e.version}")
        elif e.url:
            if target_tags is not None and not _wheel_ok_for_linux(e.url, target_tags):
                plan.unavailable.append(f"{e.name} {e.version or ''}: the wheel in the capture "
                                        f"({e.url.rsplit('/', 1)[-1]}) is built for {where}")
            else:
                plan.keep.append(e)
        elif not e.version:
            plan.requirements.append(e.requirement)
        else:
            pin = f"{e.name}=={e.version}"
            soft_free = e.name in SOFT and not keep_soft(e.name, e.version)
            if not soft_free:
                plan.constraints.append(pin)
            if e.name in roots:
                plan.requirements.append(e.name if soft_free else pin)
    names = {e.name for e in entries}
    plan.constraints += [f"{e.name}=={e.version}" for e in unsafe if e.name not in names]
    return plan


# -- translate -----------------------------------------------------------------------------------
def _refuse(capture: Capture, where: str, gpu: bool, items: Sequence[str]) -> PlatformError:
    what = "Linux GPU build" if gpu else "Linux build"
    fix = ("load it without --gpus, or capture with a TensorFlow version that has a Linux GPU "
           "build for this Python" if gpu else
           "install versions that exist for Linux in the training environment and capture "
           "again, or capture on Linux")
    return PlatformError(
        f"this {where} capture can't be built for {TARGET_NAMES[_target(gpu)]}; no {what} of:\n"
        + "\n".join(f"  - {i}" for i in items), str(capture.lock_path), fix)


def _target(gpu: bool) -> str:
    return "linux-gpu" if gpu else "linux"


def _lookup_with(pip: Any) -> Lookup:
    def lookup(pins: Mapping[str, str], facts: Mapping[str, Any]
               ) -> Tuple[Optional[Dict[str, indexhashes.IndexInfo]], str]:
        return indexhashes.lookup_index(pins, facts, pip_mapping(pip))
    return lookup


def translate(capture: Capture, cache: Path, gpu: bool = False, pip: Any = None,
              say: Optional[Say] = None, resolver: Optional[Resolver] = None,
              lookup: Optional[Lookup] = None, machine: Optional[str] = None) -> Translation:
    """The capture's lock translated for Linux, or with ``gpu`` for a Linux GPU image (from the
    cache when it was made before).

    ``resolver`` and ``lookup`` default to pip-compile (``envrepro.packages.compile``) and the index
    (``envrepro.packages.lockwriter.lookup_index``) with ``pip``'s settings; tests pass fakes.
    """
    say = say or (lambda line: None)
    plat = capture_platform(capture)
    xy = ".".join(str(capture.get("python.version") or "").split(".")[:2])
    hit = cached(capture.lock_path, _target(gpu), cache, plat, xy)
    if hit is not None:
        return hit
    where, foreign = platform_name(plat), plat in FOREIGN
    target = linux_target(capture, machine)
    lookup = lookup or _lookup_with(pip)
    resolver_notes: List[str] = []
    if resolver is None:
        from envrepro.packages import compile as resolve

        def resolver(requirements: str, constraints: str, python_xy: str) -> str:
            return resolve.pip_compile(requirements, constraints, python_xy, pip, cache, say,
                                       notes=resolver_notes)

    captured = capture.lock.every
    say(f"The capture was made on {where}: translating its lock for {TARGET_NAMES[_target(gpu)]}"
        if foreign else "Translating the capture's lock for GPUs: the GPU build of its "
        "TensorFlow, under the captured pins")
    # One index round trip for what the table needs to know: which Linux TensorFlow exists for
    # each platform build's (or CPU build's) version, and whether SOFT pins have a Linux wheel.
    ask: Dict[str, str] = {}
    for e in captured:
        if e.version and (e.name in TF_PLATFORM_BUILDS or (gpu and gpus.mapped_for_gpu(e, captured))):
            ask.update({n: e.version for n in tf_candidates(gpu, e.version)})
        elif e.name in SOFT and e.version:
            ask[e.name] = e.version
    infos = lookup(ask, target)[0] if ask else {}

    def has_wheel(name: str, version: str) -> Optional[bool]:
        info = (infos or {}).get(name)
        if infos is None or info is None or ask.get(name) != version:
            return None                              # unknown (offline)
        return bool(info.wheel_ok)

    def choose_tf(version: str) -> Optional[str]:
        candidates = tf_candidates(gpu, version)
        answers = [(n, has_wheel(n, version)) for n in candidates]
        if all(a is None for _, a in answers):
            return candidates[-1]                    # offline: the one that exists for all
        return next((n for n, a in answers if a), None)

    plan = make_plan(captured, plat, choose_tf, lambda n, v: has_wheel(n, v) is not False,
                     indexhashes.linux_target_tags(target), gpu)
    if plan.unavailable:
        raise _refuse(capture, where, gpu, plan.unavailable)
    requirements = "-c constraints.txt\n" + "".join(r + "\n" for r in plan.requirements)
    try:
        resolved_text = resolver(requirements, "".join(c + "\n" for c in plan.constraints), xy)
    except ResolutionFailed as e:
        missing = _unavailable_pins(plan, e.missing, target, lookup)
        if missing:
            raise _refuse(capture, where, gpu, missing) from None
        raise PlatformError(e.what, str(capture.lock_path), e.fix or (
            "the captured versions don't resolve together "
            + ("with TensorFlow's GPU build" if gpu else "on Linux") + "; see the resolver output"
        )) from None
    # A lock names distributions: the extras pip-compile may echo (tensorflow[and-cuda]) are
    # dropped, their distributions are pinned on their own lines.
    resolved = [dataclasses.replace(e, spec="") if "[" in e.spec and not e.url else e
                for e in lockfile.parse_lock(resolved_text) if not e.unsafe]
    if gpu:
        _check_no_cpu_build(capture, resolved)
    pins = {e.name: e.version for e in resolved if e.version and not e.url}
    infos2, reason = lookup(pins, target) if pins else ({}, "")
    notes: List[str] = list(resolver_notes)
    if infos2 is None:
        notes.append(f"no hashes in the translated lock ({reason})")
        infos2 = {}
    bad = sorted(f"{n} {pins[n]}: neither a Linux wheel nor an sdist" for n, i in infos2.items()
                 if i.found and not i.wheel_ok and not i.sdist)
    if bad:
        raise _refuse(capture, where, gpu, bad)
    hashed = [dataclasses.replace(e, hashes=tuple(sorted(infos2[e.name].hashes)))
              if e.name in infos2 and infos2[e.name].hashes else e for e in resolved]
    final = hashed + [e for e in plan.keep if e.name not in pins]
    changes = diff(captured, final, plan.changes, "on Linux" if not gpu else
                   "on Linux with GPUs" if foreign else "by the GPU build")
    header = [f"Translated for {TARGET_NAMES[_target(gpu)]} by envrepro from a lock captured on "
              f"{where} (Python {xy}):",
              ("TensorFlow mapped to its GPU build" if gpu else "TensorFlow's platform builds mapped")
              + ", the rest re-resolved with pip-tools,",
              "the captured versions as constraints. Differences from the capture:"] + \
        [f"  {c.text()}" for c in changes] + [""]
    folder = cache_folder(capture.lock_path, _target(gpu), cache)
    t = Translation(plat, lockfile.render_lock_text(final, header), folder / layout.LOCK_FILE,
                    changes, xy, notes, _target(gpu))
    store(folder, t)
    return t


def _check_no_cpu_build(capture: Capture, resolved: Sequence[lockfile.LockEntry]) -> None:
    """A GPU lock that still needs a CPU build of TensorFlow (a package requires it by name)
    would install both into one ``tensorflow`` module: refused, naming who needs it."""
    for e in resolved:
        if e.name in gpus.CPU_BUILDS:
            who = ", ".join(e.parents) or "a captured requirement"
            raise PlatformError(f"{who} requires {e.name}, which can't be installed beside "
                                "TensorFlow's GPU build", str(capture.lock_path),
                                "load it without --gpus")


def _unavailable_pins(plan: Plan, named: Sequence[str], target: Mapping[str, Any],
                      lookup: Lookup) -> List[str]:
    """After a failed resolution: which of the top-level pins, and of the pins the resolver
    named, have no Linux file (constraints Linux never needs are not to blame)."""
    suspects = {lockfile.canonical_name(n) for n in named}
    pins: Dict[str, str] = {}
    for i, line in enumerate(plan.requirements + plan.constraints):
        if "==" in line:
            name, version = (x.strip() for x in line.split("==", 1))
            name = gpus.base_name(name)                     # tensorflow[and-cuda]
            if i < len(plan.requirements) or name in suspects:
                pins[name] = version
    infos, _ = lookup(pins, target) if pins else ({}, "")
    out = []
    for name, info in sorted((infos or {}).items()):
        if info.found and not info.wheel_ok and not info.sdist:
            out.append(f"{name} {pins[name]}: neither a Linux wheel nor an sdist")
        elif not info.found and info.error == "not on the index":
            out.append(f"{name} {pins[name]}: not on the package index")
    return out
