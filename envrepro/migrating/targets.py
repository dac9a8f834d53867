"""Where a migration goes: the target TensorFlow/Keras, always as an environment image.

The target side imports the capture's custom code and deserializes its config, so it runs in the
sandbox like any load, never in a host interpreter. What the user names is turned into a lock:

* ``--to 2.21``: the CPU distribution of that TensorFlow (its last patch when only the minor is
  given) on the Python most of its users had, resolved like ``capture --infer`` resolves one
  (tfversions.yaml's known-good pins as constraints, pip's resolver for the target Python);
* ``--python PATH``: that interpreter's own TensorFlow, Keras and numpy versions, pinned;
* neither: the same for the interpreter envrepro runs under, when it has TensorFlow.

ONNX (docs/migrate.md, "ONNX"): a ``--to`` target also asks for ``tf2onnx`` and ``onnxruntime``,
a ``--python`` one for the versions that interpreter has (only when they import there). They are
resolved after the target's own lock, with every version of that lock pinned: they are added
only when nothing the target would otherwise get moves; else the target is resolved without them
and ``Target.onnx_facts`` (the report's ``target.onnx``) says why there is no ``.onnx``.

The resolved lock is kept under the cache (``migrate-targets/``), keyed by what was asked, and
read back as an in-memory :class:`Capture` that ``image.ensure`` builds like any other: a target
image is an ordinary environment image, shared with any capture whose lock is the same.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from envrepro import config, errors
from envrepro.sidecar.manifest import Capture

MIN_TARGET = (2, 12)   # the first TensorFlow whose Keras writes .keras files
TARGET_DIR = "migrate-targets"
LOCK = "requirements.lock"
FACTS = "target.json"

# ONNX beside the target's TensorFlow: tf2onnx converts the SavedModel, onnxruntime runs the
# result. The floors keep pip from backtracking to releases older than any target TensorFlow.
ONNX_PACKAGES = ("tf2onnx", "onnxruntime")
ONNX_REQUIREMENTS = ("tf2onnx>=1.16", "onnxruntime>=1.16")
ONNX_RULE = 1          # in the lock's key: changes with how ONNX is added to a target
ONNX_IMPORT = "import onnxruntime, tf2onnx, tf2onnx.convert"
# Releases that import more than their metadata requires: (a distribution of the target's lock,
# the least version of it they need, the constraint that keeps them out when the lock has less
# than that). onnx 1.19 uses
# ml_dtypes.float4_e2m1fn (ml_dtypes 0.5) but requires any ml_dtypes: beside TF 2.14-2.17's
# ml_dtypes 0.2-0.4 tf2onnx would not import.
ONNX_GAPS = (("ml-dtypes", (0, 5), "onnx<1.19"),)

# Read without importing TensorFlow (seconds): the versions the interpreter has installed.
_VERSIONS = r"""
import json, platform, sys
try:
    from importlib import metadata
    def version(n):
        try:
            return metadata.version(n)
        except Exception:
            return None
except ImportError:
    import pkg_resources
    def version(n):
        try:
            return pkg_resources.get_distribution(n).version
        except Exception:
            return None
names = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "keras", "tf-keras", "numpy",
         "tf2onnx", "onnxruntime")
