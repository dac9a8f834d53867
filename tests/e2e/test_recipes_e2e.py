"""Issue 8 end to end: a subclassed model that only SavedModel revival loads, trained under
Python 3.9 + tensorflow-cpu 2.8.4, captured with ``envrepro capture --python`` and loaded by
``envrepro load`` in Docker with the recorded recipe; and the same model under Python 3.8 +
tensorflow-cpu 2.4.1 captured by the save hook, which loads the file to choose the recipe."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from support import REPO, installed_cli as cli  # noqa: E402

from envrepro.sidecar import layout, manifest

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def two_layer(py39_tf28, standin_39, tmp_path_factory):
    """examples/subclassed_model.py's model saved without its optimizer, captured from outside."""
    out = tmp_path_factory.mktemp("tf28")
    proc = subprocess.run([py39_tf28, str(EXAMPLES / "subclassed_model.py"), str(out)], cwd=str(EXAMPLES),
                          capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = out / "two_layer_noopt"
    cap = cli("capture", model, "--python", py39_tf28, "--code-path", EXAMPLES, "--module", "two_layer")
    assert cap.returncode == 0, cap.stderr[-3000:]
    return model


def test_envrepro_load_uses_the_recorded_recipe(two_layer):
    assert manifest.read(layout.sidecar_for(two_layer)).data["load"]["recipe"] == "revive"
    out = cli("load", two_layer, "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    loader = json.loads(out.stdout)["loader"]
    assert loader["versions"]["tensorflow"] == "2.8.4" and loader["versions"]["python"].startswith("3.9.")
    assert loader["load"]["recipe"] == "revive" and loader["load"]["recipes_failed"] == []
    assert loader["reference"]["allclose"] and loader["network"]["isolated"]
    text = cli("load", two_layer).stdout
    assert "recipe revive" in text and "result: OK" in text


def test_envrepro_load_of_a_hooked_capture_uses_the_recipe_the_hook_chose(py38_tf24, standin_38, tmp_path):
    """Before, the hook recorded no recipe and the load failed: ``FAILED exit 5: KeyError: 'layers'``."""
    model = tmp_path / "two_layer"
    proc = subprocess.run([py38_tf24, str(EXAMPLES / "subclassed_model.py"), str(tmp_path), "--hook"],
                          cwd=str(EXAMPLES), capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=f"{REPO}{os.pathsep}{EXAMPLES}"),
                          timeout=900)
    assert proc.returncode == 0 and '{"captured": true}' in proc.stdout, proc.stderr[-3000:]
    assert manifest.read(layout.sidecar_for(model)).data["load"]["recipe"] == "revive"
    out = cli("load", model, "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    loader = json.loads(out.stdout)["loader"]
    assert loader["versions"]["tensorflow"] == "2.4.1"
    assert loader["load"]["recipe"] == "revive" and loader["reference"]["allclose"]
    assert loader["optimizer"]["ok"] is True
