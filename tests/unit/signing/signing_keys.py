"""Test helpers for signed captures: EC P-256 key pairs made with ``cryptography``, a config file
that requires signatures, a capture signed by a key, and the CLI helpers (run_cli, one_error) both signing test files use."""
from pathlib import Path
from typing import Optional, Sequence

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from envrepro import cli, config


def key_pair(folder: Path, name: str = "team", password: Optional[bytes] = None):
    """(private key PEM path, public key PEM path) of a new EC P-256 key."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    enc = (serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption())
    private = folder / f"{name}.pem"
    public = folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def write_config(trusted: Sequence[Path] = (), require: object = True, **extra) -> Path:
    """The user's config.yaml (XDG_CONFIG_HOME points into tmp_path in unit tests)."""
    path = config.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(extra)
    if trusted is not None:
        data["trusted_keys"] = [str(k) for k in trusted]
    if require is not None:
        data["require_signature"] = require
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def one_error(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("envrepro: error: ") and "Traceback" not in err, err
    return lines[0]
