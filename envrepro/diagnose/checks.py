"""The doctor's static comparisons of the saving environment with the target one.

Frameworks (Python, TensorFlow, Keras flavour), the captured package list (most important first)
and the target TensorFlow's own known-good ranges. Custom-code drift is codedrift.py.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from envrepro.packages import tfversions
from envrepro.diagnose.catalogue import Env
from envrepro.diagnose.findings import ERROR, INFO, WARNING, Finding
from envrepro.sidecar import manifest

TF_DISTS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos")
FRAMEWORK_DISTS = TF_DISTS + ("keras", "tf-keras")
# TF's dependencies that docs/failures.md names (ABI, HDF5 reading, generated protobuf code): shown first
KEY_CLOSURE = ("numpy", "h5py", "protobuf", "ml-dtypes", "typing-extensions", "keras-preprocessing",
               "tensorflow-estimator", "gast", "wrapt", "six")


# --------------------------------------------------------------------------------------------
# Frameworks and packages
# --------------------------------------------------------------------------------------------

def compare_frameworks(saved: Env, target: Env, inferred: bool) -> List[Finding]:
    out: List[Finding] = []
    guess = " (inferred from the model file)" if inferred else ""
    if saved.python and target.python:
        if tfversions.minor_of(saved.python) != tfversions.minor_of(target.python):
            out.append(Finding(WARNING, f"Python {target.python} here, the model was saved under "
                               f"{saved.python}", "bytecode (Lambda layers), pickles and wheels differ "
                               "between Python minors", "`envrepro load MODEL` runs the saving Python",
                               kind="python"))
        elif saved.python != target.python:
            out.append(Finding(INFO, f"Python {target.python} here, saved under {saved.python} (same minor)",
                               kind="python"))
    if not target.tensorflow:
        out.append(Finding(ERROR, "TensorFlow is not installed in this environment",
                           fix=f"pip install tensorflow-cpu=={saved.tensorflow}" if saved.tensorflow
                           else "pip install tensorflow-cpu", kind="framework"))
    elif saved.tensorflow:
        sv, tv = tfversions.vtuple(saved.tensorflow)[:2], tfversions.vtuple(target.tensorflow)[:2]
        if sv != tv:
            older = tv < sv
            pin = saved.tensorflow + (".*" if len(tfversions.vtuple(saved.tensorflow)) == 2 else "")
            out.append(Finding(WARNING, f"TensorFlow {target.tensorflow} here, saved with "
                               f"{saved.tensorflow}{guess}",
                               ("an older TF than the saving one: ops and config keys may be missing"
                                if older else "loading across TF minors is not guaranteed (docs/failures.md class 8d)"),
                               f"pip install tensorflow-cpu=={pin}"
                               + (" with the capture's lock, or `envrepro load MODEL`" if not inferred else
                                  ", or `envrepro capture --infer MODEL` then `envrepro load MODEL`"),
                               kind="framework"))
        elif saved.tensorflow != target.tensorflow:
            out.append(Finding(INFO, f"TensorFlow {target.tensorflow} here, saved with {saved.tensorflow}"
                               " (same minor)", kind="framework"))
    if saved.keras_flavor and target.keras_flavor and saved.keras_flavor != target.keras_flavor:
        out.append(Finding(WARNING, f"load_model here is {target.keras_flavor} {target.keras or ''}".rstrip()
                           + f", the model was saved by {saved.keras_flavor} {saved.keras or ''}".rstrip(),
                           "Keras 2 and Keras 3 serialize models differently",
                           (f"TF_USE_LEGACY_KERAS=1 with pip install tf-keras~={tfversions.minor_of(target.tensorflow)}.0 "
                            "loads Keras-2 files here; or `envrepro load MODEL`"
                            if saved.keras_flavor != "keras3" and target.keras_flavor == "keras3"
                            else "`envrepro load MODEL`"), kind="framework"))
    elif saved.keras and target.keras and saved.keras_flavor == "keras3" == target.keras_flavor:
        if tfversions.vtuple(target.keras)[:2] < tfversions.vtuple(saved.keras)[:2]:
            out.append(Finding(WARNING, f"Keras {target.keras} here is older than the saving {saved.keras}",
                               "Keras 3.12 changed variable keys: newer files may not load in older "
                               "Keras 3 (k#21681)", f"pip install keras=={saved.keras}", kind="framework"))
    return out


def _importance(cap: manifest.Capture, saved: Env) -> Dict[str, Tuple[int, str]]:
    """canonical name -> (rank, why): 0 frameworks, 1 custom-object providers, 2 the TF
    dependencies docs/failures.md names, 3 the rest of TF's closure, 4 everything else."""
    from envrepro.sidecar.lockfile import split_closure

    ranks: Dict[str, Tuple[int, str]] = {}
    if cap.lock_path.is_file():
        heavy, _rest = split_closure(cap.lock)
        for e in heavy:
            ranks[e.name] = (2 if e.name in KEY_CLOSURE else 3, "TensorFlow's dependency closure")
    for module, dist in custom_providers(cap).items():
        ranks[tfversions.canonical(dist)] = (1, f"provides custom objects (module {module})")
    for name in FRAMEWORK_DISTS:
        ranks[name] = (0, "framework")
    return ranks


