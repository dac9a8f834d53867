"""The load recipes (runtime/recipes.py) on the issue-8 model, in a real Python 3.9 +
tensorflow-cpu 2.8.4 environment: a subclassed ``tf.keras.Model`` with ``get_config`` but no
``from_config``, saved as a SavedModel (examples/subclassed_model.py). ``load_model(path,
custom_objects=...)`` raises ``KeyError: 'layers'`` there; ``load_model(path)`` revives it from the
SavedModel. Captured with
``envrepro capture --python``, then loaded by the loader on the host under the same interpreter.
The same model under Python 3.8 + tensorflow-cpu 2.4.1 captured by the save hook."""
import json
import os
import subprocess

import pytest

from envrepro.runtime import loader as rt
from envrepro.sandbox import report as reports
from envrepro.sidecar import layout, manifest
from support import REPO, envrepro_cli  # noqa: E402
from tf_helpers import EXAMPLES, run_loader, run_py

pytestmark = [pytest.mark.tf]


@pytest.fixture(scope="module")
def tf28_models(py39_tf28, tmp_path_factory):
    """examples/subclassed_model.py under TF 2.8.4 (with its Adam state as ``two_layer``, without
    it as ``two_layer_noopt``), each captured from outside with --python. Returns (what the environment's own
    load_model did, name -> (model path, the capture's CompletedProcess))."""
    folder = tmp_path_factory.mktemp("tf28")
    proc = run_py(py39_tf28, f"import runpy, sys; sys.argv = ['x', {str(folder)!r}]; "
                             f"runpy.run_path({str(EXAMPLES / 'subclassed_model.py')!r}, run_name='__main__')",
                  cwd=str(EXAMPLES))
    in_env = json.loads(proc.stdout.strip().splitlines()[-1])
    captures = {}
    for name in ("two_layer", "two_layer_noopt"):
        captures[name] = (folder / name, envrepro_cli(
            "capture", folder / name, "--python", py39_tf28, "--code-path", EXAMPLES,
            "--module", "two_layer", env={"ENVREPRO_OFFLINE": "1"}))
    return in_env, captures


@pytest.fixture
def tf28_capture(tf28_models):
    """The capture of the model saved with its optimizer."""
    return tf28_models[1]["two_layer"]


def _capture(tf28_models, name="two_layer_noopt"):
    model, out = tf28_models[1][name]
    assert out.returncode == 0, out.stderr[-3000:]
    return manifest.read(layout.sidecar_for(model))


def test_the_bug_is_real_in_tf28(tf28_models):
    """The environment itself: custom objects fail, revival works with the same predictions."""
    in_env, _ = tf28_models
    assert in_env["custom_objects"] == "KeyError: 'layers'"
    assert in_env["revived_max_diff"] < 1e-6


def test_capture_records_the_recipe_that_worked(tf28_capture):
    model, out = tf28_capture
    assert out.returncode == 0, out.stderr[-3000:]
    d = manifest.read(layout.sidecar_for(model)).data
    assert d["schema"] == "envrepro/v1"
    assert d["frameworks"]["tensorflow"] == "2.8.4" and d["python"]["version"].startswith("3.9.")
    assert d["load"]["recipe"] == "revive"
    assert d["load"]["recipes_failed"] == [{"recipe": "custom_objects", "error": "KeyError: 'layers'"}]
    assert d["load"]["compile"] is True and d["load"]["modules"] == ["two_layer"]
    # The revived model predicts with its traced graph: the reference is made from it.
    assert d["reference"]["inputs"] == ["reference/input_0.npy"] and d["reference_skipped"] is None
    assert d["optimizer"]["class"] == "Adam" and d["optimizer"]["iterations"] == 8
    assert any("loaded with recipe revive" in w for w in d["warnings"])
    # --module was given and revival chosen on purpose: no warning asks for the module again
    assert not any("pass --module" in w for w in d["warnings"]), d["warnings"]
    assert any("revived from the SavedModel's traced functions on purpose: recipe revive" in w
               for w in d["warnings"]), d["warnings"]


