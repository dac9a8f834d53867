"""The optimizer verdict compared like with like (issue 20), host side: the plan passes what the
training environment's own load_model restored (``optimizer.restored``) and the report shows it,
with the warning for file state that environment leaves behind; the verdict follows the loader."""
import json

from envrepro import errors
from envrepro.sandbox import container as load
from envrepro.sandbox import loadplan as plans
from envrepro.sandbox import report as reports
from envrepro.sidecar import layout, manifest, writer

try:
    from .fakes import cap, FakeEngine, cache_home, image_info, loader_report, make_capture, report_stdout  # noqa: F401
except ImportError:
    from fakes import cap, FakeEngine, cache_home, image_info, loader_report, make_capture, report_stdout  # noqa: F401

RESTORED = {"class": "LossScaleOptimizerV3", "iterations": 0, "variables": 9, "via": "load_model"}
WARNING = ("the training environment's load_model also restores iterations 0 of the 2 the file "
           "holds (LossScaleOptimizerV3 in H5): compared with what it restores")


def test_the_plan_carries_restored_only_when_captured(cap):
    assert "restored" not in plans.make_plan(cap, plans.container_paths(cap))["optimizer"]
    cap.data["optimizer"].update(saved_variables=9, saved_iterations=2, restored=dict(RESTORED),
                                 restored_skipped=None)
    plan = plans.make_plan(cap, plans.container_paths(cap))
    assert plan["optimizer"]["restored"] == RESTORED
    assert "restored_skipped" not in plan["optimizer"]
    json.dumps(plan)


def test_a_capture_with_restored_reads_back_and_plans(tmp_path):
    """Written by the capture writer and read back through the schema: the new fields pass."""
    cap = make_capture(tmp_path)
    side = layout.sidecar_for(cap.model_path)
    data = {k: v for k, v in manifest.read(side, verify=False).data.items() if k != "files"}
    data["optimizer"] = dict(data["optimizer"], restored=dict(RESTORED), restored_skipped=None)
    writer.write_manifest(side, data)
    again = manifest.read(side)
    assert again.data["optimizer"]["restored"] == RESTORED
    assert plans.make_plan(again, plans.container_paths(again))["optimizer"]["restored"] == RESTORED


def lso_report(ok=True, problems=(), warning=WARNING, iterations=0):
    rep = loader_report(ok=ok, exit_code=0 if ok else 6, mismatches=list(problems))
    rep["optimizer"] = {
        "expected": {"class": "LossScaleOptimizerV3", "iterations": 2, "restored": dict(RESTORED)},
        "restored": "LossScaleOptimizerV3", "iterations": iterations, "weights_restored": 9,
        "ok": ok, "problems": list(problems), "restored_via": "load_model",
        "saved": {"saved": True, "variables": 9, "iterations": 2, "source": "h5 optimizer_weights"},
        "compared_with": "training environment restore", "warning": warning}
    return rep


def test_the_report_says_what_the_training_env_restores_and_warns(cap):
    report = load.load(cap.model_path, FakeEngine(run_result=(0, report_stdout(lso_report()), "")),
                       image_info())
    assert reports.exit_code(report) == errors.EXIT_OK and reports.verdict(report) == reports.VERIFIED
    text = reports.render_report(report)
    assert ("optimizer    LossScaleOptimizerV3 restored, iterations 0, 9 variables (the training "
            "environment restores iterations 0, 9 variables; the file holds 9, iterations 2)  OK"
            in text)
    assert "               WARNING: " + WARNING in text
    assert json.loads(report.to_json())["loader"]["optimizer"]["warning"] == WARNING


def test_a_reproduction_that_differs_from_the_training_env_restore_is_exit_6(cap):
    problem = "iterations 2, expected 0 (what the training environment restores from this file)"
    rep = lso_report(ok=False, problems=[problem], iterations=2,
                     warning=WARNING.replace("also ", ""))
    report = load.load(cap.model_path, FakeEngine(run_result=(6, report_stdout(rep), "")), image_info())
    assert reports.exit_code(report) == errors.EXIT_MISMATCH and reports.verdict(report) == reports.MISMATCH
    text = reports.render_report(report)
    assert "MISMATCH: " + problem in text and "WARNING: the training environment's load_model restores" in text


def test_an_old_report_renders_as_before(cap):
    rep = loader_report()
    rep["optimizer"]["saved"] = {"variables": 5, "iterations": 12}
    text = reports.render_report(load.load(cap.model_path, FakeEngine(run_result=(0, report_stdout(rep), "")),
                                           image_info()))
    assert "Adam restored, iterations 12, 5 variables (the file holds 5, iterations 12)  OK" in text
    assert "WARNING" not in text