print(json.dumps({"python": platform.python_version(), "versions": dict((n, version(n)) for n in names)}))
"""


@dataclass(frozen=True)
class Target:
    """What the migration's target environment is, before it is resolved into a lock."""

    tensorflow: str                 # X.Y.Z
    python: str                     # X.Y
    how: str                        # what the user asked for, as a report says it
    keras: Optional[str] = None     # pinned when the interpreter named one
    numpy: Optional[str] = None
    requirements: List[str] = field(default_factory=list)
    constraints: List[str] = field(default_factory=list)
    keras_flavor: str = "keras3"
    # tf2onnx/onnxruntime requirements to add beside TensorFlow (empty: none asked), and what
    # became of them: {"included": bool, "why_not", "tf2onnx", "onnxruntime", "added"}. Filled
    # by target_capture (a Target is frozen, this dict is its one changing part).
    onnx: List[str] = field(default_factory=list)
    onnx_facts: Dict[str, Any] = field(default_factory=dict, compare=False)

    def key(self) -> str:
        parts: List[Any] = [self.tensorflow, self.python, self.requirements, self.constraints]
        if self.onnx:
            parts.append({"onnx": list(self.onnx), "rule": ONNX_RULE})
        text = json.dumps(parts)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> Dict[str, Any]:
        return {"tensorflow": self.tensorflow, "python": self.python, "keras": self.keras,
                "numpy": self.numpy, "how": self.how, "requirements": list(self.requirements),
                "onnx": dict(self.onnx_facts) or None}


def _row(version: str, what: str) -> Dict[str, Any]:
    from envrepro.packages import tfversions

    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", version or ""):
        raise errors.EnvreproError(f"not a TensorFlow version: {version!r}", what,
                                   "pass a release such as 2.21 or 2.15.1")
    row = tfversions.for_tf(version)
    known = tfversions.known_minors()
    if not row or tfversions.vtuple(version)[:2] != tfversions.vtuple(row.get("minor"))[:2]:
        raise errors.EnvreproError(f"unknown TensorFlow version {version}: envrepro knows "
                                   f"{known[0]} .. {known[-1]}", what,
                                   f"pass one of them (--to {known[-1]}), or upgrade envrepro")
    if tfversions.vtuple(version)[:2] < MIN_TARGET:
        raise errors.EnvreproError(f"TensorFlow {version} can't be a migration target: its Keras "
                                   "writes no .keras file", what,
                                   f"migrate to {'.'.join(map(str, MIN_TARGET))} or newer (--to {known[-1]})")
    return row


def _constraints(tf: str, named: List[str]) -> List[str]:
    from envrepro.packages import tfversions

    taken = {tfversions.canonical(re.split(r"[=<>~!]", r, 1)[0]) for r in named}
    return [f"{n}=={v}" for n, v in sorted(tfversions.pins(tf).items()) if n not in taken]


def to_version(version: str) -> Target:
    """``--to VERSION``: that TensorFlow on the Python most of its users had."""
    from envrepro.packages import tfversions

    row = _row(version, "--to")
    tf = version if version.count(".") == 2 else str(row["latest"])
    reqs = [f"{row['cpu_distribution']}=={tf}"]
    return Target(tensorflow=tf, python=str(row["python_likely"]), how=f"--to {version}",
                  requirements=reqs, constraints=_constraints(tf, reqs),
                  keras_flavor=str(tfversions.keras_flavor_for(tf) or "keras3"),
                  onnx=list(ONNX_REQUIREMENTS))


