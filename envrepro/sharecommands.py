"""The commands that carry a captured model to other machines: ``sign`` and ``verify`` (signed
captures, ``signing/``), ``bundle`` (air-gapped bundles, ``bundling/``) and ``push`` (the
registry, ``image/push.py``). Like ``commands.py``, each returns a result object and prints
nothing; ``envrepro load FILE.tar`` is ``commands.load_bundle``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from envrepro.commandbase import (EngineFactory, engine_factory_or_default, progress_reporter, signed,
                                  wants_gpus)


# --------------------------------------------------------------------------------------------
# signed captures: envrepro sign MODEL --key KEY; envrepro verify MODEL --key PUB (signing/)
# --------------------------------------------------------------------------------------------

def sign(model: str, key: str) -> Any:
    """``envrepro sign``: the model and its capture (read and verified first, the model as
    captured) signed together into ``MODEL.envrepro.sig`` with the EC private key ``key``."""
    from envrepro.sandbox.container import prepare
    from envrepro.signing import signature

    return signature.sign(prepare(model), key)


def verify(model: str, keys: Sequence[str] = ()) -> Any:
    """``envrepro verify``: the signature beside the model checked with ``keys`` (public key
    PEM files; none given: config ``trusted_keys``). Raises SignatureError (exit 2) unless one
    of them signed it and every file of the model and its capture is as signed."""
    from envrepro import config
    from envrepro.signing import signature

    return signature.verify(model, list(keys) or config.trusted_keys())


# --------------------------------------------------------------------------------------------
# air-gapped bundles: envrepro bundle MODEL -o FILE.tar (loaded by commands.load_bundle)
# --------------------------------------------------------------------------------------------

def bundle(model: str, output: str, wheels: bool = False, base_image: Optional[str] = None,
           engine_factory: Optional[EngineFactory] = None, quiet: bool = False, verbose: bool = False) -> Any:
    """``envrepro bundle``: the model, its capture and its environment image (found or built
    first) or, with ``wheels``, its wheelhouse, in one tar written atomically."""
    from envrepro.bundling import write
    from envrepro.bundling.unpack import refuse_foreign
    from envrepro.sandbox.container import prepare

    cap = prepare(model)
    if signed(cap) is None:            # a stale signature is refused before any image is built
        from envrepro.signing.gate import carried_signature

        carried_signature(cap.model_path)
    write.check_output(output, cap)
    refuse_foreign(cap)
    with progress_reporter(quiet, verbose) as say:
        if wheels:
            return write.bundle(cap, output, wheels=True, say=say,
                                engine_factory=engine_factory_or_default(engine_factory))
        from envrepro.image import ensure

        engine = engine_factory_or_default(engine_factory)()
        info = ensure.ensure_image(cap, engine, base_image=base_image, on_progress=say)
        return write.bundle(cap, output, engine=engine, image_info=info, say=say)


# --------------------------------------------------------------------------------------------
# registry: push by content key (image/push.py, image/registry.py)
# --------------------------------------------------------------------------------------------

def push(model: str, registry: Optional[str] = None, base_image: Optional[str] = None,
         gpus: Optional[str] = None, allow_model_change: bool = False,
         engine_factory: Optional[EngineFactory] = None, quiet: bool = False, verbose: bool = False,
         allow_bundle_image: bool = False) -> Any:
    """``envrepro push MODEL --registry R``: the environment image (built if missing) and the
    model's self-checked serving images, pushed under their keys. The registry is checked before
    the capture, the capture before the engine. An image loaded from a bundle only with
    ``allow_bundle_image``."""
    from envrepro.image import push as pushing
    from envrepro.image import registry as registry_images
    from envrepro.sandbox.container import prepare

    reg = registry_images.resolve(registry)
    if reg is None:
        raise registry_images.RegistryError("no registry to push to", None,
                                            "pass --registry HOST[:PORT][/NAMESPACE] or set ENVREPRO_REGISTRY")
    cap = prepare(model, allow_model_change=allow_model_change)
    signed(cap)
    engine = engine_factory_or_default(engine_factory)()
    with progress_reporter(quiet, verbose) as say:
        return pushing.push(cap, engine, reg, base_image=base_image, gpus=wants_gpus(gpus), say=say,
                            allow_bundle_image=allow_bundle_image)
