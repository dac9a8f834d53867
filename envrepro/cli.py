"""The ``envrepro`` command: typer options wired to ``commands``, results printed by ``render``.

Errors become one line and a documented exit code here, at the edge (tracebacks only with
--debug). Heavy modules (Docker SDK, pip-tools, TensorFlow) are imported inside commands so
``envrepro --help`` stays fast.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer

from envrepro import __version__
from envrepro import errors

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Capture a Keras model's environment at save time; reproduce it in Docker to load it anywhere.")
images_app = typer.Typer(add_completion=False, help="List or prune envrepro's environment images.",
                         invoke_without_command=True)
app.add_typer(images_app, name="images")

_DEBUG = {"on": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"envrepro {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks (and a failed probe's full output) on errors."),
) -> None:
    _DEBUG["on"] = debug or os.environ.get("ENVREPRO_DEBUG") == "1"
    if _DEBUG["on"]:
        os.environ["ENVREPRO_DEBUG"] = "1"   # the probe prints its traceback too


def _emit(result, as_json: bool = False, verbose: bool = False) -> None:
    from envrepro import render

    raise typer.Exit(render.emit(result, as_json=as_json, verbose=verbose))


@app.command()
def capture(
    model: str = typer.Argument(..., help="The saved model: SavedModel folder, .h5 or .keras file."),
    python: Optional[str] = typer.Option(None, "--python", help="The training environment's interpreter (default: this one)."),
    module: List[str] = typer.Option([], "--module", help="Module defining custom objects, imported before loading (repeatable)."),
    code_path: List[str] = typer.Option([], "--code-path", help="Folder added to the probe's import path (repeatable)."),
    sample: Optional[str] = typer.Option(None, "--sample", help="Input for the reference prediction (.npy, or .npz for several inputs)."),
    no_hashes: bool = typer.Option(False, "--no-hashes", help="Don't ask the index for hashes (offline capture)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", metavar="SECONDS", help="Stop the probe (and everything it started) after this long (default 900; env ENVREPRO_PROBE_TIMEOUT, config probe_timeout)."),
    infer: bool = typer.Option(False, "--infer", help="Model saved without envrepro: infer the environment from its files."),
    resume_check: bool = typer.Option(False, "--resume-check", help="Record one training step on a copy of the model, for `load` to replay."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Capture the environment of a saved model into MODEL.envrepro/ (probe, lock, snapshot, reference)."""
    from envrepro import commands

    result = commands.capture(model, python=python or sys.executable, modules=module, code_paths=code_path,
                              sample=sample, no_hashes=no_hashes, infer=infer, timeout=timeout,
                              resume_check=resume_check)
    if not as_json:
        for w in result.warnings:
            typer.echo(f"warning: {w}", err=True)
    _emit(result, as_json)