def interpreter_versions(python: str) -> Dict[str, Any]:
    """The Python and package versions of an interpreter, without importing TensorFlow."""
    try:
        proc = subprocess.run([python, "-I", "-c", _VERSIONS], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise errors.EnvreproError(f"can't run this Python: {e}", python,
                                   "pass the path of a Python interpreter (--python)") from None
    try:
        return dict(json.loads(proc.stdout.decode().strip().splitlines()[-1]))
    except (ValueError, IndexError):
        raise errors.EnvreproError("can't read this Python's packages (exit %d)" % proc.returncode,
                                   python, "pass the path of a Python interpreter (--python)") from None


def from_interpreter(python: Optional[str] = None) -> Target:
    """``--python PATH``, or this interpreter: its TensorFlow, Keras and numpy, pinned."""
    from envrepro.packages import tfversions

    exe = python or sys.executable
    facts = interpreter_versions(exe)
    v = facts.get("versions") or {}
    tf = v.get("tensorflow") or v.get("tensorflow-cpu") or v.get("tensorflow-intel")
    what = f"--python {exe}" if python else f"this Python ({exe})"
    if not tf:
        raise errors.EnvreproError("the migration target has no TensorFlow", exe,
                                   "install TensorFlow there, pass --python PATH of one that has it, "
                                   "or pass --to VERSION (e.g. --to 2.21)")
    tf = re.match(r"\d+\.\d+\.\d+", tf).group(0) if re.match(r"\d+\.\d+\.\d+", tf) else tf
    row = _row(tf, exe)
    reqs = [f"{row['cpu_distribution']}=={tf}"]
    keras, flavor = v.get("keras"), str(tfversions.keras_flavor_for(tf) or "keras3")
    if keras and tfversions.vtuple(keras)[:1] >= (3,) and flavor == "keras3":
        reqs.append(f"keras=={keras}")
    if v.get("numpy"):
        reqs.append(f"numpy=={v['numpy']}")
    onnx, why_not = _interpreter_onnx(exe, v)
    return Target(tensorflow=tf, python=str(tfversions.minor_of(facts.get("python"))), how=what,
                  keras=keras, numpy=v.get("numpy"), requirements=reqs,
                  constraints=_constraints(tf, reqs), keras_flavor=flavor, onnx=onnx,
                  onnx_facts={} if onnx else {"included": False, "why_not": why_not})


def _interpreter_onnx(exe: str, versions: Dict[str, Any]) -> Tuple[List[str], Optional[str]]:
    """An interpreter's tf2onnx and onnxruntime, pinned, when both are installed and import
    there (importing tf2onnx imports TensorFlow: seconds); else ``([], why not)``."""
    absent = [n for n in ONNX_PACKAGES if not versions.get(n)]
    if absent:
        return [], (f"{' and '.join(absent)} {'is' if len(absent) == 1 else 'are'} not installed in "
                    f"{exe} (the target gets that interpreter's packages: install tf2onnx and "
                    "onnxruntime there, or pass --to VERSION)")
    try:
        proc = subprocess.run([exe, "-I", "-c", ONNX_IMPORT], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=300,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        failed = proc.returncode != 0
        last = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or [""])[-1]
    except (OSError, subprocess.TimeoutExpired) as e:
        failed, last = True, str(e)
    if failed:
        return [], f"tf2onnx/onnxruntime don't import in {exe}: {last[:200]}"
    return [f"{n}=={versions[n]}" for n in ONNX_PACKAGES], None


def choose(python: Optional[str] = None, to: Optional[str] = None) -> Target:
    """The target the options name (``--to`` and ``--python`` exclude each other)."""
    if python and to:
        raise errors.EnvreproError("--to and --python both name a target", None, "pass one of them")
    if to:
        return to_version(to)
    return from_interpreter(python)


def _facts(t: Target, full_python: str) -> Dict[str, Any]:
    return {"python": {"version": full_python, "implementation": "CPython", "sys_platform": "linux",
                       "machine": "x86_64"},
            "frameworks": {"tensorflow": t.tensorflow, "keras": t.keras, "keras_flavor": t.keras_flavor},
            "target": t.to_dict()}


def target_capture(t: Target, say: Any = None) -> Capture:
    """The target as an in-memory capture over a resolved lock (kept under the cache)."""
    from envrepro.fsutil import atomic_write_text, replace_dir
    from envrepro.interpreters import find_interpreter
    from envrepro.packages.indexhashes import hashes_wanted
    from envrepro.packages.lockwriter import write_lock
    from envrepro.packages.resolution import InferencePlan, resolve

    folder = config.cache_dir() / TARGET_DIR / f"tf{t.tensorflow}-py{t.python}-{t.key()}"
    facts_file = folder / FACTS
    if (folder / LOCK).is_file() and facts_file.is_file():
        try:
            data = json.loads(facts_file.read_text(encoding="utf-8"))
            onnx = (data.get("target") or {}).get("onnx")
            if isinstance(onnx, dict):
                t.onnx_facts.update(onnx)
            return Capture(root=folder, data=data)
        except (ValueError, AttributeError):
            pass
    warnings: List[str] = []
    interp = find_interpreter(t.python)
    plan = InferencePlan(tensorflow=t.tensorflow, python=t.python, keras_flavor=t.keras_flavor,
                         requirements=list(t.requirements), constraints=list(t.constraints))
    if say is not None:
        say(f"resolving the target environment: TensorFlow {t.tensorflow} on Python {t.python}")
    dists, _how = resolve(plan, interp, warnings)
    if t.onnx:
        dists = with_onnx(t, interp, dists, warnings, say)
    data = _facts(t, interp[1] if interp else t.python)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    write_lock(dists, data["python"], tmp, hashes=hashes_wanted())
    atomic_write_text(tmp / FACTS, json.dumps(data, indent=2, sort_keys=True))
    replace_dir(tmp, folder)
    return Capture(root=Path(folder), data=data)


def with_onnx(t: Target, interp: Any, base: List[Dict[str, Any]], base_notes: List[str],
              say: Any = None) -> List[Dict[str, Any]]:
    """The target's distributions with tf2onnx and onnxruntime added, resolved with every
    version of ``base`` (the target's own resolution) pinned; ``base`` itself when they can't be
    added without moving one of them. ``t.onnx_facts`` says which and why."""
    from envrepro.packages.resolution import InferencePlan, resolve
    from envrepro.packages.tfversions import canonical, vtuple

    before = {canonical(d["name"]): str(d["version"]) for d in base}
    gaps = [keep_out for name, least, keep_out in ONNX_GAPS
            if name in before and vtuple(before[name]) < least]
    plan = InferencePlan(tensorflow=t.tensorflow, python=t.python, keras_flavor=t.keras_flavor,
                         requirements=list(t.requirements) + list(t.onnx),
                         constraints=[f"{n}=={v}" for n, v in sorted(before.items())] + gaps)
    beside = f"TensorFlow {t.tensorflow} on Python {t.python}"
    if say is not None:
        say(f"resolving tf2onnx and onnxruntime beside {beside}")
    notes: List[str] = []
    try:
        dists, _how = resolve(plan, interp, notes)
    except errors.EnvreproError as e:
        t.onnx_facts.update(included=False, why_not=f"tf2onnx/onnxruntime can't be installed beside "
                            f"{beside} without changing a version of its lock: {conflict(str(e))}")
        return base
    after = {canonical(d["name"]): str(d["version"]) for d in dists}
    moved = [f"{n} {v} -> {after.get(n, 'none')}" for n, v in sorted(before.items()) if after.get(n) != v]
    absent = [n for n in ONNX_PACKAGES if n not in after]
    added = sorted(set(after) - set(before))
    stood_in = [n for n in added if any(n in note.replace("_", "-").lower() and
                                        "only source distributions" in note
                                        for note in notes if note not in base_notes)]
    why = (f"adding tf2onnx/onnxruntime would change {', '.join(moved)}" if moved else
           f"the resolution has no {', '.join(absent)}" if absent else
           f"{', '.join(stood_in)}: no wheel for Python {t.python} (only a source distribution)"
           if stood_in else None)
    if why:
        t.onnx_facts.update(included=False, why_not=f"{why} ({beside}): resolved without them")
        return base
    t.onnx_facts.update(included=True, why_not=None, tf2onnx=after["tf2onnx"],
                        onnxruntime=after["onnxruntime"],
                        added=[f"{n}=={after[n]}" for n in added])
    return dists


def conflict(message: str) -> str:
    """pip's reason from a failed resolution's message, in one line."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    said = [ln for ln in lines if " depends on " in ln or ln.startswith(("The user requested",
                                                                          "ERROR: Cannot install",
                                                                          "ERROR: Could not find",
                                                                          "ERROR: No matching"))]
    seen: List[str] = []
    for ln in said or [ln for ln in lines if ln.startswith("ERROR")] or lines[:1]:
        if ln not in seen:
            seen.append(ln)
    text = "; ".join(seen[:4])
    return text if len(text) <= 400 else text[:397] + "..."
