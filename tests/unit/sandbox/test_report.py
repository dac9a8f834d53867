"""The load report (envrepro.sandbox.report): parsing the loader's line, exit codes, rendering."""
import json

from envrepro import errors
from envrepro.runtime import launch, loader as rt
from envrepro.sandbox import report as reports
from envrepro.sandbox import container as load

try:
    from .fakes import cap, FakeEngine, cache_home, image_info, loader_report, make_capture, report_stdout
except ImportError:
    from fakes import cap, FakeEngine, cache_home, image_info, loader_report, make_capture, report_stdout


def test_parse_report_takes_the_last_report_line():
    rep = loader_report()
    assert reports.parse_report(report_stdout(rep)) == rep
    assert reports.parse_report(report_stdout(rep).encode()) == rep
    assert reports.parse_report("no report here\n") is None
    assert reports.parse_report(rt.REPORT_PREFIX + "{broken\n") is None
    assert reports.parse_report(None) is None


def test_load_ok_report_json_and_render(cap, cache_home):
    eng = FakeEngine(run_result=(0, report_stdout(loader_report()), "tf noise\n"))
    report = load.load(cap.model_path, eng, image_info(), image_seconds=12.5)
    kw = eng.runs[0]
    image, command = kw["image"], kw["command"]
    assert image == "envrepro/env:k1" and command == launch.container_argv("python", "loader")
    assert command[:3] == ["python", "-B", "-c"] and "from envrepro_runtime.loader import main" in command[3]
    assert kw["stream"] is False and kw["network_disabled"] and kw["read_only"]
    assert report.ok and reports.exit_code(report) == 0
    d = json.loads(report.to_json())
    assert d["ok"] is True and d["exit_code"] == 0
    assert d["image"]["base_digest"].startswith("sha256:") and d["loader"]["reference"]["allclose"]
    text = reports.render_report(report)
    for part in ("Python 3.8.18", "TensorFlow 2.4.1", "Keras 2.4.0", "envrepro/env:k1", "built, 12.5 s",
                 "python:3.8-slim@sha256:bbbb", "load         OK", "Adam restored, iterations 12, 5 variables  OK",
                 "max |diff| 3e-08 within atol 1e-05 + rtol 0.0001  OK", "image 12.5 s", "import TF 2.1 s",
                 "load 0.8 s", "predict 0.3 s", "isolated", "result: OK"):
        assert part in text, part
    # every load is remembered in the images index
    idx = json.loads((cache_home / "envrepro" / "index.json").read_text())
    assert str(cap.root) in idx["images"]["k1"]["captures"]


def test_mismatch_report(cap):
    rep = loader_report(ok=False, exit_code=6, mismatches=["reference prediction differs (max |diff| 0.5)"])
    rep["reference"].update(max_abs_diff=0.5, allclose=False)
    report = load.load(cap.model_path, FakeEngine(run_result=(6, report_stdout(rep), "")), image_info(source="local"))
    assert reports.exit_code(report) == errors.EXIT_MISMATCH
    text = reports.render_report(report)
    assert "max |diff| 0.5 exceeds atol 1e-05" in text and "MISMATCH" in text and "found locally" in text


def test_optimizer_mismatch_is_exit_6(cap):
    rep = loader_report(ok=False, mismatches=["iterations 0, expected 12"])
    rep["optimizer"].update(iterations=0, ok=False, problems=["iterations 0, expected 12"])
    report = load.load(cap.model_path, FakeEngine(run_result=(6, report_stdout(rep), "")), image_info())
    assert reports.exit_code(report) == 6
    assert "MISMATCH: iterations 0, expected 12" in reports.render_report(report)


def test_load_failure_report_is_exit_5_with_the_class(cap):
    err = rt.error_info(TypeError("Could not locate class 'MyLayer'. Make sure custom classes are decorated"), "load")
    rep = loader_report(ok=False, stage="load", error=err, reference=None, optimizer=None,
                        load={"ok": False, "format": "keras"})
    report = load.load(cap.model_path, FakeEngine(run_result=(5, report_stdout(rep), "")), image_info())
    assert reports.exit_code(report) == errors.EXIT_LOAD_FAILED
    text = reports.render_report(report)
    assert "FAILED at stage load: TypeError: Could not locate class 'MyLayer'" in text
    assert "known failure (docs/failures.md class 2): Unregistered custom object / bad get_config; fix: import the module" in text
    assert "result: FAILED" in text


