"""Resolve an inferred capture's requirements for its target Python (``capture --infer``), cached.

Resolution must evaluate environment markers for the *target* Python, which pip-compile can't do
for another interpreter. So pip's resolver (the one pip-tools drives) runs under an interpreter
of that version found by ``envrepro.interpreters`` (``pip install --dry-run --ignore-installed
--report``: nothing is installed); its own pip when it has ``--report`` (pip >= 22.2), else this
pip through ``pip --python``. Without such an interpreter, this pip resolves with
``--python-version --platform`` (markers then see this Python: a warning says so). Every attempt
runs with ``--only-binary :all:`` (``envrepro.packages.binaryonly``): nothing from the index is built
or run on this host; sdist-only pins get a code-free stand-in and a warning.

Many models from one training environment infer the same requirements, and each resolution
takes seconds to minutes (pip reads the index for every distribution). The result is cached in
``$XDG_CACHE_HOME/envrepro/resolutions/`` for a day, keyed by everything that decides it: the
requirements and constraints, the target Python (the interpreter's full version, or the fallback
with this one's), the platforms, and the host's pip settings (indexes, find-links).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from envrepro.packages import binaryonly
from envrepro.packages.pipcmd import pip_subprocess_env
from envrepro.packages.tfversions import vtuple
from envrepro.errors import CaptureError
from envrepro.jsoncache import JsonCache, age_text, key_of
from envrepro.sidecar import layout


@dataclass
class InferencePlan:
    """What --infer decided before touching the network."""

    tensorflow: str
    python: str                     # X.Y
    keras_flavor: str
    requirements: List[str]
    constraints: List[str]
    env: Dict[str, str] = field(default_factory=dict)
    reasons: List[str] = field(default_factory=list)   # how each version was inferred


RESOLVE_TIMEOUT = float(os.environ.get("ENVREPRO_RESOLVE_TIMEOUT", "900"))
LINUX_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                   "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64")
CACHE_TTL = 24 * 3600          # seconds: new releases reach a resolution within a day
CACHE_VERSION = 2              # changes with the cached entries' shape (2: --only-binary)


def _pip_version(python: str) -> Tuple[int, ...]:
    try:
        out = subprocess.run([python, "-m", "pip", "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=60, check=False).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return ()
    m = re.match(r"pip (\S+)", out)
    return vtuple(m.group(1)) if m else ()


def resolve_commands(p: InferencePlan, req_file: str, cons_file: str, report: str,
                     target: Optional[str], work: str) -> List[Tuple[str, List[str]]]:
    """The resolution attempts, best first, each (how, argv)."""
    common = ["install", "--dry-run", "--ignore-installed", "--report", report, "--disable-pip-version-check",
              "--no-input", "--prefer-binary", "-r", req_file, "-c", cons_file]
    cmds: List[Tuple[str, List[str]]] = []
    if target:
        if _pip_version(target) >= (22, 2):
            cmds.append((f"pip of {target} (Python {p.python}, --dry-run --report)",
                         [target, "-m", "pip"] + common))
        if _pip_version(sys.executable) >= (22, 3):
            cmds.append((f"this pip with --python {target}",
                         [sys.executable, "-m", "pip", "--python", target] + common))
    platforms = [a for plat in LINUX_PLATFORMS for a in ("--platform", plat)]
    cmds.append((f"this pip for Python {p.python} with --python-version/--platform (no Python {p.python} "
                 "interpreter found: environment markers were evaluated for this Python)",
                 [sys.executable, "-m", "pip"] + common + ["--target", os.path.join(work, "target"),
                                                           "--python-version", p.python, "--implementation",
                                                           "cp", "--only-binary=:all:"] + platforms))
    return cmds


def cache_key(p: InferencePlan, target_version: Optional[str]) -> str:
    """sha256 of everything that decides the resolution."""
    from envrepro.packages.pipconfig import pip_values_from_files_and_env

    return key_of({"version": CACHE_VERSION, "requirements": list(p.requirements),
                   "constraints": list(p.constraints), "python": p.python,
                   "target": target_version or f"fallback from {sys.version.split()[0]}",
                   "platforms": LINUX_PLATFORMS, "pip": pip_values_from_files_and_env()})


CACHE = JsonCache("resolutions", CACHE_TTL)


def cached(key: str, now: Optional[float] = None) -> Optional[Dict[str, Any]]:
    """The cached resolution under ``key`` (``dists``, ``how``, ``notes``, ``created``), or None."""
    entry = CACHE.get(key, now)
    value = entry["value"] if entry else None
    if not isinstance(value, dict) or not isinstance(value.get("dists"), list) \
            or not isinstance(value.get("how"), str):
        return None
    return dict(value, created=entry["created"])


def resolve(p: InferencePlan, target: Optional[Tuple[str, str]],
            warnings: List[str]) -> Tuple[List[Dict[str, Any]], str]:
    """Distributions (probe format: name, version, requires) of the resolved environment and how
    it was resolved. ``target`` is (interpreter, full version) of the target Python, if found."""
    key = cache_key(p, target[1] if target else None)
    entry = cached(key)
    if entry is not None:
        warnings.extend(entry.get("notes") or [])
        return entry["dists"], f"{entry['how']} (cached {age_text(entry['created'])} ago)"
    notes: List[str] = []
    dists, how = _resolve(p, target[0] if target else None, notes)
    CACHE.put(key, {"dists": dists, "how": how, "notes": notes})
    warnings.extend(notes)
    return dists, how


def _resolve(p: InferencePlan, target: Optional[str], warnings: List[str]) -> Tuple[List[Dict[str, Any]], str]:
    with tempfile.TemporaryDirectory(prefix="envrepro-infer-") as work:
        req_file, cons_file, report = (os.path.join(work, n) for n in (layout.REQUIREMENTS_IN,
                                                                       "constraints.txt", "report.json"))
        Path(req_file).write_text("\n".join(p.requirements) + "\n", encoding="utf-8")
        Path(cons_file).write_text("\n".join(p.constraints) + "\n", encoding="utf-8")
        env = pip_subprocess_env(PYTHONNOUSERSITE="1")
        failures = []
        list_versions = binaryonly.pip_index_versions([sys.executable, "-m", "pip"], p.python, env)
        for how, cmd in resolve_commands(p, req_file, cons_file, report, target, work):
            def attempt(extra: List[str], cmd: List[str] = cmd) -> Tuple[bool, str]:
                try:
                    proc = subprocess.run(cmd + extra, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          env=env, timeout=RESOLVE_TIMEOUT, cwd=work, check=False)
                    out = proc.stdout.decode("utf-8", "replace")
                    return proc.returncode == 0 and os.path.isfile(report), out
                except (OSError, subprocess.TimeoutExpired) as e:
                    return False, f"{type(e).__name__}: {e}"

            # --only-binary :all: always: resolving an sdist runs its setup.py on this host
            ok, out, stubs = binaryonly.resolve(attempt, list_versions, Path(work, "sdist-stand-ins"))
            if ok:
                data = json.loads(Path(report).read_text(encoding="utf-8"))
                if "--python-version" in cmd:
                    warnings.append(f"lock resolved by {how}")
                note = binaryonly.stubs_note(stubs)
                if note:
                    warnings.append(note)
                return [{"name": it["metadata"]["name"], "version": it["metadata"]["version"],
                         "requires": list(it["metadata"].get("requires_dist") or []),
                         "direct_url": None, "requested": bool(it.get("requested"))}
                        for it in data.get("install") or []], how
            tail = "\n".join(l for l in out.strip().splitlines()[-6:])
            failures.append(f"[{how}]\n{tail}")
    raise CaptureError("could not resolve an environment for " + " ".join(p.requirements) + " with "
                       + ", ".join(p.constraints) + ":\n" + "\n".join(failures), None,
                       f"install Python {p.python} with pyenv (`pyenv install {p.python}`), check the network "
                       "or the index configuration")
