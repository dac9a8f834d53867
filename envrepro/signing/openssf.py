"""The one module that imports OpenSSF model signing (PyPI ``model-signing``, 1.x API).

It is an optional extra, ``pip install 'envrepro[signing]'``: model-signing needs sigstore 4,
which needs Python 3.10 or newer, and envrepro runs on 3.8. Without it every signing path fails
closed: ``sign``, ``verify`` and ``require_signature`` refuse with one line saying how to install
it, and nothing runs.

Signing is key-based and offline: a private EC key (PEM; P-256, P-384 or P-521) signs, its
public key verifies; no transparency log, no network. model-signing hashes the files a
``Scope`` names (``ScopeHashing``), sha256 per file, with nothing ignored: ``Config.hash`` is
given the folder holding the model and its capture and hashes exactly the scope's files, and
the ignore paths a signature may claim are not honoured, so a file it left out counts as added.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from envrepro.signing.scope import Scope, SignatureError

INSTALL = "pip install 'envrepro[signing]' (needs Python 3.10 or newer)"

# What one key says about a signature (``verify_with``)
VERIFIED = "verified"           # signed by this key, every file as signed
OTHER_KEY = "other key"         # signed by another key (its public key hint differs)
DIFFERS = "differs"             # signed by this key, but the files are not the ones signed
FORGED = "forged"               # this key's hint, but the signature does not verify (altered)


def library() -> Any:
    """``model_signing``, or SignatureError (fail closed) telling how to install it."""
    if sys.version_info < (3, 10):
        raise SignatureError(f"signed captures need Python 3.10 or newer (OpenSSF model signing); this is "
                             f"{sys.version_info[0]}.{sys.version_info[1]}", None,
                             "run envrepro from a Python 3.10+ install with the signing extra")
    try:
        import model_signing.hashing
        import model_signing.signing
        import model_signing.verifying
    except ImportError as e:   # not installed, or a dependency of it missing
        raise SignatureError(f"signed captures need OpenSSF model signing, which is not installed here "
                             f"({getattr(e, 'name', None) or e})", None, INSTALL) from None
    return model_signing


def scope_hashing(ms: Any, scope: Scope) -> Any:
    """A ``model_signing.hashing.Config`` that hashes exactly ``scope.files`` (sha256 per file)."""
    class ScopeHashing(ms.hashing.Config):      # type: ignore[name-defined, misc]
        def hash(self, model_path: Any, *, files_to_hash: Any = None) -> Any:
            return super().hash(scope.root, files_to_hash=[p for _, p in scope.files])

        def add_ignored_paths(self, *, model_path: Any, paths: Any) -> None:
            """Every file is covered, whatever a signature says it ignored."""

    config = ScopeHashing().set_ignored_paths(paths=[], ignore_git_paths=False)
    return config.use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)


def sign(scope: Scope, private_key: Path, out: Path, password: Optional[str] = None) -> None:
    """Sign the scope's files with the EC private key PEM ``private_key``; the signature (a
    Sigstore bundle, JSON) is written to ``out``."""
    ms = library()
    try:
        config = ms.signing.Config().use_elliptic_key_signer(
            private_key=private_key, password=password.encode("utf-8") if password else None)
    except OSError as e:
        raise SignatureError(f"private key is unreadable ({e.strerror or e})", str(private_key),
                             "pass the PEM file of an EC private key") from None
    except TypeError:           # encrypted and no password, or a password for a plain key
        raise SignatureError("private key is encrypted (or a password was given for a plain one)",
                             str(private_key), "set ENVREPRO_SIGNING_KEY_PASSWORD to its password") from None
    except Exception as e:      # noqa: BLE001 - not PEM, wrong password, RSA, unsupported curve
        raise SignatureError(f"not a usable EC private key ({_why(e)})", str(private_key),
                             "pass an EC P-256/P-384/P-521 private key in PEM") from None
    config.set_hashing_config(scope_hashing(ms, scope)).sign(scope.root, out)


def verify_with(scope: Scope, public_key: Path) -> str:
    """VERIFIED, OTHER_KEY, DIFFERS or FORGED for the signature beside the scope's model and the
    EC public key PEM ``public_key``; SignatureError for an unusable key or signature."""
    ms = library()
    try:
        config = ms.verifying.Config().use_elliptic_key_verifier(public_key=public_key)
    except OSError as e:
        raise SignatureError(f"public key is unreadable ({e.strerror or e})", str(public_key),
                             "pass the PEM file of an EC public key") from None
    except Exception as e:      # noqa: BLE001 - not PEM, RSA, unsupported curve
        raise SignatureError(f"not a usable EC public key ({_why(e)})", str(public_key),
                             "pass an EC P-256/P-384/P-521 public key in PEM") from None
    from cryptography.exceptions import InvalidSignature

    try:
        config.set_hashing_config(scope_hashing(ms, scope)).verify(scope.root, scope.signature)
    except InvalidSignature:
        return FORGED
    except ValueError as e:
        text = str(e)
        if text.startswith("Key mismatch"):
            return OTHER_KEY
        if text.startswith("Signature mismatch"):
            return DIFFERS
        raise SignatureError(f"not a model signature ({_why(e)})", str(scope.signature),
                             "sign it again with `envrepro sign MODEL --key PRIVATE_KEY.pem`") from None
    except OSError as e:
        raise SignatureError(f"can't read a signed file ({e.strerror or e})",
                             getattr(e, "filename", None) or str(scope.model), "check its permissions") from None
    except Exception as e:      # noqa: BLE001 - a malformed bundle fails deep in the parsers
        raise SignatureError(f"not a model signature ({_why(e)})", str(scope.signature),
                             "sign it again with `envrepro sign MODEL --key PRIVATE_KEY.pem`") from None
    return VERIFIED


def _why(e: BaseException) -> str:
    first = str(e).splitlines()[0][:100] if str(e) else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
