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

from envrepro.version import __version__
from envrepro import errors

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Capture a Keras model's environment at save time; reproduce it in Docker to load it anywhere.")
images_app = typer.Typer(add_completion=False, help="List or prune envrepro's environment images.",
                         invoke_without_command=True)
app.add_typer(images_app, name="images")

_DEBUG = {"on": False}


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
    try_load: bool = typer.Option(False, "--try", help="Really call load_model there, on this host (in a subprocess), with the capture's verified snapshot code, and classify the failure. Refuses an unverified capture."),
    code_path: List[str] = typer.Option([], "--code-path", help="Folder holding your custom modules' current source, compared with the capture's snapshot by module name (repeatable; the current directory is always searched)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show every package difference and full diffs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Explain why load_model fails (or would silently differ) here. Exit 0 compatible, 1 risky, 2 will fail."""
    from envrepro import commands

    _emit(commands.doctor(model, python=python, try_load=try_load, code_paths=code_path), as_json,
          verbose=verbose)


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
_VERBOSE = typer.Option(False, "--verbose", "-v",
                        help="Also show the build's full output (pip, docker); it always goes to the build log.")
# `run` passes the rest of its line to the user's command: no short -v there to take from it.
_VERBOSE_LONG = typer.Option(False, "--verbose",
                             help="Also show the build's full output (pip, docker); it always goes to the build log.")
_DIRECT_REFS = typer.Option(False, "--allow-direct-references",
                            help="Build the lock's direct references (name @ URL): only https wheels and sdists pinned "
                                 "by sha256, downloaded by this host and built with no network (env "
                                 "ENVREPRO_ALLOW_DIRECT_REFERENCES=1). Refused without it.")


def _allow_direct_references(allow: bool) -> None:
    """--allow-direct-references: the setting every image build reads (packages/directrefs.py)."""
    if allow:
        from envrepro.packages import directrefs

        os.environ[directrefs.ENV] = "1"


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
    into: Optional[str] = typer.Option(None, "--into", help="MODEL is a bundle (FILE.tar): extract it into this folder (default FILE.bundle/ beside it)."),
    verbose: bool = _VERBOSE,
    allow_direct_references: bool = _DIRECT_REFS,
) -> None:
    """Build or find the captured environment's image, load the model inside it and verify it.
    MODEL may be a bundle (FILE.tar from `envrepro bundle`): verified, extracted, loaded offline."""
    from envrepro import commands

    _allow_direct_references(allow_direct_references)

    _emit(commands.load(model, base_image=base_image, registry=registry, gpus=gpus, unsafe=unsafe,
                        memory=memory, quiet=as_json, debug=_DEBUG["on"],
                        allow_model_change=allow_model_change, into=into, verbose=verbose), as_json)


@app.command()
def migrate(
    model: str = _MODEL,
    out: Optional[str] = typer.Option(None, "-o", "--out", help="Folder for the artifacts and migration.json (default MODEL.migrated/)."),
    python: Optional[str] = typer.Option(None, "--python", help="Target: this interpreter's TensorFlow/Keras/numpy (default: the one envrepro runs under)."),
    to: Optional[str] = typer.Option(None, "--to", help="Target: this TensorFlow release (e.g. 2.21), built as an image."),
    code_path: Optional[str] = typer.Option(None, "--code-path", help="Your ported custom modules, instead of the capture's snapshot."),
    unsafe: bool = _UNSAFE,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    verbose: bool = _VERBOSE,
    allow_direct_references: bool = _DIRECT_REFS,
) -> None:
    """Rewrite the model for today's TensorFlow/Keras (.keras, inference SavedModel, ONNX), each
    artifact verified in the target environment against the capture's reference."""
    from envrepro import commands

    _allow_direct_references(allow_direct_references)
    _emit(commands.migrate(model, out=out, python=python, to=to, code_path=code_path, unsafe=unsafe,
                           quiet=as_json, verbose=verbose), as_json)


@app.command()
def bundle(
    model: str = _MODEL,
    output: str = typer.Option(..., "-o", "--output", help="The bundle to write (NAME.tar)."),
    wheels: bool = typer.Option(False, "--wheels", help="Hold the wheelhouse the image builds from instead of the image."),
    base_image: Optional[str] = _BASE_IMAGE,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    verbose: bool = _VERBOSE,
    allow_direct_references: bool = _DIRECT_REFS,
) -> None:
    """Write one tar (model, capture, environment image) that `envrepro load FILE.tar` loads offline."""
    from envrepro import commands

    _allow_direct_references(allow_direct_references)

    _emit(commands.bundle(model, output, wheels=wheels, base_image=base_image, quiet=as_json, verbose=verbose),
          as_json)


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
    verbose: bool = _VERBOSE_LONG,
    allow_direct_references: bool = _DIRECT_REFS,
) -> None:
    """Run a command in the reproduced environment: envrepro run MODEL -- python predict.py"""
    from envrepro import commands

    _allow_direct_references(allow_direct_references)

    _emit(commands.run(model, list(ctx.args), base_image=base_image, memory=memory, unsafe=unsafe,
                       gpus=gpus, registry=registry, allow_model_change=allow_model_change, verbose=verbose))