def test_failure_after_load_is_shown(cap):
    err = rt.error_info(SystemError("unknown opcode"), "predict")
    rep = loader_report(ok=False, stage="predict", error=err, reference=None, optimizer=None)
    report = load.load(cap.model_path, FakeEngine(run_result=(5, report_stdout(rep), "")), image_info())
    text = reports.render_report(report)
    assert reports.exit_code(report) == 5
    assert "predict      FAILED at stage predict: SystemError: unknown opcode" in text
    assert "docs/failures.md class 5" in text


def test_no_report_line_oom(cap):
    report = load.load(cap.model_path, FakeEngine(run_result=(137, "", "Killed\n")), image_info())
    assert reports.exit_code(report) == errors.EXIT_LOAD_FAILED
    assert report.error["type"] == "NoReport" and "out of memory" in report.error["message"]
    assert "raise --memory" in reports.render_report(report)


def test_plan_error_is_internal():
    report = reports.LoadReport(model="m", capture="c", image={}, loader=loader_report(
        ok=False, error={"type": "PlanError", "message": "x", "first_line": "x", "stage": "import"}))
    assert reports.exit_code(report) == errors.EXIT_INTERNAL


def test_optimizer_saved_but_not_restored_is_said_and_ok(cap):
    """Keras 2's SavedModel loader leaves the optimizer state behind: said, exit 0, not a mismatch."""
    rep = loader_report()
    rep["optimizer"].update(iterations=0, weights_restored=1, state_restored=False,
                            saved={"variables": 13, "iterations": 8},
                            note="optimizer state saved (13 variables, iterations 8) but not restored "
                                 "by this loader (x); the weights and the reference prediction are verified")
    report = load.load(cap.model_path, FakeEngine(run_result=(0, report_stdout(rep), "")), image_info())
    assert reports.exit_code(report) == 0
    text = reports.render_report(report)
    assert "Adam: state saved in the file, not restored by this loader  OK" in text
    assert "optimizer state saved (13 variables, iterations 8) but not restored" in text


def test_optimizer_line_names_what_the_file_holds(cap):
    rep = loader_report()
    rep["optimizer"]["saved"] = {"variables": 5, "iterations": 12}
    report = load.load(cap.model_path, FakeEngine(run_result=(0, report_stdout(rep), "")), image_info())
    assert ("Adam restored, iterations 12, 5 variables (the file holds 5, iterations 12)  OK"
            in reports.render_report(report))


def test_recipe_and_failed_recipes_are_shown(cap):
    rep = loader_report()
    rep["load"].update(recipe="revive", recorded_recipe="custom_objects",
                       recipes_failed=[{"recipe": "custom_objects", "error": "KeyError: 'layers'"}])
    rep["optimizer"] = {"expected": {"class": "Adam"}, "ok": None,
                        "skipped": "loaded with compile=False (recipe revive_nocompile): no optimizer restored"}
    report = load.load(cap.model_path, FakeEngine(run_result=(0, report_stdout(rep), "")), image_info())
    text = reports.render_report(report)
    assert "recipe revive, not the recorded custom_objects" in text
    assert "recipe custom_objects failed: KeyError: 'layers'" in text
    assert "not checked (loaded with compile=False (recipe revive_nocompile): no optimizer restored)" in text
    assert reports.exit_code(report) == 0


RESUMED = {"ok": True, "problems": [], "expected_loss": 0.4437669813632965, "expected_iterations": 9,
           "loss": 0.4437669813632965, "iterations": 9, "max_abs_diff": 0.0, "compared": "weights",
           "bit_identical": True, "atol": 1e-05, "rtol": 1e-04}


def test_resume_check_replayed_identically(cap):
    rep = loader_report(resume_check=dict(RESUMED))
    rep["timings"]["resume_check"] = 0.4
    report = load.load(cap.model_path, FakeEngine(run_result=(0, report_stdout(rep), "")), image_info())
    text = reports.render_report(report)
    assert reports.exit_code(report) == 0
    assert ("resume       training resumes identically (loss 0.443767 vs 0.443767, max |Δw| 0, "
            "bit-identical, iterations 9 vs 9)  OK") in text
    assert "resume check 0.4 s" in text and "and training resumes identically" in text


