"""The in-process capture API: ``envrepro.save``, ``envrepro.capture`` and the save hook.

A capture runs the probe (in this process, or under the training interpreter through
``proberunner``), writes the lock, copies the snapshot and fills in the manifest; the folder
reaches disk through ``envrepro.sidecar.writer``, the one capture transaction.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from envrepro import config
from envrepro.version import __version__
from envrepro import proberunner
from envrepro.packages.indexhashes import hashes_wanted
from envrepro.errors import CaptureError, ProbeError
from envrepro.fsutil import sha256_tree
from envrepro.runtime import reference as probe_reference
from envrepro.sidecar import layout, writer
from envrepro.modelfiles import format as modelformat


@dataclass
class CaptureResult:
    sidecar: Path
    manifest: Dict[str, Any]
    warnings: List[str] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)


def run_probe_inprocess(model_path: Path, out_dir: Path, model: Any, sample_input: Any,
                        modules: Sequence[str], code_paths: Sequence[str],
                        resume_check: bool = False, sample_source: str = "sample_input") -> Dict[str, Any]:
    from envrepro.runtime import probe
    from envrepro.runtime.samples import SampleMismatch

    try:
        return probe.collect(str(model_path), str(out_dir), model=model, sample_input=sample_input,
                             modules=tuple(modules), code_paths=tuple(code_paths),
                             resume_check=resume_check, sample_source=sample_source)
    except SampleMismatch as e:     # the sample doesn't fit the model: bad input, nothing written
        raise CaptureError(e.what, str(model_path), e.fix) from None
    except Exception as e:  # the probe raises plain exceptions (it is stdlib-only)
        raise ProbeError(f"probe failed: {type(e).__name__}: {e}", str(model_path),
                         "set ENVREPRO_DEBUG=1 for the traceback") from e


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
    src_dir = probe_out / probe_reference.REFERENCE_DIR   # where the probe wrote them
    dst_dir = root / layout.REFERENCE_DIR
    dst_dir.mkdir(parents=True, exist_ok=True)
    out = dict(ref)
    for key in ("inputs", "outputs"):
        moved = []
        for name in ref.get(key) or []:
            base = os.path.basename(name)
            shutil.move(str(src_dir / base), str(dst_dir / base))
            moved.append(f"{layout.REFERENCE_DIR}/{base}")
        out[key] = moved
    return out


def _move_resume(probe_out: Path, root: Path, facts: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The resume check's targets and updated weights moved beside the reference
    (runtime/resume.py wrote them there), their names made relative to the capture."""
    resume = facts.get("resume_check")
    if not resume or resume.get("skipped"):
        return resume

    def move(name: str) -> str:
        base = os.path.basename(name)
        shutil.move(str(probe_out / probe_reference.REFERENCE_DIR / base),
                    str(root / layout.REFERENCE_DIR / base))
        return f"{layout.REFERENCE_DIR}/{base}"

    out = dict(resume)
    out["targets"] = [move(name) for name in resume.get("targets") or []]
    if resume.get("weights_file"):
        out["weights_file"] = move(resume["weights_file"])
    return out


def _load_section(facts: Dict[str, Any], mdl: Dict[str, Any], custom: Dict[str, str],
                  modules: List[str]) -> Dict[str, Any]:
    """How to load the model; ``recipe`` and ``recipes_failed`` only when the probe loaded it
    (runtime/recipes.py): a capture without them loads the way captures always did."""
    section: Dict[str, Any] = {"compile": bool(mdl.get("compile", True)), "custom_objects": custom,
                               "modules": modules}
    if facts.get("lambdas"):
        # Each Lambda layer's function source (runtime/lambdasource.py): migrate rebuilds from it.
        section["lambdas"] = list(facts["lambdas"])
    outcome = facts.get("load") or {}
    if outcome.get("recipe"):
        section["recipe"] = outcome["recipe"]
        section["recipes_failed"] = list(outcome.get("recipes_failed") or [])
    return section


def build_manifest(model_path: Path, fmt: str, facts: Dict[str, Any], lock_result: Any,
                   snap: Any, reference: Optional[Dict[str, Any]], warnings: List[str],
                   inferred: bool = False) -> Dict[str, Any]:
    """The manifest of a capture, real or inferred (``--infer`` builds its facts itself), so both
    describe a model the same way; the writer adds ``files`` when it writes it."""
    fw = facts.get("frameworks") or {}
    mdl = facts.get("model") or {}
    custom = _custom_object_map(facts, snap.modules)
    requirement_modules = sorted({m["module"] for m in facts.get("modules") or [] if m.get("distribution")})
    snap_modules = sorted(set(snap.modules.values()))
    return {
        "schema": layout.SCHEMA,
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
        "load": _load_section(facts, mdl, custom, snap_modules + requirement_modules),
        "lock": {
            "file": layout.LOCK_FILE,
            "requirements_in": layout.REQUIREMENTS_IN,
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
            "dir": layout.SNAPSHOT_DIR,
            "modules": dict(sorted(snap.modules.items())),
            "files": snap.files,
            "refused_links": snap.refused,
        },
        "requirement_modules": {m["module"]: m["distribution"] for m in facts.get("modules") or []
                                if m.get("distribution")},
        "reference": reference,
        "reference_skipped": facts.get("reference_skipped"),
        "optimizer": facts.get("optimizer"),
        "resume_check": facts.get("resume_check"),
        "warnings": warnings,
    }


