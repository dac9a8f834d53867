"""Load a captured model in its reproduced environment, or run a command or a shell there.

The host never deserializes the model (TensorFlow is not a sandbox; H5 Lambda layers carry
bytecode, SavedModels are programs). It writes a plan (``sandbox.loadplan``), starts the in-container
loader (``envrepro/runtime/loader.py``) in the sandbox (``sandbox.policy``) and turns the one
``ENVREPRO-REPORT {json}`` line the loader prints into a report (``sandbox.report``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

from envrepro import errors
from envrepro.engine.base import ContainerEngine
from envrepro.runtime import launch
from envrepro.sandbox.modelcheck import check_model, warning_for
from envrepro.sandbox.loadplan import container_paths, make_plan
from envrepro.sandbox.policy import DEFAULT_MEMORY, check_readable, docker_run_argv, run_args
from envrepro.sandbox.report import LoadReport, image_dict, no_report, parse_report
from envrepro.sidecar import layout, manifest
from envrepro import shipped

def prepare(model_path: "os.PathLike[str] | str | manifest.Capture",
            allow_model_change: bool = False) -> manifest.Capture:
    """Read and hash-verify the capture (an edited snapshot file is refused, named), check the
    model against the hash its capture recorded (``modelcheck``: a changed model is refused
    unless ``allow_model_change``) and that the sandbox user can read what gets mounted.

    A Capture that ``prepare`` already returned is passed through: the CLI checks the capture
    before building an image and hands it on, so the files are not hashed twice per load."""
    if isinstance(model_path, manifest.Capture):
        return model_path
    model = layout.resolve_model(model_path)
    capture = manifest.read(layout.sidecar_for(model))
    capture.model_check = check_model(capture, allow_model_change).to_dict()
    trees = [capture.model_path, Path(shipped.runtime_dir())] + [
        capture.root / d for d in (layout.SNAPSHOT_DIR, layout.REFERENCE_DIR) if (capture.root / d).is_dir()]
    check_readable(trees, folders=[capture.root])
    return capture


def _text(x: Any) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8", errors="replace")
    return x or ""


def python_in(image_info: Any) -> str:
    return getattr(image_info, "python", None) or "python"


def load(model_path: "os.PathLike[str] | str", engine: ContainerEngine, image_info: Any, unsafe: bool = False,
         json: bool = False, memory: str = DEFAULT_MEMORY, debug: bool = False,
         image_seconds: Optional[float] = None,
         record: Optional[Callable[[Any, manifest.Capture], None]] = None,
         gpus: bool = False) -> LoadReport:
    """Run the loader in the environment image and return its report (does not raise on a
    failed load: the report carries it, ``exit_code(report)`` maps it).

    ``json``: the caller prints the report as JSON, so nothing may be streamed to the terminal.
    ``record``: called with (image_info, capture) after the run; defaults to updating the images
    index (``envrepro images``), which never fails the load.
    ``gpus``: pass the host's GPUs into the container (the image should be a GPU one).
    """
    capture = prepare(model_path)
    paths = container_paths(capture)
    plan = make_plan(capture, paths, unsafe=unsafe)
    args = run_args(capture, paths, plan, memory=memory,
                    extra_env={"ENVREPRO_DEBUG": "1"} if debug else None, gpus=gpus)
    t0 = time.perf_counter()
    # --debug streams the container's output live, to stderr: stdout stays for the report.
    stream = bool(debug and not json)
    code, out, err = engine.run(image_info.tag, launch.container_argv(python_in(image_info), "loader"), **args,
                                stream=stream, on_output=_to_stderr if stream else None)
    run_seconds = time.perf_counter() - t0
    out, err = _text(out), _text(err)
    data = parse_report(out) or no_report(code, err)
    img = image_dict(image_info)
    report = LoadReport(
        model=str(capture.model_path), capture=str(capture.root), image=img, loader=data,
        container_exit=code, stderr_tail="\n".join(err.splitlines()[-20:]),
        timings={"image": image_seconds if image_seconds is not None else img.get("seconds"),
                 "run": round(run_seconds, 3)},
        unsafe=unsafe, inferred=bool(capture.get("inferred")), model_check=capture.model_check,
        reference_skipped=capture.get("reference_skipped"))
    model_warning = warning_for(capture.model_check)
    if model_warning:
        report.warnings.append(model_warning)
    try:
        (record or _record_default)(image_info, capture)
    except (OSError, ValueError) as e:
        report.warnings.append(f"images index not updated ({e})")
    return report


def _to_stderr(_name: str, text: str) -> None:
    sys.stderr.write(text)


def _record_default(image_info: Any, capture: manifest.Capture) -> None:
    from envrepro.image import usage

    usage.record_use(image_info, capture)


def run_command(model_path: "os.PathLike[str] | str", engine: ContainerEngine, image_info: Any,
                command: Sequence[str], memory: str = DEFAULT_MEMORY, unsafe: bool = False,
                gpus: bool = False) -> int:
    """``envrepro run MODEL -- CMD...``: the user's command in the same sandbox, output streamed.

    The model is at ``$ENVREPRO_MODEL`` (``/envrepro/model/<name>``), the snapshot on PYTHONPATH,
    the working directory the tmpfs ``/tmp``.
    """
    if not command:
        raise errors.EnvreproError("no command to run", None, "envrepro run MODEL -- python predict.py")
    capture = prepare(model_path)
    args = run_args(capture, memory=memory, unsafe=unsafe, gpus=gpus)
    code, _out, _err = engine.run(image_info.tag, list(command), **args, stream=True)
    return int(code)


DEFAULT_SHELL = ["/bin/sh", "-c", "command -v bash >/dev/null 2>&1 && exec bash || exec sh"]


def shell_argv(model_path: "os.PathLike[str] | str", image_info: Any,
               command: Optional[Sequence[str]] = None, memory: str = DEFAULT_MEMORY,
               unsafe: bool = False, tty: Optional[bool] = None, gpus: bool = False) -> List[str]:
    """``docker run -it`` with the sandbox of ``run_args`` (the SDK can't attach a TTY)."""
    capture = prepare(model_path)
    args = run_args(capture, memory=memory, unsafe=unsafe, gpus=gpus)
    return docker_run_argv(image_info.tag, list(command or DEFAULT_SHELL), args, interactive=True, tty=tty)


def shell(model_path: "os.PathLike[str] | str", image_info: Any,
          command: Optional[Sequence[str]] = None, memory: str = DEFAULT_MEMORY,
          unsafe: bool = False, runner: Callable[[List[str]], int] = subprocess.call,
          gpus: bool = False) -> int:
    """``envrepro shell MODEL``: an interactive shell in the reproduced environment."""
    docker = shutil.which("docker")
    if docker is None:
        raise errors.NoEngine("the docker command line is not installed (needed for a TTY shell)",
                              None, "install the Docker CLI, or use `envrepro run MODEL -- CMD`")
    argv = shell_argv(model_path, image_info, command, memory=memory, unsafe=unsafe, gpus=gpus)
    argv[0] = docker
    return int(runner(argv))
