"""Air-gapped bundles (envrepro.bundling) with the fake engine: a round trip, and every kind of
bad bundle refused with one line and exit 2, with nothing put in place and no image loaded."""
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from envrepro import cli, commandbase, commands, sharecommands
from envrepro.bundling import extract, members as layout, unpack, verify
from envrepro.bundling.members import BundleError

try:
    from .fakes import FakeEngine, cache_home, image, loader_report, make_capture, report_stdout
except ImportError:
    from fakes import FakeEngine, cache_home, image, loader_report, make_capture, report_stdout


def written_bundle(tmp_path, name="my_model"):
    """A capture, its image built by the fake engine, and its bundle: (bundle, capture, engine)."""
    cap = make_capture(tmp_path / "train", name=name)
    eng = FakeEngine(local=[image("python:3.8-slim")])
    out = tmp_path / "ship" / "m.tar"
    out.parent.mkdir()
    result = sharecommands.bundle(str(cap.model_path), str(out), engine_factory=lambda: eng, quiet=True)
    assert result.kind == "image" and Path(result.path) == out and eng.saved == [result.image_tag]
    return out, cap, eng


@pytest.fixture
def bundle(tmp_path):
    return written_bundle(tmp_path)


def airgapped():
    """The other machine: no image, and a loader that reports success."""
    return FakeEngine(run_result=(0, report_stdout(loader_report()), ""))


def members(path):
    with tarfile.open(path) as tar:
        return tar.getmembers()


def nothing_happened(path, eng=None):
    dest = path.with_name(path.name[:-4] + ".bundle")
    assert not dest.exists(), "nothing may be extracted into place"
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == [], "no leftovers"
    if eng is not None:
        assert not getattr(eng, "loads", []) and eng.store == []


def refused(path, capsys, monkeypatch, eng=None):
    """`envrepro load PATH` through the CLI: exit 2 and one line naming the bundle."""
    eng = eng or airgapped()
    monkeypatch.setattr(commandbase, "default_engine", lambda: eng)
    with pytest.raises(SystemExit) as e:
        cli.main(["load", str(path)])
    out = capsys.readouterr().err
    errors = [line for line in out.splitlines() if line.startswith("envrepro")]
    assert e.value.code == 2, out
    assert len(errors) == 1 and "Traceback" not in out, out
    err = errors[0]
    assert err.startswith(f"envrepro: error: {path}: "), err
    nothing_happened(path, eng)
    return err


