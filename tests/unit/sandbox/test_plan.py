"""The plan contract (envrepro.sandbox.loadplan): container paths and what the loader is asked to do."""
import json

from envrepro.sandbox import loadplan as plans

try:
    from .fakes import cap, cache_home, make_capture
except ImportError:
    from fakes import cap, cache_home, make_capture


def test_plan_uses_container_paths_and_the_manifest(cap):
    paths = plans.container_paths(cap)
    plan = plans.make_plan(cap, paths)
    assert plan["model_path"] == "/envrepro/model/my_model"
    assert plan["format"] == "savedmodel" and plan["compile"] is True
    assert plan["custom_objects"] == {"MyCustomLayer": "custom_layers:MyCustomLayer", "team>Huberish": "losses:Huberish"}
    assert plan["modules"] == ["custom_layers"]
    assert plan["snapshot_dir"] == "/envrepro/capture/snapshot"
    assert plan["env"] == {"TF_USE_LEGACY_KERAS": "1"}  # null variables are not set
    assert plan["safe_mode"] is True
    assert plan["keras_flavor"] == "tf.keras"
    ref = plan["reference"]
    assert ref["inputs"] == ["/envrepro/capture/reference/input_0.npy"]
    assert ref["outputs"] == ["/envrepro/capture/reference/output_0.npy"]
    assert (ref["atol"], ref["rtol"]) == (1e-05, 1e-04)
    assert ref["input_structure"] == "single" and ref["output_names"] == ["y"]
    assert plan["optimizer"] == {"class": "Adam", "iterations": 12, "state_saved": True, "num_weights": 5}
    assert plan["recipe"] is None  # a capture from before recipes: the loader's one old call
    json.dumps(plan)  # travels as JSON


def test_plan_carries_the_recorded_recipe(tmp_path):
    cap = make_capture(tmp_path, load={"compile": True, "custom_objects": {}, "modules": ["m"],
                                       "recipe": "revive",
                                       "recipes_failed": [{"recipe": "custom_objects",
                                                           "error": "KeyError: 'layers'"}]})
    plan = plans.make_plan(cap, plans.container_paths(cap))
    assert plan["recipe"] == "revive" and plan["compile"] is True


def test_plan_unsafe_and_missing_sections(tmp_path):
    cap = make_capture(tmp_path, name="m.h5", fmt="h5", reference=None, optimizer=None,
                       load={"compile": False})
    plan = plans.make_plan(cap, plans.container_paths(cap), unsafe=True)
    assert plan["model_path"] == "/envrepro/model/m.h5"  # Keras 3 needs the suffix
    assert plan["safe_mode"] is False
    assert plan["reference"] is None and plan["optimizer"] is None
    assert plan["compile"] is False and plan["custom_objects"] == {} and plan["modules"] == []


def test_plan_default_tolerance(tmp_path):
    cap = make_capture(tmp_path, reference={"inputs": ["reference/input_0.npy"],
                                            "outputs": ["reference/output_0.npy"]})
    ref = plans.make_plan(cap, plans.container_paths(cap))["reference"]
    assert (ref["atol"], ref["rtol"]) == (plans.DEFAULT_ATOL, plans.DEFAULT_RTOL)
    assert ref["input_structure"] == "single"


def test_plan_carries_what_the_file_holds_only_when_captured(cap):
    cap.data["optimizer"].update(saved_variables=13, saved_iterations=8)
    plan = plans.make_plan(cap, plans.container_paths(cap))
    assert plan["optimizer"] == {"class": "Adam", "iterations": 12, "state_saved": True, "num_weights": 5,
                                 "saved_variables": 13, "saved_iterations": 8}


RESUME = {"loss": 0.25, "iterations_before": 8, "iterations": 9, "targets": ["reference/resume_target_0.npy"],
          "target_kind": "perturbed_prediction", "weights_file": "reference/resume_weights.npz",
          "weights_skipped": None,
          "weights": {"arrays": 2, "params": 10, "sum": 1.5, "abs_sum": 3.0, "sha256": "ab" * 32},
          "atol": 1e-05, "rtol": 1e-04, "seed": 1234, "seconds": 0.3}


def resume_capture(tmp_path, resume):
    """fakes.make_capture plus the resume check's files and manifest entry."""
    from envrepro.sidecar import manifest, writer

    cap = make_capture(tmp_path)
    for name in ("resume_target_0.npy", "resume_weights.npz"):
        (cap.root / "reference" / name).write_bytes(b"x")
    writer.write_manifest(cap.root, dict({k: v for k, v in cap.data.items() if k != "files"},
                                         resume_check=resume))
    return manifest.read(cap.root)


def test_plan_carries_the_resume_check_with_container_paths(tmp_path):
    cap = resume_capture(tmp_path, RESUME)
    resume = plans.make_plan(cap, plans.container_paths(cap))["resume_check"]
    assert resume == {"loss": 0.25, "iterations": 9, "seed": 1234,
                      "targets": ["/envrepro/capture/reference/resume_target_0.npy"],
                      "target_structure": "single", "target_names": ["y"],
                      "weights_file": "/envrepro/capture/reference/resume_weights.npz",
                      "weights": RESUME["weights"], "atol": 1e-05, "rtol": 1e-04}
    json.dumps(resume)


def test_plan_resume_check_skipped_or_absent(tmp_path, cap):
    assert plans.make_plan(cap, plans.container_paths(cap))["resume_check"] is None
    skipped = resume_capture(tmp_path / "s", {"skipped": "the model has no optimizer"})
    assert plans.make_plan(skipped, plans.container_paths(skipped))["resume_check"] == {
        "skipped": "the model has no optimizer"}
    summary = resume_capture(tmp_path / "w", dict(RESUME, weights_file=None, weights_skipped="too large"))
    assert plans.make_plan(summary, plans.container_paths(summary))["resume_check"]["weights_file"] is None


def test_inferred_capture_passes_no_reference_and_asks_for_the_drift_check(tmp_path):
    """An inferred capture's manifest can't hold a prediction of the training environment: a
    reference found there is not passed on, and the loader compares the source with the graphs."""
    cap = make_capture(tmp_path, inferred=True)
    plan = plans.make_plan(cap, plans.container_paths(cap))
    assert plan["reference"] is None and plan["drift"] is True
    assert plan["recipe"] is None and plan["all_recipes"] is True   # nothing loaded it at capture
    real = make_capture(tmp_path / "real")
    plan = plans.make_plan(real, plans.container_paths(real))
    assert plan["reference"] is not None and plan["drift"] is False and plan["all_recipes"] is False


def test_the_lambda_layers_recorded_globals_are_merged_into_the_plan(tmp_path):
    lambdas = [{"layer": "a", "kind": "lambda", "source": "lambda t: tf.tanh(t) * K",
                "globals": {"tf": {"module": "tensorflow"}, "K": {"value": 2}}},
               {"layer": "b", "kind": "lambda", "source": "lambda t: t * K", "globals": {"K": {"value": 5}}},
               {"layer": "c", "why_not": "its source file can't be read"}]
    c = make_capture(tmp_path, name="m.h5", fmt="h5", load={"compile": True, "lambdas": lambdas})
    plan = plans.make_plan(c, plans.container_paths(c))
    assert plan["lambda_globals"] == {"tf": {"module": "tensorflow"}, "K": {"value": 2}}
    assert plans.make_plan(make_capture(tmp_path / "o"), plans.container_paths(
        make_capture(tmp_path / "p")))["lambda_globals"] == {}
