"""The model a capture describes is the model being loaded: its content hash is checked.

A capture records the sha256 of the model file (or of the SavedModel folder: relative paths,
file hashes, link targets) when it is written. A model re-saved, edited or swapped after its
capture would be loaded against facts and a reference that belong to another model, so
``envrepro load``/``run``/``shell`` refuse it (exit 2) unless ``--allow-model-change`` is given,
and then the report says so and the verdict is never "verified".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from envrepro import errors
from envrepro.fsutil import sha256_tree
from envrepro.sidecar import manifest


@dataclass
class ModelCheck:
    recorded: Optional[str]     # sha256 in the capture (None: an old capture without one)
    actual: str                 # sha256 of the model on disk now
    allowed: bool = False       # loaded anyway (--allow-model-change)

    @property
    def changed(self) -> bool:
        return self.recorded is not None and self.recorded != self.actual

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "changed": self.changed}


def check_model(capture: manifest.Capture, allow_change: bool = False) -> ModelCheck:
    """Hash the model and compare; raise InvalidCapture (exit 2) when it changed, unless
    ``allow_change``."""
    recorded = capture.get("model.sha256")
    try:
        actual = sha256_tree(capture.model_path)
    except OSError as e:
        raise errors.InvalidCapture(f"the model can't be read to check it against its capture ({e.strerror or e})",
                                    str(capture.model_path), "check the model's permissions") from None
    check = ModelCheck(recorded if isinstance(recorded, str) else None, actual, allow_change)
    if check.changed and not allow_change:
        raise errors.InvalidCapture(
            f"the model changed since its capture (sha256 {check.recorded[:12]}... recorded, "
            f"{actual[:12]}... now): its facts and reference describe another model",
            str(capture.model_path),
            "run `envrepro capture` on it again, or pass --allow-model-change to load it anyway, "
            "flagged in the report")
    return check


def warning_for(check: Optional[Dict[str, Any]]) -> Optional[str]:
    """The report's line for a changed (allowed) or unrecorded model hash; None when it matched."""
    if not check:
        return None
    if check.get("recorded") is None:
        return "the capture records no model hash: the model was not checked against it"
    if check.get("changed"):
        return (f"the model changed since its capture (sha256 {str(check['recorded'])[:12]}... recorded, "
                f"{str(check['actual'])[:12]}... now), loaded with --allow-model-change: the "
                "capture's reference describes another model")
    return None