@app.command()
def shell(
    model: str = _MODEL,
    base_image: Optional[str] = _BASE_IMAGE,
    registry: Optional[str] = _REGISTRY,
    gpus: Optional[str] = _GPUS,
    unsafe: bool = _UNSAFE,
    memory: str = _MEMORY,
    allow_model_change: bool = _ALLOW_CHANGE,
    verbose: bool = _VERBOSE,
    allow_direct_references: bool = _DIRECT_REFS,
) -> None:
    """Open a shell in the reproduced environment (model at /envrepro/model/NAME)."""
    from envrepro import commands

    _allow_direct_references(allow_direct_references)

    _emit(commands.shell(model, base_image=base_image, memory=memory, unsafe=unsafe, gpus=gpus,
                         registry=registry, allow_model_change=allow_model_change, verbose=verbose))


_NAME = typer.Option(None, "--name", help="Model name in the URLs (default: the model's file or folder name).")


@app.command()
def dockerfile(
    model: str = _MODEL,
    base_image: Optional[str] = _BASE_IMAGE,
    gpus: bool = typer.Option(False, "--gpus", help="The GPU image's Dockerfile: TensorFlow's GPU build "
                              "(CUDA as pip wheels from TF 2.14, else a CUDA/cuDNN base)."),
    serve: bool = typer.Option(False, "--serve", help="The serving image: the environment + server + model."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="With --serve: write the whole build context to this new folder."),
    name: Optional[str] = _NAME,
    allow_model_change: bool = _ALLOW_CHANGE,
) -> None:
    """Print the Dockerfile of the captured environment (no engine needed); --serve -o DIR writes a
    serving image's build context that plain `docker build DIR` builds."""
    from envrepro import commands

    _emit(commands.dockerfile(model, base_image=base_image, gpus=gpus, serve=serve, output=output, name=name,
                              allow_model_change=allow_model_change))


@app.command()
def build(
    model: str = _MODEL,
    serve: bool = typer.Option(False, "--serve", help="Build the serving image (required)."),
    tag: Optional[str] = typer.Option(None, "-t", "--tag", help="Tag for the verified image (default envrepro-serve:KEY)."),
    name: Optional[str] = _NAME,
    base_image: Optional[str] = _BASE_IMAGE,
    gpus: Optional[str] = _GPUS,
    unsafe: bool = _UNSAFE,
    memory: str = _MEMORY,
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Self-check the image over HTTP before tagging it."),
    allow_model_change: bool = _ALLOW_CHANGE,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    verbose: bool = _VERBOSE,
    allow_direct_references: bool = _DIRECT_REFS,
) -> None:
    """Build the serving image of a captured model, start it once, check that both protocols
    answer the capture's reference prediction, and only then tag it."""
    from envrepro import commands

    _allow_direct_references(allow_direct_references)

    _emit(commands.build(model, serve=serve, tag=tag, name=name, base_image=base_image, gpus=gpus,
                         unsafe=unsafe, memory=memory, verify=verify, allow_model_change=allow_model_change,
                         quiet=as_json, verbose=verbose), as_json)


@app.command()
def serve(
    model: str = _MODEL,
    port: int = typer.Option(8501, "--port", help="Host port to publish."),
    host: str = typer.Option("127.0.0.1", "--host", help="Host address to publish on (0.0.0.0: every interface)."),
    name: Optional[str] = _NAME,
    base_image: Optional[str] = _BASE_IMAGE,
    gpus: Optional[str] = _GPUS,
    unsafe: bool = _UNSAFE,
    memory: str = _MEMORY,
    allow_model_change: bool = _ALLOW_CHANGE,
    verbose: bool = _VERBOSE,
    allow_direct_references: bool = _DIRECT_REFS,
) -> None:
    """Serve the model from its reproduced environment (builds the image if needed); Ctrl-C stops."""
    from envrepro import commands

    _allow_direct_references(allow_direct_references)

    _emit(commands.serve(model, port=port, host=host, name=name, base_image=base_image, gpus=gpus,
                         unsafe=unsafe, memory=memory, allow_model_change=allow_model_change, verbose=verbose))


