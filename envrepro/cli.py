"""The ``envrepro`` command: typer options wired to ``commands``, results printed by ``render``.

This module holds the app, the capture, doctor and load-side commands and ``images``, and
registers every command on the app in the order ``envrepro --help`` lists them: the serving
commands are ``cliserving.py``, the sharing ones ``clisharing.py``, the options they share
``clioptions.py``.

Errors become one line and a documented exit code here, at the edge (tracebacks only with
--debug). Heavy modules (Docker SDK, pip-tools, TensorFlow) are imported inside commands so
``envrepro --help`` stays fast.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer

from envrepro import cliserving, clisharing, errors
from envrepro.clioptions import (ALLOW_CHANGE, BASE_IMAGE, DEBUG, DIRECT_REFS, GPUS, MEMORY, MODEL, REGISTRY, UNSAFE,
                                 VERBOSE, VERBOSE_LONG, apply_direct_references, emit)
from envrepro.version import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Capture a Keras model's environment at save time; reproduce it in Docker to load it anywhere.")
images_app = typer.Typer(add_completion=False, help="List or prune envrepro's environment images (and serving containers left behind).",
                         invoke_without_command=True)
app.add_typer(images_app, name="images")


def version_line() -> str:
    """envrepro's version (package metadata), the runtime's, the capture format it writes and the
    Python it runs on: what a bug report needs."""
    import platform

    from envrepro.image.spec import RUNTIME_VERSION
    from envrepro.sidecar.layout import SCHEMA

    return (f"envrepro {__version__} (runtime {RUNTIME_VERSION}, capture format {SCHEMA}) "
            f"on Python {platform.python_version()} ({sys.executable})")


def _version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit(0)


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks (and a failed probe's full output) on errors."),
) -> None:
    DEBUG["on"] = debug or os.environ.get("ENVREPRO_DEBUG") == "1"
    if DEBUG["on"]:
        os.environ["ENVREPRO_DEBUG"] = "1"   # the probe prints its traceback too


def capture(
    model: str = typer.Argument(..., help="The saved model: SavedModel folder, .h5 or .keras file."),
    python: Optional[str] = typer.Option(None, "--python", help="The training environment's interpreter (default: this one)."),
    module: List[str] = typer.Option([], "--module", help="Module defining custom objects, imported before loading (repeatable)."),
    code_path: List[str] = typer.Option([], "--code-path", help="Folder added to the probe's import path (repeatable)."),
    sample: Optional[str] = typer.Option(None, "--sample", help="Input for the reference prediction, checked against the model's inputs: .npy, .npz (several inputs: arr_0... or by input name) or .json (a list, or an object of input name -> nested lists; strings allowed)."),
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
    emit(result, as_json)


def inspect(
    model: str = typer.Argument(..., help="The model (or its .envrepro folder)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a capture as a readable summary (or JSON); without a capture, what the files say."""
    from envrepro import commands

    emit(commands.inspect(model), as_json)


