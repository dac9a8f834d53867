"""``envrepro doctor``: will this model load here, and will it predict what it predicted at save?

Compares the saving environment (the capture; without one, what the model file says) with a
target environment (this interpreter or ``--python PATH``) and reports findings, each with a
severity, what, why and a fix. Nothing here imports TensorFlow: the target's facts come from the
stdlib-only probe in its env-only mode (``probe.py --no-load``) run under the target interpreter.
``try_load=True`` then really calls ``load_model`` there, in a subprocess (runtime/loader.py), and
classifies the error through the catalogue; with a reference prediction in the capture it also
compares predictions, which is the only way to catch a custom layer edited after the save.

Exit code (``DoctorReport.exit_code``): 0 compatible, 1 risky (warnings), 2 will fail (errors).
"""
from __future__ import annotations

import ast
import difflib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from envrepro.diagnose import catalogue
from envrepro.diagnose import tfversions as compat
from envrepro import errors
from envrepro.sidecar import layout, manifest
from envrepro.diagnose.catalogue import ERROR, INFO, WARNING, Env
from envrepro.capturing import proberunner
from envrepro.runtime import launch
from envrepro.diagnose.modelfiles import ModelFileInfo, read_model_file

PROBE_TIMEOUT = float(os.environ.get("ENVREPRO_PROBE_TIMEOUT", "300"))
TRY_TIMEOUT = float(os.environ.get("ENVREPRO_TRY_TIMEOUT", "900"))
TF_DISTS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos")
FRAMEWORK_DISTS = TF_DISTS + ("keras", "tf-keras")
# TF's dependencies that FAILURES.md names (ABI, HDF5 reading, generated protobuf code): shown first
KEY_CLOSURE = ("numpy", "h5py", "protobuf", "ml-dtypes", "typing-extensions", "keras-preprocessing",
               "tensorflow-estimator", "gast", "wrapt", "six")
MAX_DIFF_LINES = 200


@dataclass
class Finding:
    severity: str                 # info | warning | error
    what: str
    why: str = ""
    fix: str = ""
    kind: str = ""                # python | framework | package | drift | class | try | capture | env
    class_id: Optional[str] = None
    message: str = ""             # the error text the user will see
    detail: str = ""              # e.g. a unified diff


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
# Target environment
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
    pkgs = {compat.canonical(d["name"]): str(d.get("version")) for d in facts.get("distributions") or []
            if d.get("name")}
    tf = fw.get("tensorflow")
    keras = fw.get("keras") or (compat.for_tf(tf).get("keras") if fw.get("keras_flavor") == "tf.keras" else None)
    gpu = any(k.startswith("nvidia-cudnn") for k in pkgs) and os.path.exists("/dev/nvidia0")
    return Env(python=(facts.get("python") or {}).get("version"), tensorflow=tf, keras=keras,
               keras_flavor=fw.get("keras_flavor"), packages=pkgs, env=dict(facts.get("env") or {}),
               gpu=gpu)


def saved_env(cap: Optional[manifest.Capture], info: ModelFileInfo) -> Tuple[Env, bool]:
    """The saving environment: the capture's, else what the file says (second value: inferred)."""
    if cap is not None:
        from envrepro.sidecar.lockfile import parse_lock

        pkgs: Dict[str, str] = {}
        if cap.lock_path.is_file():
            pkgs = {e.name: e.version or "" for e in parse_lock(cap.lock_path.read_text(encoding="utf-8"))}
        fw = cap.get("frameworks") or {}
        return Env(python=cap.get("python.version"), tensorflow=fw.get("tensorflow"), keras=fw.get("keras"),
                   keras_flavor=fw.get("keras_flavor"), packages=pkgs,
                   env=dict(cap.get("env") or {})), bool(cap.get("inferred"))
    tf = info.tensorflow_version
    if not tf and info.keras_version:
        tf = compat.tf_for_keras(info.keras_version)   # a minor ('2.4'): H5 stores no TF version
    major = info.keras_major
    flavor = None
    if major is not None:
        flavor = "keras3" if major >= 3 else ("tf_keras" if compat.vtuple(info.keras_version)[:2] >= (2, 16)
                                              else "tf.keras")
    return Env(python=None, tensorflow=tf, keras=info.keras_version, keras_flavor=flavor), True


# --------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------

def _minor(v: Optional[str]) -> Optional[str]:
    return compat.minor_of(v)