def test_loader_uses_the_recorded_recipe_and_verifies(py39_tf28, tf28_models, tmp_path):
    """Saved without its optimizer: whether a Keras-2 SavedModel's optimizer state comes back is
    another question (the optimizer verdict), so this is the load and the prediction alone."""
    cap = _capture(tf28_models)
    assert cap.data["load"]["recipe"] == "revive" and cap.data["optimizer"] is None
    code, rep = run_loader(py39_tf28, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    assert rep["versions"]["tensorflow"] == "2.8.4"
    assert rep["load"]["recipe"] == rep["load"]["recorded_recipe"] == "revive"
    assert rep["load"]["recipes_failed"] == [] and rep["load"]["compile"] is True
    assert rep["reference"]["allclose"] and rep["reference"]["shapes"]["got"] == [[2, 1]]


def test_revived_model_with_optimizer_state_gets_the_right_verdict(py39_tf28, tf28_capture, tmp_path):
    """Both issue-8 verdict bugs on one real model: it loads only by revival, and its Adam state is
    compared with what the SavedModel holds (not with what a fresh load showed at capture)."""
    model, out = tf28_capture
    assert out.returncode == 0, out.stderr[-3000:]
    cap = manifest.read(layout.sidecar_for(model))
    assert cap.data["optimizer"]["saved_iterations"] == 8 and cap.data["optimizer"]["saved_variables"]
    code, rep = run_loader(py39_tf28, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    assert rep["load"]["recipe"] == "revive" and rep["reference"]["allclose"]
    opt = rep["optimizer"]
    assert opt["ok"] is True and rep["mismatches"] == []
    assert opt["iterations"] == 8 and opt["weights_restored"] == opt["saved"]["variables"] == 9


def test_loader_falls_back_in_order_when_the_recorded_recipe_fails(py39_tf28, tf28_models, tmp_path):
    cap = _capture(tf28_models)
    cap.data["load"]["recipe"] = "custom_objects"
    cap.data["load"]["custom_objects"] = {"TwoLayer": "two_layer:TwoLayer"}
    code, rep = run_loader(py39_tf28, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    assert rep["load"]["recipe"] == "revive"
    assert rep["load"]["recipes_failed"] == [{"recipe": "custom_objects", "error": "KeyError: 'layers'"}]
    assert rep["reference"]["allclose"]


def test_compile_false_recipe_reports_no_optimizer_not_a_mismatch(py39_tf28, tf28_models, tmp_path):
    cap = _capture(tf28_models, "two_layer")
    assert cap.data["optimizer"]["class"] == "Adam"
    cap.data["load"]["recipe"] = "revive_nocompile"
    code, rep = run_loader(py39_tf28, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    assert rep["load"]["recipe"] == "revive_nocompile" and rep["load"]["compile"] is False
    assert rep["optimizer"]["ok"] is None and rep["mismatches"] == []
    assert rep["optimizer"]["skipped"] == ("loaded with compile=False (recipe revive_nocompile): "
                                           "no optimizer restored")
    assert rep["reference"]["allclose"]
    text = reports.render_report(reports.LoadReport(model="two_layer", capture="two_layer.envrepro", image={},
                                                  loader=rep))
    assert "recipe revive_nocompile" in text and "no optimizer restored" in text


def test_old_capture_without_recipe_loads_as_before(py39_tf28, tf28_models, tmp_path):
    """No ``recipe`` in the manifest: the loader makes its one call, custom objects included,
    which is exactly the failure the environment itself shows."""
    cap = _capture(tf28_models)
    cap.data["load"].pop("recipe")
    cap.data["load"].pop("recipes_failed")
    cap.data["load"]["custom_objects"] = {"TwoLayer": "two_layer:TwoLayer"}
    code, rep = run_loader(py39_tf28, cap, tmp_path)
    assert code == rt.EXIT_LOAD_FAILED == 5
    assert rep["error"]["type"] == "KeyError" and rep["error"]["stage"] == "load"
    assert rep["load"]["recipe"] is None and rep["load"]["recorded_recipe"] is None


def test_inferred_capture_of_the_issue_8_model_tries_every_recipe(py39_tf28, tf28_models, tmp_path):
    """Saved without envrepro and captured with --infer, nothing recorded a recipe: the loader
    tries them all (custom objects fail with KeyError: 'layers', revival works). The revived
    model runs only its traced graphs: loaded, not verified, drift not checked, said why."""
    import shutil

    model = tmp_path / "two_layer"
    shutil.copytree(tf28_models[1]["two_layer_noopt"][0], model)
    out = envrepro_cli("capture", "--infer", model, "--code-path", EXAMPLES, env={"ENVREPRO_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    cap = manifest.read(layout.sidecar_for(model))
    assert cap.data["inferred"] and cap.data["load"]["custom_objects"] == {"TwoLayer": "two_layer:TwoLayer"}
    code, rep = run_loader(py39_tf28, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    assert rep["load"]["recipe"] == "revive" and rep["load"]["recorded_recipe"] is None
    assert rep["load"]["recipes_failed"] == [{"recipe": "custom_objects", "error": "KeyError: 'layers'"}]
    assert rep["drift"]["checked"] is False and "runs none of the source tree's code" in rep["drift"]["reason"]
    report = reports.LoadReport(model=str(model), capture=str(cap.root), image={}, loader=rep, inferred=True)
    assert report.to_dict()["verdict"] == "loaded, not verified"
    assert "drift of the source tree not checked: the loaded model runs none" in reports.render_report(report)


def test_save_hook_loads_the_file_to_choose_the_recipe_tf24(py38_tf24, tmp_path):
    """The save hook (in-process probe) holds the live TwoLayer, which predicts fine, but its
    SavedModel loads only by revival in TF 2.4 too: the hook loads the file with the custom
    objects the loader will pass, records ``revive``, and the loader verifies the capture."""
    path = tmp_path / "two_layer"
    proc = subprocess.run([py38_tf24, str(EXAMPLES / "subclassed_model.py"), str(tmp_path), "--hook"],
                          capture_output=True, text=True, cwd=str(EXAMPLES), timeout=900,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", ENVREPRO_OFFLINE="1",
                                   PYTHONPATH=f"{REPO}{os.pathsep}{EXAMPLES}"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"captured": True}, proc.stderr[-3000:]
    cap = manifest.read(layout.sidecar_for(path))
    d = cap.data
    assert d["frameworks"]["tensorflow"] == "2.4.1"
    assert d["load"]["recipe"] == "revive"
    assert d["load"]["recipes_failed"] == [{"recipe": "custom_objects", "error": "KeyError: 'layers'"}]
    assert d["load"]["custom_objects"] == {"TwoLayer": "two_layer:TwoLayer"}
    assert "load_model failed with custom_objects (KeyError: 'layers'); loaded with recipe revive" in d["warnings"]
    assert d["reference"]["inputs"] == ["reference/input_0.npy"]
    code, rep = run_loader(py38_tf24, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    assert rep["load"]["recipe"] == rep["load"]["recorded_recipe"] == "revive"
    assert rep["load"]["recipes_failed"] == [] and rep["reference"]["allclose"]
    assert rep["optimizer"]["ok"] is True and rep["mismatches"] == []
