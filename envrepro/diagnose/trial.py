"""``envrepro doctor --try``: call load_model for real, under the target interpreter, on this host.

Static checks predict; this proves. It is the one place envrepro runs a model's code outside a
container, so only on request, only for a capture that passed verification (doctor.py refuses
the others before anything runs), and it says so on stderr before it starts. runtime/loader.py
runs in a subprocess of the target interpreter (TensorFlow is never imported into envrepro's own
process) with the capture's custom modules importable from a private copy of its ``snapshot/``:
the files the manifest lists, each checked against its sha256 as it is copied (so nothing else
in the folder, a ``__pycache__`` included, can be imported). That is the code ``envrepro load``
imports; no folder a manifest names is put on the import path. The loader's error is classified
through the failure table (runtime/failures.py); with a reference prediction in the capture it
also compares predictions: the capture's code under this environment's TensorFlow, Keras, NumPy.
Edits to the source since the save are the static drift check's (codedrift.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, List, Optional

from envrepro.diagnose import catalogue
from envrepro.diagnose.findings import ERROR, INFO, Finding
from envrepro.modelfiles.read import ModelFileInfo
from envrepro.errors import InvalidCapture
from envrepro.fsutil import sha256_bytes
from envrepro.runtime import launch
from envrepro.sidecar import manifest, seal
from envrepro.sidecar.layout import SNAPSHOT_DIR
from envrepro import shipped

TRY_TIMEOUT = float(os.environ.get("ENVREPRO_TRY_TIMEOUT", "900"))


def _plan(model_path: Path, cap: Optional[manifest.Capture], info: ModelFileInfo,
          snapshot_dir: Optional[Path] = None) -> Dict[str, Any]:
    if cap is not None:
        from envrepro.sandbox.loadplan import ContainerPaths, make_plan

        plan = make_plan(cap, ContainerPaths(model=str(model_path), capture=str(cap.root), runtime=shipped.runtime_dir()))
    else:
        flavor = "keras3" if (info.keras_major or 0) >= 3 else None
        plan = {"plan_version": 1, "model_path": str(model_path), "model_name": model_path.name,
                "format": info.format, "compile": True, "custom_objects": {}, "modules": [],
                "keras_flavor": flavor, "safe_mode": True, "reference": None, "optimizer": None}
    # The custom modules from the verified copy of the snapshot; the target's own variables.
    plan["snapshot_dir"] = str(snapshot_dir) if snapshot_dir is not None else None
    plan["env"] = {}
    return plan


def copy_snapshot(cap: manifest.Capture, dest: Path) -> List[str]:
    """Copy the ``snapshot/`` files the manifest lists into ``dest``, each checked against its
    sha256 as read; return the top-level module names they make importable."""
    files = cap.data.get("files") or {}
    prefix = SNAPSHOT_DIR + "/"
    tops = set()
    dest.mkdir(parents=True, exist_ok=True)
    for rel, digest in sorted(files.items()):
        if not rel.startswith(prefix):
            continue
        src = seal.inside(cap.root, rel)
        data = src.read_bytes() if (src.is_file() and not src.is_symlink()) else None
        if data is None or sha256_bytes(data) != digest:
            raise InvalidCapture("doctor --try refuses the capture: snapshot file edited after the capture "
                                 "(sha256 mismatch)", str(src),
                                 "restore it or run `envrepro capture MODEL` again")
        inner = PurePosixPath(rel).parts[1:]
        out = dest.joinpath(*inner)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        tops.add(inner[0] if len(inner) > 1 else inner[0].split(".")[0])
    return sorted(tops)


def _imports(plan: Dict[str, Any], tops: List[str]) -> Dict[str, List[str]]:
    """The modules the loader will import, split by where they come from."""
    names = list(plan.get("modules") or [])
    names += [spec.split(":", 1)[0] for spec in (plan.get("custom_objects") or {}).values()]
    names = list(dict.fromkeys(names))
    snap = [n for n in names if n.split(".")[0] in tops]
    return {"snapshot": snap, "environment": [n for n in names if n not in snap]}


def announce(cap: Optional[manifest.Capture], exe: str, imports: Dict[str, List[str]]) -> str:
    """The line said before anything of the model or capture runs on this host."""
    if cap is None:
        return (f"doctor --try loads the model with load_model in a Python process on this host ({exe}); "
                "with no capture no custom code is imported (a model file can still carry code: Lambda layers)")
    line = (f"doctor --try imports the capture's custom code ({SNAPSHOT_DIR}/: "
            f"{', '.join(imports['snapshot']) or 'none'}) into a Python process on this host ({exe}) "
            "and runs load_model there")
    if imports["environment"]:
        line += f"; it also imports {', '.join(imports['environment'])} from that environment"
    return line


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_try(model_path: Path, cap: Optional[manifest.Capture], info: ModelFileInfo,
            python: Optional[str] = None, notice: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Run runtime/loader.py under the target interpreter; return its report (plus ``class_id``).
    ``cap`` must have passed ``manifest.read`` with verification (doctor.py refuses the others)."""
    from envrepro.runtime.loader import REPORT_PREFIX

    exe = python or sys.executable
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1")
    with tempfile.TemporaryDirectory(prefix="envrepro-try-") as tmp:
        snapshot_dir: Optional[Path] = None
        tops: List[str] = []
        if cap is not None:
            snapshot_dir = Path(tmp) / SNAPSHOT_DIR
            tops = copy_snapshot(cap, snapshot_dir)
        plan = _plan(model_path, cap, info, snapshot_dir)
        imports = _imports(plan, tops)
        (notice or _stderr)(announce(cap, exe, imports))
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(json.dumps(plan), encoding="utf-8")
        try:
            proc = subprocess.run(launch.host_argv(exe, "loader", ["--plan", plan_file], root=shipped.runtime_dir()),
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
    report["imports"] = imports
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
