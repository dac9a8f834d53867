"""``envrepro doctor``: will this model load here, and will it predict what it predicted at save?

Compares the saving environment (the capture; without one, what the model file says) with a
target environment (this interpreter or ``--python PATH``) and reports findings, each with a
severity, what, why and a fix. Nothing here imports TensorFlow: the target's facts come from the
stdlib-only probe in its env-only mode (``probe.py --no-load``) run under the target interpreter.
The checks live in checks.py (environments, packages), codedrift.py (the snapshot against the
custom modules' current source, found by name in ``--code-path`` folders and the current
directory: a path a manifest records is shown, never opened), catalogue.py (the failure classes of
docs/failures.md), lambdas.py (Lambda bytecode) and trial.py (``--try``: load_model for real, on
this host, for a capture that passes verification only); this module gathers the facts, runs them
and renders the report.

Exit code (``DoctorReport.exit_code``): 0 compatible, 1 risky (warnings), 2 will fail (errors).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from envrepro import errors
from envrepro.diagnose import catalogue
from envrepro.packages import tfversions
from envrepro import proberunner
from envrepro.diagnose.catalogue import Env
from envrepro.diagnose.checks import (check_env_requirements, compare_frameworks, compare_packages,
                                      custom_providers)
from envrepro.diagnose.codedrift import snapshot_drift
from envrepro.diagnose.findings import ERROR, INFO, WARNING, Finding, by_severity
from envrepro.diagnose.lambdas import check_lambdas
from envrepro.sidecar import layout
from envrepro.modelfiles.read import ModelFileInfo, read_model_file
from envrepro.diagnose.trial import run_try, try_findings
from envrepro.sidecar import manifest, recovery

PROBE_TIMEOUT = float(os.environ.get("ENVREPRO_PROBE_TIMEOUT", "300"))


@dataclass
class DoctorReport:
    model: str
    format: Optional[str]
    captured: bool
    inferred: bool
    saved: Dict[str, Any]
    target: Dict[str, Any]
    findings: List[Finding] = field(default_factory=list)
    packages: List[Dict[str, Any]] = field(default_factory=list)
    drift: List[Dict[str, Any]] = field(default_factory=list)
    tried: Optional[Dict[str, Any]] = None
    file_info: Optional[Dict[str, Any]] = None

    @property
    def exit_code(self) -> int:
        sev = {f.severity for f in self.findings}
        if ERROR in sev:
            return 2
        return errors.EXIT_RISKY if WARNING in sev else errors.EXIT_OK

    @property
    def verdict(self) -> str:
        return {0: "compatible", 1: "risky", 2: "will fail"}[self.exit_code]

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["exit_code"], d["verdict"] = self.exit_code, self.verdict
        return d


# --------------------------------------------------------------------------------------------
# Target and saving environments
# --------------------------------------------------------------------------------------------

def environment_facts(model_path: Path, python: Optional[str] = None) -> Dict[str, Any]:
    """Facts of the interpreter ``python`` (default: this one) from ``probe.py --no-load``:
    Python, installed distributions, TF/Keras versions from metadata. TensorFlow is not imported."""
    exe = python or sys.executable
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        raise errors.EnvreproError("interpreter not found or not executable", exe,
                                   "pass the environment's python, e.g. /path/to/venv/bin/python")
    with tempfile.TemporaryDirectory(prefix="envrepro-doctor-") as out:
        try:
            run = proberunner.run_probe(exe, model_path, Path(out), ["--no-load"], timeout=PROBE_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise errors.EnvreproError(f"could not run the probe ({e})", exe) from None
        if run.facts is None:
            tail = run.stderr.strip().splitlines()[-1:] or ["no output"]
            raise errors.EnvreproError(f"the env-only probe failed: {tail[0]}", exe,
                                       "is it a Python >= 3.6 interpreter?")
        return run.facts


def target_env(facts: Dict[str, Any]) -> Env:
    fw = facts.get("frameworks") or {}
    pkgs = {tfversions.canonical(d["name"]): str(d.get("version")) for d in facts.get("distributions") or []
            if d.get("name")}
    tf = fw.get("tensorflow")
    keras = fw.get("keras") or (tfversions.for_tf(tf).get("keras") if fw.get("keras_flavor") == "tf.keras" else None)
    gpu = any(k.startswith("nvidia-cudnn") for k in pkgs) and os.path.exists("/dev/nvidia0")
    return Env(python=(facts.get("python") or {}).get("version"), tensorflow=tf, keras=keras,
               keras_flavor=fw.get("keras_flavor"), packages=pkgs, env=dict(facts.get("env") or {}),
               gpu=gpu)


def saved_env(cap: Optional[manifest.Capture], info: ModelFileInfo) -> Tuple[Env, bool]:
    """The saving environment: the capture's, else what the file says (second value: inferred)."""
    if cap is not None:
        pkgs: Dict[str, str] = {}
        if cap.lock_path.is_file():
            pkgs = {e.name: e.version or "" for e in cap.lock.entries}
        fw = cap.get("frameworks") or {}
        return Env(python=cap.get("python.version"), tensorflow=fw.get("tensorflow"), keras=fw.get("keras"),
                   keras_flavor=fw.get("keras_flavor"), packages=pkgs,
                   env=dict(cap.get("env") or {})), bool(cap.get("inferred"))
    tf = info.tensorflow_version
    if not tf and info.keras_version:
        tf = tfversions.tf_for_keras(info.keras_version)   # a minor ('2.4'): H5 stores no TF version
    major = info.keras_major
    flavor = None
    if major is not None:
        flavor = "keras3" if major >= 3 else ("tf_keras" if tfversions.vtuple(info.keras_version)[:2] >= (2, 16)
                                              else "tf.keras")
    return Env(python=None, tensorflow=tf, keras=info.keras_version, keras_flavor=flavor), True


