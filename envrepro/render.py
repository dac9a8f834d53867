"""Render a capture as a readable summary (``envrepro inspect``). Returns strings only."""
from __future__ import annotations

from typing import Any, Dict, List

from envrepro.sidecar.manifest import Capture


def _kv(rows: List[List[str]]) -> str:
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def summarize(cap: Capture) -> Dict[str, Any]:
    """The JSON form: the manifest plus where the capture lives."""
    out = dict(cap.data)
    out["capture_path"] = str(cap.root)
    out["model_path"] = str(cap.model_path)
    return out


def render(cap: Capture) -> str:
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
        lines.append(_kv([["inputs", ", ".join(ref.get("inputs") or [])],
                          ["outputs", ", ".join(ref.get("outputs") or [])],
                          ["tolerance", f"atol {tol.get('atol')}, rtol {tol.get('rtol')}"]]))
    else:
        lines.append(_kv([["none", str(d.get("reference_skipped") or "no sample input")]]))
    lines.append("Optimizer")
    if opt:
        lines.append(_kv([["class", str(opt.get("class"))], ["iterations", str(opt.get("iterations"))],
                          ["state saved", str(opt.get("state_saved"))]]))
    else:
        lines.append(_kv([["none", "not compiled, or saved without optimizer"]]))
    if d.get("warnings"):
        lines.append("Warnings")
        lines.extend(f"  - {w}" for w in d["warnings"])
    return "\n".join(lines)
