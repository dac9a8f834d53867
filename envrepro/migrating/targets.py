"""Where a migration goes: the target TensorFlow/Keras, always as an environment image.

The target side imports the capture's custom code and deserializes its config, so it runs in the
sandbox like any load, never in a host interpreter. What the user names is turned into a lock:

* ``--to 2.21``: the CPU distribution of that TensorFlow (its last patch when only the minor is
  given) on the Python most of its users had, resolved like ``capture --infer`` resolves one
  (tfversions.yaml's known-good pins as constraints, pip's resolver for the target Python);
* ``--python PATH``: that interpreter's own TensorFlow, Keras and numpy versions, pinned;
* neither: the same for the interpreter envrepro runs under, when it has TensorFlow.

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
from typing import Any, Dict, List, Optional

from envrepro import config, errors
from envrepro.sidecar.manifest import Capture

MIN_TARGET = (2, 12)   # the first TensorFlow whose Keras writes .keras files
TARGET_DIR = "migrate-targets"
LOCK = "requirements.lock"
FACTS = "target.json"

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
names = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "keras", "tf-keras", "numpy")
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

    def key(self) -> str:
        text = json.dumps([self.tensorflow, self.python, self.requirements, self.constraints])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> Dict[str, Any]:
        return {"tensorflow": self.tensorflow, "python": self.python, "keras": self.keras,
                "numpy": self.numpy, "how": self.how, "requirements": list(self.requirements)}


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
                  keras_flavor=str(tfversions.keras_flavor_for(tf) or "keras3"))


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
    return Target(tensorflow=tf, python=str(tfversions.minor_of(facts.get("python"))), how=what,
                  keras=keras, numpy=v.get("numpy"), requirements=reqs,
                  constraints=_constraints(tf, reqs), keras_flavor=flavor)


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
            return Capture(root=folder, data=json.loads(facts_file.read_text(encoding="utf-8")))
        except ValueError:
            pass
    warnings: List[str] = []
    interp = find_interpreter(t.python)
    plan = InferencePlan(tensorflow=t.tensorflow, python=t.python, keras_flavor=t.keras_flavor,
                         requirements=list(t.requirements), constraints=list(t.constraints))
    if say is not None:
        say(f"resolving the target environment: TensorFlow {t.tensorflow} on Python {t.python}")
    dists, _how = resolve(plan, interp, warnings)
    data = _facts(t, interp[1] if interp else t.python)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    write_lock(dists, data["python"], tmp, hashes=hashes_wanted())
    atomic_write_text(tmp / FACTS, json.dumps(data, indent=2, sort_keys=True))
    replace_dir(tmp, folder)
    return Capture(root=Path(folder), data=data)