def custom_providers(cap: manifest.Capture) -> Dict[str, str]:
    """module -> distribution for the modules custom objects come from (``requirement_modules``)."""
    req = dict(cap.get("requirement_modules") or {})
    wanted = {spec.split(":", 1)[0] for spec in manifest.model_custom_objects(cap).values()}
    wanted |= set(cap.get("load.modules") or [])
    return {m: d for m, d in req.items() if m in wanted or any(w.startswith(m + ".") for w in wanted)}


def compare_packages(cap: manifest.Capture, saved: Env, target: Env) -> Tuple[List[Dict[str, Any]], List[Finding]]:
    """Missing / other-version / extra distributions, most important first, with findings for the
    ones that matter (framework differences are reported by compare_frameworks)."""
    ranks = _importance(cap, saved)
    rows: List[Dict[str, Any]] = []
    findings: List[Finding] = []
    req = tfversions.requirements(target.tensorflow)
    for name, ver in saved.packages.items():
        have = target.packages.get(name)
        status = "same" if have == ver else ("missing" if have is None else "other")
        if status == "same":
            continue
        rank, why = ranks.get(name, (4, ""))
        rows.append({"name": name, "saved": ver, "target": have, "status": status, "rank": rank, "why": why})
        if rank == 1 and status == "other":   # missing ones: catalogue class 2 reports them
            findings.append(Finding(WARNING, f"{name} {have} here (captured {ver}); it {why}",
                                    "the custom objects' code may differ from the saving version",
                                    f"pip install {name}=={ver}", kind="package", class_id="2"))
        elif rank in (2, 3) and name in req and have and tfversions.satisfies(have, req[name]) is False:
            findings.append(Finding(WARNING, f"{name} {have} here; TensorFlow {target.tensorflow} expects "
                                    f"{name}{req[name]}", "outside the tested range of this TensorFlow",
                                    f"pip install '{name}{req[name]}'", kind="package"))
    extra = sorted(set(target.packages) - set(saved.packages) - {"pip", "envrepro", "setuptools", "wheel"})
    for name in extra:
        rows.append({"name": name, "saved": None, "target": target.packages[name], "status": "extra",
                     "rank": ranks.get(name, (4, ""))[0], "why": ranks.get(name, (4, ""))[1]})
    rows.sort(key=lambda r: (r["rank"], {"missing": 0, "other": 1, "extra": 2}[r["status"]], r["name"]))
    missing = sum(r["status"] == "missing" for r in rows)
    other = sum(r["status"] == "other" for r in rows)
    if missing or other:
        findings.append(Finding(INFO, f"{missing} captured distributions missing here, {other} at other "
                                f"versions, {len(extra)} extra", "see the package list",
                                "`envrepro load MODEL` installs the captured lock", kind="package"))
    return rows, findings


def check_env_requirements(target: Env) -> List[Finding]:
    """The target's own TensorFlow against its known-good ranges (tfversions.yaml)."""
    out = []
    for name, spec in tfversions.requirements(target.tensorflow).items():
        have = target.packages.get(name)
        if name in ("numpy", "h5py", "protobuf") and have and tfversions.satisfies(have, spec) is False:
            out.append(Finding(WARNING, f"{name} {have} is outside {name}{spec}, the range TensorFlow "
                               f"{target.tensorflow} needs", "TF was built and tested against that range",
                               f"pip install '{name}{spec}'", kind="env"))
    return out
