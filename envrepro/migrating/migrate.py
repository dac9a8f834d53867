"""``envrepro migrate``: the capture's model carried into a target TensorFlow/Keras, proven there.

    capture checked (exit 2) -> OUT checked (exit 2) -> target chosen (exit 2) -> images
    -> source container: load with the recorded recipe, re-check the reference, export
    -> target container: rebuild NAME.keras, load the inference SavedModel, convert to ONNX,
       each verified against the capture's reference
    -> OUT swapped in whole, with migration.json

Every bad input is refused before the engine is reached or anything is written.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from envrepro import errors
from envrepro.engine.base import ContainerEngine
from envrepro.migrating import outdir, sides, staging, targets
from envrepro.migrating.report import Migration
from envrepro.sidecar import manifest

SOURCE_FILES = ("source.json",)


def _name(model_path: Path) -> str:
    name = model_path.name
    for suffix in (".keras", ".h5", ".hdf5"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or "model"
    return name or "model"


def _check_code_path(code_path: Optional[str]) -> None:
    if code_path is not None and not Path(code_path).is_dir():
        raise errors.EnvreproError("--code-path is not a folder", code_path,
                                   "pass the folder that holds your ported modules")


def _source_facts(report: Optional[dict]) -> dict:
    v = (report or {}).get("versions") or {}
    return {"tensorflow": v.get("tensorflow"), "keras": v.get("keras"), "python": v.get("python"),
            "numpy": v.get("numpy"), "recipe": ((report or {}).get("load") or {}).get("recipe")}


@dataclass(frozen=True)
class Inputs:
    """What the user asked for, checked: refused here (exit 2) before any progress is shown,
    any engine reached or anything written."""

    out_dir: Path
    target: targets.Target
    code_path: Optional[str] = None


def check_inputs(capture: manifest.Capture, out: Optional[str] = None, python: Optional[str] = None,
                 to: Optional[str] = None, code_path: Optional[str] = None) -> Inputs:
    out_dir = outdir.check_out(out, capture.model_path)
    _check_code_path(code_path)
    return Inputs(out_dir, targets.choose(python, to), code_path)


def migrate(capture: manifest.Capture, engine_factory: Callable[[], ContainerEngine],
            ensure_image: Callable[..., Any], out: Optional[str] = None, python: Optional[str] = None,
            to: Optional[str] = None, code_path: Optional[str] = None, unsafe: bool = False,
            say: Any = None, inputs: Optional[Inputs] = None) -> Migration:
    """Migrate a checked capture (``sandbox.prepare``). ``ensure_image(capture, engine)`` finds or
    builds an environment image (``image.ensure.ensure_image`` with the command's progress);
    ``inputs``: already checked by ``check_inputs`` (else checked here)."""
    t0 = time.perf_counter()
    model_path = capture.model_path
    inputs = inputs or check_inputs(capture, out, python, to, code_path)
    out_dir, target, code_path = inputs.out_dir, inputs.target, inputs.code_path
    tcap = targets.target_capture(target, say=say)
    result = Migration(model=str(model_path), out=str(out_dir), target=target.to_dict(),
                       reference="source-prediction" if capture.get("inferred") else "capture")
    engine = engine_factory()
    src_image = ensure_image(capture, engine)
    tgt_image = ensure_image(tcap, engine)
    result.target["image"] = tgt_image.tag
    result.timings["images"] = round(time.perf_counter() - t0, 3)
    src_out = staging.new_folder("source")
    tgt_out = staging.new_folder("target")
    try:
        src = sides.run_source(capture, engine, src_image, src_out, unsafe=unsafe)
        result.timings["source"] = src.seconds
        staging.accepted(src_out, "source environment")
        if src.report is None:
            src = _from_checkpoint(src, src_out, result)
        result.source = _source_facts(src.report)
        if src.report is None or src.exit_code not in (0,):
            return _source_failed(result, src)
        tgt = sides.run_target(capture, engine, tgt_image, src_out, tgt_out, _name(model_path),
                               code_path=code_path, unsafe=unsafe)
        result.timings["target"] = tgt.seconds
        rep = tgt.report or {}
        tv = rep.get("versions") or {}
        result.target.update({k: tv[k] for k in ("tensorflow", "keras", "python") if tv.get(k)})
        if tgt.report is None:
            result.error = f"the target environment wrote no report: {tgt.error_line()}"
            result.error_code = errors.EXIT_LOAD_FAILED
            return result
        staging.accepted(tgt_out, "target environment")
        result.artifacts = [dict(a) for a in rep.get("artifacts") or [] if isinstance(a, dict)]
        _onnx_reason(result)
        result.optimizer = rep.get("optimizer")
        result.agree = dict(rep.get("agree") or {})
        result.warnings.extend(str(w) for w in list(rep.get("warnings") or []) + list(rep.get("problems") or []))
        if rep.get("error"):
            result.error = sides.SideRun(tgt.exit_code, rep, tgt.stderr_tail).error_line()
        result.timings["total"] = round(time.perf_counter() - t0, 3)
        _write_out(result, tgt_out, src_out, out_dir)
        return result
    finally:
        staging.remove(src_out)
        staging.remove(tgt_out)
        result.timings["total"] = round(time.perf_counter() - t0, 3)


def _from_checkpoint(src: sides.SideRun, src_out: Path, result: Migration) -> sides.SideRun:
    """A source that died without a report (a crash inside TensorFlow) after its checkpoint:
    the ``source.json`` it wrote before the inference SavedModel says everything else is there.
    The migration goes on from it, the SavedModel not written and why; anything else stays a
    failed source."""
    try:
        data = json.loads((src_out / "source.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return src
    sm = data.get("savedmodel") if isinstance(data, dict) else None
    if not (isinstance(sm, dict) and sm.get("checkpoint") and data.get("ok")):
        return src
    result.warnings.append(f"the source environment died writing the inference SavedModel "
                           f"({sides.died(src.exit_code)}): migrated from what it wrote before")
    return sides.SideRun(0, data, src.stderr_tail, src.seconds)


def _source_failed(result: Migration, src: sides.SideRun) -> Migration:
    """The source couldn't load the model (5), or its reproduction doesn't match the capture's
    reference (6): nothing is migrated, nothing written."""
    rep = src.report or {}
    if src.exit_code == errors.EXIT_MISMATCH:
        result.error = ("the reproduced environment does not reproduce the capture's reference "
                        "(`envrepro load` says how): nothing to migrate from: "
                        + "; ".join(str(m) for m in rep.get("mismatches") or [])[:400])
        result.error_code = errors.EXIT_MISMATCH
    else:
        result.error = f"the source environment can't load the model: {src.error_line()}"
        result.error_code = errors.EXIT_LOAD_FAILED
    return result


def _write_out(result: Migration, tgt_out: Path, src_out: Path, out_dir: Path) -> None:
    """The written artifacts and migration.json, swapped into OUT whole. Paths in the report
    become paths under OUT; an artifact the report names but the target didn't write is said."""
    tmp = outdir.temp_beside(out_dir)
    try:
        for a in result.artifacts:
            rel = a.get("path")
            if not a.get("written") or not isinstance(rel, str):
                continue
            rel_path = Path(rel)
            if rel_path.is_absolute() or ".." in rel_path.parts or len(rel_path.parts) != 1:
                a.update(written=False, verified=False, why_not=f"the target named a path envrepro "
                         f"does not take: {rel[:80]!r}")
                continue
            src = tgt_out / rel_path
            if not src.exists():
                a.update(written=False, verified=False, why_not="the target reported it but wrote no file")
                continue
            staging.copy_accepted(tgt_out, rel_path, tmp / rel_path)
            a["path"] = str(out_dir / rel_path)
            _copy_code(a, tgt_out, tmp, out_dir)
        if (src_out / "source.json").is_file():
            staging.copy_accepted(src_out, Path("source.json"), tmp / "source.json")
        (tmp / outdir.REPORT).write_text(result.to_json() + "\n", encoding="utf-8")
        outdir.place(tmp, out_dir)
    except BaseException:
        staging.remove(tmp)
        raise


def _onnx_reason(result: Migration) -> None:
    """The target image has no tf2onnx because envrepro left it out of the lock (it would have
    moved a version, or has no wheel): that reason, which only the host knows, replaces the
    runtime's "not in the target environment"."""
    onnx = result.target.get("onnx")
    why = onnx.get("why_not") if isinstance(onnx, dict) else None
    for a in result.artifacts:
        if why and a.get("format") == "onnx" and not a.get("written"):
            a["why_not"] = f"tf2onnx/onnxruntime were left out of the target's lock: {why}"


def _copy_code(a: dict, tgt_out: Path, tmp: Path, out_dir: Path) -> None:
    """The module an artifact needs beside it (``NAME_lambdas.py``: Lambda functions rebuilt
    from the capture's source): one plain ``.py`` name the target wrote, else the artifact is
    not kept as verified."""
    code = a.get("code")
    if code is None:
        return
    ok = isinstance(code, str) and code.endswith(".py") and len(Path(code).parts) == 1 and \
        not Path(code).is_absolute() and code not in (".py",) and (tgt_out / code).is_file()
    if not ok:
        a.update(verified=False, code=None, why_not=f"the target named a code file envrepro does "
                 f"not take: {str(code)[:80]!r}")
        return
    staging.copy_accepted(tgt_out, Path(code), tmp / code)
    a["code"] = str(out_dir / code)


def reread(out_dir: Path) -> dict:
    return json.loads((out_dir / outdir.REPORT).read_text(encoding="utf-8"))