# --------------------------------------------------------------------------------------------
# Entry point and rendering
# --------------------------------------------------------------------------------------------

def _read_capture(model: Path) -> Tuple[Optional[manifest.Capture], Optional[errors.InvalidCapture]]:
    """The capture beside the model and, when it failed verification, why (it is then read
    without the hash check, for the static report only; None when even that fails)."""
    sidecar = layout.sidecar_for(model)
    recovery.recover(sidecar)        # a capture killed while replacing this one is put back first
    if not sidecar.is_dir():
        return None, None
    try:
        return manifest.read(sidecar), None
    except errors.InvalidCapture as e:
        try:
            return manifest.read(sidecar, verify=False), e
        except errors.InvalidCapture:
            return None, e


def _refuse_try(problem: errors.InvalidCapture) -> errors.InvalidCapture:
    return errors.InvalidCapture(f"doctor --try refuses an unverified capture, it would import its code on this "
                                 f"host: {problem.what}", problem.path,
                                 "restore the capture or run `envrepro capture MODEL` again; "
                                 "`envrepro doctor MODEL` without --try still reports on it")


def _code_dirs(code_paths: Sequence[str]) -> List[str]:
    for c in code_paths:
        if not os.path.isdir(c):
            raise errors.EnvreproError("code path is not a folder", str(c),
                                       "pass the folder you import your custom modules from")
    return [os.path.abspath(c) for c in code_paths]


def diagnose(model_path: "os.PathLike[str] | str", python: Optional[str] = None,
             try_load: bool = False, code_paths: Sequence[str] = (),
             notice: Optional[Callable[[str], None]] = None) -> DoctorReport:
    """Compare the model's saving environment with ``python`` (default: this interpreter).

    ``code_paths`` (and the current directory) are where the custom modules' current source is
    looked up by name for the drift check. ``try_load`` refuses a capture that fails verification
    (InvalidCapture, exit 2) before anything runs; ``notice`` gets the line said before the model's
    code is imported (default: stderr)."""
    model = layout.resolve_model(model_path)
    dirs = _code_dirs(code_paths)
    findings: List[Finding] = []
    cap, problem = _read_capture(model)
    if problem is not None:
        if try_load:
            raise _refuse_try(problem)
        findings.append(Finding(WARNING, f"the capture can't be trusted: {problem.what}", problem.path or "",
                                problem.fix or "", kind="capture"))
    info = read_model_file(model)
    facts = environment_facts(model, python)
    target = target_env(facts)
    saved, inferred = saved_env(cap, info)
    if cap is None:
        findings.append(Finding(INFO, "no capture beside this model: the saving environment is inferred "
                                "from the model file (no Python version, package list or custom-code check)",
                                fix="`envrepro capture --infer MODEL --code-path DIR`", kind="capture"))
    findings += compare_frameworks(saved, target, inferred)
    findings += check_env_requirements(target)
    packages: List[Dict[str, Any]] = []
    drift: List[Dict[str, Any]] = []
    missing_modules: Dict[str, str] = {}
    custom: Dict[str, str] = {}
    if cap is not None:
        packages, pf = compare_packages(cap, saved, target)
        findings += pf
        drift, df = snapshot_drift(cap, dirs)
        findings += df
        custom = manifest.model_custom_objects(cap)
        missing_modules = {m: d for m, d in custom_providers(cap).items()
                           if tfversions.canonical(d) not in target.packages}
    ctx = catalogue.Context(info=info, saved=saved, target=target,
                            compile=info.training_config is not None, custom_objects=custom,
                            missing_modules=missing_modules)
    for cls, hit in catalogue.detect(ctx):
        findings.append(Finding(hit.severity, f"{cls.title}: {hit.detail}", f"docs/failures.md class {cls.id} "
                                f"({cls.versions})", hit.fix or cls.fix, kind="class", class_id=cls.id,
                                message=hit.message or cls.message.replace("{path}", str(model))))
    results = check_lambdas(info, python) if any(f.class_id == "5" for f in findings) else []
    bad = [r for r in results if r != "ok"]
    if bad:
        findings.append(Finding(ERROR, f"marshal.loads of the Lambda bytecode fails under Python "
                                f"{target.python}: {bad[0]}", "confirmed without loading the model",
                                "load under the saving Python minor", kind="class", class_id="5", message=bad[0]))
    tried = None
    if try_load:
        tried = run_try(model, cap, info, python, notice)
        findings += try_findings(tried)
    findings = by_severity(findings, lambda f: f.severity)
    return DoctorReport(model=str(model), format=info.format, captured=cap is not None, inferred=inferred,
                        saved=_env_dict(saved), target=dict(_env_dict(target), executable=python or sys.executable),
                        findings=findings, packages=packages, drift=drift, tried=tried,
                        file_info=info.to_dict())


