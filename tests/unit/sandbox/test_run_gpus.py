"""``--gpus all`` reaches the container, not only the image: run arguments, docker argv, and the
load/run/shell glue (envrepro.commands) with fake engines. No GPU needed: what is checked is what
envrepro asks the engine for (the CUDA base Dockerfile has its snapshot in test_dockerfile.py, the
GPU lock its tests in test_gpu.py)."""
import pytest

from envrepro.image import bases
from envrepro.packages import pipconfig
from envrepro.sandbox import policy
from envrepro.sandbox import container as load
from envrepro import commandbase, commands
try:
    from .fakes import FakeEngine, image, image_info, make_capture, translate_into_cache
except ImportError:
    from fakes import FakeEngine, image, image_info, make_capture, translate_into_cache


@pytest.fixture(autouse=True)
def no_host_pip_or_debug(monkeypatch):
    """conftest.py already isolates home, config and cache; the host's pip settings stay out too."""
    monkeypatch.delenv("ENVREPRO_DEBUG", raising=False)
    monkeypatch.setattr(pipconfig, "host_pip_settings", lambda runner=None: pipconfig.PipSettings())


@pytest.fixture
def cap(tmp_path):
    """A tensorflow-cpu 2.4.1 capture whose GPU lock (tensorflow 2.4.1) is in the cache."""
    capture = make_capture(tmp_path / "models")
    translate_into_cache(capture, "tensorflow==2.4.1\n    # via -r requirements.in\n")
    return capture


def test_run_args_pass_gpus_only_when_asked(cap):
    assert "gpus" not in policy.run_args(cap)
    args = policy.run_args(cap, gpus=True)
    assert args["gpus"] is True
    # the sandbox is unchanged by GPUs
    plain = policy.run_args(cap)
    assert {k: v for k, v in args.items() if k not in ("gpus", "environment")} == \
        {k: v for k, v in plain.items() if k != "environment"}


def test_docker_argv_has_gpus_all(cap):
    argv = load.shell_argv(cap.model_path, image_info(), tty=False, gpus=True)
    i = argv.index("--gpus")
    assert argv[i + 1] == "all" and i < argv.index("envrepro/env:k1")
    assert "--gpus" not in load.shell_argv(cap.model_path, image_info(), tty=False)
    assert "--network" in argv and "--cap-drop" in argv


def test_load_and_run_pass_gpus_to_the_engine(cap):
    engine = FakeEngine()
    load.load(cap.model_path, engine, image_info(), gpus=True, record=lambda *a: None)
    load.load(cap.model_path, engine, image_info(), record=lambda *a: None)
    assert engine.runs[0]["gpus"] is True and "gpus" not in engine.runs[1]
    load.run_command(cap.model_path, engine, image_info(), ["nvidia-smi"], gpus=True)
    assert engine.runs[2]["gpus"] is True


def test_shell_passes_gpus(cap, monkeypatch):
    seen = []
    monkeypatch.setattr(load.shutil, "which", lambda name: "/usr/bin/docker")
    load.shell(cap.model_path, image_info(), ["bash"], gpus=True, runner=lambda argv: seen.append(argv) or 0)
    assert "--gpus" in seen[0]


@pytest.mark.parametrize("value,wanted", [("all", True), ("ALL", True), ("gpu", True), ("1", True),
                                          (None, False), ("", False), ("none", False), (True, True),
                                          (False, False)])
def test_wants_gpus(value, wanted):
    assert commandbase.wants_gpus(value) is wanted


def _engine_with_cuda_base():
    cuda = bases.gpu_base("2.4.1").image
    return FakeEngine([image(cuda, digest="nvidia/cuda@sha256:" + "1" * 64),
                       image("python:3.8-slim", digest="python@sha256:" + "0" * 64)]), cuda


def test_load_model_cmd_gpus_all_builds_on_cuda_and_runs_with_gpus(cap, capsys):
    engine, cuda = _engine_with_cuda_base()
    commands.load(str(cap.model_path), gpus="all", engine_factory=lambda: engine)
    assert engine.runs[-1]["gpus"] is True
    built_tag = engine.builds[-1][1]
    assert engine.inspect_image(built_tag)["Config"]["Labels"]["org.envrepro.base"] == cuda
    commands.load(str(cap.model_path), engine_factory=lambda: engine)
    assert "gpus" not in engine.runs[-1]


def test_run_and_shell_cmd_take_gpus(cap, monkeypatch):
    engine, cuda = _engine_with_cuda_base()
    commands.run(str(cap.model_path), ["--", "nvidia-smi"], gpus="all", engine_factory=lambda: engine)
    assert engine.runs[-1]["gpus"] is True and engine.runs[-1]["command"] == ["nvidia-smi"]
    monkeypatch.setattr(load.shutil, "which", lambda name: "/usr/bin/docker")
    seen = []
    commands.shell(str(cap.model_path), gpus="all", engine_factory=lambda: engine,
                      runner=lambda argv: seen.append(argv) or 0)
    assert seen[0][seen[0].index("--gpus") + 1] == "all"
    assert engine.inspect_image(engine.builds[-1][1])["Config"]["Labels"]["org.envrepro.base"] == cuda