def compare_frameworks(saved: Env, target: Env, inferred: bool) -> List[Finding]:
    out: List[Finding] = []
    guess = " (inferred from the model file)" if inferred else ""
    if saved.python and target.python:
        if _minor(saved.python) != _minor(target.python):
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
        sv, tv = compat.vtuple(saved.tensorflow)[:2], compat.vtuple(target.tensorflow)[:2]
        if sv != tv:
            older = tv < sv
            pin = saved.tensorflow + (".*" if len(compat.vtuple(saved.tensorflow)) == 2 else "")
            out.append(Finding(WARNING, f"TensorFlow {target.tensorflow} here, saved with "
                               f"{saved.tensorflow}{guess}",
                               ("an older TF than the saving one: ops and config keys may be missing"
                                if older else "loading across TF minors is not guaranteed (FAILURES.md 8d)"),
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
                           (f"TF_USE_LEGACY_KERAS=1 with pip install tf-keras~={_minor(target.tensorflow)}.0 "
                            "loads Keras-2 files here; or `envrepro load MODEL`"
                            if saved.keras_flavor != "keras3" and target.keras_flavor == "keras3"
                            else "`envrepro load MODEL`"), kind="framework"))
    elif saved.keras and target.keras and saved.keras_flavor == "keras3" == target.keras_flavor:
        if compat.vtuple(target.keras)[:2] < compat.vtuple(saved.keras)[:2]:
            out.append(Finding(WARNING, f"Keras {target.keras} here is older than the saving {saved.keras}",
                               "Keras 3.12 changed variable keys: newer files may not load in older "
                               "Keras 3 (k#21681)", f"pip install keras=={saved.keras}", kind="framework"))
    return out


def _importance(cap: manifest.Capture, saved: Env) -> Dict[str, Tuple[int, str]]:
    """canonical name -> (rank, why): 0 frameworks, 1 custom-object providers, 2 the TF
    dependencies FAILURES.md names, 3 the rest of TF's closure, 4 everything else."""
    from envrepro.sidecar.lockfile import split_closure, parse_lock

    ranks: Dict[str, Tuple[int, str]] = {}
    if cap.lock_path.is_file():
        heavy, _rest = split_closure(parse_lock(cap.lock_path.read_text(encoding="utf-8")))
        for e in heavy:
            ranks[e.name] = (2 if e.name in KEY_CLOSURE else 3, "TensorFlow's dependency closure")
    for module, dist in custom_providers(cap).items():
        ranks[compat.canonical(dist)] = (1, f"provides custom objects (module {module})")
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
    req = compat.requirements(target.tensorflow)
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
        elif rank in (2, 3) and name in req and have and compat.satisfies(have, req[name]) is False:
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
    """The target's own TensorFlow against its known-good ranges (compat.yaml)."""
    out = []
    for name, spec in compat.requirements(target.tensorflow).items():
        have = target.packages.get(name)
        if name in ("numpy", "h5py", "protobuf") and have and compat.satisfies(have, spec) is False:
            out.append(Finding(WARNING, f"{name} {have} is outside {name}{spec}, the range TensorFlow "
                               f"{target.tensorflow} needs", "TF was built and tested against that range",
                               f"pip install '{name}{spec}'", kind="env"))
    return out


# --------------------------------------------------------------------------------------------
# Custom-code drift
# --------------------------------------------------------------------------------------------

