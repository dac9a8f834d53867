"""What the command functions share (``commands.py``, ``sharecommands.py``): the engine, the
``--gpus`` reading, the signature gate and the progress reporter.

Nothing here prints or knows a command; each helper is one step every command takes the same way.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from envrepro.engine.base import ContainerEngine
from envrepro.sidecar import layout, manifest

if TYPE_CHECKING:
    from envrepro.reporter import Reporter

EngineFactory = Callable[[], ContainerEngine]


def wants_gpus(gpus: "Optional[str] | bool") -> bool:
    """``--gpus all`` (also gpu/1/true, or a bool from the library) asks for every host GPU:
    a CUDA base for the image, and the GPUs passed into the container."""
    if isinstance(gpus, bool):
        return gpus
    return (gpus or "").strip().lower() in ("all", "gpu", "1", "true")


def default_engine() -> ContainerEngine:
    from envrepro.engine.docker import DockerEngine

    return DockerEngine().connect()


def engine_factory_or_default(engine_factory: Optional[EngineFactory]) -> EngineFactory:
    """The caller's engine factory, else ``default_engine`` (looked up here, when the command
    runs: tests replace ``commandbase.default_engine``)."""
    return engine_factory or default_engine


def signed(model: "manifest.Capture | str") -> Any:
    """The ``require_signature`` gate (config; ``signing.gate.enforce``): a capture no trusted
    key signed, or that differs from what was signed, is refused (exit 2) before the engine is
    reached or anything runs. None when signatures are not required."""
    from envrepro.signing import gate

    return gate.enforce(model.model_path if isinstance(model, manifest.Capture) else layout.resolve_model(model))


def progress_reporter(quiet: bool = False, verbose: bool = False) -> Reporter:
    """Progress on stderr (``envrepro.progress``): the steps live on a terminal, as plain lines
    elsewhere; with --json (``quiet``: stdout holds the JSON) plain step lines only, no messages;
    tools' output with --verbose."""
    from envrepro.reporter import Reporter

    return Reporter(verbose=verbose, live=False if quiet else None, messages=not quiet)
