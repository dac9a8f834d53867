"""Signed captures end to end with the installed ``envrepro`` (the wheel with its ``signing``
extra) and a real Docker engine: a tiny Keras 3 model captured at save time (the host's
environment, the local ``python:3.11-slim`` stand-in as base) is signed with an EC P-256 key and
verified; a changed byte of the model or of its capture, and another key, fail ``verify`` with one
line; with ``require_signature: true`` an unsigned copy is refused before the engine is used, and
the signed model's bundle loads offline, its signature placed beside the model and checked again.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support import OFFLINE, SAVE_TINY_HOOKED as SAVE, installed_cli as cli  # noqa: E402

pytestmark = pytest.mark.e2e



def key_pair(folder, name):
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def errors_of(out):
    return [line for line in out.stderr.splitlines() if line.startswith("envrepro")]


def flip(path, offset=-1):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def signed(engine, standin_311, tmp_path_factory, tf):
    """The tiny model, captured by the save hook and signed: (model, keys folder)."""
    train = tmp_path_factory.mktemp("train")
    proc = subprocess.run([sys.executable, "-c", SAVE, str(train)], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    keys = tmp_path_factory.mktemp("keys")
    key_pair(keys, "team")
    key_pair(keys, "stranger")
    model = train / "tiny.keras"
    out = cli("sign", model, "--key", keys / "team.pem", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    signed = json.loads(out.stdout)
    assert signed["signature"] == str(train / "tiny.keras.envrepro.sig") and signed["files"] >= 4
    return model, keys


def require(tmp_path, *trusted):
    """A config folder with ``require_signature: true`` trusting ``trusted``; its env."""
    folder = tmp_path / "config" / "envrepro"
    folder.mkdir(parents=True)
    lines = "".join(f"  - {k}\n" for k in trusted)
    (folder / "config.yaml").write_text(f"require_signature: true\ntrusted_keys:\n{lines}")
    return {"XDG_CONFIG_HOME": str(tmp_path / "config")}


def test_verify_then_tamper_then_another_key(signed, tmp_path):
    model, keys = signed
    out = cli("verify", model, "--key", keys / "team.pub", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["verified"] is True
    # a copy, tampered: one byte of the model, then one byte of the capture's lock
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("tiny.keras", "tiny.keras.envrepro", "tiny.keras.envrepro.sig"):
        (shutil.copytree if (model.parent / name).is_dir() else shutil.copy2)(model.parent / name, copy / name)
    assert cli("verify", copy / "tiny.keras", "--key", keys / "team.pub").returncode == 0
    flip(copy / "tiny.keras")
    out = cli("verify", copy / "tiny.keras", "--key", keys / "team.pub")
    assert out.returncode == 2 and errors_of(out) == [
        f"envrepro: error: {copy / 'tiny.keras'}: differs from what team.pub signed: changed tiny.keras "
        "(restore the signed files, or capture and sign again)"], out.stderr
    flip(copy / "tiny.keras")
    flip(copy / "tiny.keras.envrepro" / "requirements.lock", offset=0)
    out = cli("verify", copy / "tiny.keras", "--key", keys / "team.pub")
    assert out.returncode == 2 and "changed tiny.keras.envrepro/requirements.lock" in out.stderr, out.stderr
    out = cli("verify", model, "--key", keys / "stranger.pub")
    assert out.returncode == 2 and len(errors_of(out)) == 1 and "signed by a key that is not trusted" in out.stderr


def test_require_signature_refuses_an_unsigned_load_before_the_engine(signed, tmp_path, record_property):
    model, keys = signed
    unsigned = tmp_path / "unsigned"
    unsigned.mkdir()
    shutil.copy2(model, unsigned / model.name)
    shutil.copytree(model.parent / "tiny.keras.envrepro", unsigned / "tiny.keras.envrepro")
    env = require(tmp_path, keys / "team.pub")
    env["DOCKER_HOST"] = "unix:///nonexistent.sock"      # reaching the engine would be exit 3
    t = time.perf_counter()
    out = cli("load", unsigned / model.name, env=env)
    seconds = time.perf_counter() - t
    assert out.returncode == 2, out.stderr[-2000:]
    [line] = errors_of(out)
    assert line.startswith(f"envrepro: error: {unsigned / model.name}: unsigned (no tiny.keras.envrepro.sig "
                           "beside it); refused, require_signature is set in "), line
    record_property("figure", f"signing: unsigned load refused in {seconds:.1f} s (installed CLI, no engine)")


def test_a_signed_bundle_loads_offline_with_require_signature(engine, signed, tmp_path, record_property):
    model, keys = signed
    env = require(tmp_path, keys / "team.pub")
    bundle = tmp_path / "ship" / "tiny.tar"
    bundle.parent.mkdir()
    out = cli("bundle", model, "-o", bundle, "--json", env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    with tarfile.open(bundle) as tar:
        sig = tar.getmember("model/tiny.keras.envrepro.sig")
    assert sig.isreg() and sig.size == (model.parent / "tiny.keras.envrepro.sig").stat().st_size
    # trusted: only another key -> refused before any image is loaded (one line, exit 2)
    other = require(tmp_path / "other", keys / "stranger.pub")
    out = cli("load", bundle, "--into", tmp_path / "refused", env={**OFFLINE, **other})
    assert out.returncode == 2 and len(errors_of(out)) == 1, out.stderr[-2000:]
    assert f"{bundle}: signed by a key that is not trusted here" in out.stderr
    assert not (tmp_path / "refused").exists()
    t = time.perf_counter()
    out = cli("load", bundle, "--json", env={**OFFLINE, **env})
    seconds = time.perf_counter() - t
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["verdict"] == "verified" and report["image"]["bundle"] == str(bundle)
    placed = bundle.with_name("tiny.bundle")
    assert (placed / "tiny.keras.envrepro.sig").read_bytes() == (model.parent / "tiny.keras.envrepro.sig").read_bytes()
    out = cli("verify", placed / "tiny.keras", env=env)      # the config's trusted key
    assert out.returncode == 0 and "verified:" in out.stdout, out.stderr
    record_property("figure", f"signing: signed bundle ({bundle.stat().st_size / 1e6:.0f} MB) loaded with "
                              f"require_signature in {seconds:.1f} s")