def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _functions(tree: ast.AST) -> Dict[str, str]:
    """Qualified name ('MyLayer.call') -> normalized dump of every function in the module."""
    out: Dict[str, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                q = prefix + child.name
                out[q] = ast.dump(child, include_attributes=False)
                visit(child, q + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)
    visit(tree, "")
    return out


def code_change(old: str, new: str) -> Tuple[str, List[str]]:
    """('same' | 'cosmetic' | 'code', changed functions). Comments, docstrings and formatting are
    cosmetic: they can't change what the model computes. Anything else that runs is code."""
    if old == new:
        return "same", []
    try:
        a, b = _strip_docstrings(ast.parse(old)), _strip_docstrings(ast.parse(new))
    except SyntaxError as e:
        return "code", [f"(does not parse: {e.msg} line {e.lineno})"]
    if ast.dump(a, include_attributes=False) == ast.dump(b, include_attributes=False):
        return "cosmetic", []
    fa, fb = _functions(a), _functions(b)
    changed = sorted(q for q in set(fa) | set(fb) if fa.get(q) != fb.get(q))
    return "code", changed or ["(module or class-level code)"]


def _origin_root(entry: Dict[str, Any]) -> Optional[str]:
    """The sys.path folder the origin was imported from: origin minus its path inside snapshot/."""
    origin, rel = entry.get("origin") or "", entry.get("path") or ""
    inner = rel.split("/", 1)[1] if rel.startswith(layout.SNAPSHOT_DIR + "/") else rel
    o = Path(origin)
    parts = Path(inner).parts
    if len(parts) >= 1 and o.name == Path(inner).name and len(o.parts) > len(parts):
        return str(Path(*o.parts[: len(o.parts) - len(parts)]))
    return str(o.parent) if origin else None


def snapshot_drift(cap: manifest.Capture) -> Tuple[List[Dict[str, Any]], List[Finding]]:
    """Each snapshot file against its origin's current source: a diff, and LOUD when code that
    runs changed (the model then loads without error and predicts differently)."""
    from envrepro.capturing.snapshot import diff_snapshot

    entries = manifest.snapshot_entries(cap)
    by_path = {e.get("path"): e for e in entries}
    drift, findings = [], []
    for d in diff_snapshot(cap.root, entries):
        entry = by_path.get(d["path"], {})
        snap_file, origin = cap.root / str(d["path"]), str(d["origin"])
        item: Dict[str, Any] = {"path": d["path"], "origin": origin, "module": entry.get("module"),
                                "status": d["status"], "changed": [], "diff": ""}
        if d["status"] == "missing":
            item["kind"] = "missing"
            findings.append(Finding(WARNING, f"{origin} no longer exists (snapshotted as {d['path']})",
                                    f"module {entry.get('module')} can only be imported from the capture",
                                    "`envrepro load MODEL` uses the snapshot", kind="drift", class_id="drift"))
            drift.append(item)
            continue
        old = snap_file.read_text(encoding="utf-8", errors="replace") if snap_file.is_file() else ""
        new = Path(origin).read_text(encoding="utf-8", errors="replace")
        diff = list(difflib.unified_diff(old.splitlines(), new.splitlines(), f"capture:{d['path']}",
                                         origin, lineterm=""))
        item["diff"] = "\n".join(diff[:MAX_DIFF_LINES]) + ("\n..." if len(diff) > MAX_DIFF_LINES else "")
        kind, changed = code_change(old, new) if origin.endswith(".py") else ("code", ["(not Python)"])
        item["kind"], item["changed"] = kind, changed
        drift.append(item)
        if kind == "code":
            findings.append(Finding(
                ERROR, f"custom code changed since the save: {origin}: " + ", ".join(changed),
                "the model loads without error with the new code and computes something else "
                "(nothing warns at load time)",
                "`envrepro load MODEL` loads with the snapshot; or restore the code "
                "(`doctor --try` compares predictions)", kind="drift", class_id="drift", detail=item["diff"]))
        elif kind == "cosmetic":
            findings.append(Finding(INFO, f"{origin}: only comments/docstrings changed since the save",
                                    kind="drift", class_id="drift", detail=item["diff"]))
    return drift, findings


# --------------------------------------------------------------------------------------------
# Lambda bytecode check (marshal.loads under the target interpreter: decisive, no TF, no call)
# --------------------------------------------------------------------------------------------

_MARSHAL_SCRIPT = (
    "import base64, json, marshal, sys\n"
    "for code in json.load(sys.stdin):\n"
    "    try:\n"
    "        marshal.loads(base64.b64decode(code))\n"
    "        print('ok')\n"
    "    except Exception as e:\n"
    "        print('%s: %s' % (type(e).__name__, e))\n")


def check_lambdas(info: ModelFileInfo, python: Optional[str]) -> List[str]:
    """One result per marshalled Lambda ('ok' or the exception), unmarshalled in a subprocess of
    the target interpreter (marshal data is not trusted: a crash stays in the child)."""
    codes = [l.code for l in info.lambdas if l.code]
    if not codes:
        return []
    try:
        proc = subprocess.run([python or sys.executable, "-I", "-c", _MARSHAL_SCRIPT],
                              input=json.dumps(codes).encode(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    lines = proc.stdout.decode("utf-8", "replace").splitlines()
    return lines if proc.returncode == 0 else lines + [f"interpreter died (exit {proc.returncode})"]


# --------------------------------------------------------------------------------------------
# --try: load_model for real, in a subprocess of the target interpreter
# --------------------------------------------------------------------------------------------

def _plan(model_path: Path, cap: Optional[manifest.Capture], info: ModelFileInfo) -> Dict[str, Any]:
    if cap is not None:
        from envrepro.sandbox.run import ContainerPaths, make_plan

        plan = make_plan(cap, ContainerPaths(model=str(model_path), capture=str(cap.root), runtime=launch.HOST_DIR))
    else:
        flavor = "keras3" if (info.keras_major or 0) >= 3 else None
        plan = {"plan_version": 1, "model_path": str(model_path), "model_name": model_path.name,
                "format": info.format, "compile": True, "custom_objects": {}, "modules": [],
                "keras_flavor": flavor, "safe_mode": True, "reference": None, "optimizer": None}
    # The target as it is: its own variables and the custom modules' *current* source, not the
    # snapshot (loading from the snapshot is what `envrepro load` does; doctor checks here).
    plan["snapshot_dir"] = None
    plan["env"] = {}
    return plan


def run_try(model_path: Path, cap: Optional[manifest.Capture], info: ModelFileInfo,
            python: Optional[str] = None) -> Dict[str, Any]:
    """Run runtime/loader.py under the target interpreter; return its report (plus ``class_id``)."""
    from envrepro.runtime.loader import REPORT_PREFIX

    plan = _plan(model_path, cap, info)
    roots = [r for r in (_origin_root(e) for e in (manifest.snapshot_entries(cap) if cap else []))
             if r and os.path.isdir(r)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1")
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(roots + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]))
    with tempfile.TemporaryDirectory(prefix="envrepro-try-") as tmp:
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(json.dumps(plan), encoding="utf-8")
        try:
            proc = subprocess.run(launch.host_argv(python or sys.executable, "loader", ["--plan", plan_file]),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp,
                                  timeout=TRY_TIMEOUT, check=False)
            out, err, code = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"), proc.returncode
        except subprocess.TimeoutExpired:
            out, err, code = "", f"load_model did not finish within {TRY_TIMEOUT:.0f} s", None
    report = None
    for line in reversed(out.splitlines()):
        if line.startswith(REPORT_PREFIX):
            try:
                report = json.loads(line[len(REPORT_PREFIX):])
            except ValueError:
                report = None
            break
    if report is None:
        last = next((l for l in reversed(err.splitlines()) if l.strip()), "")
        report = {"ok": False, "exit_code": code, "mismatches": [],
                  "error": {"type": "NoReport", "message": f"the loader exited {code} without a report: {last}",
                            "first_line": last, "stage": "import"}}
    e = report.get("error")
    report["class_id"] = catalogue.classify_exception(e.get("type", ""), e.get("message", "")) if e else None
    report["stderr_tail"] = "\n".join(err.splitlines()[-15:])
    return report


def _try_findings(report: Dict[str, Any]) -> List[Finding]:
    e = report.get("error")
    if e:
        cid = report.get("class_id")
        cls = catalogue.BY_ID.get(cid) if cid else None
        return [Finding(ERROR, f"load_model failed here at stage {e.get('stage')}: {e.get('type')}: "
                               f"{e.get('first_line')}",
                        f"known failure: class {cid}, {cls.title}" if cls else "not a catalogued failure",
                        cls.fix if cls else "run with ENVREPRO_DEBUG=1 for the traceback",
                        kind="try", class_id=cid, message=e.get("message", "")[:1000])]
    ref = report.get("reference")
    if report.get("mismatches"):
        return [Finding(ERROR, "the model loads here but " + "; ".join(report["mismatches"]),
                        "the saving environment computed something else (custom code or versions changed)",
                        "`envrepro load MODEL` reproduces the capture; see drift above", kind="try",
                        class_id="drift")]
    if ref:
        return [Finding(INFO, f"load_model works here and reproduces the reference (max |diff| "
                              f"{ref.get('max_abs_diff')})", kind="try")]
    return [Finding(INFO, "load_model works here (no reference prediction to compare)", kind="try")]


# --------------------------------------------------------------------------------------------
# Entry point and rendering
# --------------------------------------------------------------------------------------------

def _read_capture(model: Path, findings: List[Finding]) -> Optional[manifest.Capture]:
    sidecar = layout.sidecar_for(model)
    if not sidecar.is_dir():
        return None
    try:
        return manifest.read(sidecar)
    except errors.InvalidCapture as e:
        findings.append(Finding(WARNING, f"the capture can't be trusted: {e.what}", e.path or "",
                                e.fix or "", kind="capture"))
        try:
            return manifest.read(sidecar, verify=False)
        except errors.InvalidCapture:
            return None


def diagnose(model_path: "os.PathLike[str] | str", python: Optional[str] = None,
             try_load: bool = False) -> DoctorReport:
    """Compare the model's saving environment with ``python`` (default: this interpreter)."""
    model = layout.resolve_model(model_path)
    findings: List[Finding] = []
    cap = _read_capture(model, findings)
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
        drift, df = snapshot_drift(cap)
        findings += df
        custom = manifest.model_custom_objects(cap)
        missing_modules = {m: d for m, d in custom_providers(cap).items()
                           if compat.canonical(d) not in target.packages}
    ctx = catalogue.Context(info=info, saved=saved, target=target,
                            compile=info.training_config is not None, custom_objects=custom,
                            missing_modules=missing_modules)
    for cls, hit in catalogue.detect(ctx):
        findings.append(Finding(hit.severity, f"{cls.title}: {hit.detail}", f"FAILURES.md class {cls.id} "
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
        tried = run_try(model, cap, info, python)
        findings += _try_findings(tried)
    findings = catalogue.by_severity(findings, lambda f: f.severity)
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
