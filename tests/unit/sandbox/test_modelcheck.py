"""The model being loaded is the model its capture describes (envrepro.sandbox.modelcheck)."""
import json
import os
import subprocess
import sys

import pytest

from envrepro import errors
from envrepro.fsutil import sha256_tree
from envrepro.sandbox import report as rep
from envrepro.sandbox import container as load

try:
    from .fakes import FakeEngine, cache_home, image_info, loader_report, make_capture, report_stdout
except ImportError:
    from fakes import FakeEngine, cache_home, image_info, loader_report, make_capture, report_stdout


def _edit_model(cap):
    (cap.model_path / "saved_model.pb").write_bytes(b"pb, re-saved after the capture")


def _ok_engine():
    return FakeEngine(run_result=(0, report_stdout(loader_report()), ""))


def test_unchanged_model_loads_verified(tmp_path):
    cap = make_capture(tmp_path)
    report = load.load(cap.model_path, _ok_engine(), image_info())
    assert report.model_check == {"recorded": cap.get("model.sha256"), "actual": cap.get("model.sha256"),
                                  "allowed": False, "changed": False}
    assert rep.verdict(report) == rep.VERIFIED and not report.warnings


@pytest.mark.parametrize("edit", ["file", "added", "removed", "renamed"])
def test_changed_model_is_refused_before_anything_runs(tmp_path, edit):
    cap = make_capture(tmp_path)
    (cap.model_path / "variables").mkdir()
    (cap.model_path / "variables" / "v.index").write_bytes(b"idx")
    from envrepro.sidecar import writer
    writer.write_manifest(cap.root, {**{k: v for k, v in cap.data.items() if k != "files"},
                                     "model": {**cap.data["model"], "sha256": sha256_tree(cap.model_path)}})
    if edit == "file":
        _edit_model(cap)
    elif edit == "added":
        (cap.model_path / "assets.txt").write_text("x")
    elif edit == "removed":
        (cap.model_path / "variables" / "v.index").unlink()
    else:
        (cap.model_path / "variables" / "v.index").rename(cap.model_path / "variables" / "w.index")
    eng = FakeEngine()
    with pytest.raises(errors.InvalidCapture) as e:
        load.load(cap.model_path, eng, image_info())
    assert e.value.exit_code == errors.EXIT_BAD_INPUT
    msg = str(e.value)
    assert "the model changed since its capture" in msg and "--allow-model-change" in msg
    assert "envrepro capture" in msg and str(cap.model_path) in msg
    assert eng.runs == []


def test_allow_model_change_loads_flagged_and_never_verified(tmp_path):
    cap = make_capture(tmp_path)
    _edit_model(cap)
    report = load.load(load.prepare(cap.model_path, allow_model_change=True), _ok_engine(), image_info())
    assert report.model_check["changed"] and report.model_check["allowed"]
    assert rep.exit_code(report) == errors.EXIT_OK
    assert rep.verdict(report) == rep.NOT_VERIFIED
    text = rep.render_report(report)
    assert "the model changed since its capture" in text and "--allow-model-change" in text
    assert "result: LOADED, NOT VERIFIED - the model changed since its capture" in text
    d = json.loads(report.to_json())
    assert d["verified"] is False and d["model_check"]["changed"] is True


def test_capture_without_a_model_hash_is_said(tmp_path):
    cap = make_capture(tmp_path, model={"name": "my_model", "format": "savedmodel", "sha256": None})
    report = load.load(cap.model_path, _ok_engine(), image_info())
    assert report.model_check["recorded"] is None and not report.model_check["changed"]
    assert any("records no model hash" in w for w in report.warnings)


def test_cli_changed_model_one_line_exit_2_even_without_an_engine(tmp_path):
    cap = make_capture(tmp_path)
    _edit_model(cap)
    env = {**os.environ, "DOCKER_HOST": "tcp://127.0.0.1:1"}
    env.pop("ENVREPRO_DEBUG", None)
    for cmd in (["load", str(cap.model_path)], ["run", str(cap.model_path), "--", "true"]):
        out = subprocess.run([sys.executable, "-m", "envrepro", *cmd], capture_output=True, text=True, env=env,
                             timeout=120)
        assert out.returncode == 2, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
        assert "the model changed since its capture" in out.stderr
    # with the flag the capture passes the check and the next step (the engine) is reached: exit 3
    out = subprocess.run([sys.executable, "-m", "envrepro", "load", str(cap.model_path), "--allow-model-change"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 3, out.stderr
