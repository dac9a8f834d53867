"""diagnose/trial.py (``doctor --try``): the plan it hands the loader and the findings it draws from the report."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from envrepro import errors
from envrepro.diagnose import doctor, trial
from envrepro.diagnose.findings import ERROR, INFO
from envrepro.modelfiles.read import ModelFileInfo
from envrepro.sidecar import layout, manifest

from test_doctor import LAYER_V1, facts, make_capture, make_model, use_facts


@pytest.fixture
def captured(tmp_path, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    (code / "mylayers.py").write_text(LAYER_V1)
    model = make_model(tmp_path)
    make_capture(tmp_path, model, code)
    monkeypatch.chdir(tmp_path)
    return model, code


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


# -- trust: only a verified capture's snapshot is imported, and only after saying so ----------

def tamper(model, marker):
    """Edit the capture's snapshot module (after the seal) so that importing it writes ``marker``."""
    snap = layout.sidecar_for(model) / "snapshot" / "mylayers.py"
    snap.write_text(f"open({str(marker)!r}, 'w').write('imported')\n" + snap.read_text())


def cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("ENVREPRO_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "envrepro", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=str(cwd), timeout=300)


def test_try_refuses_a_tampered_capture_and_imports_nothing(captured, tmp_path):
    model, _ = captured
    marker = tmp_path / "imported.txt"
    tamper(model, marker)
    out = cli("doctor", model, "--try", cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    line, = out.stderr.strip().splitlines()
    assert "doctor --try refuses an unverified capture" in line and "sha256 mismatch" in line
    assert "snapshot/mylayers.py" in line and "Traceback" not in out.stderr
    assert not marker.exists()
    # without --try the same capture is still reported on, with a warning
    out = cli("doctor", model, cwd=tmp_path)
    assert "the capture can't be trusted" in out.stdout and not marker.exists()


def test_try_refuses_before_anything_runs(captured, tmp_path, monkeypatch):
    model, _ = captured
    tamper(model, tmp_path / "imported.txt")
    ran = []
    monkeypatch.setattr(doctor, "environment_facts", lambda *a, **k: ran.append("probe"))
    monkeypatch.setattr(trial, "run_try", lambda *a, **k: ran.append("try"))
    with pytest.raises(errors.InvalidCapture, match="refuses an unverified capture"):
        doctor.diagnose(model, try_load=True)
    # a capture folder that can't be read at all is refused too
    (layout.sidecar_for(model) / "envrepro.yaml").unlink()
    with pytest.raises(errors.InvalidCapture, match="refuses an unverified capture"):
        doctor.diagnose(model, try_load=True)
    assert ran == []


def test_copy_snapshot_checks_every_file_and_leaves_bytecode_out(captured, tmp_path):
    model, _ = captured
    root = layout.sidecar_for(model)
    cache = root / "snapshot" / "__pycache__"
    cache.mkdir()
    (cache / "mylayers.cpython-311.pyc").write_bytes(b"not listed, not verified")
    with pytest.raises(errors.InvalidCapture, match="compiled bytecode"):
        manifest.read(root)                        # the reader refuses bytecode in a capture
    cap = manifest.read(root, verify=False)        # and the copy leaves it out even so
    tops = trial.copy_snapshot(cap, tmp_path / "copy")
    assert tops == ["mylayers"]
    assert sorted(p.relative_to(tmp_path / "copy").as_posix() for p in (tmp_path / "copy").rglob("*")) \
        == ["mylayers.py"]
    tamper(model, tmp_path / "imported.txt")
    cap = manifest.read(root, verify=False)
    with pytest.raises(errors.InvalidCapture, match="sha256 mismatch"):
        trial.copy_snapshot(cap, tmp_path / "copy2")


def test_try_imports_the_verified_snapshot_copy_after_saying_so(captured, monkeypatch):
    """The loader gets the copy of snapshot/ on its path, never a folder an origin names; the line
    is said before the loader starts."""
    from envrepro.runtime.loader import REPORT_PREFIX

    model, code = captured
    events = []

    def fake_run(argv, env=None, cwd=None, **kwargs):
        plan_file = argv[argv.index("--plan") + 1]
        plan = json.loads(Path(plan_file).read_text())
        snap = Path(plan["snapshot_dir"])
        events.append(("run", plan, env, sorted(p.name for p in snap.iterdir())))
        report = {"ok": True, "error": None, "mismatches": [], "reference": None}
        return subprocess.CompletedProcess(argv, 0, (REPORT_PREFIX + json.dumps(report) + "\n").encode(), b"")

    monkeypatch.setattr(trial.subprocess, "run", fake_run)
    use_facts(monkeypatch, facts())
    report = doctor.diagnose(model, try_load=True, notice=lambda line: events.append(("notice", line)))
    (kind, line), (run, plan, env, listed) = events
    assert kind == "notice" and run == "run"
    assert line.startswith("doctor --try imports the capture's custom code (snapshot/: mylayers) into a Python "
                           f"process on this host ({sys.executable})")
    assert listed == ["mylayers.py"] and not plan["snapshot_dir"].startswith(str(layout.sidecar_for(model)))
    assert str(code) not in env.get("PYTHONPATH", "") and plan["env"] == {}
    assert plan["modules"] == ["mylayers"] and plan["custom_objects"] == {"MyCustomLayer": "mylayers:MyLayer"}
    assert report.tried["imports"] == {"snapshot": ["mylayers"], "environment": []}
    assert any(f.kind == "try" and "load_model works here" in f.what for f in report.findings)


def test_announcement_without_capture_and_for_installed_modules():
    line = trial.announce(None, "/py", {"snapshot": [], "environment": []})
    assert "on this host (/py)" in line and "no custom code is imported" in line
    line = trial.announce(object(), "/py", {"snapshot": ["mylayers"], "environment": ["acme_layers"]})
    assert "(snapshot/: mylayers)" in line and "it also imports acme_layers from that environment" in line
