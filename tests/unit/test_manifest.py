"""envrepro.sidecar.manifest: reading a capture, validation and tamper detection."""
import pytest
import yaml

from envrepro.errors import InvalidCapture
from envrepro.sidecar import layout, manifest, writer


def make_capture(tmp_path, files=None):
    model = tmp_path / "m.h5"
    model.write_bytes(b"\x89HDF\r\n\x1a\n" + b"0" * 32)
    root = layout.sidecar_for(model)
    root.mkdir()
    for rel, text in (files or {"requirements.lock": "six==1.16.0\n", "snapshot/layers.py": "X = 1\n"}).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    writer.write_manifest(root, {"schema": layout.SCHEMA, "model": {"name": "m.h5"}})
    return model, root


def test_roundtrip_and_files_hashed(tmp_path):
    _, root = make_capture(tmp_path)
    cap = manifest.read(root)
    assert set(cap.data["files"]) == {"requirements.lock", "snapshot/layers.py"}
    assert cap.get("model.name") == "m.h5"
    assert cap.get("nope.deeper", 7) == 7


def test_edited_snapshot_is_refused_with_the_file_named(tmp_path):
    _, root = make_capture(tmp_path)
    (root / "snapshot" / "layers.py").write_text("X = 2\n")
    with pytest.raises(InvalidCapture) as e:
        manifest.read(root)
    assert "snapshot/layers.py" in str(e.value) and "edited after the capture" in str(e.value)


def test_missing_manifest_reads_as_incomplete(tmp_path):
    _, root = make_capture(tmp_path)
    (root / layout.MANIFEST).unlink()
    with pytest.raises(InvalidCapture, match="incomplete"):
        manifest.read(root)


def test_unknown_schema_and_garbage(tmp_path):
    _, root = make_capture(tmp_path)
    m = root / layout.MANIFEST
    data = yaml.safe_load(m.read_text())
    data["schema"] = "envrepro/v99"
    m.write_text(yaml.safe_dump(data))
    with pytest.raises(InvalidCapture, match="unknown capture schema 'envrepro/v99'"):
        manifest.read(root)
    m.write_text("{{{: not yaml")
    with pytest.raises(InvalidCapture, match="unreadable"):
        manifest.read(root)
    m.write_text("- a list\n")
    with pytest.raises(InvalidCapture, match="not a mapping"):
        manifest.read(root)


def test_added_file_is_refused(tmp_path):
    _, root = make_capture(tmp_path)
    (root / "snapshot" / "evil.py").write_text("import os\n")
    with pytest.raises(InvalidCapture, match="not listed"):
        manifest.read(root)


def test_no_capture(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(InvalidCapture, match="no capture"):
        manifest.read(layout.sidecar_for(tmp_path / "x.h5"))


def test_upgrade_path_is_applied(tmp_path, monkeypatch):
    _, root = make_capture(tmp_path)
    m = root / layout.MANIFEST
    data = yaml.safe_load(m.read_text())
    data["schema"] = "envrepro/v0"
    m.write_text(yaml.safe_dump(data))
    monkeypatch.setitem(manifest.UPGRADES, "envrepro/v0", lambda d: dict(d, schema=layout.SCHEMA, upgraded=True))
    assert manifest.read(root).data["upgraded"] is True
