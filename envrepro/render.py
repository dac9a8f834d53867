"""Every command's result, printed as text or as JSON, in one place.

Commands (``envrepro.commands``) return result objects and print nothing; ``emit`` writes the
result to stdout as text (or ``--json``) and returns the command's exit code. The long text forms
of the doctor and load reports live beside their data (``diagnose/doctor.py``,
``sandbox/report.py``); this module chooses between them.
"""
from __future__ import annotations

import functools
import json
import sys
from typing import Any, Dict, List, Optional, TextIO

from envrepro import commands
from envrepro.image import inventory
from envrepro.bundling.members import Written
from envrepro.image.push import PushResult, render as push_text
from envrepro.migrating.report import Migration
from envrepro.capturing.capture import CaptureResult
from envrepro.diagnose import doctor
from envrepro.sandbox import report as sandbox
from envrepro.serving.image import ServeBuild
from envrepro.signing.signature import Signed, Verified
from envrepro.sidecar.manifest import Capture


def emit(result: Any, as_json: bool = False, verbose: bool = False, out: Optional[TextIO] = None) -> int:
    """Print ``result`` (text, or JSON with ``as_json``) and return the command's exit code."""
    out = out or sys.stdout
    text = to_json(result) if as_json else to_text(result, verbose=verbose)
    if text:
        out.write(text.rstrip("\n") + "\n")
    return exit_code(result)


def exit_code(result: Any) -> int:
    if isinstance(result, sandbox.LoadReport):
        return sandbox.exit_code(result)
    if isinstance(result, inventory.PruneResult):
        return 1 if result.failed else 0
    return int(getattr(result, "exit_code", 0))


def to_json(result: Any) -> str:
    if isinstance(result, sandbox.LoadReport):
        return result.to_json()
    return json.dumps(_jsonable(result), indent=2, default=str)


@functools.singledispatch
def _jsonable(result: Any) -> Any:
    return result.to_dict()


@_jsonable.register
def _(result: CaptureResult) -> Any:
    return result.manifest


@_jsonable.register
def _(result: commands.Inspection) -> Any:
    return summarize(result.capture) if result.capture is not None else result.file_info.to_dict()


@_jsonable.register
def _(result: commands.ImageList) -> Any:
    return [r.to_dict() for r in result.rows]


@_jsonable.register
def _(result: commands.DockerfileText) -> Any:
    return {"dockerfile": result.text}


@_jsonable.register
def _(result: commands.Exited) -> Any:
    return {"exit_code": result.exit_code}


@functools.singledispatch
def to_text(result: Any, verbose: bool = False) -> str:
    raise TypeError(f"no text form for {type(result).__name__}")


@to_text.register
def _(result: CaptureResult, verbose: bool = False) -> str:
    m = result.manifest
    lock = m.get("lock") or {}
    lines = [f"captured {m['model']['name']} -> {result.sidecar}",
             f"  python {m['python'].get('version')}, tensorflow {m['frameworks'].get('tensorflow')}, "
             f"keras {m['frameworks'].get('keras')}; {lock.get('distributions')} pins"
             f" ({'hashed' if lock.get('hashes') else 'no hashes'}); "
             f"{len((m.get('snapshot') or {}).get('files') or [])} snapshot files; "
             f"{len((m.get('load') or {}).get('custom_objects') or {})} custom objects"
             + (f"; {result.seconds['total']:.2f} s" if result.seconds.get("total") else "")
             + ("; inferred from the model's files" if m.get("inferred") else "")]
    return "\n".join(lines)


@to_text.register
def _(result: commands.Inspection, verbose: bool = False) -> str:
    if result.capture is not None:
        return capture_summary(result.capture)
    from envrepro.modelfiles.read import describe

    return (describe(result.file_info).rstrip("\n")
            + f"\n\nnot captured: `envrepro capture --infer {result.model}` writes a best-effort capture "
            "from these files, then `envrepro load` reproduces it")


@to_text.register
def _(result: doctor.DoctorReport, verbose: bool = False) -> str:
    return doctor.render(result, verbose=verbose)


@to_text.register
def _(result: sandbox.LoadReport, verbose: bool = False) -> str:
    return sandbox.render_report(result)


@to_text.register
def _(result: commands.ImageList, verbose: bool = False) -> str:
    return inventory.render_images(result.rows)


@to_text.register
def _(result: inventory.PruneResult, verbose: bool = False) -> str:
    return inventory.render_prune(result)