def rewrite(src, dst, extra=(), drop=(), manifest=None):
    """Copy the bundle member by member (``drop``: names left out), then add ``extra``
    ((TarInfo, bytes or None) pairs); ``manifest``: a function editing the manifest dict, re-sealed."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        for m in tin.getmembers():
            if m.name in drop:
                continue
            data = tin.extractfile(m).read() if m.isreg() else None
            if m.name == layout.MANIFEST_NAME and manifest is not None:
                d = json.loads(data)
                manifest(d)
                d["sha256"] = layout._self_digest(d)
                data = json.dumps(d, separators=(",", ":"), sort_keys=True).encode()
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)
        for info, data in extra:
            if data is not None:
                info.size = len(data)
            tout.addfile(info, io.BytesIO(data) if data is not None else None)
    os.unlink(src)
    os.rename(dst, src)
    return src


def test_round_trip_loads_from_the_bundle_with_no_registry_and_no_build(bundle, tmp_path):
    path, cap, _ = bundle
    names = [m.name for m in members(path)]
    assert names[0] == layout.MANIFEST_NAME
    assert {"model/my_model", "model/my_model/saved_model.pb", "image.tar",
            "model/my_model.envrepro/envrepro.yaml"} <= set(names)
    eng = airgapped()
    report = commands.load(str(path), engine_factory=lambda: eng, quiet=True)
    assert report.ok and report.image["source"] == "local" and report.image["bundle"] == str(path)
    assert eng.builds == [] and eng.pulls == [] and len(eng.loads) == 1
    assert eng.runs[0]["network_disabled"] is True
    dest = path.with_name("m.bundle")
    assert (dest / "my_model" / "saved_model.pb").read_bytes() == b"pb"
    assert (dest / "my_model.envrepro" / "envrepro.yaml").read_bytes() == \
        (cap.root / "envrepro.yaml").read_bytes()
    from envrepro.sandbox.report import render_report

    assert f"loaded from bundle {path}" in render_report(report)
    # again: verified again (a second docker load), the identical extraction kept
    report = commands.load(str(path), engine_factory=lambda: eng, quiet=True)
    assert report.ok and len(eng.loads) == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.bundle", "m.tar"]


def test_rerun_reverifies_and_refuses_to_overwrite_a_changed_extraction(bundle, capsys, monkeypatch):
    path, _, _ = bundle
    eng = airgapped()
    commands.load(str(path), engine_factory=lambda: eng, quiet=True)
    edited = path.with_name("m.bundle") / "my_model" / "saved_model.pb"
    edited.write_bytes(b"mine")
    monkeypatch.setattr(commandbase, "default_engine", lambda: eng)
    with pytest.raises(SystemExit) as e:
        cli.main(["load", str(path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "already there and different" in err and "not overwritten" in err
    assert edited.read_bytes() == b"mine" and len(eng.loads) == 1, "no image loaded, nothing overwritten"


def test_into_another_folder(bundle, tmp_path):
    path, _, _ = bundle
    eng = airgapped()
    report = commands.load(str(path), into=str(tmp_path / "here"), engine_factory=lambda: eng, quiet=True)
    assert report.ok and (tmp_path / "here" / "my_model.envrepro").is_dir()


def data_offset(path, name):
    return next(m.offset_data for m in members(path) if m.name == name)


@pytest.mark.parametrize("member", ["image.tar", "model/my_model/saved_model.pb",
                                    "model/my_model.envrepro/snapshot/custom_layers.py"])
def test_a_flipped_byte_in_a_member_is_refused(bundle, capsys, monkeypatch, member):
    path, _, _ = bundle
    at = data_offset(path, member)
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    assert "does not match its sha256" in refused(path, capsys, monkeypatch)


def test_a_flipped_byte_in_the_manifest_is_refused(bundle, capsys, monkeypatch):
    path, _, _ = bundle
    at = data_offset(path, layout.MANIFEST_NAME) + 30
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x04
    path.write_bytes(bytes(raw))
    refused(path, capsys, monkeypatch)


@pytest.mark.parametrize("keep", [0.999, 0.5, 0.05])
def test_a_truncated_bundle_is_refused(bundle, capsys, monkeypatch, keep):
    path, _, _ = bundle
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    err = refused(path, capsys, monkeypatch)
    assert "truncated" in err or "incomplete" in err or "not an envrepro bundle" in err or "damaged" in err


def test_a_bundle_cut_at_a_member_boundary_is_refused(bundle, capsys, monkeypatch):
    path, _, _ = bundle
    last = members(path)[-1]
    raw = path.read_bytes()
    path.write_bytes(raw[: last.offset_data + -(-last.size // 512) * 512])
    assert "truncated (no end-of-archive marker)" in refused(path, capsys, monkeypatch)


def _info(name, type_=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = type_, linkname
    return info


@pytest.mark.parametrize("info,data,needle", [
    (_info("model/../x"), b"x", "leads out of the destination"),
    (_info("../x"), b"x", "x"),
    (_info("/etc/evil"), b"x", "absolute path"),
    (_info("model/link", tarfile.SYMTYPE, "/etc/passwd"), None, "symbolic link"),
    (_info("model/hard", tarfile.LNKTYPE, "/etc/passwd"), None, "link"),
    (_info("model/dev", tarfile.CHRTYPE), None, "device file"),
    (_info("model/fifo", tarfile.FIFOTYPE), None, "FIFO"),
    (_info("model/extra.txt"), b"hello", "not listed in the manifest"),
], ids=["dotdot-inside", "dotdot", "absolute", "symlink-out", "hardlink-out", "device", "fifo", "extra"])
@pytest.mark.parametrize("use_filter", [True, False], ids=["data-filter", "manual"])
def test_unsafe_or_extra_members_are_refused(bundle, tmp_path, capsys, monkeypatch, info, data, needle, use_filter):
    if use_filter and not extract.has_data_filter():
        pytest.fail("this Python's tarfile should have the data filter (3.11.4+)")
    if not use_filter:
        monkeypatch.delattr(tarfile, "data_filter")
        assert not extract.has_data_filter()
    path, _, _ = bundle
    rewrite(path, tmp_path / "t.tar", extra=[(info, data)])
    err = refused(path, capsys, monkeypatch)
    assert needle in err


def test_the_data_filter_and_the_manual_checks_each_refuse_on_their_own(tmp_path):
    dest = str(tmp_path)
    for bad in (_info("../x"), _info("model/link", tarfile.SYMTYPE, "../../etc"),
                _info("model/hard", tarfile.LNKTYPE, "/etc/passwd"), _info("model/d", tarfile.BLKTYPE)):
        with pytest.raises(extract.Refused):
            extract.manual_check(bad, dest)
        with pytest.raises(extract.Refused):
            extract.check(bad, dest, use_filter=True)
    extract.manual_check(_info("model/ok.txt"), dest)


def test_a_missing_member_is_refused(bundle, tmp_path, capsys, monkeypatch):
    path, _, _ = bundle
    rewrite(path, tmp_path / "t.tar", drop={"model/my_model.envrepro/snapshot/custom_layers.py"})
    assert "missing" in refused(path, capsys, monkeypatch)


def test_a_member_listed_with_an_unsafe_name_is_refused(bundle, tmp_path, capsys, monkeypatch):
    path, _, _ = bundle
    rewrite(path, tmp_path / "t.tar", manifest=lambda d: d["members"].append(
        {"name": "model/../../x", "type": "file", "size": 1, "sha256": "0" * 64}))
    assert "unsafe member name" in refused(path, capsys, monkeypatch)


def test_an_unknown_format_is_refused(bundle, tmp_path, capsys, monkeypatch):
    path, _, _ = bundle
    rewrite(path, tmp_path / "t.tar", manifest=lambda d: d.update(format="envrepro-bundle/99"))
    assert "unknown bundle format" in refused(path, capsys, monkeypatch)


def test_an_image_archive_tagging_something_else_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    """A re-sealed bundle whose image archive would move another tag: refused, nothing loaded."""
    path, _, eng = written_bundle(tmp_path)
    evil = io.BytesIO()
    img = eng.inspect_image(eng.saved[0])
    eng.tag(img["Id"], "python:3.11-slim")
    eng.save_image("python:3.11-slim", evil)
    data = evil.getvalue()
    import hashlib

    def swap(d):
        for m in d["members"]:
            if m["name"] == "image.tar":
                m.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    rewrite(path, tmp_path / "t.tar", drop={"image.tar"}, manifest=swap,
            extra=[(_info("image.tar"), data)])
    assert "would tag python:3.11-slim" in refused(path, capsys, monkeypatch)


def test_a_tar_that_is_not_a_bundle(tmp_path, capsys, monkeypatch):
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        info = _info("hello.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    assert not unpack.is_bundle(str(plain))
    monkeypatch.setattr(commandbase, "default_engine", lambda: airgapped())
    with pytest.raises(SystemExit) as e:
        cli.main(["load", str(plain)])
    assert e.value.code == 2 and "not an envrepro bundle" in capsys.readouterr().err


def test_bundle_write_is_atomic_and_refuses_bad_outputs(tmp_path, monkeypatch):
    cap = make_capture(tmp_path / "train")
    eng = FakeEngine(local=[image("python:3.8-slim")])
    out = tmp_path / "b.tar"
    out.write_bytes(b"previous")

    def boom(tag, fileobj):
        fileobj.write(b"partial")
        raise BundleError("saving image failed: daemon died")
    monkeypatch.setattr(eng, "save_image", boom)
    with pytest.raises(BundleError):
        sharecommands.bundle(str(cap.model_path), str(out), engine_factory=lambda: eng, quiet=True)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "xdg-cache") == ["b.tar", "train"], \
        "no temp files left"
    for bad in ("b.zip", str(cap.model_path / "in.tar"), str(tmp_path / "nofolder" / "b.tar")):
        with pytest.raises(BundleError):
            sharecommands.bundle(str(cap.model_path), bad, engine_factory=lambda: eng, quiet=True)


def test_a_symlink_in_the_model_is_not_bundled(tmp_path):
    cap = make_capture(tmp_path / "train")
    (cap.model_path / "link").symlink_to("/etc/passwd")
    with pytest.raises(Exception) as e:
        sharecommands.bundle(str(cap.model_path), str(tmp_path / "b.tar"), engine_factory=FakeEngine, quiet=True)
    assert "link" in str(e.value) or "changed" in str(e.value)


# -- --wheels: envrepro.packages.wheelhouse is another engineer's package; faked here ---------------------

class FakeWheelhouse:
    def __init__(self):
        self.imported = []

    def export_for_capture(self, capture, dest_dir, say, **kwargs):
        (dest_dir / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"wheel bytes")
        (dest_dir / "index.json").write_text("{}")
        return [dest_dir / "six-1.16.0-py2.py3-none-any.whl", dest_dir / "index.json"]

    def import_dir(self, src_dir, capture, say):
        files = sorted(p.name for p in Path(src_dir).iterdir())
        self.imported.append((files, capture.root.name))
        return len(files) - 1


def test_wheels_bundle_round_trip(tmp_path, monkeypatch):
    house = FakeWheelhouse()
    monkeypatch.setattr(unpack, "wheelhouse_module", lambda: house)
    cap = make_capture(tmp_path / "train")
    out = tmp_path / "w.tar"
    result = sharecommands.bundle(str(cap.model_path), str(out), wheels=True, quiet=True,
                             engine_factory=lambda: pytest.fail("a wheels bundle needs no engine"))
    assert result.kind == "wheels" and result.wheels == 2
    names = [m.name for m in members(out)]
    assert "image.tar" not in names and "wheels/six-1.16.0-py2.py3-none-any.whl" in names
    eng = airgapped()
    eng.store.append(image("python:3.8-slim"))       # the base image is there; the env image is not
    report = commands.load(str(out), engine_factory=lambda: eng, quiet=True)
    assert house.imported == [(["index.json", "six-1.16.0-py2.py3-none-any.whl"], "my_model.envrepro")]
    assert report.ok and report.image["source"] == "built" and eng.pulls == []
    assert report.image["bundle_kind"] == "wheels"


def test_wheels_without_the_wheelhouse_package_is_one_line(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_wheelhouse(name, *a, **k):
        if name == "envrepro.packages.wheelhouse" or (name == "envrepro.packages" and a and a[2] and "wheelhouse" in a[2]):
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_wheelhouse)
    cap = make_capture(tmp_path / "train")
    with pytest.raises(BundleError) as e:
        sharecommands.bundle(str(cap.model_path), str(tmp_path / "w.tar"), wheels=True, quiet=True)
    assert "wheelhouse" in str(e.value)


# -- property: any truncation, any changed byte, is refused -------------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("prop")
    with pytest.MonkeyPatch.context() as mp:     # module scope: the autouse isolation doesn't apply
        for var, value in (("HOME", root / "home"), ("XDG_CACHE_HOME", root / "cache"),
                           ("XDG_CONFIG_HOME", root / "config"), ("ENVREPRO_BUILDER", "dockerfile")):
            mp.setenv(var, str(value))
        path, _, _ = written_bundle(root)
        return path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_truncation_or_changed_byte_is_refused(pristine, tmp_path_factory, data):
    raw = bytearray(pristine)
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="keep")]
    else:
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        raw[at] ^= data.draw(st.integers(1, 255), label="xor")
    folder = tmp_path_factory.mktemp("case")
    path = folder / "m.tar"
    path.write_bytes(bytes(raw))
    staging = folder / "staging"
    staging.mkdir()
    try:
        if not unpack.is_bundle(str(path)):      # load refuses it as not a bundle at all
            commands.load_bundle(str(path), engine_factory=lambda: pytest.fail("no engine needed"))
        verify.stage(path, staging)
    except BundleError:
        return
    # Accepted: then the byte changed carried no meaning (a tar header's checksum terminator,
    # say), and what was staged is exactly what the untouched bundle holds.
    assert not raw_truncated(raw, pristine)
    reference = folder / "reference"
    reference.mkdir()
    (folder / "pristine.tar").write_bytes(pristine)
    verify.stage(folder / "pristine.tar", reference)
    assert tree(staging) == tree(reference)


def raw_truncated(raw, pristine):
    return len(raw) < len(pristine)


def tree(root):
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}

