"""``envrepro doctor --try``: call load_model for real, under the target interpreter.

Static checks predict; this proves. runtime/loader.py runs in a subprocess of the target
interpreter (TensorFlow is never imported into envrepro's own process) with the model's custom
modules importable from their *current* source, and its error is classified through the failure
table (runtime/failures.py). With a reference prediction in the capture it also compares
predictions, the only way to catch a custom layer edited after the save.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from envrepro.diagnose import catalogue
from envrepro.diagnose.checks import origin_root
from envrepro.diagnose.findings import ERROR, INFO, Finding
from envrepro.diagnose.modelfiles import ModelFileInfo
from envrepro.runtime import launch
from envrepro.sidecar import manifest

TRY_TIMEOUT = float(os.environ.get("ENVREPRO_TRY_TIMEOUT", "900"))


def _plan(model_path: Path, cap: Optional[manifest.Capture], info: ModelFileInfo) -> Dict[str, Any]:
    if cap is not None:
        from envrepro.sandbox.plan import ContainerPaths, make_plan

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
    roots = [r for r in (origin_root(e) for e in (manifest.snapshot_entries(cap) if cap else []))
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


def try_findings(report: Dict[str, Any]) -> List[Finding]:
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