def test_resume_check_mismatch_is_exit_6_and_names_the_difference(cap):
    problem = "the loss of one training step is 0.4437669813632965, at capture 0.5 (atol 1e-05, rtol 0.0001)"
    rep = loader_report(ok=False, exit_code=6, mismatches=[problem],
                        resume_check=dict(RESUMED, ok=False, expected_loss=0.5, bit_identical=False,
                                          problems=[problem]))
    report = load.load(cap.model_path, FakeEngine(run_result=(6, report_stdout(rep), "")), image_info())
    assert reports.exit_code(report) == errors.EXIT_MISMATCH
    text = reports.render_report(report)
    assert "training does not resume identically (loss 0.443767 vs 0.5, max |Δw| 0, iterations 9 vs 9)" in text
    assert "result: MISMATCH" in text and problem in text.splitlines()[-1]


def test_resume_check_summary_failure_and_skip_lines(cap):
    summary = dict(RESUMED, compared="summary", max_abs_diff=None, sum_diff=2e-06, bit_identical=False)
    failed = {"ok": False, "loss": None, "problems": ["the training step failed here: ValueError: shapes"]}
    skipped = {"skipped": "the model has no optimizer (saved without compile): no training to resume",
               "ok": None, "problems": []}
    texts = []
    for resume in (summary, failed, skipped):
        rep = loader_report(resume_check=resume)
        texts.append(reports.render_report(load.load(cap.model_path, FakeEngine(
            run_result=(0, report_stdout(rep), "")), image_info())))
    assert "|Δ sum w| 2e-06, iterations 9 vs 9)  OK" in texts[0]
    assert "resume       MISMATCH: the training step failed here: ValueError: shapes" in texts[1]
    assert ("resume       not checked (skipped at capture: the model has no optimizer (saved without compile): "
            "no training to resume)") in texts[2]
    assert "training resumes" not in texts[2]


DRIFT_OK = {"checked": True, "ok": True, "atol": 1e-05, "rtol": 1e-04, "differs": [],
            "model": {"checked": True, "allclose": True, "max_abs_diff": 0.0},
            "layers": [{"layer": "scale", "class": "Scale", "uses": [], "allclose": True, "max_abs_diff": 0.0}]}


def _inferred(tmp_path, rep, code):
    cap = make_capture(tmp_path, inferred=True, reference=None)
    return load.load(cap.model_path, FakeEngine(run_result=(code, report_stdout(rep), "")), image_info())


def test_inferred_capture_is_loaded_not_verified_never_reproduced(tmp_path, cache_home):
    """Exit 0, verdict "loaded, not verified" in the text and in --json, whatever the loader
    says about a reference (an inferred capture never has one from the training environment)."""
    for ref in (None, loader_report()["reference"]):
        report = _inferred(tmp_path / str(bool(ref)), loader_report(reference=ref, drift=DRIFT_OK), 0)
        assert reports.exit_code(report) == 0 and report.inferred
        d = json.loads(report.to_json())
        assert d["verdict"] == "loaded, not verified" and d["verified"] is False and d["exit_code"] == 0
        text = reports.render_report(report)
        assert "reproduces its reference" not in text
        assert "result: LOADED, NOT VERIFIED - the model loads; an inferred capture has no reference" in text
        assert "source tree vs the SavedModel's traced graphs: whole model max |diff| 0, 1 layer(s)" in text
    assert "reference    none: an inferred capture has no prediction from the training environment" in \
        reports.render_report(_inferred(tmp_path / "n", loader_report(reference=None, drift=DRIFT_OK), 0))


def test_inferred_capture_whose_drift_could_not_be_checked_says_why(tmp_path, cache_home):
    drift = {"checked": False, "reason": "an H5 file stores no traced graph of the custom classes' code"}
    report = _inferred(tmp_path, loader_report(reference=None, drift=drift), 0)
    text = reports.render_report(report)
    assert "drift        not checked: an H5 file stores no traced graph" in text
    assert "(drift of the source tree not checked: an H5 file stores no traced graph" in text
    assert json.loads(report.to_json())["verdict"] == "loaded, not verified"


