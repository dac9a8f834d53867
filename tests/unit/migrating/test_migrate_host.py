"""envrepro migrate, host side (envrepro.migrating): OUT, targets, what the containers wrote, the
order of the steps and the exit codes, with a scripted engine standing in for the two containers
(their real halves, runtime/migrate/, are tested with real TensorFlow in tests/integration and
end to end in tests/e2e)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from envrepro import errors
from envrepro.migrating import outdir, sides, staging, targets
from envrepro.migrating.migrate import migrate
from envrepro.sidecar.manifest import Capture

try:
    from ..fakes import FakeEngine, image_info, make_capture
except ImportError:
    from fakes import FakeEngine, image_info, make_capture


# --- OUT ------------------------------------------------------------------------------------------

def test_out_defaults_beside_the_model_and_takes_new_or_empty_folders(tmp_path):
    cap = make_capture(tmp_path / "a", name="m.h5", fmt="h5")
    assert outdir.check_out(None, cap.model_path) == cap.model_path.parent / "m.h5.migrated"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert outdir.check_out(str(empty), cap.model_path) == empty


def test_out_holding_something_else_is_refused_and_left_alone(tmp_path):
    cap = make_capture(tmp_path / "a", name="m.h5", fmt="h5")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out in (busy, a_file, cap.model_path, cap.root, cap.root / "snapshot", tmp_path / "nodir" / "out"):
        with pytest.raises(errors.EnvreproError) as e:
            outdir.check_out(str(out), cap.model_path)
        assert e.value.exit_code == 2, out
    assert (busy / "notes.txt").read_text() == "mine"


def test_an_earlier_migration_of_the_same_model_may_be_replaced_not_of_another(tmp_path):
    cap = make_capture(tmp_path / "a", name="m.h5", fmt="h5")
    out = tmp_path / "out"
    out.mkdir()
    (out / "migration.json").write_text(json.dumps({"model": str(cap.model_path)}))
    assert outdir.check_out(str(out), cap.model_path) == out
    (out / "migration.json").write_text(json.dumps({"model": "/elsewhere/other.h5"}))
    with pytest.raises(errors.EnvreproError):
        outdir.check_out(str(out), cap.model_path)


# --- targets --------------------------------------------------------------------------------------

def test_to_a_minor_takes_its_last_release_on_its_likeliest_python():
    t = targets.to_version("2.21")
    assert t.tensorflow.startswith("2.21.") and t.python == "3.12"
    assert t.requirements == [f"tensorflow-cpu=={t.tensorflow}"]
    assert all(not c.startswith("tensorflow-cpu") for c in t.constraints)
    assert targets.to_version("2.15.1").tensorflow == "2.15.1"


@pytest.mark.parametrize("bad,said", [("2.99", "unknown TensorFlow version 2.99"), ("latest", "not a TensorFlow version"),
                                      ("2.8", "can't be a migration target"), ("2.21; rm -rf /", "not a TensorFlow")])
def test_unknown_or_unusable_to_versions_are_bad_input(bad, said):
    with pytest.raises(errors.EnvreproError) as e:
        targets.to_version(bad)
    assert e.value.exit_code == 2 and said in str(e.value)


def test_to_and_python_together_are_refused():
    with pytest.raises(errors.EnvreproError):
        targets.choose(python=sys.executable, to="2.21")


def _fake_python(tmp_path, facts):
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\necho '%s'\n" % json.dumps(facts))
    script.chmod(0o755)
    return str(script)


def test_a_target_interpreter_without_tensorflow_is_bad_input(tmp_path):
    py = _fake_python(tmp_path, {"python": "3.11.2", "versions": {"numpy": "1.26.4"}})
    with pytest.raises(errors.EnvreproError) as e:
        targets.choose(python=py)
    assert e.value.exit_code == 2 and "has no TensorFlow" in str(e.value) and "--to" in e.value.fix
    with pytest.raises(errors.EnvreproError):
        targets.choose(python=str(tmp_path / "no-such-python"))


def test_a_target_interpreter_pins_its_tensorflow_keras_and_numpy(tmp_path):
    py = _fake_python(tmp_path, {"python": "3.11.2", "versions": {"tensorflow": "2.21.0", "keras": "3.12.0",
                                                                   "numpy": "2.1.3"}})
    t = targets.choose(python=py)
    assert (t.tensorflow, t.python, t.keras) == ("2.21.0", "3.11", "3.12.0")
    assert t.requirements == ["tensorflow-cpu==2.21.0", "keras==3.12.0", "numpy==2.1.3"]
    assert not any(c.startswith(("numpy==", "keras==")) for c in t.constraints)


def test_the_target_capture_is_resolved_once_then_read_back(tmp_path, monkeypatch):
    from envrepro.packages import resolution

    calls = []

    def fake_resolve(plan, interp, warnings):
        calls.append(plan.requirements)
        return [{"name": "tensorflow-cpu", "version": "2.21.0", "requires": []}], "fake"
    monkeypatch.setattr(resolution, "resolve", fake_resolve)
    monkeypatch.setattr("envrepro.packages.indexhashes.hashes_wanted", lambda: False)
    t = targets.to_version("2.21.0")
    cap = targets.target_capture(t)
    again = targets.target_capture(t)
    # Once without ONNX, once with tf2onnx/onnxruntime beside every pin of the first; then cached.
    assert len(calls) == 2 and cap.root == again.root
    assert calls[0] == ["tensorflow-cpu==2.21.0"] and "tf2onnx>=1.16" in calls[1]
    assert "tensorflow-cpu==2.21.0" in cap.lock_path.read_text()
    assert again.get("frameworks.tensorflow") == "2.21.0" and again.get("python.version")


# --- what the containers wrote --------------------------------------------------------------------

def test_staging_takes_regular_files_and_folders_only(tmp_path):
    root = staging.new_folder("t")
    (root / "a.keras").write_bytes(b"k")
    (root / "m.savedmodel" / "variables").mkdir(parents=True)
    (root / "m.savedmodel" / "saved_model.pb").write_bytes(b"pb")
    assert [str(p) for p in staging.accepted(root, "target")] == ["a.keras", "m.savedmodel/saved_model.pb"]
    os.symlink("/etc/passwd", root / "m.savedmodel" / "leak")
    with pytest.raises(staging.Refused) as e:
        staging.accepted(root, "target")
    assert "leak" in str(e.value)
    os.unlink(root / "m.savedmodel" / "leak")
    os.mkfifo(root / "pipe")
    with pytest.raises(staging.Refused):
        staging.accepted(root, "target")
    staging.remove(root)


def test_staging_is_bounded_in_size(tmp_path, monkeypatch):
    root = staging.new_folder("t")
    (root / "big").write_bytes(b"x" * 2048)
    monkeypatch.setattr(staging, "MAX_BYTES", 1024)
    with pytest.raises(staging.Refused) as e:
        staging.accepted(root, "source")
    assert "ENVREPRO_MIGRATE_MAX_BYTES" in e.value.fix
    staging.remove(root)


# --- the whole host side, with scripted containers ------------------------------------------------

def _target_cap(tmp_path):
    root = tmp_path / "target-cap"
    root.mkdir(exist_ok=True)
    (root / "requirements.lock").write_text("tensorflow-cpu==2.21.0\n")
    return Capture(root=root, data={"python": {"version": "3.12.8"}, "frameworks": {"tensorflow": "2.21.0"}})


class Containers(FakeEngine):
    """Plays both sides: ``source(out_dir)`` and ``target(out_dir, source_dir)`` write files and
    return (exit code, report dict or None)."""

    def __init__(self, source, target):
        super().__init__()
        self.source, self.target = source, target

    def run(self, image, command=None, **kw):
        self.runs.append(dict(kw, image=image, command=command))
        mounts = {m.target: m for m in kw["mounts"]}
        out = Path(mounts[sides.OUT_MOUNT].source)
        if "migrate.source" in command[-1] or "migrate.source" in " ".join(command):
            code, rep = self.source(out)
        else:
            code, rep = self.target(out, Path(mounts[sides.SOURCE_MOUNT].source))
        return code, ("noise\n" + sides.PREFIX + json.dumps(rep) + "\n") if rep is not None else "", "stderr tail"


VERSIONS = {"tensorflow": "2.8.4", "keras": "2.8.0", "python": "3.9.18", "numpy": "1.23.5"}


def good_source(out):
    (out / "architecture.json").write_text("{}")
    (out / "source.json").write_text(json.dumps({"ok": True}))
    return 0, {"ok": True, "versions": VERSIONS, "load": {"recipe": "custom_objects"}}


def good_target(out, src, verified=True, matches=True):
    assert (src / "architecture.json").is_file()
    (out / "m.keras").write_bytes(b"PK")
    (out / "m.savedmodel").mkdir()
    (out / "m.savedmodel" / "saved_model.pb").write_bytes(b"pb")
    arts = [{"format": "keras", "path": "m.keras", "written": True, "verified": verified, "max_abs_diff": 0.0,
             "matches_source": matches, "custom_objects": {"MyCustomLayer": "custom_layers:MyCustomLayer"},
             "translated": ["InputLayer: batch_input_shape -> batch_shape"], "replaced": []},
            {"format": "savedmodel", "path": "m.savedmodel", "written": True, "verified": verified,
             "max_abs_diff": 0.0, "matches_source": matches},
            {"format": "onnx", "path": None, "written": False, "verified": False,
             "why_not": "tf2onnx/onnxruntime are not in the target environment"}]
    return 0 if verified else 6, {"ok": verified, "versions": {"tensorflow": "2.21.0", "keras": "3.12.0",
                                                                "python": "3.12.8"},
                                  "artifacts": arts, "optimizer": {"carried": True, "class": "Adam"}}


def run(tmp_path, monkeypatch, source=good_source, target=good_target, cap=None, **kw):
    cap = cap or make_capture(tmp_path / "a", name="m.h5", fmt="h5")
    monkeypatch.setattr(targets, "target_capture", lambda t, say=None: _target_cap(tmp_path))
    eng = Containers(source, target)
    images = []

    def ensure(capture, engine):
        images.append(capture.root)
        return image_info(key=f"k{len(images)}", python="/opt/venv/bin/python")
    result = migrate(cap, lambda: eng, ensure, to="2.21", **kw)
    return cap, eng, result, images


def test_a_verified_migration_writes_out_whole_with_its_report(tmp_path, monkeypatch):
    cap, eng, result, images = run(tmp_path, monkeypatch)
    out = cap.model_path.parent / "m.h5.migrated"
    assert result.exit_code == 0 and result.verdict == "MIGRATED"
    assert sorted(p.name for p in out.iterdir()) == ["m.keras", "m.savedmodel", "migration.json", "source.json"]
    report = json.loads((out / "migration.json").read_text())
    assert report["artifacts"][0]["path"] == str(out / "m.keras") and report["exit_code"] == 0
    assert report["source"]["tensorflow"] == "2.8.4" and report["target"]["tensorflow"] == "2.21.0"
    assert images == [cap.root, tmp_path / "target-cap"]
    # Each side has exactly one writable mount, its own; the target reads the source's output.
    for r in eng.runs:
        rw = [m for m in r["mounts"] if not m.read_only]
        assert [m.target for m in rw] == [sides.OUT_MOUNT]
        assert r["network_disabled"] and r["cap_drop"] == ["ALL"] and r["read_only"]
    src_out = [m for m in eng.runs[1]["mounts"] if m.target == sides.SOURCE_MOUNT][0]
    assert src_out.read_only and src_out.source == [m for m in eng.runs[0]["mounts"]
                                                     if m.target == sides.OUT_MOUNT][0].source
    assert not Path(src_out.source).exists()       # staging removed
    text = result.to_text()
    assert "m.keras" in text and "VERIFIED" in text and "InputLayer" in text and "tf2onnx" in text


def test_the_target_plan_names_the_reference_custom_objects_and_snapshot(tmp_path, monkeypatch):
    cap, eng, result, _ = run(tmp_path, monkeypatch)
    plan = json.loads(eng.runs[1]["environment"]["ENVREPRO_PLAN"])
    assert plan["custom_objects"] == {"MyCustomLayer": "custom_layers:MyCustomLayer", "team>Huberish": "losses:Huberish"}
    assert plan["reference"]["outputs"] == ["/envrepro/capture/reference/output_0.npy"]
    assert plan["name"] == "m" and plan["safe_mode"] is True
    assert eng.runs[1]["environment"]["PYTHONPATH"] == "/envrepro/capture/snapshot"
    assert "TF_USE_LEGACY_KERAS" not in eng.runs[1]["environment"]   # the source's switch, not the target's
    src_plan = json.loads(eng.runs[0]["environment"]["ENVREPRO_PLAN"])
    assert src_plan["migrate"]["out"] == sides.OUT_MOUNT and src_plan["recipe"] is None
    assert src_plan["all_recipes"] is True       # the recorded recipe first, then every other


def test_a_source_that_cannot_load_is_exit_5_and_writes_nothing(tmp_path, monkeypatch):
    def broken(out):
        return 5, {"ok": False, "versions": VERSIONS, "error": {"type": "ValueError", "first_line": "Unknown layer: Foo"}}
    cap, eng, result, _ = run(tmp_path, monkeypatch, source=broken)
    assert result.exit_code == 5 and "Unknown layer: Foo" in result.error
    assert len(eng.runs) == 1 and not (cap.model_path.parent / "m.h5.migrated").exists()


def test_a_source_that_does_not_reproduce_its_reference_is_exit_6_and_not_migrated(tmp_path, monkeypatch):
    def off(out):
        return 6, {"ok": False, "versions": VERSIONS, "mismatches": ["max |diff| 0.3 > atol"]}
    cap, eng, result, _ = run(tmp_path, monkeypatch, source=off)
    assert result.exit_code == 6 and "does not reproduce" in result.error and len(eng.runs) == 1


def test_written_artifacts_that_do_not_reproduce_are_exit_6(tmp_path, monkeypatch):
    cap, eng, result, _ = run(tmp_path, monkeypatch,
                              target=lambda o, s: good_target(o, s, verified=False, matches=False))
    assert result.exit_code == 6 and result.verdict == "NOT REPRODUCED"
    assert (cap.model_path.parent / "m.h5.migrated" / "migration.json").is_file()


def test_an_inferred_capture_is_migrated_not_verified(tmp_path, monkeypatch):
    cap = make_capture(tmp_path / "a", name="m.h5", fmt="h5", inferred=True, reference_skipped="inferred")
    cap, eng, result, _ = run(tmp_path, monkeypatch, cap=cap,
                              target=lambda o, s: good_target(o, s, verified=False, matches=True))
    assert result.exit_code == 0 and result.verdict == "MIGRATED, NOT VERIFIED"
    assert json.loads(eng.runs[1]["environment"]["ENVREPRO_PLAN"])["reference"] is None
    assert "migrated, not verified" in result.to_text()


def test_a_target_that_writes_a_link_is_refused_and_out_untouched(tmp_path, monkeypatch):
    def sneaky(out, src):
        code, rep = good_target(out, src)
        os.symlink("/root/.ssh/id_rsa", out / "m.onnx")
        return code, rep
    with pytest.raises(staging.Refused):
        run(tmp_path, monkeypatch, target=sneaky)
    assert not (tmp_path / "a" / "m.h5.migrated").exists()


def test_paths_a_target_names_outside_its_folder_are_not_taken(tmp_path, monkeypatch):
    def escape(out, src):
        code, rep = good_target(out, src)
        rep["artifacts"][0]["path"] = "../../etc/passwd"
        rep["artifacts"][1]["path"] = "missing.savedmodel"
        return code, rep
    cap, eng, result, _ = run(tmp_path, monkeypatch, target=escape)
    assert result.exit_code == 5        # nothing usable was written
    assert not (tmp_path / "etc").exists()
    assert "does not take" in result.artifacts[0]["why_not"] and "wrote no file" in result.artifacts[1]["why_not"]


def test_a_target_that_prints_no_report_is_exit_5(tmp_path, monkeypatch):
    cap, eng, result, _ = run(tmp_path, monkeypatch, target=lambda o, s: (137, None))
    assert result.exit_code == 5 and "no report" in result.error and "SIGKILL" in result.error


def test_a_source_that_crashes_says_which_signal(tmp_path, monkeypatch):
    cap, eng, result, _ = run(tmp_path, monkeypatch, source=lambda o: (139, None))
    assert result.exit_code == 5 and "died of SIGSEGV (exit 139)" in result.error
    assert "stderr tail" in result.error and len(eng.runs) == 1


def test_code_path_must_be_a_folder_and_is_mounted_read_only(tmp_path, monkeypatch):
    with pytest.raises(errors.EnvreproError):
        run(tmp_path, monkeypatch, code_path=str(tmp_path / "missing"))
    ported = tmp_path / "ported"
    ported.mkdir()
    cap, eng, result, _ = run(tmp_path / "2", monkeypatch, code_path=str(ported))
    m = [m for m in eng.runs[1]["mounts"] if m.target == sides.CODE_MOUNT][0]
    assert m.read_only and m.source == str(ported) and eng.runs[1]["environment"]["PYTHONPATH"] == sides.CODE_MOUNT


# --- the command line -----------------------------------------------------------------------------

def _cli(*args):
    env = dict(os.environ)
    env.pop("ENVREPRO_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "envrepro", "migrate", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120)


def test_bad_input_is_one_line_exit_2_before_any_engine(tmp_path):
    cap = make_capture(tmp_path / "a", name="m.h5", fmt="h5")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    for args, said in (((cap.model_path, "--to", "2.99"), "unknown TensorFlow version"),
                       ((cap.model_path, "-o", busy, "--to", "2.21"), "holds something else"),
                       ((tmp_path / "nope.h5",), "no model at this path")):
        out = _cli(*args)
        assert out.returncode == 2, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and said in out.stderr and "Traceback" not in out.stderr
    assert (busy / "x").read_text() == "x"


def test_a_capture_that_fails_verification_is_refused_before_anything(tmp_path):
    cap = make_capture(tmp_path / "a", name="m.h5", fmt="h5")
    (cap.root / "snapshot" / "custom_layers.py").write_text("X = 2  # edited after the capture\n")
    out = _cli(cap.model_path, "--to", "2.21")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "custom_layers.py" in out.stderr and "Traceback" not in out.stderr
    assert not (cap.model_path.parent / "m.h5.migrated").exists()


def test_a_source_that_crashes_after_its_checkpoint_is_migrated_from_what_it_wrote(tmp_path, monkeypatch):
    def crashes_in_savedmodel(out):
        good_source(out)
        (out / "source.json").write_text(json.dumps({"ok": True, "versions": VERSIONS, "savedmodel": {
            "written": False, "why_not": "crashed", "checkpoint": True}}))
        (out / "inference.savedmodel").mkdir()          # half written when it died
        return 139, None
    cap, eng, result, _ = run(tmp_path, monkeypatch, source=crashes_in_savedmodel)
    assert result.exit_code == 0 and len(eng.runs) == 2
    assert any("SIGSEGV" in w for w in result.warnings) and result.source["tensorflow"] == "2.8.4"


def test_a_crash_before_the_checkpoint_is_a_failed_source(tmp_path, monkeypatch):
    def crashes_early(out):
        (out / "source.json").write_text(json.dumps({"ok": False}))
        return 139, None
    cap, eng, result, _ = run(tmp_path, monkeypatch, source=crashes_early)
    assert result.exit_code == 5 and "SIGSEGV" in result.error and len(eng.runs) == 1


def test_the_lambda_module_a_keras_needs_is_carried_into_out(tmp_path, monkeypatch):
    """The capture's recorded Lambda sources go to the target in its plan; the module the
    target generated from them (the .keras artifact's ``code``) is copied beside it."""
    def with_code(out, src):
        code, rep = good_target(out, src)
        (out / "m_lambdas.py").write_text("def fn_lambda(t):\n    return t\n")
        rep["artifacts"][0]["code"] = "m_lambdas.py"
        return code, rep
    record = {"layer": "lambda", "kind": "lambda", "source": "lambda t: t", "globals": {}}
    cap = make_capture(tmp_path / "a", name="m.h5", fmt="h5", load={"compile": True, "lambdas": [record]})
    cap, eng, result, _ = run(tmp_path, monkeypatch, target=with_code, cap=cap)
    out = cap.model_path.parent / "m.h5.migrated"
    assert json.loads(eng.runs[1]["environment"]["ENVREPRO_PLAN"])["lambdas"] == [record]
    assert (out / "m_lambdas.py").read_text().startswith("def fn_lambda")
    assert result.artifacts[0]["code"] == str(out / "m_lambdas.py") and result.exit_code == 0
    assert "m_lambdas.py importable" in result.to_text()


@pytest.mark.parametrize("code", ["../evil.py", "/etc/passwd", "m_lambdas.sh", "sub/m.py", "absent.py", 3])
def test_a_code_file_envrepro_does_not_take_unverifies_the_keras(tmp_path, monkeypatch, code):
    def bad_code(out, src):
        rc, rep = good_target(out, src)
        rep["artifacts"][0]["code"] = code
        return rc, rep
    cap, eng, result, _ = run(tmp_path, monkeypatch, target=bad_code)
    k = result.artifacts[0]
    assert k["verified"] is False and "code file envrepro does not take" in k["why_not"]
    assert result.exit_code == 0        # the SavedModel is still verified
    assert not (tmp_path / "evil.py").exists()
