"""The outcome of a load: the loader's ``ENVREPRO-REPORT {json}`` line parsed into a
:class:`LoadReport`, its exit code, and the human rendering ``envrepro load`` prints.

When the loader died before reporting, :func:`no_report` says what the host still knows (the
container's exit code, stderr's last line, a known failure class: docs/failures.md).
"""
from __future__ import annotations

import json as jsonlib
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from envrepro import errors
from envrepro.runtime import loader as runtime_loader

REPORT_PREFIX = runtime_loader.REPORT_PREFIX
# Exit codes of a container killed by a signal (128 + n) that say more than the loader could.
SIGNAL_EXITS = {
    132: "illegal instruction: this TensorFlow build needs CPU instructions (AVX?) this machine lacks",
    137: "the container was killed (out of memory? raise --memory)",
    139: "segmentation fault inside the container",
}


def parse_report(stdout: "str | bytes | None", prefix: str = REPORT_PREFIX) -> Optional[Dict[str, Any]]:
    """The last ``ENVREPRO-REPORT {json}`` line (or another runtime entry point's ``prefix``:
    ``ENVREPRO-MIGRATE``), or None (the process died before printing it)."""
    if isinstance(stdout, bytes):
        stdout = stdout.decode("utf-8", errors="replace")
    for line in reversed((stdout or "").splitlines()):
        if line.startswith(prefix):
            try:
                data = jsonlib.loads(line[len(prefix):])
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