@to_text.register
def _(result: commands.DockerfileText, verbose: bool = False) -> str:
    return result.text


@to_text.register
def _(result: commands.KubernetesManifests, verbose: bool = False) -> str:
    from envrepro.serving import k8s

    return k8s.to_yaml(result.documents)


@to_text.register
def _(result: commands.Exited, verbose: bool = False) -> str:
    return ""


def serve_build_text(result: Any, verbose: bool = False) -> str:
    """``envrepro build --serve``: the tag, the self-check per protocol, the verdict."""
    p = result.proof
    lines = [f"envrepro build --serve {result.name}",
             f"  environment  {result.env_tag}",
             f"  image        {result.tag or '(not tagged)'} ({result.source}, key {result.key[:16]})"]
    if p is not None:
        if p.ready_seconds is not None:
            lines.append(f"  ready        after {p.ready_seconds:.1f} s (model loaded, warm-up prediction done)")
        for label, check in (("TF Serving", p.v1), ("V2 infer", p.v2)):
            if check is not None:
                state = "equals the reference" if check.ok else f"DIFFERS ({check.error})"
                diff = "" if check.max_abs_diff is None else f", max |diff| {check.max_abs_diff:.3g}"
                lines.append(f"  {label:<12} HTTP {check.status}{diff}: {state}")
        if p.exit_code is not None:
            lines.append(f"  SIGTERM      exit {p.exit_code}" + (" (drained, clean)" if p.exit_code == 0 else ""))
        if p.error:
            lines.append(f"  note         {p.error}")
        if p.verdict not in ("verified", "not verified") and p.logs:
            lines += ["  server log (last lines):"] + ["    " + l for l in p.logs.strip().splitlines()[-15:]]
    for w in result.warnings:
        lines.append(f"  warning      {w}")
    verdict = p.verdict if p else ("reused" if result.source == "local" else "not checked")
    text = {"verified": "result: VERIFIED - both protocols answer the reference prediction; tagged",
            "not verified": "result: SERVES, NOT VERIFIED - the capture has no reference prediction to compare",
            "mismatch": "result: MISMATCH - the served answers differ from the reference; not tagged",
            "failed": "result: FAILED - the server did not come up or answer; not tagged",
            "reused": "result: OK - a self-checked image of this model and environment exists",
            "not checked": "result: BUILT, NOT CHECKED (--no-verify)"}[verdict]
    return "\n".join(lines + [text]) + "\n"


to_text.register(ServeBuild)(serve_build_text)


# --------------------------------------------------------------------------------------------
# envrepro inspect of a capture
# --------------------------------------------------------------------------------------------
def _kv(rows: List[List[str]]) -> str:
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def summarize(cap: Capture) -> Dict[str, Any]:
    """The JSON form of ``inspect``: the manifest plus where the capture lives."""
    out = dict(cap.data)
    out["capture_path"] = str(cap.root)
    out["model_path"] = str(cap.model_path)
    return out


