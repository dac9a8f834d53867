"""What a signature file lists, read without a key: the files it names and their sha256.

A signature is a Sigstore bundle (JSON) whose DSSE envelope carries an in-toto statement; its
predicate lists every signed file as ``{"name", "algorithm", "digest"}``. Reading it here proves
nothing (only ``openssf`` checks the signature with a key): it names what differs once a key
verified the signature, and tells a signature that does not match its model and capture (stale:
signed before a capture was made again) without a key, for ``bundle``. Untrusted input: size
bounded, every field type-checked, one line when it is not a model signature.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Dict, List

from envrepro.fsutil import sha256_file
from envrepro.signing.scope import SIGN_HINT, Scope, SignatureError

MAX_SIGNATURE = 64 << 20        # a signature listing every file of a very large SavedModel fits
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _bad(path: Path, why: str) -> SignatureError:
    return SignatureError(f"not a model signature ({why})", str(path), SIGN_HINT + " again")


def read_raw(path: Path) -> bytes:
    """The signature file's bytes: a regular file (never a link), at most MAX_SIGNATURE."""
    try:
        if path.is_symlink() or not path.is_file():
            raise _bad(path, "a link or not a regular file")
        if path.stat().st_size > MAX_SIGNATURE:
            raise _bad(path, f"larger than {MAX_SIGNATURE >> 20} MiB")
        return path.read_bytes()
    except OSError as e:
        raise SignatureError(f"signature is unreadable ({e.strerror or e})", str(path),
                             "check its permissions") from None


def signed_files(path: Path) -> Dict[str, str]:
    """{name: sha256} of every file the signature at ``path`` lists (not yet verified)."""
    try:
        bundle = json.loads(read_raw(path).decode("utf-8"))
        envelope = bundle["dsseEnvelope"]
        statement = json.loads(base64.b64decode(envelope["payload"], validate=True).decode("utf-8"))
        resources = statement["predicate"]["resources"]
    except (UnicodeDecodeError, ValueError, binascii.Error, RecursionError):
        raise _bad(path, "not JSON with a DSSE payload") from None
    except (KeyError, TypeError):
        raise _bad(path, "no dsseEnvelope payload listing resources") from None
    if not isinstance(resources, list):
        raise _bad(path, "its resources are not a list")
    out: Dict[str, str] = {}
    for r in resources:
        if not (isinstance(r, dict) and isinstance(r.get("name"), str) and r.get("algorithm") == "sha256"
                and _HEX64.match(str(r.get("digest", "")))):
            raise _bad(path, "a resource without a name and a sha256 digest")
        out[r["name"]] = r["digest"]
    return out


def signer_hint(path: Path) -> str:
    """The sha256 of the signer's public key (PEM) the signature names, or "" (not verified)."""
    try:
        hint = json.loads(read_raw(path).decode("utf-8"))["verificationMaterial"]["publicKey"]["hint"]
    except (UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError):
        return ""
    return hint if isinstance(hint, str) and _HEX64.match(hint) else ""


def actual_files(scope: Scope) -> Dict[str, str]:
    """{name: sha256} of the files the scope covers, as they are now."""
    try:
        return {name: sha256_file(p) for name, p in scope.files}
    except OSError as e:
        raise SignatureError(f"can't read a file of the model or its capture ({e.strerror or e})",
                             getattr(e, "filename", None) or str(scope.model), "check its permissions") from None


def differences(signed: Dict[str, str], actual: Dict[str, str]) -> List[str]:
    """What differs, file by file: ``changed NAME``, ``added NAME``, ``missing NAME``, sorted."""
    out = [f"changed {n}" for n in sorted(set(signed) & set(actual)) if signed[n] != actual[n]]
    out += [f"added {n}" for n in sorted(set(actual) - set(signed))]
    out += [f"missing {n}" for n in sorted(set(signed) - set(actual))]
    return out


def summary(diffs: List[str], shown: int = 3) -> str:
    """``changed a, added b; 4 more`` (one line)."""
    more = f"; {len(diffs) - shown} more" if len(diffs) > shown else ""
    return ", ".join(d[:160] for d in diffs[:shown]) + more


def stale(scope: Scope) -> List[str]:
    """How the signature beside the model differs from its model and capture now, read without a
    key ([]: it lists exactly these files with these hashes)."""
    return differences(signed_files(scope.signature), actual_files(scope))
