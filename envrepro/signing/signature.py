"""``envrepro sign MODEL --key KEY`` and ``envrepro verify MODEL --key PUB``.

``sign`` signs the model and its capture together (``scope``) into ``MODEL.envrepro.sig``: the
signature is made in a temp folder and put in place atomically, under the capture lock (a
capture being written is not signed half-way); nothing of the model or capture is written.
``verify`` checks that signature with each public key given: one that verifies it, with every
file as signed, is the answer. Anything else is one line and exit 2: unsigned, signed by no
key given, or signed but differing (which files), or an unusable key or signature.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Sequence

from envrepro import fsutil
from envrepro.sidecar import recovery, seal
from envrepro.sidecar.layout import resolve_model
from envrepro.sidecar.manifest import Capture
from envrepro.signing import openssf, payload
from envrepro.signing.scope import SIGN_HINT, Scope, SignatureError, scope_of

PASSWORD_VARIABLE = "ENVREPRO_SIGNING_KEY_PASSWORD"     # an encrypted private key's password


@dataclass
class Signed:
    """``envrepro sign``'s result."""

    model: str
    signature: str
    files: int
    key_sha256: str

    def to_dict(self) -> Dict[str, Any]:
        return {"model": self.model, "signature": self.signature, "files": self.files,
                "key_sha256": self.key_sha256}

    def text(self) -> str:
        return (f"signed {self.model} and its capture ({self.files} files) -> {self.signature} "
                f"(key sha256 {self.key_sha256[:16]})")


@dataclass
class Verified:
    """``envrepro verify``'s result (and what the ``require_signature`` gate found)."""

    model: str
    signature: str
    files: int
    key: str                # the public key that verified it
    key_sha256: str

    def to_dict(self) -> Dict[str, Any]:
        return {"verified": True, "model": self.model, "signature": self.signature, "files": self.files,
                "key": self.key, "key_sha256": self.key_sha256}

    def text(self) -> str:
        return (f"verified: {self.model} and its capture ({self.files} files) are as signed by {self.key} "
                f"(key sha256 {self.key_sha256[:16]})")


def sign(capture: Capture, private_key: str) -> Signed:
    """Sign ``capture`` (read and verified by the caller) and its model with ``private_key``."""
    key = Path(os.path.abspath(private_key))
    if not key.is_file():
        raise SignatureError("no private key file at this path", str(key), "pass --key PRIVATE_KEY.pem")
    scope = scope_of(capture.model_path)
    if os.path.lexists(scope.signature) and (scope.signature.is_symlink() or not scope.signature.is_file()):
        raise SignatureError("is a link or a folder where the signature goes", str(scope.signature),
                             "remove it, then sign again")
    openssf.library()                     # fail closed before anything is hashed
    with fsutil.file_lock(recovery.lock_path(scope.capture), blocking=False) as held:
        if not held:
            raise SignatureError("a capture of this model is being written", str(scope.capture),
                                 "sign it when the capture finished")
        scope = scope_of(capture.model_path)   # under the lock: what is signed is what is there
        if not seal.sealed(scope.capture):
            raise SignatureError("capture changed since it was read (it no longer verifies)", str(scope.capture),
                                 "check it with `envrepro inspect MODEL`, then sign again")
        with tempfile.TemporaryDirectory(prefix="envrepro-sign-") as tmp:
            made = Path(tmp) / scope.signature.name
            openssf.sign(scope, key, made, os.environ.get(PASSWORD_VARIABLE) or None)
            data = made.read_bytes()
            hint = payload.signer_hint(made)
        fsutil.atomic_write_bytes(scope.signature, data)
    os.chmod(scope.signature, 0o644)      # mkstemp made it 0600: others verify it too
    return Signed(str(scope.model), str(scope.signature), len(scope.files), hint)


def verify(model: "os.PathLike[str] | str", keys: Sequence["os.PathLike[str] | str"]) -> Verified:
    """The signature beside ``model`` verified by one of ``keys`` (public key PEM files), every
    file of the model and its capture as signed; SignatureError (exit 2) otherwise."""
    scope = scope_of(resolve_model(model))
    if not keys:
        raise SignatureError("no public key to verify with", str(scope.model),
                             "pass --key PUBLIC_KEY.pem, or list the trusted ones under trusted_keys: in the config file")
    if not os.path.lexists(scope.signature):
        raise SignatureError(f"unsigned (no {scope.signature.name} beside it)", str(scope.model), SIGN_HINT)
    payload.read_raw(scope.signature)     # a regular file of a sane size, before the library reads it
    openssf.library()
    paths = [Path(os.path.abspath(k)) for k in keys]
    for key in paths:
        if not key.is_file():
            raise SignatureError("no public key file at this path", str(key),
                                 "fix the path (--key, or trusted_keys: in the config file)")
    for key in paths:
        outcome = openssf.verify_with(scope, key)
        if outcome == openssf.VERIFIED:
            return Verified(str(scope.model), str(scope.signature), len(scope.files), str(key),
                            payload.signer_hint(scope.signature))
        if outcome == openssf.DIFFERS:
            raise _differs(scope, key)
        if outcome == openssf.FORGED:
            raise SignatureError(f"signature does not verify with {key} although it names that key "
                                 "(altered after signing)", str(scope.signature), SIGN_HINT + " again")
    hint = payload.signer_hint(scope.signature)
    raise SignatureError(f"signed by a key that is not trusted here (signer key sha256 {hint[:16] or 'unknown'}; "
                         f"tried {len(paths)} key(s))", str(scope.signature),
                         "verify with the signer's public key, or have a trusted key sign it")


def _differs(scope: Scope, key: Path) -> SignatureError:
    try:
        diffs = payload.differences(payload.signed_files(scope.signature), payload.actual_files(scope))
    except SignatureError:
        diffs = []
    what = payload.summary(diffs) if diffs else "the files are not the ones signed"
    return SignatureError(f"differs from what {key.name} signed: {what}", str(scope.model),
                          "restore the signed files, or capture and sign again")
