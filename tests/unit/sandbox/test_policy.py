"""The sandbox of every model container (envrepro.sandbox.policy): run arguments, docker argv, mounts
and the readability check, with the fake engine."""
import json
from pathlib import Path

import pytest

from envrepro import errors
from envrepro.engine.base import Mount
from envrepro.sandbox import loadplan as plans
from envrepro.sandbox import policy
from envrepro.sandbox import container as load
from envrepro.sidecar import layout

try:
    from .fakes import cap, FakeEngine, cache_home, image_info, loader_report, make_capture, report_stdout
except ImportError:
    from fakes import cap, FakeEngine, cache_home, image_info, loader_report, make_capture, report_stdout


def test_run_args_are_the_sandbox(cap):
    args = policy.run_args(cap)
    assert args["network_disabled"] is True
    assert args["user"] == "10001:10001"
    assert args["read_only"] is True
    assert args["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=1g"}
    assert args["cap_drop"] == ["ALL"]
    assert args["security_opt"] == ["no-new-privileges"]
    assert args["mem_limit"] == "4g" and args["pids_limit"] == 512
    assert args["workdir"] == "/tmp"
    mounts = {m.target: m for m in args["mounts"]}
    assert set(mounts) == {"/envrepro/model/my_model", "/envrepro/capture", "/envrepro/lib/envrepro_runtime"}
    assert all(isinstance(m, Mount) and m.read_only for m in args["mounts"]), "no writable host mount"
    assert mounts["/envrepro/model/my_model"].source == str(cap.model_path)
    assert mounts["/envrepro/capture"].source == str(cap.root)
    assert Path(mounts["/envrepro/lib/envrepro_runtime"].source, "loader.py").is_file()
    env = args["environment"]
    assert env["PYTHONPATH"] == "/envrepro/capture/snapshot" and env["HOME"] == "/tmp"
    assert env["ENVREPRO_MODEL"] == "/envrepro/model/my_model"
    assert env["TF_USE_LEGACY_KERAS"] == "1" and "KERAS_BACKEND" not in env
    assert json.loads(env["ENVREPRO_PLAN"]) == plans.make_plan(cap, plans.container_paths(cap))
    assert policy.run_args(cap, memory="8g")["mem_limit"] == "8g"


def test_run_args_match_engine_run_signature(cap):
    import inspect

    from envrepro.engine.base import ContainerEngine

    params = inspect.signature(ContainerEngine.run).parameters
    assert set(policy.run_args(cap)) <= set(params)


def test_docker_argv_carries_every_sandbox_flag(cap):
    argv = load.shell_argv(cap.model_path, image_info(), tty=True)
    assert argv[:4] == ["docker", "run", "--rm", "-i"] and "-t" in argv
    text = " ".join(argv)
    for flag in ("--network none", "--user 10001:10001", "--read-only", "--tmpfs /tmp:rw,nosuid,nodev,size=1g",
                 "--cap-drop ALL", "--security-opt no-new-privileges", "--memory 4g", "--pids-limit 512",
                 "-w /tmp", "-e PYTHONPATH=/envrepro/capture/snapshot", "-e HOME=/tmp"):
        assert flag in text, flag
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "--mount"]
    assert len(mounts) == 3 and all(m.endswith(",readonly") and m.startswith("type=bind,") for m in mounts)
    assert f"type=bind,source={cap.model_path},target=/envrepro/model/my_model,readonly" in mounts
    i = argv.index("envrepro/env:k1")
    assert argv[i + 1:] == load.DEFAULT_SHELL
    plan_arg = next(a for a in argv if a.startswith("ENVREPRO_PLAN="))
    assert json.loads(plan_arg.split("=", 1)[1])["model_path"] == "/envrepro/model/my_model"
    assert "-t" not in load.shell_argv(cap.model_path, image_info(), ["python"], tty=False)


def test_mount_cli_quotes_commas():
    assert policy.mount_cli(Mount("/a,b", "/t")) == 'type=bind,"source=/a,b",target=/t,readonly'
    assert policy.mount_cli(Mount("/a", "/t", read_only=False)) == "type=bind,source=/a,target=/t"


def test_unreadable_model_is_refused_before_running(tmp_path):
    cap = make_capture(tmp_path)
    (cap.model_path / "saved_model.pb").chmod(0o600)
    eng = FakeEngine()
    with pytest.raises(errors.EnvreproError) as e:
        load.load(cap.model_path, eng, image_info())
    assert "saved_model.pb" in str(e.value) and "uid 10001" in str(e.value) and "chmod" in str(e.value)
    assert eng.runs == []


def test_sandbox_needs_to_read_what_it_uses_only(tmp_path):
    cap = make_capture(tmp_path)
    (cap.root / layout.MANIFEST).chmod(0o600)  # the loader never reads the manifest
    eng = FakeEngine(run_result=(0, report_stdout(loader_report()), ""))
    assert load.load(cap.model_path, eng, image_info()).ok
    cap.root.chmod(0o700)  # but it must get into the capture folder
    with pytest.raises(errors.EnvreproError) as e:
        load.load(cap.model_path, eng, image_info())
    assert f"chmod a+rX {cap.root}" in str(e.value)
    cap.root.chmod(0o755)
    (cap.root / "snapshot" / "custom_layers.py").chmod(0o600)
    with pytest.raises(errors.EnvreproError) as e:
        load.load(cap.model_path, eng, image_info())
    assert "custom_layers.py" in str(e.value)
    assert len(eng.runs) == 1