def doctor(
    model: str = typer.Argument(..., help="The model (captured or not)."),
    python: Optional[str] = typer.Option(None, "--python", help="Check this interpreter's environment instead of this one."),
    try_load: bool = typer.Option(False, "--try", help="Really call load_model there, on this host (in a subprocess), with the capture's verified snapshot code, and classify the failure. Refuses an unverified capture."),
    code_path: List[str] = typer.Option([], "--code-path", help="Folder holding your custom modules' current source, compared with the capture's snapshot by module name (repeatable; the current directory is always searched)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show every package difference and full diffs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Explain why load_model fails (or would silently differ) here. Exit 0 compatible, 1 risky, 2 will fail."""
    from envrepro import commands

    emit(commands.doctor(model, python=python, try_load=try_load, code_paths=code_path), as_json,
         verbose=verbose)


def load(
    model: str = MODEL,
    base_image: Optional[str] = BASE_IMAGE,
    registry: Optional[str] = REGISTRY,
    gpus: Optional[str] = GPUS,
    unsafe: bool = UNSAFE,
    memory: str = MEMORY,
    allow_model_change: bool = ALLOW_CHANGE,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    into: Optional[str] = typer.Option(None, "--into", help="MODEL is a bundle (FILE.tar): extract it into this folder (default FILE.bundle/ beside it)."),
    verbose: bool = VERBOSE,
    allow_direct_references: bool = DIRECT_REFS,
) -> None:
    """Build or find the captured environment's image, load the model inside it and verify it.
    MODEL may be a bundle (FILE.tar from `envrepro bundle`): verified, extracted, loaded offline."""
    from envrepro import commands

    apply_direct_references(allow_direct_references)

    emit(commands.load(model, base_image=base_image, registry=registry, gpus=gpus, unsafe=unsafe,
                       memory=memory, quiet=as_json, debug=DEBUG["on"],
                       allow_model_change=allow_model_change, into=into, verbose=verbose), as_json)


def migrate(
    model: str = MODEL,
    out: Optional[str] = typer.Option(None, "-o", "--out", help="Folder for the artifacts and migration.json (default MODEL.migrated/)."),
    python: Optional[str] = typer.Option(None, "--python", help="Target: this interpreter's TensorFlow/Keras/numpy (default: the one envrepro runs under)."),
    to: Optional[str] = typer.Option(None, "--to", help="Target: this TensorFlow release (e.g. 2.21), built as an image."),
    code_path: Optional[str] = typer.Option(None, "--code-path", help="Your ported custom modules, instead of the capture's snapshot."),
    unsafe: bool = UNSAFE,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    verbose: bool = VERBOSE,
    allow_direct_references: bool = DIRECT_REFS,
) -> None:
    """Rewrite the model for today's TensorFlow/Keras (.keras, inference SavedModel, ONNX), each
    artifact verified in the target environment against the capture's reference."""
    from envrepro import commands

    apply_direct_references(allow_direct_references)
    emit(commands.migrate(model, out=out, python=python, to=to, code_path=code_path, unsafe=unsafe,
                          quiet=as_json, verbose=verbose), as_json)


def run(
    ctx: typer.Context,
    model: str = MODEL,
    base_image: Optional[str] = BASE_IMAGE,
    registry: Optional[str] = REGISTRY,
    gpus: Optional[str] = GPUS,
    unsafe: bool = UNSAFE,
    memory: str = MEMORY,
    allow_model_change: bool = ALLOW_CHANGE,
    verbose: bool = VERBOSE_LONG,
    allow_direct_references: bool = DIRECT_REFS,
) -> None:
    """Run a command in the reproduced environment: envrepro run MODEL -- python predict.py"""
    from envrepro import commands

    apply_direct_references(allow_direct_references)

    emit(commands.run(model, list(ctx.args), base_image=base_image, memory=memory, unsafe=unsafe,
                      gpus=gpus, registry=registry, allow_model_change=allow_model_change, verbose=verbose))


def shell(
    model: str = MODEL,
    base_image: Optional[str] = BASE_IMAGE,
    registry: Optional[str] = REGISTRY,
    gpus: Optional[str] = GPUS,
    unsafe: bool = UNSAFE,
    memory: str = MEMORY,
    allow_model_change: bool = ALLOW_CHANGE,
    verbose: bool = VERBOSE,
    allow_direct_references: bool = DIRECT_REFS,
) -> None:
    """Open a shell in the reproduced environment (model at /envrepro/model/NAME)."""
    from envrepro import commands

    apply_direct_references(allow_direct_references)

    emit(commands.shell(model, base_image=base_image, memory=memory, unsafe=unsafe, gpus=gpus,
                        registry=registry, allow_model_change=allow_model_change, verbose=verbose))


# Every command, in the order `envrepro --help` lists them (the `images` group comes last).
app.command()(capture)
app.command()(inspect)
app.command()(doctor)
app.command()(load)
app.command()(migrate)
app.command()(clisharing.bundle)
# `run` passes the rest of its line (after MODEL and its own options) to the user's command.
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(run)
app.command()(shell)
app.command()(cliserving.dockerfile)
app.command()(cliserving.build)
app.command()(cliserving.serve)
app.command()(cliserving.k8s)
app.command()(clisharing.push)
app.command()(clisharing.sign)
app.command()(clisharing.verify)


@images_app.callback()
def images_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """List envrepro's environment images with their size and the captures they serve.

    And the serving containers `envrepro serve` started: alive, or orphaned (that serve is gone)."""
    if ctx.invoked_subcommand is not None:
        return
    from envrepro import commands

    emit(commands.images_list(), as_json)


@images_app.command("prune")
def images_prune(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
    cache: bool = typer.Option(False, "--cache", help="Also remove the build cache: TensorFlow-closure images no environment uses, and Dockerfile builder stages."),
) -> None:
    """Remove envrepro images no known capture uses any more, and orphaned serving containers.

    Orphaned: started by an `envrepro serve` that is gone (they go first)."""
    from envrepro import commands

    emit(commands.images_prune(dry_run=dry_run, cache=cache))


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


def _missing_module(e: BaseException) -> Optional[errors.BrokenInstall]:
    """An envrepro module that can't be imported means a broken install (a deleted file, a wheel
    that misses a package): say which, and the fix."""
    name = getattr(e, "name", None) or ""
    if isinstance(e, ModuleNotFoundError) and (name == "envrepro" or name.startswith("envrepro.")):
        return errors.BrokenInstall.missing(f"module {name}")
    return None


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
        broken = None if debug else _missing_module(e)
        if broken is not None:
            typer.echo(f"envrepro: error: {broken}", err=True)
            code = broken.exit_code
        else:
            if debug:
                import traceback

                traceback.print_exc()
            typer.echo(f"envrepro: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", err=True)
            code = errors.EXIT_INTERNAL
    sys.exit(code)


if __name__ == "__main__":
    main()
