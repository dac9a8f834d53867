"""diagnose/trial.py (``doctor --try``): the plan it hands the loader and the findings it draws from the report."""
from pathlib import Path

from envrepro.diagnose import trial
from envrepro.diagnose.findings import ERROR, INFO
from envrepro.diagnose.modelfiles import ModelFileInfo


def test_plan_without_capture_loads_the_file_as_it_is():
    info = ModelFileInfo(path="/m.keras", format="keras", keras_version="3.5.0")
    plan = trial._plan(Path("/m.keras"), None, info)
    assert plan["format"] == "keras" and plan["keras_flavor"] == "keras3" and plan["safe_mode"] is True
    assert plan["snapshot_dir"] is None and plan["env"] == {} and plan["custom_objects"] == {}


def test_a_catalogued_error_names_its_class_and_fix():
    report = {"ok": False, "class_id": "1", "error": {"type": "ValueError", "stage": "load",
                                                      "first_line": "File format not supported", "message": "x"}}
    (f,) = trial.try_findings(report)
    assert f.severity == ERROR and f.class_id == "1" and f.kind == "try"
    assert "class 1, SavedModel folder under Keras 3" in f.why and "TF_USE_LEGACY_KERAS=1" in f.fix
    report["class_id"] = None
    assert trial.try_findings(report)[0].why == "not a catalogued failure"


def test_mismatch_reference_and_plain_success():
    (f,) = trial.try_findings({"ok": False, "mismatches": ["prediction differs"]})
    assert f.severity == ERROR and f.class_id == "drift"
    (f,) = trial.try_findings({"ok": True, "reference": {"max_abs_diff": 0.0}})
    assert f.severity == INFO and "reproduces the reference" in f.what
    (f,) = trial.try_findings({"ok": True})
    assert f.severity == INFO and "no reference prediction" in f.what
