"""The sharing commands of ``envrepro``: ``bundle``, ``push``, ``sign`` and ``verify``, typer
options wired to ``sharecommands``. ``cli.py`` registers them on the app, in the order
``envrepro --help`` lists them (``envrepro load FILE.tar`` is ``load``'s).
"""
from __future__ import annotations

from typing import List, Optional

import typer

from envrepro.clioptions import (ALLOW_CHANGE, BASE_IMAGE, DIRECT_REFS, GPUS, MODEL, VERBOSE,
                                 apply_direct_references, emit)


def bundle(
    model: str = MODEL,
    output: str = typer.Option(..., "-o", "--output", help="The bundle to write (NAME.tar)."),
    wheels: bool = typer.Option(False, "--wheels", help="Hold the wheelhouse the image builds from instead of the image."),
    base_image: Optional[str] = BASE_IMAGE,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    verbose: bool = VERBOSE,
    allow_direct_references: bool = DIRECT_REFS,
) -> None:
    """Write one tar (model, capture, environment image) that `envrepro load FILE.tar` loads offline."""
    from envrepro import sharecommands

    apply_direct_references(allow_direct_references)

    emit(sharecommands.bundle(model, output, wheels=wheels, base_image=base_image, quiet=as_json, verbose=verbose),
         as_json)


def push(
    model: str = MODEL,
    registry: Optional[str] = typer.Option(None, "--registry", help="HOST[:PORT]\\[/NAMESPACE] to push to (env ENVREPRO_REGISTRY, config registry); credentials come from `docker login`."),
    base_image: Optional[str] = BASE_IMAGE,
    gpus: Optional[str] = GPUS,
    allow_model_change: bool = ALLOW_CHANGE,
    as_json: bool = typer.Option(False, "--json", help="Print what was pushed as JSON."),
    verbose: bool = VERBOSE,
    allow_direct_references: bool = DIRECT_REFS,
    allow_bundle_image: bool = typer.Option(False, "--allow-bundle-image", help="Push an environment image loaded from a bundle (envrepro load FILE.tar) too: only if you trust that bundle."),
) -> None:
    """Push the environment image (built if missing) and the model's self-checked serving images to
    a registry under their content keys, for `envrepro load --registry` elsewhere."""
    from envrepro import sharecommands

    apply_direct_references(allow_direct_references)

    emit(sharecommands.push(model, registry=registry, base_image=base_image, gpus=gpus,
                            allow_model_change=allow_model_change, quiet=as_json, verbose=verbose,
                            allow_bundle_image=allow_bundle_image), as_json)


def sign(
    model: str = MODEL,
    key: str = typer.Option(..., "--key", help="EC private key (PEM) to sign with; an encrypted one's password in ENVREPRO_SIGNING_KEY_PASSWORD."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Sign the model and its capture together (OpenSSF model signing, offline) into MODEL.envrepro.sig."""
    from envrepro import sharecommands

    emit(sharecommands.sign(model, key), as_json)


def verify(
    model: str = MODEL,
    key: List[str] = typer.Option([], "--key", help="Public key (PEM) to verify with (repeatable; default: trusted_keys in the config file)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check MODEL.envrepro.sig: exit 0 when a key given signed the model and its capture as they
    are; exit 2 with one line when unsigned, signed by another key, or what differs."""
    from envrepro import sharecommands

    emit(sharecommands.verify(model, key), as_json)
