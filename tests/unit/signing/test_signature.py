"""``envrepro sign`` and ``envrepro verify`` (envrepro.signing) with real EC keys and real
OpenSSF model signing: a round trip, then every way a signed model and capture can stop being
what was signed, each one line and exit 2 naming what differs."""
import base64
import json
import os
import shutil
import sys

import pytest

from envrepro import commands, sharecommands
from envrepro.signing import openssf, payload, signature
from envrepro.signing.scope import SignatureError, scope_of, signature_for

from fakes import cache_home, make_capture  # noqa: F401 - cache_home: the autouse fixture
from signing_keys import key_pair, one_error, run_cli


@pytest.fixture
def keys(tmp_path):
    return key_pair(tmp_path / "keys", "team")


@pytest.fixture
def signed(tmp_path, keys):
    """A SavedModel capture signed with the team's key: (capture, private, public)."""
    cap = make_capture(tmp_path / "m")
    sharecommands.sign(str(cap.model_path), str(keys[0]))
    return cap, keys[0], keys[1]


def refused(capsys, model, *keys):
    code, out, err = run_cli(capsys, "verify", model, *[a for k in keys for a in ("--key", k)])
    assert code == 2 and out == "", (code, out, err)
    return one_error(err)


@pytest.mark.parametrize("fmt", ["savedmodel", "h5"])
def test_sign_then_verify_round_trip(tmp_path, keys, capsys, fmt):
    cap = make_capture(tmp_path / fmt, name="clf", fmt=fmt)
    before = {p: p.read_bytes() for p in cap.root.rglob("*") if p.is_file()}
    code, out, err = run_cli(capsys, "sign", cap.model_path, "--key", keys[0])
    assert code == 0, err
    sig = signature_for(cap.model_path)
    assert sig.name == "clf.envrepro.sig" and sig.parent == cap.model_path.parent
    assert f"-> {sig}" in out and oct(sig.stat().st_mode & 0o777) == "0o644"
    # the capture is untouched (its seal would refuse an extra file), the signature beside it
    assert {p: p.read_bytes() for p in cap.root.rglob("*") if p.is_file()} == before
    assert commands.inspect(str(cap.model_path)).capture is not None
    names = set(payload.signed_files(sig))
    assert names == {n for n, _ in scope_of(cap.model_path).files}
    assert ("clf/saved_model.pb" if fmt == "savedmodel" else "clf") in names
    assert "clf.envrepro/envrepro.yaml" in names and "clf.envrepro/snapshot/custom_layers.py" in names
    code, out, err = run_cli(capsys, "verify", cap.model_path, "--key", keys[1], "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["verified"] is True and result["key"] == str(keys[1]) and result["files"] == len(names)
    # the sidecar path works as well as the model's
    assert sharecommands.verify(str(cap.root), [str(keys[1])]).signature == str(sig)


def test_a_changed_model_byte_is_named(signed, capsys):
    cap, _, pub = signed
    pb = cap.model_path / "saved_model.pb"
    pb.write_bytes(b"pB")
    err = refused(capsys, cap.model_path, pub)
    assert f"{cap.model_path}: differs from what team.pub signed: changed my_model/saved_model.pb" in err


def test_a_changed_capture_file_is_named(signed, capsys):
    cap, _, pub = signed
    with open(cap.root / "requirements.lock", "a") as f:
        f.write("evil==1.0\n")
    err = refused(capsys, cap.model_path, pub)
    assert "changed my_model.envrepro/requirements.lock" in err


def test_an_added_or_removed_file_is_named(signed, capsys):
    cap, _, pub = signed
    (cap.root / "snapshot" / "extra.py").write_text("import os\n")
    err = refused(capsys, cap.model_path, pub)
    assert "added my_model.envrepro/snapshot/extra.py" in err
    (cap.root / "snapshot" / "extra.py").unlink()
    (cap.model_path / "variables").mkdir()
    (cap.model_path / "variables" / "v.index").write_bytes(b"i")
    assert "added my_model/variables/v.index" in refused(capsys, cap.model_path, pub)
    shutil.rmtree(cap.model_path / "variables")
    (cap.root / "reference" / "output_0.npy").unlink()
    assert "missing my_model.envrepro/reference/output_0.npy" in refused(capsys, cap.model_path, pub)


def test_a_capture_swapped_in_from_another_model_does_not_verify(tmp_path, keys, capsys):
    """Two models of one name, both signed by the team: one's capture beside the other's model
    (or one's signature beside the other) never verifies."""
    a = make_capture(tmp_path / "a")
    b = make_capture(tmp_path / "b", python={"version": "3.9.18"})     # captured elsewhere
    for cap in (a, b):
        sharecommands.sign(str(cap.model_path), str(keys[0]))
    shutil.rmtree(a.root)
    shutil.copytree(b.root, a.root)
    err = refused(capsys, a.model_path, keys[1])
    assert "differs from what team.pub signed: changed my_model.envrepro/envrepro.yaml" in err
    # b's signature beside b's model with a's capture: refused the same
    c = make_capture(tmp_path / "c")
    shutil.copy(signature_for(b.model_path), signature_for(c.model_path))
    assert "changed my_model.envrepro/envrepro.yaml" in refused(capsys, c.model_path, keys[1])


def test_a_signature_of_the_model_alone_or_the_capture_alone_does_not_verify(tmp_path, keys, capsys):
    """Signed with model-signing's own defaults (the model folder only, the capture folder only):
    such a signature lists no capture (no model) file and is refused."""
    cap = make_capture(tmp_path / "m")
    ms = openssf.library()
    sig = signature_for(cap.model_path)
    ms.signing.Config().use_elliptic_key_signer(private_key=keys[0]).sign(cap.model_path, sig)
    err = refused(capsys, cap.model_path, keys[1])
    assert "differs from what team.pub signed" in err and "added my_model.envrepro/envrepro.yaml" in err
    ms.signing.Config().use_elliptic_key_signer(private_key=keys[0]).sign(cap.root, sig)
    err = refused(capsys, cap.model_path, keys[1])
    assert "differs from what team.pub signed" in err


def test_another_key_is_not_trusted(signed, tmp_path, capsys):
    cap, _, pub = signed
    _, other = key_pair(tmp_path / "keys", "other")
    err = refused(capsys, cap.model_path, other)
    assert f"{signature_for(cap.model_path)}: signed by a key that is not trusted here" in err
    assert "tried 1 key(s)" in err
    # among several keys, the one that signed it answers
    assert sharecommands.verify(str(cap.model_path), [str(other), str(pub)]).key == str(pub)


def test_an_altered_signature_is_refused(signed, capsys):
    """The payload edited (a hash replaced by the one of the tampered file), the key hint kept:
    the signature no longer verifies with that key."""
    cap, _, pub = signed
    sig = signature_for(cap.model_path)
    bundle = json.loads(sig.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    (cap.root / "requirements.lock").write_text("evil==1.0\n")
    from envrepro.fsutil import sha256_file

    for r in statement["predicate"]["resources"]:
        if r["name"].endswith("requirements.lock"):
            r["digest"] = sha256_file(cap.root / "requirements.lock")
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(bundle))
    err = refused(capsys, cap.model_path, pub)
    assert "does not verify with" in err and "altered after signing" in err


@pytest.mark.parametrize("content", [b"", b"not json", b"{}", b'{"dsseEnvelope": {"payload": "!!"}}', b"[1, 2]"])
def test_a_garbage_signature_is_one_line(signed, capsys, content):
    cap, _, pub = signed
    signature_for(cap.model_path).write_bytes(content)
    err = refused(capsys, cap.model_path, pub)
    assert "not a model signature" in err


def test_unsigned_and_no_key(tmp_path, keys, capsys):
    cap = make_capture(tmp_path / "m")
    err = refused(capsys, cap.model_path, keys[1])
    assert f"{cap.model_path}: unsigned (no my_model.envrepro.sig beside it)" in err and "envrepro sign" in err
    err = refused(capsys, cap.model_path)
    assert "no public key to verify with" in err
    err = refused(capsys, cap.model_path, tmp_path / "nope.pub")
    assert "unsigned" in err          # unsigned is said first, whatever the key


def test_bad_keys_are_one_line(tmp_path, keys, capsys):
    cap = make_capture(tmp_path / "m")
    code, _, err = run_cli(capsys, "sign", cap.model_path, "--key", tmp_path / "none.pem")
    assert code == 2 and "no private key file at this path" in one_error(err)
    code, _, err = run_cli(capsys, "sign", cap.model_path, "--key", keys[1])    # a public key
    assert code == 2 and "not a usable EC private key" in one_error(err)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pem = tmp_path / "rsa.pem"
    rsa_pem.write_bytes(rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    code, _, err = run_cli(capsys, "sign", cap.model_path, "--key", rsa_pem)
    assert code == 2 and "not a usable EC private key" in one_error(err)
    assert not signature_for(cap.model_path).exists()
    sharecommands.sign(str(cap.model_path), str(keys[0]))
    err = refused(capsys, cap.model_path, keys[0].with_name("missing.pub"))
    assert "no public key file at this path" in err
    err = refused(capsys, cap.model_path, keys[0])       # a private key where a public one goes
    assert "not a usable EC public key" in err


def test_an_encrypted_key_needs_its_password(tmp_path, capsys, monkeypatch):
    private, public = key_pair(tmp_path / "keys", "locked", password=b"s3cret")
    cap = make_capture(tmp_path / "m")
    code, _, err = run_cli(capsys, "sign", cap.model_path, "--key", private)
    assert code == 2 and "ENVREPRO_SIGNING_KEY_PASSWORD" in one_error(err)
    monkeypatch.setenv(signature.PASSWORD_VARIABLE, "s3cret")
    code, _, err = run_cli(capsys, "sign", cap.model_path, "--key", private)
    assert code == 0, err
    assert sharecommands.verify(str(cap.model_path), [str(public)]).key == str(public)


def test_links_are_refused_never_followed(tmp_path, keys, capsys):
    cap = make_capture(tmp_path / "m")
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    link = cap.model_path / "assets.txt"
    os.symlink(outside, link)
    with pytest.raises(SignatureError, match="symbolic link"):
        signature.sign(cap, str(keys[0]))       # the capture as read before the link came
    assert not signature_for(cap.model_path).exists()
    link.unlink()
    sharecommands.sign(str(cap.model_path), str(keys[0]))
    os.symlink(outside, cap.root / "reference" / "extra.npy")
    assert "symbolic link" in refused(capsys, cap.model_path, keys[1])
    (cap.root / "reference" / "extra.npy").unlink()
    sig = signature_for(cap.model_path)
    real = tmp_path / "real.sig"
    sig.rename(real)
    os.symlink(real, sig)
    assert "not a model signature (a link or not a regular file)" in refused(capsys, cap.model_path, keys[1])
    code, _, err = run_cli(capsys, "sign", cap.model_path, "--key", keys[0])
    assert code == 2 and "is a link or a folder where the signature goes" in one_error(err)


def test_a_model_changed_since_its_capture_is_not_signed(tmp_path, keys, capsys):
    cap = make_capture(tmp_path / "m")
    (cap.model_path / "saved_model.pb").write_bytes(b"changed")
    code, _, err = run_cli(capsys, "sign", cap.model_path, "--key", keys[0])
    assert code == 2 and not signature_for(cap.model_path).exists(), err


def test_a_capture_being_written_is_not_signed(tmp_path, keys):
    from envrepro import fsutil
    from envrepro.sidecar import recovery

    cap = make_capture(tmp_path / "m")
    with fsutil.file_lock(recovery.lock_path(cap.root)):
        with pytest.raises(SignatureError, match="being written"):
            sharecommands.sign(str(cap.model_path), str(keys[0]))
    assert not signature_for(cap.model_path).exists()


def test_signing_fails_closed_without_model_signing(tmp_path, keys, capsys, monkeypatch):
    cap = make_capture(tmp_path / "m")
    sharecommands.sign(str(cap.model_path), str(keys[0]))
    for name in [m for m in sys.modules if m == "model_signing" or m.startswith("model_signing.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "model_signing", None)     # import model_signing -> ImportError
    err = refused(capsys, cap.model_path, keys[1])
    assert "signed captures need OpenSSF model signing, which is not installed" in err
    assert "pip install 'envrepro[signing]'" in err
    code, _, err = run_cli(capsys, "sign", cap.model_path, "--key", keys[0])
    assert code == 2 and "pip install 'envrepro[signing]'" in one_error(err)


def test_signing_fails_closed_on_an_old_python(monkeypatch):
    monkeypatch.setattr(sys, "version_info", (3, 8, 18, "final", 0))
    with pytest.raises(SignatureError, match="need Python 3.10 or newer"):
        openssf.library()


def test_differences_and_summary():
    signed = {"a": "1" * 64, "b": "2" * 64, "c": "3" * 64}
    actual = {"a": "1" * 64, "b": "9" * 64, "d": "4" * 64}
    diffs = payload.differences(signed, actual)
    assert diffs == ["changed b", "added d", "missing c"]
    assert payload.summary(diffs, shown=2) == "changed b, added d; 1 more"