def capture(model_path: "os.PathLike[str] | str", *, model: Any = None, sample_input: Any = None,
            modules: Iterable[str] = (), code_paths: Iterable[str] = (), python: Optional[str] = None,
            hashes: Optional[bool] = None, sample_file: Optional[str] = None,
            timeout: Optional[float] = None, resume_check: bool = False) -> CaptureResult:
    """Capture the environment of the model saved at ``model_path`` into ``<model>.envrepro/``:
    probed in this process, or under ``python`` (the training environment's interpreter, given
    ``timeout`` seconds: the probe-timeout setting when None). A failed probe writes nothing.

    ``resume_check`` records one training step on the reference batch, run on a copy loaded
    from the file (runtime/resume.py), for ``envrepro load`` to replay."""
    from envrepro.packages.lockwriter import write_lock
    from envrepro.capturing.snapshot import copy_modules

    t0 = time.perf_counter()
    model_path = layout.resolve_model(model_path)
    fmt = modelformat.detect_format(model_path)
    modules, code_paths = list(modules), [os.path.abspath(c) for c in code_paths]
    hashes = hashes_wanted() if hashes is None else hashes
    timeout = config.probe_timeout(timeout) if python else None
    seconds: Dict[str, float] = {}
    notes: List[str] = []

    def fill(folder: Path) -> Dict[str, Any]:
        nonlocal sample_input
        probe_out = Path(tempfile.mkdtemp(prefix="probe-", dir=str(folder)))
        t = time.perf_counter()
        if python:
            facts = proberunner.capture_facts(python, model_path, probe_out, modules, code_paths,
                                              sample_file, timeout=timeout,
                                              resume_check=resume_check)
        else:
            source = "sample_input"
            if sample_file and sample_input is None:
                sample_input, source = _load_sample(sample_file, model_path), f"sample {sample_file}"
            facts = run_probe_inprocess(model_path, probe_out, model, sample_input, modules, code_paths,
                                        resume_check, source)
        seconds["probe"] = time.perf_counter() - t
        notes.extend(facts.get("warnings") or [])
        if not facts.get("reference") and facts.get("reference_skipped"):
            notes.append(no_reference_warning(facts["reference_skipped"]))
        reference = _move_reference(probe_out, folder, facts)
        facts["resume_check"] = _move_resume(probe_out, folder, facts)
        resume = facts["resume_check"] or {}
        if resume.get("skipped"):
            notes.append(f"resume check skipped: {resume['skipped']}")
        elif resume:
            seconds["resume_check"] = float(resume.get("seconds") or 0.0)
        shutil.rmtree(probe_out)

        t = time.perf_counter()
        lock_result = write_lock(facts.get("distributions") or [], facts.get("python") or {}, folder,
                                 hashes=hashes, training_python=python or sys.executable)
        seconds["lock"] = time.perf_counter() - t
        if hashes and not lock_result.hashes:
            notes.append(f"lock has exact pins but no hashes ({lock_result.hashes_reason})")

        t = time.perf_counter()
        snap = copy_modules(facts.get("modules") or [], folder / layout.SNAPSHOT_DIR, folder)
        notes.extend(snap.warnings)
        seconds["snapshot"] = time.perf_counter() - t
        return build_manifest(model_path, fmt, facts, lock_result, snap, reference, notes)

    written = writer.write_capture(model_path, fill)
    seconds["write"] = written.seconds
    seconds["total"] = time.perf_counter() - t0
    return CaptureResult(sidecar=written.sidecar, manifest=written.manifest, warnings=notes,
                         seconds=seconds)


def safe_capture(path: Any, **kwargs: Any) -> Optional[CaptureResult]:
    """:func:`capture` for the save path (``save``, the hook): failures become warnings, because
    a capture must never break training."""
    try:
        result = capture(str(path), **kwargs)
    except Exception as e:  # noqa: BLE001 - a capture must never break training
        warnings.warn(f"envrepro: the model was saved, but its environment was not captured: {e}",
                      RuntimeWarning, stacklevel=3)
        if os.environ.get("ENVREPRO_DEBUG") == "1":
            traceback.print_exc()
        return None
    for w in result.warnings:
        if os.environ.get("ENVREPRO_QUIET") != "1":
            warnings.warn(f"envrepro: {w}", UserWarning, stacklevel=3)
    return result


def no_reference_warning(reason: str) -> str:
    """The one capture warning for a capture without a reference prediction; ``reason`` (the
    manifest's ``reference_skipped``) names the input and how to pass a sample."""
    return f"no reference prediction, so `envrepro load` can't verify the model: {reason}"


def _load_sample(path: str, model_path: Path) -> Any:
    """``--sample FILE`` read in this process (runtime/samples.py); CaptureError when it can't be."""
    from envrepro.runtime.samples import load_sample

    try:
        return load_sample(path)
    except Exception as e:  # noqa: BLE001 - numpy and json raise several kinds: one line for all
        raise CaptureError(f"cannot read sample {path}: {type(e).__name__}: {e}", str(model_path),
                           "pass a .npy or .npz file saved with numpy, or a .json list or object "
                           "of input name -> nested lists") from None
