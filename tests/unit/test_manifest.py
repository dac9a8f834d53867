"""The capture format: sidecar naming, format detection, validation and tamper detection."""
import os

import pytest
import yaml

from envrepro.sidecar import manifest
from envrepro.errors import InvalidCapture, ModelNotFound


def make_capture(tmp_path, files=None):
    model = tmp_path / "m.h5"
    model.write_bytes(b"\x89HDF\r\n\x1a\n" + b"0" * 32)
    root = manifest.sidecar_for(model)
    root.mkdir()
    for rel, text in (files or {"requirements.lock": "six==1.16.0\n", "snapshot/layers.py": "X = 1\n"}).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    manifest.write_manifest(root, {"schema": manifest.SCHEMA, "model": {"name": "m.h5"}})
    return model, root


def test_sidecar_names(tmp_path):
    assert manifest.sidecar_for(tmp_path / "my_model").name == "my_model.envrepro"
    assert manifest.sidecar_for(tmp_path / "m.h5").name == "m.h5.envrepro"
    assert manifest.sidecar_for(tmp_path / "m.h5.envrepro").name == "m.h5.envrepro"
    assert manifest.model_for(tmp_path / "m.h5.envrepro") == tmp_path / "m.h5"


def test_detect_format(tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    assert manifest.detect_format(tmp_path / "sm") == "savedmodel"
    (tmp_path / "a.h5").write_bytes(b"\x89HDF\r\n\x1a\nxx")
    assert manifest.detect_format(tmp_path / "a.h5") == "h5"
    (tmp_path / "b.keras").write_bytes(b"PK\x03\x04xx")
    assert manifest.detect_format(tmp_path / "b.keras") == "keras"
    (tmp_path / "lfs.h5").write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(ModelNotFound, match="git lfs pull"):
        manifest.detect_format(tmp_path / "lfs.h5")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="not a SavedModel"):
        manifest.detect_format(tmp_path / "empty")
    with pytest.raises(ModelNotFound, match="no model"):
        manifest.detect_format(tmp_path / "missing")


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
    (root / manifest.MANIFEST).unlink()
    with pytest.raises(InvalidCapture, match="incomplete"):
        manifest.read(root)


def test_unknown_schema_and_garbage(tmp_path):
    _, root = make_capture(tmp_path)
    m = root / manifest.MANIFEST
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
        manifest.read(manifest.sidecar_for(tmp_path / "x.h5"))


def test_upgrade_path_is_applied(tmp_path, monkeypatch):
    _, root = make_capture(tmp_path)
    m = root / manifest.MANIFEST
    data = yaml.safe_load(m.read_text())
    data["schema"] = "envrepro/v0"
    m.write_text(yaml.safe_dump(data))
    monkeypatch.setitem(manifest.UPGRADES, "envrepro/v0", lambda d: dict(d, schema=manifest.SCHEMA, upgraded=True))
    assert manifest.read(root).data["upgraded"] is True
