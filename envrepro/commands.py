"""What the load/run/shell/images commands do, end to end: read the capture, reach the engine,
get the environment image, run in the sandbox, print. ``cli.py`` only wires options to these.

Order matters for the user's errors: the capture is checked first (bad input, exit 2) and the
engine second (exit 3), so a broken capture is reported even on a machine without Docker.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Callable, List, Optional

from envrepro.build import images as build
from envrepro.build import imageindex as images_cmd
from envrepro.sandbox import run as loadmod
from envrepro.sidecar import layout, manifest

EngineFactory = Callable[[], Any]


def read_capture(model: str) -> manifest.Capture:
    return manifest.read(layout.sidecar_for(layout.resolve_model(model)))


def checked_capture(model: str) -> manifest.Capture:
    """The capture, hash-verified, and readable by the sandbox user: checked before any image
    is built, so a bad capture costs nothing."""
    return loadmod.prepare(model)


def wants_gpus(gpus: "Optional[str] | bool") -> bool:
    """``--gpus all`` (also gpu/1/true, or a bool from the library) asks for every host GPU:
    a CUDA base for the image, and the GPUs passed into the container."""
    if isinstance(gpus, bool):
        return gpus
    return (gpus or "").strip().lower() in ("all", "gpu", "1", "true")


def _image(cap: manifest.Capture, engine: Any, base_image: Optional[str], registry: Optional[str] = None,
           gpus: bool = False, quiet: bool = False) -> build.ImageInfo:
    progress = (lambda line: None) if quiet else None   # None: build.ConsoleProgress on stderr
    return build.ensure_image(cap, engine, base_image=base_image, registry=registry, gpus=gpus,
                              on_progress=progress)


def load_model_cmd(model: str, base_image: Optional[str] = None, registry: Optional[str] = None,
                   gpus: Optional[str] = None, unsafe: bool = False, memory: str = "4g",
                   as_json: bool = False, engine_factory: Optional[EngineFactory] = None,
                   debug: bool = False) -> int:
    cap = checked_capture(model)
    engine = engine_factory() if engine_factory else _default_engine()
    use_gpus = wants_gpus(gpus)
    info = _image(cap, engine, base_image, registry, gpus=use_gpus, quiet=as_json)
    report = loadmod.load(cap, engine, info, unsafe=unsafe, json=as_json, memory=memory,
                          debug=debug, image_seconds=info.seconds, gpus=use_gpus)
    if as_json:
        sys.stdout.write(report.to_json() + "\n")
    else:
        sys.stdout.write(loadmod.render_report(report).rstrip("\n") + "\n")
    return loadmod.exit_code(report)


def run_cmd(model: str, command: List[str], base_image: Optional[str] = None, memory: str = "4g",
            unsafe: bool = False, engine_factory: Optional[EngineFactory] = None,
            gpus: Optional[str] = None, registry: Optional[str] = None) -> int:
    if command and command[0] == "--":
        command = command[1:]
    cap = checked_capture(model)
    engine = engine_factory() if engine_factory else _default_engine()
    use_gpus = wants_gpus(gpus)
    info = _image(cap, engine, base_image, registry, gpus=use_gpus)
    images_cmd.record_use(info, cap)
    return loadmod.run_command(cap, engine, info, command, memory=memory, unsafe=unsafe,
                               gpus=use_gpus)


def shell_cmd(model: str, base_image: Optional[str] = None, memory: str = "4g", unsafe: bool = False,
              engine_factory: Optional[EngineFactory] = None, gpus: Optional[str] = None,
              registry: Optional[str] = None, runner: Optional[Callable[[List[str]], int]] = None) -> int:
    cap = checked_capture(model)
    engine = engine_factory() if engine_factory else _default_engine()
    use_gpus = wants_gpus(gpus)
    info = _image(cap, engine, base_image, registry, gpus=use_gpus)
    images_cmd.record_use(info, cap)
    extra = {"runner": runner} if runner is not None else {}
    return loadmod.shell(cap, info, memory=memory, unsafe=unsafe, gpus=use_gpus, **extra)


def images_list_cmd(engine: Any, as_json: bool = False) -> int:
    rows = images_cmd.list_images(engine)
    if as_json:
        sys.stdout.write(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
    else:
        sys.stdout.write(images_cmd.render_images(rows))
    return 0


def images_prune_cmd(engine: Any, dry_run: bool = False, cache: bool = False) -> int:
    result = images_cmd.prune(engine, dry_run=dry_run, cache=cache)
    sys.stdout.write(images_cmd.render_prune(result))
    return 1 if result.failed else 0


def dockerfile_cmd(model: str, base_image: Optional[str] = None, gpus: "Optional[str] | bool" = False) -> str:
    return build.dockerfile_for(read_capture(model), base_image=base_image, gpus=wants_gpus(gpus))


def _default_engine() -> Any:
    from envrepro.engine.docker import Engine

    return Engine().connect()
