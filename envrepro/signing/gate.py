"""The gate: with ``require_signature: true`` in the config file, a capture runs or ships only
when a key of ``trusted_keys:`` signed it and every file is as signed.

``enforce`` is called by every command that runs a capture's code or ships it (``load``,
``run``, ``shell``, ``build --serve``, ``serve``, ``push``, ``bundle``, ``dockerfile --serve``,
``doctor --try``) after the capture is read and before the engine is reached or anything
runs; ``staged_signature`` by ``envrepro load FILE.tar`` on the bundle's staged model and
capture, before any image is loaded (the normal load then checks the extracted files again).
Everything fails closed: no trusted key, an unreadable key or config, or no OpenSSF model
signing installed refuses, one line, exit 2. Without ``require_signature`` nothing is checked
here, except that a signature a bundle carries must match its model and capture.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

from envrepro import config
from envrepro.signing import payload, signature
from envrepro.signing.scope import SignatureError, scope_of, signature_for


def enforce(model: "os.PathLike[str] | str") -> Optional[signature.Verified]:
    """None when signatures are not required; else the Verified answer, or SignatureError."""
    if not config.require_signature():
        return None
    keys = config.trusted_keys()
    where = str(config.config_path())
    if not keys:
        raise SignatureError("require_signature is set but trusted_keys: lists no public key", where,
                             "add the PEM paths of the public keys you trust under trusted_keys:")
    try:
        return signature.verify(model, keys)
    except SignatureError as e:
        raise SignatureError(f"{e.what}; refused, require_signature is set in {where}", e.path, e.fix) from None


def carried_signature(model: "os.PathLike[str] | str") -> Optional[Path]:
    """The signature ``envrepro bundle`` carries beside the model (None: unsigned). One that no
    longer matches the model and its capture (a capture made again since) is refused, not
    shipped: it would fail wherever it is checked."""
    scope = scope_of(model)
    if not os.path.lexists(scope.signature):
        return None
    diffs = payload.stale(scope)
    if diffs:
        raise SignatureError(f"signature does not match the model and its capture any more: {payload.summary(diffs)}",
                             str(scope.signature), "sign again with `envrepro sign MODEL --key PRIVATE_KEY.pem`, "
                             "or remove the signature")
    return scope.signature


def staged_signature(staged_model: Path, dest: Path, bundle: str) -> List[Tuple[Path, Path]]:
    """For a bundle being opened: its staged model and capture checked against the signature it
    carries (with ``require_signature``: verified by a trusted key, unsigned refused; without:
    the signature must match them), before any image is loaded. Returns (staged, target) for the
    signature to be put beside the model in ``dest``, or [] when the bundle carries none."""
    sig = signature_for(staged_model)
    try:
        if config.require_signature():
            enforce(staged_model)
        elif os.path.lexists(sig):
            carried_signature(staged_model)
    except SignatureError as e:
        raise SignatureError(f"{e.what} (the bundle's model and capture)", bundle,
                             "ask for a bundle signed by a trusted key") from None
    return [(sig, dest / sig.name)] if os.path.lexists(sig) else []
