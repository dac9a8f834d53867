"""Write a capture: run the probe, write the lock, copy the snapshot, write the manifest last.

Everything is written into a temporary sibling folder, which replaces the old capture only when
complete (see ``fsutil.replace_dir``); two captures of one model serialise on a file lock.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from envrepro import __version__
from envrepro.sidecar import manifest
from envrepro.runtime import launch
from envrepro.errors import CaptureError, ProbeError
from envrepro.fsutil import cleanup_stale, file_lock, replace_dir, sha256_file, sha256_tree

PROBE_TIMEOUT = float(os.environ.get("ENVREPRO_PROBE_TIMEOUT", "900"))


@dataclass
class CaptureResult:
    sidecar: Path
    manifest: Dict[str, Any]
    warnings: List[str] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)


def _hashes_default() -> bool:
    return os.environ.get("ENVREPRO_OFFLINE", "") in ("", "0", "false", "no")


def run_probe_subprocess(python: str, model_path: Path, out_dir: Path, modules: Sequence[str],
                         code_paths: Sequence[str], sample: Optional[str] = None) -> Dict[str, Any]:
    """Run the stdlib-only probe under another interpreter (envrepro need not be installed there)."""
    if not (os.path.isfile(python) and os.access(python, os.X_OK)) and not shutil.which(python):
        raise CaptureError("interpreter not found or not executable", python,
                           "pass the training environment's python, e.g. /path/to/venv/bin/python")
    cmd = launch.host_argv(python, "probe", ["--model", model_path, "--out", out_dir])
    for m in modules:
        cmd += ["--module", m]
    for c in code_paths:
        cmd += ["--code-path", os.path.abspath(c)]
    if sample:
        cmd += ["--sample", os.path.abspath(sample)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1")
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              timeout=PROBE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"probe did not finish within {PROBE_TIMEOUT:.0f} s", python,
                         "set ENVREPRO_PROBE_TIMEOUT to allow more") from None
    except OSError as e:
        raise ProbeError(f"could not start the probe ({e.strerror})", python,
                         "pass the training environment's python") from None
    facts_file = out_dir / "facts.json"
    if proc.returncode != 0 or not facts_file.is_file():
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        line = next((l for l in reversed(err) if l.startswith("envrepro-probe:")), err[-1] if err else "")
        line = line.replace("envrepro-probe: error: ", "")
        raise ProbeError(f"probe failed under {python}: {line or 'exit code %d' % proc.returncode}",
                         str(model_path), "rerun with ENVREPRO_DEBUG=1 for the probe's traceback")
    return json.loads(facts_file.read_text(encoding="utf-8"))


def run_probe_inprocess(model_path: Path, out_dir: Path, model: Any, sample_input: Any,
                        modules: Sequence[str], code_paths: Sequence[str]) -> Dict[str, Any]:
    from envrepro.runtime import probe

    try:
        return probe.collect(str(model_path), str(out_dir), model=model, sample_input=sample_input,
                             modules=tuple(modules), code_paths=tuple(code_paths))
    except Exception as e:  # the probe raises plain exceptions (it is stdlib-only)
        raise ProbeError(f"probe failed: {type(e).__name__}: {e}", str(model_path),
                         "rerun with --debug for the traceback") from e


def _utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _custom_object_map(facts: Dict[str, Any], module_names: Dict[str, str]) -> Dict[str, str]:
    """Every custom object name (registered names too) -> ``module:attr`` importable at load time."""
    out: Dict[str, str] = {}
    for obj in facts.get("custom_objects") or []:
        name, mod, attr = obj.get("name"), obj.get("module"), obj.get("attr")
        if not (name and mod and attr):
            continue
        mod = module_names.get(mod, mod)
        out[name] = f"{mod}:{attr}"
    return dict(sorted(out.items()))


def _move_reference(probe_out: Path, root: Path, facts: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    ref = facts.get("reference")
    if not ref:
        return None
    src_dir = probe_out / "reference"
    dst_dir = root / manifest.REFERENCE_DIR
    dst_dir.mkdir(parents=True, exist_ok=True)
    out = dict(ref)
    for key in ("inputs", "outputs"):
        moved = []
        for name in ref.get(key) or []:
            base = os.path.basename(name)
            shutil.move(str(src_dir / base), str(dst_dir / base))
            moved.append(f"{manifest.REFERENCE_DIR}/{base}")
        out[key] = moved
    return out


def build_manifest(model_path: Path, fmt: str, facts: Dict[str, Any], lock_result: Any,
                   snap: Any, reference: Optional[Dict[str, Any]], warnings: List[str],
                   inferred: bool = False) -> Dict[str, Any]:
    fw = facts.get("frameworks") or {}
    mdl = facts.get("model") or {}
    custom = _custom_object_map(facts, snap.modules)
    requirement_modules = sorted({m["module"] for m in facts.get("modules") or [] if m.get("distribution")})
    snap_modules = sorted(set(snap.modules.values()))
    return {
        "schema": manifest.SCHEMA,
        "envrepro_version": __version__,
        "created": _utcnow(),
        "inferred": inferred,
        "model": {
            "name": model_path.name,
            "format": fmt,
            "class_name": mdl.get("class_name"),
            "sha256": sha256_tree(model_path),
        },
        "python": facts.get("python") or {},
        "frameworks": {
            "tensorflow": fw.get("tensorflow"),
            "tensorflow_distribution": fw.get("tensorflow_distribution"),
            "keras": fw.get("keras"),
            "keras_flavor": fw.get("keras_flavor"),
            "tf_keras": fw.get("tf_keras"),
            "git_version": fw.get("git_version"),
            "build": fw.get("build") or {},
        },
        "env": facts.get("env") or {},
        "load": {
            "compile": bool(mdl.get("compile", True)),
            "custom_objects": custom,
            "modules": snap_modules + requirement_modules,
        },
        "lock": {
            "file": manifest.LOCK_FILE,
            "requirements_in": manifest.REQUIREMENTS_IN,
            "sha256": lock_result.lock_sha256,
            "distributions": lock_result.count,
            "hashes": bool(lock_result.hashes),
            "hashes_reason": lock_result.hashes_reason,
            "missing_hashes": list(lock_result.missing_hashes or []),
            "sdist_only": lock_result.sdist_only,
            "top_level": list(lock_result.top_level or []),
            "local": list(lock_result.local or []),
            "platform": f"{(facts.get('python') or {}).get('sys_platform', '')}_{(facts.get('python') or {}).get('machine', '')}",
        },
        "snapshot": {
            "dir": manifest.SNAPSHOT_DIR,
            "modules": dict(sorted(snap.modules.items())),
            "files": snap.files,
            "refused_links": snap.refused,
        },
        "requirement_modules": {m["module"]: m["distribution"] for m in facts.get("modules") or []
                                if m.get("distribution")},
        "reference": reference,
        "reference_skipped": facts.get("reference_skipped"),
        "optimizer": facts.get("optimizer"),
        "warnings": warnings,
    }


def capture(model_path: "os.PathLike[str] | str", *, model: Any = None, sample_input: Any = None,
            modules: Iterable[str] = (), code_paths: Iterable[str] = (), python: Optional[str] = None,
            hashes: Optional[bool] = None, sample_file: Optional[str] = None) -> CaptureResult:
    """Capture the environment of the model saved at ``model_path`` into ``<model>.envrepro/``."""
    from envrepro.capturing import lock as lockmod
    from envrepro.capturing.snapshot import copy_modules

    t0 = time.perf_counter()
    model_path = manifest.resolve_model(model_path)
    fmt = manifest.detect_format(model_path)
    sidecar = manifest.sidecar_for(model_path)
    parent = sidecar.parent
    if not os.access(parent, os.W_OK):
        raise CaptureError("folder is not writable, the capture can't be written beside the model",
                           str(parent), "copy the model somewhere writable")
    modules, code_paths = list(modules), [os.path.abspath(c) for c in code_paths]
    hashes = _hashes_default() if hashes is None else hashes
    seconds: Dict[str, float] = {}
    with file_lock(parent / f".{sidecar.name}.lock"):
        cleanup_stale(parent, sidecar.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sidecar.name}.tmp-", dir=str(parent)))
        try:
            probe_out = Path(tempfile.mkdtemp(prefix="probe-", dir=str(tmp)))
            t = time.perf_counter()
            if python:
                facts = run_probe_subprocess(python, model_path, probe_out, modules, code_paths, sample_file)
            else:
                if sample_file and sample_input is None:
                    sample_input = _load_sample(sample_file)
                facts = run_probe_inprocess(model_path, probe_out, model, sample_input, modules, code_paths)
            seconds["probe"] = time.perf_counter() - t
            warnings = list(facts.get("warnings") or [])
            reference = _move_reference(probe_out, tmp, facts)
            shutil.rmtree(probe_out)

            t = time.perf_counter()
            lock_result = lockmod.write_lock(facts.get("distributions") or [], facts.get("python") or {},
                                             tmp, hashes=hashes,
                                             training_python=python or sys.executable)
            seconds["lock"] = time.perf_counter() - t
            if hashes and not lock_result.hashes:
                warnings.append(f"lock has exact pins but no hashes ({lock_result.hashes_reason})")

            t = time.perf_counter()
            snap = copy_modules(facts.get("modules") or [], tmp / manifest.SNAPSHOT_DIR, tmp)
            warnings.extend(snap.warnings)
            seconds["snapshot"] = time.perf_counter() - t

            data = build_manifest(model_path, fmt, facts, lock_result, snap, reference, warnings)
            t = time.perf_counter()
            data = manifest.write_manifest(tmp, data)
            replace_dir(tmp, sidecar)
            seconds["write"] = time.perf_counter() - t
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    seconds["total"] = time.perf_counter() - t0
    return CaptureResult(sidecar=sidecar, manifest=data, warnings=warnings, seconds=seconds)


def _load_sample(path: str) -> Any:
    import numpy as np  # only reached with --sample, where TF (and numpy) are present

    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return np.load(path, allow_pickle=False)
