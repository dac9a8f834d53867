"""Bundles carry the signature of their model and capture (``model/NAME.envrepro.sig``): it is
checked against the staged model and capture before any image is loaded, put beside the model,
and checked again by the load that follows. With ``require_signature`` an unsigned or wrongly
signed bundle is refused with nothing extracted and no image loaded (fake engine)."""
import tarfile

import pytest

from envrepro import commands, sharecommands
from envrepro.bundling import members as layout
from envrepro.fsutil import sha256_bytes
from envrepro.signing.scope import SignatureError, signature_for

from fakes import FakeEngine, cache_home, image, make_capture  # noqa: F401
from signing_keys import key_pair, write_config
from test_bundle import airgapped, members, nothing_happened, refused, rewrite

SIG = "model/my_model.envrepro.sig"


def signed_bundle(tmp_path, key):
    cap = make_capture(tmp_path / "train")
    sharecommands.sign(str(cap.model_path), str(key))
    eng = FakeEngine(local=[image("python:3.8-slim")])
    out = tmp_path / "ship" / "m.tar"
    out.parent.mkdir()
    sharecommands.bundle(str(cap.model_path), str(out), engine_factory=lambda: eng, quiet=True)
    return out, cap


@pytest.fixture
def team(tmp_path):
    return key_pair(tmp_path / "keys", "team")


def test_a_signed_bundle_carries_its_signature_and_loads_with_require_signature(tmp_path, team):
    path, cap = signed_bundle(tmp_path, team[0])
    listed = {m.name: m for m in members(path)}
    assert listed[SIG].isreg()
    assert listed[SIG].size == signature_for(cap.model_path).stat().st_size
    write_config([team[1]])
    eng = airgapped()
    report = commands.load(str(path), engine_factory=lambda: eng, quiet=True)
    assert report.ok and len(eng.loads) == 1
    placed = path.with_name("m.bundle")
    assert (placed / "my_model.envrepro.sig").read_bytes() == signature_for(cap.model_path).read_bytes()
    assert sharecommands.verify(str(placed / "my_model")).key == str(team[1])
    # again: the identical signature already there is kept, verified again
    assert commands.load(str(path), engine_factory=lambda: eng, quiet=True).ok and len(eng.loads) == 2


def test_an_unsigned_bundle_is_refused_with_require_signature(tmp_path, team, capsys, monkeypatch):
    cap = make_capture(tmp_path / "train")
    out = tmp_path / "ship" / "m.tar"
    out.parent.mkdir()
    sharecommands.bundle(str(cap.model_path), str(out), engine_factory=lambda: FakeEngine(local=[image("python:3.8-slim")]),
                    quiet=True)
    assert SIG not in {m.name for m in members(out)}
    write_config([team[1]])
    err = refused(out, capsys, monkeypatch)
    assert "unsigned" in err and "require_signature is set" in err and "(the bundle's model and capture)" in err


def test_a_bundle_signed_by_another_key_is_refused_before_any_image_is_loaded(tmp_path, team, capsys, monkeypatch):
    stranger, _ = key_pair(tmp_path / "keys", "stranger")
    path, _ = signed_bundle(tmp_path, stranger)
    write_config([team[1]])
    eng = airgapped()
    err = refused(path, capsys, monkeypatch, eng)
    assert "signed by a key that is not trusted here" in err
    nothing_happened(path, eng)


def _swap_signature(path, tmp_path, data):
    """The bundle rewritten with ``data`` as its signature member, its manifest re-sealed."""
    def edit(d):
        for m in d["members"]:
            if m["name"] == SIG:
                m.update(size=len(data), sha256=sha256_bytes(data))
    info = tarfile.TarInfo(SIG)
    rewrite(path, tmp_path / "t.tar", drop={SIG}, extra=[(info, data)], manifest=edit)


def test_a_carried_signature_of_another_capture_is_refused_even_when_not_required(tmp_path, team, capsys, monkeypatch):
    path, _ = signed_bundle(tmp_path, team[0])
    other = make_capture(tmp_path / "other", python={"version": "3.9.18"})
    sharecommands.sign(str(other.model_path), str(team[0]))
    _swap_signature(path, tmp_path, signature_for(other.model_path).read_bytes())
    err = refused(path, capsys, monkeypatch)
    assert "signature does not match the model and its capture any more: changed my_model.envrepro/envrepro.yaml" in err
    write_config([team[1]])
    err = refused(path, capsys, monkeypatch)
    assert "differs from what team.pub signed: changed my_model.envrepro/envrepro.yaml" in err


def test_a_stale_signature_is_not_bundled(tmp_path, team):
    cap = make_capture(tmp_path / "train")
    sharecommands.sign(str(cap.model_path), str(team[0]))
    sig = signature_for(cap.model_path)
    other = make_capture(tmp_path / "other", python={"version": "3.9.18"})
    sharecommands.sign(str(other.model_path), str(team[0]))
    sig.write_bytes(signature_for(other.model_path).read_bytes())
    out = tmp_path / "m.tar"

    def no_engine():
        raise AssertionError("no image is built for a bundle that can't be written")
    with pytest.raises(SignatureError, match="does not match the model and its capture any more"):
        sharecommands.bundle(str(cap.model_path), str(out), engine_factory=no_engine, quiet=True)
    assert not out.exists()


@pytest.mark.parametrize("member,needle", [
    ({"name": "model/evil.py", "type": "file", "size": 1, "sha256": "0" * 64}, "neither the model, its capture"),
    ({"name": SIG, "type": "dir"}, "lists the signature"),
])
def test_the_manifest_lists_nothing_else_under_model(tmp_path, capsys, monkeypatch, member, needle):
    cap = make_capture(tmp_path / "train")
    out = tmp_path / "ship" / "m.tar"
    out.parent.mkdir()
    sharecommands.bundle(str(cap.model_path), str(out), engine_factory=lambda: FakeEngine(local=[image("python:3.8-slim")]),
                    quiet=True)
    rewrite(out, tmp_path / "t.tar", manifest=lambda d: d["members"].append(member))
    assert needle in refused(out, capsys, monkeypatch)


def test_the_signature_member_name_is_the_one_beside_the_model():
    m = layout.BundleManifest("image", "clf.h5", "a" * 64, "b" * 64)
    assert m.signature_member == "model/clf.h5.envrepro.sig"
    assert m.signature_member == f"{layout.MODEL_DIR}/{signature_for('/x/clf.h5').name}"