@app.command()
def inspect(
    model: str = typer.Argument(..., help="The model (or its .envrepro folder)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a capture as a readable summary (or JSON); without a capture, what the files say."""
    from envrepro import commands

    _emit(commands.inspect(model), as_json)


@app.command()
def doctor(
    model: str = typer.Argument(..., help="The model (captured or not)."),
    python: Optional[str] = typer.Option(None, "--python", help="Check this interpreter's environment instead of this one."),
    try_load: bool = typer.Option(False, "--try", help="Really call load_model there (in a subprocess) and classify the failure."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show every package difference and full diffs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Explain why load_model fails (or would silently differ) here. Exit 0 compatible, 1 risky, 2 will fail."""
    from envrepro import commands

    _emit(commands.doctor(model, python=python, try_load=try_load), as_json, verbose=verbose)


# Options that load, run, shell and dockerfile share: one definition, one help text.
_MODEL = typer.Argument(..., help="The captured model.")
_BASE_IMAGE = typer.Option(None, "--base-image", help="Base image (default python:X.Y-slim; env ENVREPRO_BASE_IMAGE).")
_REGISTRY = typer.Option(None, "--registry", help="Registry to pull prebuilt environments from (env ENVREPRO_REGISTRY).")
_GPUS = typer.Option(None, "--gpus", help="'all' passes the host's GPUs and builds with TensorFlow's GPU "
                     "build (CUDA as pip wheels from TF 2.14, else a CUDA/cuDNN base).")
_UNSAFE = typer.Option(False, "--unsafe", help="Keras 3 safe_mode off (Lambda layers). Only for trusted models.")
_MEMORY = typer.Option("4g", "--memory", help="Memory limit of the container.")
_ALLOW_CHANGE = typer.Option(False, "--allow-model-change",
                             help="Load a model that changed since its capture (the report says so; never 'verified').")


@app.command()
def load(
    model: str = _MODEL,
    base_image: Optional[str] = _BASE_IMAGE,
    registry: Optional[str] = _REGISTRY,
    gpus: Optional[str] = _GPUS,
    unsafe: bool = _UNSAFE,
    memory: str = _MEMORY,
    allow_model_change: bool = _ALLOW_CHANGE,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Build or find the captured environment's image, load the model inside it and verify it."""
    from envrepro import commands

    _emit(commands.load(model, base_image=base_image, registry=registry, gpus=gpus, unsafe=unsafe,
                        memory=memory, quiet=as_json, debug=_DEBUG["on"],
                        allow_model_change=allow_model_change), as_json)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    model: str = _MODEL,
    base_image: Optional[str] = _BASE_IMAGE,
    registry: Optional[str] = _REGISTRY,
    gpus: Optional[str] = _GPUS,
    unsafe: bool = _UNSAFE,
    memory: str = _MEMORY,
    allow_model_change: bool = _ALLOW_CHANGE,
) -> None:
    """Run a command in the reproduced environment: envrepro run MODEL -- python predict.py"""
    from envrepro import commands

    _emit(commands.run(model, list(ctx.args), base_image=base_image, memory=memory, unsafe=unsafe,
                       gpus=gpus, registry=registry, allow_model_change=allow_model_change))


@app.command()
def shell(
    model: str = _MODEL,
    base_image: Optional[str] = _BASE_IMAGE,
    registry: Optional[str] = _REGISTRY,
    gpus: Optional[str] = _GPUS,
    unsafe: bool = _UNSAFE,
    memory: str = _MEMORY,
    allow_model_change: bool = _ALLOW_CHANGE,
) -> None:
    """Open a shell in the reproduced environment (model at /envrepro/model/NAME)."""
    from envrepro import commands

    _emit(commands.shell(model, base_image=base_image, memory=memory, unsafe=unsafe, gpus=gpus,
                         registry=registry, allow_model_change=allow_model_change))


@app.command()
def dockerfile(
    model: str = _MODEL,
    base_image: Optional[str] = _BASE_IMAGE,
    gpus: bool = typer.Option(False, "--gpus", help="The GPU image's Dockerfile: TensorFlow's GPU build "
                              "(CUDA as pip wheels from TF 2.14, else a CUDA/cuDNN base)."),
) -> None:
    """Print the Dockerfile of the captured environment (no engine needed)."""
    from envrepro import commands

    _emit(commands.dockerfile(model, base_image=base_image, gpus=gpus))


@images_app.callback()
def images_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """List envrepro's environment images with their size and the captures they serve."""
    if ctx.invoked_subcommand is not None:
        return
    from envrepro import commands

    _emit(commands.images_list(), as_json)


@images_app.command("prune")
def images_prune(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
    cache: bool = typer.Option(False, "--cache", help="Also remove the builder stages kept as build cache."),
) -> None:
    """Remove envrepro images that no known capture uses any more."""
    from envrepro import commands

    _emit(commands.images_prune(dry_run=dry_run, cache=cache))


def _click_exception_types():
    """typer >= 0.2x vendors click (``typer._click``); older releases raise click's own classes.
    Catch both, so usage errors are one message and an exit code, never a traceback."""
    exits, aborts, usage = [typer.Exit], [typer.Abort], []
    try:
        from typer._click import exceptions as vendored  # type: ignore[attr-defined]

        usage.append(vendored.ClickException)
    except ImportError:
        pass
    try:
        import click

        exits.append(click.exceptions.Exit)
        aborts.append(click.exceptions.Abort)
        usage.append(click.ClickException)
    except ImportError:
        pass
    return tuple(exits), tuple(aborts), tuple(usage)


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: run typer without its exception handling, and handle errors ourselves."""
    exit_types, abort_types, usage_types = _click_exception_types()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or os.environ.get("ENVREPRO_DEBUG") == "1"
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="envrepro")
        code = rv if isinstance(rv, int) else 0
    except exit_types as e:
        code = getattr(e, "exit_code", 0)
    except abort_types:
        typer.echo("envrepro: aborted", err=True)
        code = 130
    except usage_types as e:
        e.show()
        code = getattr(e, "exit_code", errors.EXIT_BAD_INPUT) or errors.EXIT_BAD_INPUT
    except errors.EnvreproError as e:
        if debug and getattr(e, "detail", None):  # the output behind the line says more
            typer.echo(f"--- the probe's output ---\n{e.detail.rstrip()}\n---", err=True)
        elif debug:
            import traceback

            traceback.print_exc()
        typer.echo(f"envrepro: error: {e}", err=True)
        code = e.exit_code
    except KeyboardInterrupt:
        typer.echo("envrepro: interrupted", err=True)
        code = 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if debug:
            import traceback

            traceback.print_exc()
        typer.echo(f"envrepro: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", err=True)
        code = errors.EXIT_INTERNAL
    sys.exit(code)


if __name__ == "__main__":
    main()
