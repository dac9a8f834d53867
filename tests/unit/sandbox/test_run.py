"""Load, run and shell (envrepro.sandbox.container) with the fake engine: the capture is checked before
anything runs, the command runs in the sandbox, the images index never fails a load."""
import pytest

from envrepro import errors
from envrepro.sandbox import report as reports
from envrepro.sandbox import container as load

try:
    from .fakes import cap, FakeEngine, cache_home, image_info, loader_report, make_capture, report_stdout
except ImportError:
    from fakes import cap, FakeEngine, cache_home, image_info, loader_report, make_capture, report_stdout


def test_shell_runs_docker_and_needs_the_cli(cap, monkeypatch):
    seen = []
    monkeypatch.setattr(load.shutil, "which", lambda name: "/usr/bin/docker")
    assert load.shell(cap.model_path, image_info(), ["bash"], runner=lambda argv: seen.append(argv) or 3) == 3
    assert seen[0][0] == "/usr/bin/docker" and seen[0][-1] == "bash"
    monkeypatch.setattr(load.shutil, "which", lambda name: None)
    with pytest.raises(errors.NoEngine):
        load.shell(cap.model_path, image_info(), runner=lambda argv: 0)


def test_run_command_streams_in_the_sandbox(cap):
    eng = FakeEngine(run_result=(4, "", ""))
    assert load.run_command(cap.model_path, eng, image_info(), ["python", "predict.py"]) == 4
    kw = eng.runs[0]
    command = kw["command"]
    assert command == ["python", "predict.py"] and kw["stream"] is True
    assert kw["network_disabled"] and kw["user"] == "10001:10001" and kw["workdir"] == "/tmp"
    assert kw["environment"]["ENVREPRO_MODEL"] == "/envrepro/model/my_model"
    with pytest.raises(errors.EnvreproError):
        load.run_command(cap.model_path, eng, image_info(), [])


def test_edited_snapshot_is_refused_with_the_file_named(cap):
    (cap.root / "snapshot" / "custom_layers.py").write_text("X = 2\n")
    eng = FakeEngine()
    with pytest.raises(errors.InvalidCapture) as e:
        load.load(cap.model_path, eng, image_info())
    assert "custom_layers.py" in str(e.value)
    assert eng.runs == []


def test_index_failure_never_fails_the_load(cap):
    def boom(info, capture):
        raise OSError("read-only file system")

    report = load.load(cap.model_path, FakeEngine(run_result=(0, report_stdout(loader_report()), "")),
                       image_info(), record=boom)
    assert report.ok and "images index not updated" in report.warnings[0]


def test_build_image_info_is_understood(cap):
    from envrepro.image.ensure import ImageInfo

    info = ImageInfo("envrepro-env:abc", "abc" * 10, "sha256:1", "pulled", "python:3.8-slim", "sha256:d")
    d = reports.image_dict(info)
    assert d["source"] == "pulled" and d["base_digest"] == "sha256:d" and d["key"] == "abc" * 10
    report = load.load(cap.model_path, FakeEngine(run_result=(0, report_stdout(loader_report()), "")), info)
    text = reports.render_report(report)
    assert "envrepro-env:abc (pulled" in text, text
    assert load.python_in(info) == info.python  # the environment's interpreter, not the base one
