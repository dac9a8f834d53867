"""What a migration says: ``OUT/migration.json``, ``--json`` and the text a user reads.

An artifact is ``verified`` only when the target environment's prediction from it matched the
capture's reference within the tolerance ``load`` uses. An inferred capture has no reference:
its artifacts can only agree with the model run in its reproduced environment
(``matches_source``), and the migration says "migrated, not verified".

Exit codes: 0 at least one artifact verified (inferred: at least one matches the source), 6
artifacts written but none reproduces, 5 the source can't load the model or the target could
write nothing, 2 bad input (raised before any of this).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from envrepro import errors

REPORT_VERSION = 1


@dataclass
class Migration:
    model: str
    out: str
    target: Dict[str, Any]
    source: Dict[str, Any] = field(default_factory=dict)
    reference: str = "capture"                  # capture | source-prediction
    artifacts: List[Dict[str, Any]] = field(default_factory=list)
    optimizer: Optional[Dict[str, Any]] = None
    agree: Dict[str, Any] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    error: Optional[str] = None
    error_code: Optional[int] = None
    timings: Dict[str, Any] = field(default_factory=dict)

    @property
    def inferred(self) -> bool:
        return self.reference != "capture"

    @property
    def exit_code(self) -> int:
        if self.error_code is not None:
            return self.error_code
        written = [a for a in self.artifacts if a.get("written")]
        if any(a.get("verified") for a in written):
            return errors.EXIT_OK
        if self.inferred and any(a.get("matches_source") for a in written):
            return errors.EXIT_OK
        return errors.EXIT_MISMATCH if written else errors.EXIT_LOAD_FAILED

    @property
    def verdict(self) -> str:
        code = self.exit_code
        if code == errors.EXIT_OK:
            return "MIGRATED, NOT VERIFIED" if self.inferred else "MIGRATED"
        if code == errors.EXIT_MISMATCH:
            return "NOT REPRODUCED"
        return "FAILED"

    def to_dict(self) -> Dict[str, Any]:
        return {"report_version": REPORT_VERSION, "model": self.model, "out": self.out,
                "verdict": self.verdict, "exit_code": self.exit_code, "error": self.error,
                "source": self.source, "target": self.target, "reference": self.reference,
                "artifacts": self.artifacts, "optimizer": self.optimizer, "agree": self.agree,
                "warnings": self.warnings, "timings": self.timings}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)

    def to_text(self, verbose: bool = False) -> str:
        s, t = self.source, self.target
        lines = [f"{self.verdict}: {self.model}"]
        if s.get("tensorflow") or t.get("tensorflow"):
            lines.append(f"  from  TensorFlow {s.get('tensorflow')}, Keras {s.get('keras')}, Python {s.get('python')}")
            lines.append(f"  to    TensorFlow {t.get('tensorflow')}, Keras {t.get('keras') or '-'}, "
                         f"Python {t.get('python')} ({t.get('how')})")
        if self.error:
            lines.append(f"  error: {self.error}")
        for a in self.artifacts:
            lines.append("  " + artifact_line(a, self.inferred))
            for what in ("translated", "replaced"):
                for item in a.get(what) or []:
                    lines.append(f"      {what}: {item}")
            if a.get("written") and a.get("custom_objects"):
                names = ", ".join(f"{k}: {v}" for k, v in sorted(a["custom_objects"].items()))
                lines.append(f"      needs custom objects: {names}")
            if a.get("written") and a.get("code"):
                lines.append(f"      needs {a['code']} importable: the Lambda functions rebuilt from the "
                             "capture's source (code from the capture: read it before importing it)")
        opt = self.optimizer or {}
        if opt:
            lines.append("  optimizer: " + (f"{opt.get('class')} carried into the .keras" if opt.get("carried")
                                            else f"not carried ({opt.get('why_not') or 'no state'})"))
            lines.extend(resume_lines(opt.get("resume_check")))
        if self.inferred and self.exit_code == 0:
            lines.append("  migrated, not verified: an inferred capture has no reference; the artifacts "
                         "were compared with the model run in its reproduced environment")
        for w in self.warnings:
            lines.append(f"  WARNING: {w}")
        if self.artifacts:
            lines.append(f"  report: {self.out}/migration.json")
        return "\n".join(lines)


def resume_lines(rc: Optional[Dict[str, Any]]) -> List[str]:
    """The capture's training step replayed on the .keras (runtime/migrate/target.py)."""
    if not isinstance(rc, dict):
        return []
    if rc.get("skipped"):
        return [f"  resume check: not replayed ({rc['skipped']})"]
    if rc.get("ok"):
        return [f"  resume check: one training step on the .keras gives the capture's loss and weights "
                f"(loss {rc.get('loss')}, max |dw| {rc.get('max_abs_diff')})"]
    return [f"  resume check: DIFFERS: {p}" for p in rc.get("problems") or ["no answer"]]


def artifact_line(a: Dict[str, Any], inferred: bool) -> str:
    name = a.get("path") or a.get("format")
    if not a.get("written"):
        return f"{name:<28} not written: {a.get('why_not') or 'no reason given'}"
    diff = a.get("max_abs_diff")
    d = f"max |diff| {diff:.3g}" if isinstance(diff, (int, float)) else "no comparison"
    if a.get("verified"):
        state = "VERIFIED"
    elif inferred and a.get("matches_source"):
        state = "matches the source"
    else:
        state = "NOT VERIFIED"
    why = f" ({a['why_not']})" if a.get("why_not") and not a.get("verified") else ""
    return f"{name:<28} {state}  {d}{why}"