def capture_summary(cap: Capture) -> str:
    d = cap.data
    model = d.get("model") or {}
    py = d.get("python") or {}
    fw = d.get("frameworks") or {}
    lock = d.get("lock") or {}
    load = d.get("load") or {}
    snap = d.get("snapshot") or {}
    ref = d.get("reference")
    opt = d.get("optimizer")
    lines = [f"envrepro capture of {cap.model_path}  ({d.get('schema')}, created {d.get('created')}"
             f"{', inferred' if d.get('inferred') else ''})"]
    lines.append("Model")
    lines.append(_kv([["format", str(model.get("format"))], ["class", str(model.get("class_name"))],
                      ["sha256", str(model.get("sha256", ""))[:16] + "..."]]))
    lines.append("Environment")
    build = fw.get("build") or {}
    gpu = "CPU build" if not build.get("is_cuda_build") else f"CUDA {build.get('cuda_version')}, cuDNN {build.get('cudnn_version')}"
    lines.append(_kv([
        ["python", f"{py.get('version')} ({py.get('implementation')}, {py.get('sys_platform')}/{py.get('machine')}, {py.get('libc') or '-'})"],
        ["tensorflow", f"{fw.get('tensorflow')} ({fw.get('tensorflow_distribution') or '-'}, {gpu})"],
        ["keras", f"{fw.get('keras')} ({fw.get('keras_flavor')})" + (f", tf-keras {fw.get('tf_keras')}" if fw.get("tf_keras") else "")],
    ]))
    hashes = "with hashes" if lock.get("hashes") else f"no hashes ({lock.get('hashes_reason') or 'offline'})"
    lines.append("Lock")
    rows = [["file", f"{lock.get('file')} ({lock.get('distributions')} distributions pinned ==, {hashes})"],
            ["top-level", ", ".join(lock.get("top_level") or []) or "-"]]
    if lock.get("sdist_only"):
        rows.append(["source-only", ", ".join(lock["sdist_only"]) + " (built from source at install)"])
    for loc in lock.get("local") or []:
        rows.append([str(loc.get("kind")), f"{loc.get('name')} {loc.get('version')} from {loc.get('source')}"])
    lines.append(_kv(rows))
    lines.append("Loading")
    custom = load.get("custom_objects") or {}
    rows = [["compile", str(load.get("compile"))],
            ["custom objects", ", ".join(f"{k} = {v}" for k, v in custom.items()) or "none"]]
    if load.get("recipe"):
        rows.append(["recipe", load["recipe"]])
        rows.extend([f"  {f.get('recipe')} failed", str(f.get("error"))]
                    for f in load.get("recipes_failed") or [])
    req_mods = d.get("requirement_modules") or {}
    if req_mods:
        rows.append(["from packages", ", ".join(f"{m} ({dist})" for m, dist in sorted(req_mods.items()))])
    lines.append(_kv(rows))
    files = snap.get("files") or []
    lines.append(f"Snapshot ({len(files)} file{'s' if len(files) != 1 else ''})")
    if files:
        lines.append(_kv([[f["path"], f"from {f.get('origin')}"] for f in files]))
    if snap.get("refused_links"):
        lines.append(_kv([["refused links", ", ".join(snap["refused_links"])]]))
    lines.append("Reference prediction")
    if ref:
        tol = ref.get("tolerance") or {}
        rows = [["inputs", ", ".join(ref.get("inputs") or [])],
                ["outputs", ", ".join(ref.get("outputs") or [])],
                ["tolerance", f"atol {tol.get('atol')}, rtol {tol.get('rtol')}"]]
        rows.extend([f"text of {name}", f"drawn from {layer}"]
                    for name, layer in sorted((ref.get("vocabularies") or {}).items()))
        if ref.get("free_dimension"):
            rows.append(["free dimensions", f"given length {ref['free_dimension']}"])
        lines.append(_kv(rows))
    else:
        lines.append(_kv([["none", str(d.get("reference_skipped") or "no sample input")]]))
    lines.append("Optimizer")
    if opt:
        rows = [["class", str(opt.get("class"))], ["iterations", str(opt.get("iterations"))],
                ["state saved", str(opt.get("state_saved"))]]
        back = opt.get("restored")   # what the training env's own load_model restores (issue 20)
        if isinstance(back, dict):
            rows.append(["load_model restores", f"{back.get('class')}, iterations {back.get('iterations')}, "
                                                f"{back.get('variables')} variables"])
        elif opt.get("restored_skipped"):
            rows.append(["load_model restores", f"not read: {opt['restored_skipped']}"])
        lines.append(_kv(rows))
    else:
        lines.append(_kv([["none", "not compiled, or saved without optimizer"]]))
    resume = d.get("resume_check")
    if resume:
        lines.append("Resume check (one training step, replayed by `envrepro load`)")
        if resume.get("skipped"):
            lines.append(_kv([["skipped", str(resume["skipped"])]]))
        else:
            lines.append(_kv([["loss", str(resume.get("loss"))],
                              ["iterations", f"{resume.get('iterations_before')} -> {resume.get('iterations')}"],
                              ["weights", str(resume.get("weights_file") or resume.get("weights_skipped"))],
                              ["tolerance", f"atol {resume.get('atol')}, rtol {resume.get('rtol')}"]]))
    if d.get("warnings"):
        lines.append("Warnings")
        lines.extend(f"  - {w}" for w in d["warnings"])
    return "\n".join(lines)


@to_text.register
def _(result: "Written", verbose: bool = False) -> str:
    return result.text()


@to_text.register
def _(result: PushResult, verbose: bool = False) -> str:
    return push_text(result)


@to_text.register(Signed)
@to_text.register(Verified)
def _(result: Any, verbose: bool = False) -> str:
    return result.text()


@to_text.register
def _(result: Migration, verbose: bool = False) -> str:
    return result.to_text(verbose)
