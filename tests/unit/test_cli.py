"""The CLI edge: exit codes, one-line errors, no TensorFlow for --help, uncaptured inspect."""
import json
import os
import subprocess
import sys

import pytest


def cli(*args, env=None):
    full = dict(os.environ)
    full.pop("ENVREPRO_DEBUG", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "envrepro", *map(str, args)], capture_output=True, text=True,
                          env=full, timeout=120)


def test_version_and_help_import_no_heavy_modules():
    out = cli("--version")
    from importlib.metadata import version

    assert out.returncode == 0 and out.stdout.startswith(f"envrepro {version('envrepro')} (runtime ")
    code = ("import sys, envrepro.cli; "
            "print([m for m in ('tensorflow', 'docker', 'piptools') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    assert cli("--help").returncode == 0


def test_missing_model_is_one_line_exit_2(tmp_path):
    for args in (("capture", tmp_path / "nope.h5"), ("inspect", tmp_path / "nope"), ("load", tmp_path / "nope"),
                 ("doctor", tmp_path / "nope")):
        out = cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
        assert "no model at this path" in out.stderr


def test_uncaptured_model_load_is_bad_input_before_any_engine(tmp_path):
    model = tmp_path / "m.h5"
    model.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    out = cli("load", model, env={"DOCKER_HOST": "tcp://127.0.0.1:1"})
    assert out.returncode == 2 and "no capture beside this model" in out.stderr and "--infer" in out.stderr


def test_inspect_uncaptured_h5_reads_the_file_and_points_at_infer(tmp_path):
    h5py = pytest.importorskip("h5py")
    model = tmp_path / "old.h5"
    config = {"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Dense", "config": {"units": 2}}, {"class_name": "MyCustomLayer", "config": {"units": 64}}]}}
    with h5py.File(model, "w") as f:
        f.attrs["keras_version"] = "2.4.0"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(config)
    out = cli("inspect", model)
    assert out.returncode == 0, out.stderr
    assert "2.4.0" in out.stdout and "MyCustomLayer" in out.stdout
    assert "envrepro capture --infer" in out.stdout
    out = cli("inspect", model, "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["keras_version"] == "2.4.0"


def test_unknown_option_is_usage_error_exit_2():
    out = cli("load", "--no-such-option")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_resume_check_needs_the_training_environment_not_infer(tmp_path):
    model = tmp_path / "m.h5"
    model.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    out = cli("capture", "--infer", "--resume-check", model)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "--resume-check needs the training environment" in out.stderr and "--python" in out.stderr
    assert not (tmp_path / "m.h5.envrepro").exists()