def no_report(container_exit: Optional[int], stderr: str) -> Dict[str, Any]:
    """What we know when the loader printed nothing: the exit code and stderr's last line."""
    lines = [ln for ln in (stderr or "").splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else ""
    why = SIGNAL_EXITS.get(container_exit or 0, f"the loader exited {container_exit} without a report")
    message = f"{why}: {last}" if last else why
    return {
        "report_version": runtime_loader.REPORT_VERSION, "ok": False, "stage": "import",
        "exit_code": container_exit,
        "error": {"type": "NoReport", "message": message, "first_line": message, "stage": "import",
                  "failure_class": runtime_loader.classify(stderr or "")},
        "mismatches": [], "versions": {}, "timings": {}, "load": {"ok": False},
        "reference": None, "optimizer": None, "network": None,
    }


@dataclass
class LoadReport:
    """The outcome of one ``envrepro load``: the loader's report plus what the host knows."""

    model: str
    capture: str
    image: Dict[str, Any]
    loader: Dict[str, Any]
    container_exit: Optional[int] = None
    stderr_tail: str = ""
    timings: Dict[str, Optional[float]] = field(default_factory=dict)
    unsafe: bool = False
    warnings: List[str] = field(default_factory=list)
    inferred: bool = False      # the capture was inferred (``capture --infer``): no reference
    model_check: Optional[Dict[str, Any]] = None   # sandbox.modelcheck: the model's hash vs the capture's
    reference_skipped: Optional[str] = None        # the manifest's reason the capture has no reference

    @property
    def ok(self) -> bool:
        return bool(self.loader.get("ok"))

    @property
    def error(self) -> Optional[Dict[str, Any]]:
        return self.loader.get("error")

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["exit_code"] = exit_code(self)
        d["verdict"] = verdict(self)
        d["verified"] = d["verdict"] == VERIFIED
        return d

    def to_json(self, indent: Optional[int] = 2) -> str:
        return jsonlib.dumps(self.to_dict(), indent=indent, sort_keys=True, default=str)


def exit_code(report: LoadReport) -> int:
    """0 ok, EXIT_LOAD_FAILED when the model did not load (or the loader died), EXIT_MISMATCH
    when it loaded but the reference prediction or the optimizer state differs, or (inferred
    captures) the source tree's classes compute differently from the SavedModel's traced graphs."""
    if report.ok:
        return errors.EXIT_OK
    err = report.error
    if err is not None:
        return errors.EXIT_INTERNAL if err.get("type") == "PlanError" else errors.EXIT_LOAD_FAILED
    if report.loader.get("mismatches"):
        return errors.EXIT_MISMATCH
    return errors.EXIT_LOAD_FAILED


# The verdicts (``--json`` field ``verdict``; ``verified`` is true for the first only).
VERIFIED = "verified"                      # loaded, and the reference prediction reproduced
NOT_VERIFIED = "loaded, not verified"      # loaded; no reference (an inferred capture never has one)
MISMATCH = "mismatch"                      # loaded, but a prediction or the optimizer differs
FAILED = "failed"                          # load_model failed, or the loader died
INTERNAL = "internal error"                # the loader could not read its plan


def verdict(report: LoadReport) -> str:
    """One of the verdicts above. A clean load is "verified" only when a reference prediction
    from the training environment was reproduced: an inferred capture has none, so at best it
    is "loaded, not verified" (exit 0 all the same)."""
    code = exit_code(report)
    if code == errors.EXIT_OK:
        ref = report.loader.get("reference")
        changed = bool((report.model_check or {}).get("changed"))   # loaded with --allow-model-change
        return VERIFIED if ref and ref.get("allclose") and not report.inferred and not changed else NOT_VERIFIED
    return {errors.EXIT_MISMATCH: MISMATCH, errors.EXIT_INTERNAL: INTERNAL}.get(code, FAILED)


def image_dict(image_info: Any) -> Dict[str, Any]:
    """Duck-typed ImageInfo -> dict. image.ensure.ImageInfo says ``source`` (local|pulled|built);
    ``built``/``seconds`` are accepted too."""
    source = getattr(image_info, "source", None)
    built = getattr(image_info, "built", None)
    if source is None:
        source = "built" if built else ("pulled" if getattr(image_info, "pulled", False) else "local")
    log = getattr(image_info, "log_path", None)
    return {
        "tag": getattr(image_info, "tag", None), "key": getattr(image_info, "key", None),
        "id": getattr(image_info, "image_id", None), "source": source,
        "base_image": getattr(image_info, "base_image", None),
        "base_digest": getattr(image_info, "base_digest", None) or None,
        "seconds": getattr(image_info, "seconds", None), "log": str(log) if log else None,
        "built_from_source": list(getattr(image_info, "built_from_source", None) or []),
        "unverified": list(getattr(image_info, "unverified", None) or []),
        "translation": getattr(image_info, "translation", None),
        "pulled_from": getattr(image_info, "pulled_from", None),
        "registry": getattr(image_info, "registry", None),
        "builder": getattr(image_info, "builder", None) or None,
        "wheelhouse": getattr(image_info, "wheelhouse", None),
    }


def _secs(x: Any) -> str:
    return "-" if x is None else f"{float(x):.1f} s"


def _fmt_num(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def render_report(report: LoadReport) -> str:
    """The human report: environment, image, load, optimizer, reference, timings, verdict."""
    d, img = report.loader, report.image
    v = d.get("versions") or {}
    lines = [f"envrepro load {report.model}"]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<13}{text}")

    env = ", ".join(x for x in (
        f"Python {v['python']}" if v.get("python") else "",
        f"TensorFlow {v['tensorflow']}" if v.get("tensorflow") else "",
        f"Keras {v['keras']} ({v.get('keras_module')})" if v.get("keras") else "",
        f"numpy {v['numpy']}" if v.get("numpy") else "") if x)
    row("environment", env or "unknown (the loader did not report)")
    how = {"built": "built", "pulled": f"pulled from {img.get('pulled_from') or 'the registry'}"
           }.get(img.get("source") or "", "found locally")
    if img.get("bundle"):
        how = (f"loaded from bundle {img['bundle']}" if img.get("bundle_kind") != "wheels"
               else f"built offline from the wheels of bundle {img['bundle']}")
    secs = report.timings.get("image")
    row("image", f"{img.get('tag') or '?'} ({how}" + (f", {_secs(secs)})" if secs is not None else ")"))
    base = img.get("base_image") or "?"
    row("base image", f"{base}@{img['base_digest']}" if img.get("base_digest") else base)
    lines.extend(_registry_lines(img))
    lines.extend(_lock_lines(img))

    err = d.get("error")
    load = d.get("load") or {}
    if load.get("ok"):
        extras = [f"format {load.get('format')}", f"compile={load.get('compile')}"]
        if load.get("custom_objects"):
            extras.append("custom objects " + ", ".join(load["custom_objects"]))
        if load.get("recipe"):
            recorded = load.get("recorded_recipe")
            extras.append(f"recipe {load['recipe']}" + (
                f", not the recorded {recorded}" if recorded and recorded != load["recipe"] else ""))
        if report.unsafe:
            extras.append("safe_mode OFF (--unsafe)")
        row("load", f"OK ({', '.join(extras)})")
    for failed in load.get("recipes_failed") or []:
        row("", f"recipe {failed.get('recipe')} failed: {failed.get('error')}")
    given = (load.get("lambda_globals") or {}).get("given")
    if given:
        row("", "the Lambda layers' globals " + ", ".join(given) + " given as the capture recorded them")
    for problem in (load.get("lambda_globals") or {}).get("problems") or []:
        row("", f"a Lambda layers' global could not be given: {problem}")
    if load.get("lambda_globals_guessed"):
        row("", "the Lambda layers' globals guessed (the capture recorded none): "
            + ", ".join(load["lambda_globals_guessed"]))
    if err:
        stage = err.get("stage") or d.get("stage")
        row(stage if load.get("ok") else "load",
            f"FAILED at stage {stage}: {err.get('type')}: {err.get('first_line')}")
        fc = err.get("failure_class")
        if fc:
            ident = str(fc.get("id") or "")
            where = f" (docs/failures.md class {ident})" if ident[:1].isdigit() else ""
            row("", f"known failure{where}: {fc.get('name')}; fix: {fc.get('fix')}")
    lines.extend(_optimizer_lines(d.get("optimizer")))
    lines.extend(_reference_lines(d.get("reference"), load.get("ok"), err, report.inferred,
                                  report.reference_skipped))
    lines.extend(_resume_lines(d.get("resume_check")))
    lines.extend(_drift_lines(d.get("drift")))
    net = d.get("network") or {}
    if net:
        row("network", "isolated (loopback only)" if net.get("isolated")
            else f"NOT isolated: interfaces {', '.join(net.get('interfaces') or [])}")
    t = {**(d.get("timings") or {}), **{k: x for k, x in report.timings.items() if x is not None}}
    order = [("image", "image"), ("run", "container"), ("import_tf", "import TF"),
             ("import_modules", "import modules"), ("load", "load"), ("predict", "predict"),
             ("drift", "drift"), ("resume_check", "resume check"), ("total", "loader total")]
    row("timings", ", ".join(f"{label} {_secs(t[k])}" for k, label in order if k in t) or "-")
    for w in report.warnings:
        row("warning", w)
    lines.append(_verdict(report))
    return "\n".join(lines) + "\n"


def _registry_lines(img: Dict[str, Any]) -> List[str]:
    """A registry pull that did not give the image: refused (labels differ) or unreachable."""
    reg = img.get("registry") or {}
    if reg.get("outcome") not in ("refused", "unreachable"):
        return []
    what = "refused" if reg["outcome"] == "refused" else "could not be pulled"
    return [f"  {'registry':<13}{reg.get('ref')} {what}: {reg.get('reason')}; "
            f"the image was {img.get('source') or 'built'} here instead"]


def _lock_lines(img: Dict[str, Any]) -> List[str]:
    """How the image's lock differs from a plain install of the captured one: translated for
    Linux or for GPUs (every package whose pin differs), entries without hash check, sdists built."""
    lines: List[str] = []
    t = img.get("translation") or {}
    if t:
        changes = list(t.get("changes") or [])
        lines.append(f"  {'translated':<13}for {t.get('for') or 'Linux'} from a {t.get('from')} capture: "
                     f"{len(changes)} package(s) differ from the capture")
        lines.extend(f"  {'':<13}  {c}" for c in changes)
        lines.extend(f"  {'':<13}  note: {n}" for n in t.get("notes") or [])
    if img.get("unverified"):
        lines.append(f"  {'unverified':<13}installed without hash check (no hash in the lock): "
                     + ", ".join(img["unverified"]))
    if img.get("built_from_source"):
        how = ("built from sdists in a container with no network, kept in the wheelhouse"
               if img.get("builder") == "wheelhouse" else "built from sdists at image build time")
        lines.append(f"  {'from source':<13}{how}: " + ", ".join(img["built_from_source"]))
    wh = img.get("wheelhouse") or {}
    if img.get("builder") == "wheelhouse" and img.get("source") == "built":
        lines.append(f"  {'wheelhouse':<13}{wh.get('files', '?')} file(s), {wh.get('downloaded', '?')} downloaded "
                     f"in {_secs(wh.get('seconds'))}; installed with no network")
    return lines


def _optimizer_lines(opt: Optional[Dict[str, Any]]) -> List[str]:
    if not opt:
        return []
    if opt.get("skipped"):
        return [f"  {'optimizer':<13}not checked ({opt['skipped']})"]
    saved = opt.get("saved") or {}
    if opt.get("state_restored") is False:  # e.g. Keras 2's SavedModel loader: said, not failed
        text = f"{opt.get('restored')}: state saved in the file, not restored by this loader"
    else:
        text = (f"{opt.get('restored')} restored, iterations {opt.get('iterations')}, "
                f"{opt.get('weights_restored')} variables")
        restored = (opt.get("expected") or {}).get("restored") or {}
        if opt.get("compared_with") and restored:  # what the training environment restored
            text += (f" (the training environment restores iterations {restored.get('iterations')}, "
                     f"{restored.get('variables')} variables")
            text += (f"; the file holds {saved['variables']}, iterations {saved.get('iterations')})"
                     if saved.get("variables") is not None else ")")
        elif saved.get("variables") is not None:  # what the check compared with (runtime/savedstate)
            text += (f" (the file holds {saved['variables']}, iterations "
                     f"{saved.get('iterations')})")
    if opt.get("ok"):
        lines = [f"  {'optimizer':<13}{text}  OK"]
    else:
        lines = [f"  {'optimizer':<13}{text}  MISMATCH: {'; '.join(opt.get('problems') or [])}"]
    if opt.get("note"):
        lines.append(f"  {'':<13}{opt['note']}")
    if opt.get("warning"):  # file state the training environment's own load_model leaves behind
        lines.append(f"  {'':<13}WARNING: {opt['warning']}")
    return lines


def _reference_lines(ref: Optional[Dict[str, Any]], loaded: Any, err: Any, inferred: bool,
                     skipped: Optional[str] = None) -> List[str]:
    if ref is None:
        if loaded and not err:
            if inferred:
                return [f"  {'reference':<13}none: an inferred capture has no prediction from the "
                        "training environment (loaded, not verified)"]
            why = f": {' '.join(skipped.split())}" if skipped else " (nothing to compare)"
            return [f"  {'reference':<13}none in the capture{why}"]
        return []
    tol = f"atol {_fmt_num(ref.get('atol'))} + rtol {_fmt_num(ref.get('rtol'))}"
    if ref.get("problem"):
        shapes = ref.get("shapes") or {}
        return [f"  {'reference':<13}MISMATCH: {ref['problem']} "
                f"(expected {shapes.get('expected')}, got {shapes.get('got')})"]
    diff = f"max |diff| {_fmt_num(ref.get('max_abs_diff'))}"
    outputs = [o for o in ref.get("per_output") or [] if isinstance(o, dict)]
    texts = [o for o in outputs if o.get("text")]
    if not texts:
        if ref.get("allclose"):
            return [f"  {'reference':<13}{diff} within {tol}  OK"]
        return [f"  {'reference':<13}{diff} exceeds {tol}  MISMATCH"]
    # text outputs (tf.string) are compared for equality, numbers within the tolerance
    differs = ref.get("text_differs") or 0
    numbers_ok = all(o.get("allclose") for o in outputs if not o.get("text"))
    parts = ([f"{diff} {'within' if numbers_ok else 'exceeds'} {tol}"] if len(texts) < len(outputs) else [])
    parts.append("text outputs equal" if not differs else f"{differs} text value(s) differ")
    state = "OK" if ref.get("allclose") else "MISMATCH"
    return [f"  {'reference':<13}{', '.join(parts)}  {state}"]


def _resume_lines(resume: Optional[Dict[str, Any]]) -> List[str]:
    """The replayed training step (runtime/resume.py): said only for captures that asked for it."""
    if not resume:
        return []
    if resume.get("skipped"):
        return [f"  {'resume':<13}not checked (skipped at capture: {resume['skipped']})"]
    if resume.get("loss") is None:  # the step did not run here
        return [f"  {'resume':<13}MISMATCH: {'; '.join(resume.get('problems') or [])}"]
    dw = (f"max |Δw| {_fmt_num(resume.get('max_abs_diff'))}" if resume.get("compared") == "weights"
          else f"|Δ sum w| {_fmt_num(resume.get('sum_diff'))}")
    loss, want = (f"{x:.6g}" if isinstance(x, float) else str(x)
                  for x in (resume.get("loss"), resume.get("expected_loss")))
    text = (f"loss {loss} vs {want}, {dw}"
            f"{', bit-identical' if resume.get('bit_identical') else ''}, iterations "
            f"{resume.get('iterations')} vs {resume.get('expected_iterations')}")
    if resume.get("ok"):
        return [f"  {'resume':<13}training resumes identically ({text})  OK"]
    return [f"  {'resume':<13}training does not resume identically ({text})  MISMATCH: "
            + "; ".join(resume.get("problems") or [])]


def _drift_lines(drift: Optional[Dict[str, Any]]) -> List[str]:
    """The source tree against the SavedModel's traced graphs (inferred captures: runtime/drift.py)."""
    if not drift:
        return []
    label = f"  {'drift':<13}"
    if not drift.get("checked"):
        return [f"{label}not checked: {drift.get('reason')}"]
    whole = drift.get("model") or {}
    compared = [e for e in drift.get("layers") or [] if "allclose" in e]
    parts = [f"whole model not compared ({whole['skipped']})" if "skipped" in whole
             else f"whole model max |diff| {_fmt_num(whole.get('max_abs_diff'))}",
             f"{len(compared)} layer(s) running the source's code compared"]
    head = f"{label}source tree vs the SavedModel's traced graphs: {', '.join(parts)}"
    lines = [head + ("  OK" if drift.get("ok") else "  MISMATCH")]
    lines.extend(f"  {'':<13}differs: {d}" for d in drift.get("differs") or [])
    lines.extend(f"  {'':<13}layer {e.get('layer')} ({e.get('class')}) not compared: {e['skipped']}"
                 for e in drift.get("layers") or [] if e.get("skipped"))
    return lines


def _verdict(report: LoadReport) -> str:
    code = exit_code(report)
    if code == errors.EXIT_OK:
        if verdict(report) == VERIFIED:
            resumes = ", and training resumes identically" if (
                report.loader.get("resume_check") or {}).get("ok") else ""
            return "result: OK - the model loads and reproduces its reference prediction" + resumes
        if (report.model_check or {}).get("changed"):
            return ("result: LOADED, NOT VERIFIED - the model changed since its capture "
                    "(--allow-model-change): its reference describes the model as captured")
        if not report.inferred:
            skipped = " ".join((report.reference_skipped or "").split())
            why = f" ({skipped})" if skipped else ""
            return ("result: LOADED, NOT VERIFIED - the model loads; the capture has no reference "
                    f"prediction to compare{why}")
        drift = report.loader.get("drift") or {}
        why = ("its custom classes compute what the SavedModel's traced graphs compute" if drift.get("checked")
               else f"drift of the source tree not checked: {drift.get('reason') or 'no check ran'}")
        return ("result: LOADED, NOT VERIFIED - the model loads; an inferred capture has no reference "
                f"prediction to compare ({why})")
    if code == errors.EXIT_MISMATCH:
        what = "what was saved" if report.inferred else "what was captured"
        return (f"result: MISMATCH - the model loads but does not reproduce {what}: "
                + "; ".join(report.loader.get("mismatches") or []))
    if code == errors.EXIT_INTERNAL:
        return "result: envrepro bug - the loader could not read its plan (run with --debug)"
    return "result: FAILED - the model does not load in the reproduced environment"
