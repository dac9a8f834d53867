"""What the modules of the ``envrepro`` command share: the typer options several commands take
(one definition, one help text), the ``--debug`` setting, ``--allow-direct-references`` and
``emit``, which hands a result to ``render`` and exits with its code.

``cli.py`` holds the app and registers every command; ``cliserving.py`` and ``clisharing.py``
hold the serving and the sharing commands.
"""
from __future__ import annotations

import os
from typing import Any, Dict

import typer

DEBUG: Dict[str, bool] = {"on": False}     # set by the app's --debug (or ENVREPRO_DEBUG=1)


def emit(result: Any, as_json: bool = False, verbose: bool = False) -> None:
    from envrepro import render

    raise typer.Exit(render.emit(result, as_json=as_json, verbose=verbose))


# Options that load, run, shell and dockerfile share: one definition, one help text.
MODEL = typer.Argument(..., help="The captured model.")
BASE_IMAGE = typer.Option(None, "--base-image", help="Base image (default python:X.Y-slim; env ENVREPRO_BASE_IMAGE).")
REGISTRY = typer.Option(None, "--registry", help="Registry to pull prebuilt environments from (env ENVREPRO_REGISTRY).")
GPUS = typer.Option(None, "--gpus", help="'all' passes the host's GPUs and builds with TensorFlow's GPU "
                    "build (CUDA as pip wheels from TF 2.14, else a CUDA/cuDNN base).")
UNSAFE = typer.Option(False, "--unsafe", help="Keras 3 safe_mode off (Lambda layers). Only for trusted models.")
MEMORY = typer.Option("4g", "--memory", help="Memory limit of the container.")
ALLOW_CHANGE = typer.Option(False, "--allow-model-change",
                            help="Load a model that changed since its capture (the report says so; never 'verified').")
VERBOSE = typer.Option(False, "--verbose", "-v",
                       help="Also show the build's full output (pip, docker); it always goes to the build log.")
# `run` passes the rest of its line to the user's command: no short -v there to take from it.
VERBOSE_LONG = typer.Option(False, "--verbose",
                            help="Also show the build's full output (pip, docker); it always goes to the build log.")
DIRECT_REFS = typer.Option(False, "--allow-direct-references",
                           help="Build the lock's direct references (name @ URL): only https wheels and sdists pinned "
                                "by sha256, downloaded by this host and built with no network (env "
                                "ENVREPRO_ALLOW_DIRECT_REFERENCES=1). Refused without it.")


def apply_direct_references(allow: bool) -> None:
    """--allow-direct-references: the setting every image build reads (packages/directrefs.py)."""
    if allow:
        from envrepro.packages import directrefs

        os.environ[directrefs.ENV] = "1"