def test_drift_is_a_mismatch_naming_the_class(tmp_path, cache_home):
    line = "the source tree no longer matches the code the model was saved with: Scale (layer scale, max |diff| 0.21)"
    drift = dict(DRIFT_OK, ok=False, differs=["Scale (layer scale, max |diff| 0.21)"],
                 layers=[{"layer": "scale", "class": "Scale", "uses": [], "allclose": False, "max_abs_diff": 0.21},
                         {"layer": "odd", "class": "Odd", "uses": [], "skipped": "input shape unknown"}])
    report = _inferred(tmp_path, loader_report(ok=False, exit_code=6, reference=None, drift=drift,
                                               mismatches=[line]), 6)
    assert reports.exit_code(report) == errors.EXIT_MISMATCH
    assert json.loads(report.to_json())["verdict"] == "mismatch"
    text = reports.render_report(report)
    assert "result: MISMATCH - the model loads but does not reproduce what was saved: " + line in text
    assert "differs: Scale (layer scale, max |diff| 0.21)" in text and "MISMATCH" in text
    assert "layer odd (Odd) not compared: input shape unknown" in text


def test_verdicts_of_captures_with_and_without_a_reference(cap, tmp_path, cache_home):
    report = load.load(cap.model_path, FakeEngine(run_result=(0, report_stdout(loader_report()), "")), image_info())
    assert reports.verdict(report) == "verified" and json.loads(report.to_json())["verified"] is True
    noref = make_capture(tmp_path / "noref", reference=None)
    report = load.load(noref.model_path, FakeEngine(run_result=(0, report_stdout(loader_report(reference=None)), "")),
                       image_info())
    assert reports.verdict(report) == "loaded, not verified" and reports.exit_code(report) == 0
    assert "result: LOADED, NOT VERIFIED - the model loads; the capture has no reference prediction" in \
        reports.render_report(report)
    failed = loader_report(ok=False, exit_code=5, error={"type": "ValueError", "message": "x", "first_line": "x"})
    report = load.load(cap.model_path, FakeEngine(run_result=(5, report_stdout(failed), "")), image_info())
    assert reports.verdict(report) == "failed"


def test_not_verified_says_why_the_capture_has_no_reference(tmp_path, cache_home):
    reason = ("input 'blob' (float32) has an unknown rank; pass one with --sample FILE (.npy, .npz "
              "or .json) or envrepro.save(..., sample_input=...)")
    noref = make_capture(tmp_path / "noref", reference=None, reference_skipped=reason)
    report = load.load(noref.model_path, FakeEngine(run_result=(0, report_stdout(loader_report(reference=None)), "")),
                       image_info())
    assert reports.verdict(report) == "loaded, not verified" and reports.exit_code(report) == 0
    text = reports.render_report(report)
    assert f"reference    none in the capture: {reason}" in text
    assert text.rstrip().endswith("result: LOADED, NOT VERIFIED - the model loads; the capture has no "
                                  f"reference prediction to compare ({reason})")
    assert json.loads(report.to_json())["reference_skipped"] == reason


def test_text_outputs_are_said_equal_or_how_many_differ(cap, cache_home):
    ref = dict(loader_report()["reference"], per_output=[{"max_abs_diff": 0.0, "allclose": True},
                                                         {"text": True, "differs": 0, "allclose": True}],
               text_differs=0)
    report = load.load(cap.model_path, FakeEngine(run_result=(0, report_stdout(loader_report(reference=ref)), "")),
                       image_info())
    assert "max |diff| 3e-08 within atol 1e-05 + rtol 0.0001, text outputs equal  OK" in reports.render_report(report)
    bad = dict(ref, allclose=False, text_differs=2)
    rep = loader_report(ok=False, exit_code=6, reference=bad,
                        mismatches=["reference prediction differs (max |diff| 3e-08, atol 1e-05, rtol 0.0001, "
                                    "2 text value(s) differ)"])
    report = load.load(cap.model_path, FakeEngine(run_result=(6, report_stdout(rep), "")), image_info())
    assert ("reference    max |diff| 3e-08 within atol 1e-05 + rtol 0.0001, 2 text value(s) differ  MISMATCH"
            in reports.render_report(report))