@app.command()
def k8s(
    model: str = _MODEL,
    image: str = typer.Option(..., "--image", help="The serving image (e.g. `envrepro build MODEL --serve -t TAG`); a digest pins it."),
    replicas: int = typer.Option(1, "--replicas", help="Pods to start with: the autoscaler's minimum."),
    max_replicas: Optional[int] = typer.Option(None, "--max-replicas", help="The autoscaler's maximum (default 4 x --replicas)."),
    cpu_target: int = typer.Option(70, "--cpu-target", help="Average CPU use, in percent of the request, the autoscaler aims at."),
    cpu: Optional[str] = typer.Option(None, "--cpu", metavar="REQUEST[:LIMIT]", help="CPU per pod (default 1:2; one value is both)."),
    memory: Optional[str] = typer.Option(None, "--memory", metavar="REQUEST[:LIMIT]", help="Memory per pod: 2Gi, 512Mi, or Docker's 4g (default 2Gi:4Gi, the limit `load --memory` uses)."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the Kubernetes resources (default: from the model's file name; the URLs' model name is the image's)."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Namespace written into the manifests (default: none, kubectl's)."),
    grace: Optional[int] = typer.Option(None, "--grace", metavar="SECONDS", help="Seconds the server drains on SIGTERM (ENVREPRO_SERVE_GRACE; default the server's)."),
    startup_seconds: int = typer.Option(300, "--startup-seconds", help="Time allowed for TensorFlow's import, the load and the warm-up before the pod is restarted."),
    prestop_seconds: int = typer.Option(5, "--prestop-seconds", help="Pause before SIGTERM while the pod leaves the Service's endpoints (0: no preStop hook; needs `sleep` in the image)."),
) -> None:
    """Print Kubernetes manifests (Deployment, Service, HorizontalPodAutoscaler, a deny-egress NetworkPolicy) serving the model's image."""
    from envrepro import commands

    _emit(commands.k8s(model, image, name=name, namespace=namespace, replicas=replicas,
                       max_replicas=max_replicas, cpu_target=cpu_target, cpu=cpu, memory=memory,
                       grace=grace, startup_seconds=startup_seconds, prestop_seconds=prestop_seconds))


@app.command()
def push(
    model: str = _MODEL,
    registry: Optional[str] = typer.Option(None, "--registry", help="HOST[:PORT]\\[/NAMESPACE] to push to (env ENVREPRO_REGISTRY, config registry); credentials come from `docker login`."),
    base_image: Optional[str] = _BASE_IMAGE,
    gpus: Optional[str] = _GPUS,
    allow_model_change: bool = _ALLOW_CHANGE,
    as_json: bool = typer.Option(False, "--json", help="Print what was pushed as JSON."),
    verbose: bool = _VERBOSE,
    allow_direct_references: bool = _DIRECT_REFS,
    allow_bundle_image: bool = typer.Option(False, "--allow-bundle-image", help="Push an environment image loaded from a bundle (envrepro load FILE.tar) too: only if you trust that bundle."),
) -> None:
    """Push the environment image (built if missing) and the model's self-checked serving images to
    a registry under their content keys, for `envrepro load --registry` elsewhere."""
    from envrepro import commands

    _allow_direct_references(allow_direct_references)

    _emit(commands.push(model, registry=registry, base_image=base_image, gpus=gpus,
                        allow_model_change=allow_model_change, quiet=as_json, verbose=verbose,
                        allow_bundle_image=allow_bundle_image), as_json)


@app.command()
def sign(
    model: str = _MODEL,
    key: str = typer.Option(..., "--key", help="EC private key (PEM) to sign with; an encrypted one's password in ENVREPRO_SIGNING_KEY_PASSWORD."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Sign the model and its capture together (OpenSSF model signing, offline) into MODEL.envrepro.sig."""
    from envrepro import commands

    _emit(commands.sign(model, key), as_json)


@app.command()
def verify(
    model: str = _MODEL,
    key: List[str] = typer.Option([], "--key", help="Public key (PEM) to verify with (repeatable; default: trusted_keys in the config file)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check MODEL.envrepro.sig: exit 0 when a key given signed the model and its capture as they
    are; exit 2 with one line when unsigned, signed by another key, or what differs."""
    from envrepro import commands

    _emit(commands.verify(model, key), as_json)


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
    cache: bool = typer.Option(False, "--cache", help="Also remove the build cache: TensorFlow-closure images no environment uses, and Dockerfile builder stages."),
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
