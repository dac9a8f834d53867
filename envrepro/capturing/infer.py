"""``envrepro capture --infer``: a best-effort capture for a model saved without envrepro.

Nothing of the training environment is left, so everything is inferred, and the manifest says so
(``inferred: true``):

* TensorFlow: the SavedModel's ``tensorflow_version``; for H5/.keras (which store none) the TF
  minor whose Keras wrote the file's ``keras_version`` (tfversions.yaml), at its last patch release.
* Python: no model format records it. Lambda layers' marshalled bytecode tells which Python
  wrote it (diagnose/bytecode.py); without them, the one most users of that TF had (tfversions.yaml
  ``python_likely``: TF 2.4 -> 3.8, TF 2.8 -> 3.10).
* The lock: ``tensorflow-cpu==X.Y.Z`` (plus the Keras / tf-keras / Addons the file needs) resolved
  with tfversions.yaml's known-good pins as constraints, so numpy 2 or protobuf 4 never sneak in, by
  pip's resolver for the target Python (packages/resolution.py, which caches the result), and
  written by envrepro.packages.lockwriter.write_lock, the writer real captures use (pip-tools' format,
  ``# via`` lines evaluated for the target, hashes from the index through pip-tools).
* Custom objects: every name the model's config gives one (capturing/sourcetree.py), found under
  the ``--code-path`` folders, snapshotted like a real capture's modules and mapped
  ``Name: module:attr``; the names not found are said, with where the config names them.
* No reference prediction: nothing trustworthy could compute one.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from envrepro.capturing.capture import CaptureResult, build_manifest
from envrepro.packages.indexhashes import hashes_wanted
from envrepro.packages.resolution import InferencePlan, resolve
from envrepro.capturing.snapshot import copy_modules
from envrepro.capturing.sourcetree import find_definitions, missing_report, wanted_names
from envrepro.packages import tfversions
from envrepro.diagnose.bytecode import common_pythons
from envrepro.modelfiles.read import ModelFileInfo, read_model_file
from envrepro.errors import CaptureError
from envrepro.interpreters import find_interpreter
from envrepro.sidecar import layout, manifest, writer
from envrepro.modelfiles import format as modelformat

def plan(info: ModelFileInfo, tensorflow: Optional[str] = None,
         python: Optional[str] = None) -> InferencePlan:
    """Decide TF, Python, requirements and constraints from the file (overridable)."""
    reasons: List[str] = []
    tf = tensorflow or info.tensorflow_version
    if tf:
        tf = pep440(tf, "TensorFlow version", "given" if tensorflow else "saved_model.pb", info.path)
        reasons.append(f"TensorFlow {tf}: " + ("given" if tensorflow else "saved_model.pb tensorflow_version"))
    else:
        minor = tfversions.tf_for_keras(info.keras_version)
        if not minor:
            unread = next((n for n in info.notes if n.startswith("h5py not installed")), None)
            raise CaptureError("can't tell which TensorFlow saved this model (" + (
                unread or "no TF or Keras version in the file") + ")", info.path,
                "pass the TensorFlow version explicitly")
        tf = tfversions.for_tf(minor)["latest"]
        reasons.append(f"TensorFlow {tf}: the last {minor}.x, whose Keras writes keras_version "
                       f"{info.keras_version}")
    row = tfversions.for_tf(tf)
    if not row:
        raise CaptureError(f"TensorFlow {tf} is not in envrepro's compatibility table", info.path,
                           "upgrade envrepro")
    py, why = pick_python(info, row, python)
    reasons.append(f"Python {py}: {why}")
    if info.backend and info.backend != "tensorflow":
        reasons.append(f"saved with the {info.backend} backend: loaded with TensorFlow's (Keras 3 files "
                       f"are backend-neutral, custom layers calling {info.backend} directly are not)")
    reqs = [f"{row['cpu_distribution']}=={tf}"]
    flavor = str(row["keras_flavor"])
    env: Dict[str, str] = {}
    kv = tfversions.vtuple(info.keras_version)
    if kv and kv[0] >= 3:
        reqs.append(f"keras=={pep440(info.keras_version, 'Keras version', 'the file', info.path)}")
        flavor = "keras3"
    elif kv[:2] >= (2, 16):
        reqs.append(f"tf-keras=={pep440(info.keras_version, 'Keras version', 'the file', info.path)}")
        flavor, env = "tf_keras", {"TF_USE_LEGACY_KERAS": "1"}
    if any(n.startswith("Addons>") for n in info.custom_ops + info.custom_classes + info.registered_names):
        if row.get("tensorflow_addons"):
            reqs.append(f"tensorflow-addons=={row['tensorflow_addons']}")
        else:
            reasons.append(f"the model uses TensorFlow Addons, which has no release for TF {row['minor']}")
    pins = tfversions.pins(tf)
    named = {tfversions.canonical(re.split(r"[=<>~!]", r, 1)[0]) for r in reqs}
    constraints = [f"{n}=={v}" for n, v in sorted(pins.items()) if n not in named]
    return InferencePlan(tensorflow=tf, python=py, keras_flavor=flavor, requirements=reqs,
                         constraints=constraints, env=env, reasons=reasons)


def pep440(value: Any, what: str, source: str, path: Any) -> str:
    """``value`` as a canonical PEP 440 version (``packaging``), or CaptureError: version strings
    read from a model file go into a requirements file, so nothing but a version may pass."""
    from packaging.version import InvalidVersion, Version

    try:
        if not isinstance(value, str) or value != value.strip():
            raise InvalidVersion(str(value))
        return str(Version(value))
    except InvalidVersion:
        raise CaptureError(f"the {what} from {source} is not a version: {str(value)[:60]!r}", str(path),
                           "pass the TensorFlow version explicitly if the file is damaged") from None


def pick_python(info: ModelFileInfo, row: Dict[str, Any], python: Optional[str]) -> Tuple[str, str]:
    """The Python X.Y to reproduce, and why: the one given; else the one the Lambda layers'
    bytecode was written by (diagnose/bytecode.py: exact, or two adjacent minors), within what
    this TF has wheels for; else the likeliest for the TF (tfversions.yaml ``python_likely``)."""
    if python:
        return str(tfversions.minor_of(python)), "given"
    likely, supported = row["python_likely"], list(row.get("python") or [])
    default = f"the likeliest for TF {row['minor']} (supports {', '.join(supported)})"
    codes = [l.code for l in info.lambdas if l.code]
    if not codes:
        return likely, default
    fits = common_pythons(codes)
    if not fits:
        return likely, (f"{default}; the Lambda layers' bytecode is of no Python envrepro knows "
                        "(3.6 .. 3.13), or of several")
    said = " or ".join(fits)
    usable = [m for m in fits if m in supported]
    if not usable:
        return likely, (f"{default}; the Lambda layers' bytecode was written by Python {said}, for which "
                        f"TF {row['minor']} has no wheels: the Lambda layers will not load (docs/failures.md "
                        "class 5)")
    chosen = likely if likely in usable else usable[-1]
    return chosen, (f"the Lambda layers' bytecode was written by Python {said}"
                    + (f" ({', '.join(m for m in fits if m not in supported)} has no TF {row['minor']} wheels)"
                       if len(usable) < len(fits) else "")
                    + ("" if len(usable) == 1 else f"; {chosen}: the likeliest for TF {row['minor']}"
                       if chosen == likely else f"; {chosen}: the newest of them"))


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

def infer_capture(model_path: "os.PathLike[str] | str", code_paths: Iterable[str] = (),
                  hashes: Optional[bool] = None, tensorflow: Optional[str] = None,
                  python: Optional[str] = None) -> CaptureResult:
    """Write ``<model>.envrepro/`` for a model saved without envrepro (``inferred: true``)."""
    from envrepro.packages.lockwriter import write_lock

    model = layout.resolve_model(model_path)
    fmt = modelformat.detect_format(model)
    info = read_model_file(model)
    if info.problems:
        raise CaptureError("not a loadable model: " + "; ".join(info.problems), str(model))
    code_paths = [os.path.abspath(c) for c in code_paths]
    for c in code_paths:
        if not os.path.isdir(c):
            raise CaptureError("code path is not a folder", c, "pass the folder that holds your modules")
    hashes = hashes_wanted() if hashes is None else hashes
    p = plan(info, tensorflow, python)
    warnings = [f"inferred capture: {r}" for r in p.reasons] + [f"model file: {n}" for n in info.notes]
    interp = find_interpreter(p.python)
    if interp is None:
        warnings.append(f"no Python {p.python} interpreter here (pyenv): resolved for it from this Python")
    full_version = interp[1] if interp else p.python
    wanted = wanted_names(info.custom_classes + info.registered_names)
    defs = find_definitions(wanted, code_paths)
    missing = [n for n in wanted if n not in defs]
    if missing:
        warnings.append(missing_report(missing, info.named_by))
    warnings.extend(f"{n} is defined more than once under --code-path: used {d.module}:{d.attr} "
                    f"({d.file}), not {', '.join(d.others)}" for n, d in sorted(defs.items()) if d.others)
    dists, how = resolve(p, interp, warnings)

    python_facts = {"version": full_version, "implementation": "CPython", "sys_platform": "linux",
                    "machine": "x86_64", "platform": None, "libc": None, "executable": None}
    modules = []
    for d in sorted({(d.module, d.file, d.root) for d in defs.values()}):
        modules.append({"module": d[0], "file": d[1], "root": d[2], "distribution": None})
    custom_objects = [{"name": n, "module": d.module, "attr": d.attr} for n, d in sorted(defs.items())]
    if any(r.startswith("tensorflow-addons") for r in p.requirements):
        modules.append({"module": "tensorflow_addons", "distribution": "tensorflow-addons"})
    row = tfversions.for_tf(p.tensorflow)
    keras_version = info.keras_version or row.get("keras")
    facts = {
        "python": python_facts,
        "frameworks": {"tensorflow": p.tensorflow, "tensorflow_distribution": row.get("cpu_distribution"),
                       "keras": keras_version, "keras_flavor": p.keras_flavor,
                       "tf_keras": info.keras_version if p.keras_flavor == "tf_keras" else None,
                       "git_version": info.tensorflow_git_version, "build": {}},
        "env": dict(p.env),
        "model": {"class_name": info.model_class, "compile": info.training_config is not None},
        "custom_objects": custom_objects,
        "modules": modules,
        "reference_skipped": "inferred capture: no reference",
        "optimizer": None,
    }

    def fill(folder: Path) -> Dict[str, Any]:
        lock_result = write_lock(dists, python_facts, folder, hashes=hashes)
        warnings.extend(lock_result.warnings)
        snap = copy_modules([m for m in modules if not m.get("distribution")],
                            folder / layout.SNAPSHOT_DIR, folder)
        warnings.extend(snap.warnings)
        data = build_manifest(model, fmt, facts, lock_result, snap, None, warnings, inferred=True)
        data["inference"] = {"resolved_by": how, "reasons": p.reasons, "requirements": p.requirements,
                             "constraints": p.constraints, "custom_classes_missing": missing,
                             "interpreter": interp[0] if interp else None}
        return data

    written = writer.write_capture(model, fill)
    return CaptureResult(sidecar=written.sidecar, manifest=manifest.read(written.sidecar, verify=False).data,
                         warnings=warnings)