def _env_dict(env: Env) -> Dict[str, Any]:
    pk = env.packages
    return {"python": env.python, "tensorflow": env.tensorflow, "keras": env.keras,
            "keras_flavor": env.keras_flavor, "tf_keras": pk.get("tf-keras"), "numpy": pk.get("numpy"),
            "h5py": pk.get("h5py"), "protobuf": pk.get("protobuf")}


def _env_line(d: Dict[str, Any]) -> str:
    bits = [f"Python {d['python']}" if d.get("python") else "Python ?",
            f"TensorFlow {d['tensorflow']}" if d.get("tensorflow") else "no TensorFlow"]
    if d.get("keras"):
        bits.append(f"Keras {d['keras']} ({d.get('keras_flavor')})")
    bits += [f"{k} {d[k]}" for k in ("tf_keras", "numpy", "h5py", "protobuf") if d.get(k)]
    return ", ".join(bits)


def render(report: DoctorReport, verbose: bool = False) -> str:
    """The human report: environments, findings (errors first), packages, drift, --try, verdict."""
    lines = [f"envrepro doctor {report.model}  ({report.format or 'unknown format'}"
             + (", captured" if report.captured and not report.inferred else
                ", inferred capture" if report.captured else ", no capture") + ")"]
    lines.append(f"  saved with    {_env_line(report.saved)}"
                 + ("  [inferred]" if report.inferred else ""))
    lines.append(f"  checking      {report.target.get('executable')}: {_env_line(report.target)}")
    labels = {ERROR: "ERROR  ", WARNING: "WARNING", INFO: "info   "}
    for f in report.findings:
        if f.severity == INFO and not verbose and f.kind in ("package",):
            continue
        lines.append("")
        tag = f" [class {f.class_id}]" if f.class_id and f.class_id[:1].isdigit() else ""
        lines.append(f"{labels.get(f.severity, f.severity)}{tag} {f.what}")
        if f.why:
            lines.append(f"         why: {f.why}")
        if f.message:
            lines.append(f"         you will see: {f.message[:600]}")
        if f.fix:
            lines.append(f"         fix: {f.fix}")
        if f.detail and (f.severity == ERROR or verbose):
            lines.extend("         | " + l for l in f.detail.splitlines()[:60])
    changed = [p for p in report.packages if p["status"] != "extra"]
    if changed:
        lines.append("")
        lines.append(f"packages ({len(changed)} differ from the capture, most important first):")
        for p in changed[: (len(changed) if verbose else 12)]:
            lines.append(f"  {p['name']:<28} {p['saved'] or '-':<14} -> {p['target'] or 'missing':<14} {p['why']}")
        if len(changed) > 12 and not verbose:
            lines.append(f"  ... {len(changed) - 12} more (--json for all)")
    lines.append("")
    lines.append(f"result: {report.verdict.upper()} (exit {report.exit_code})"
                 + ("" if report.tried else "  - static checks; --try runs load_model here"))
    return "\n".join(lines) + "\n"
