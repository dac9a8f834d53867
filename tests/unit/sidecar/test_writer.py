"""envrepro.sidecar.writer: the capture transaction (manifest last, all or nothing, serialised)."""
import os
from pathlib import Path

import pytest

from envrepro.errors import CaptureError, InvalidCapture
from envrepro.sidecar import layout, manifest, writer


def model(tmp_path):
    m = tmp_path / "m.h5"
    m.write_bytes(b"\x89HDF\r\n\x1a\n" + b"0" * 32)
    return m


def fill_with(text):
    def fill(folder):
        (folder / layout.LOCK_FILE).write_text(text)
        (folder / layout.SNAPSHOT_DIR).mkdir()
        (folder / layout.SNAPSHOT_DIR / "layers.py").write_text("X = 1\n")
        return {"model": {"name": "m.h5"}}
    return fill


def test_write_capture_writes_the_manifest_last_with_every_hash(tmp_path):
    written = writer.write_capture(model(tmp_path), fill_with("six==1.16.0\n"))
    assert written.sidecar == layout.sidecar_for(tmp_path / "m.h5")
    assert written.manifest["schema"] == layout.SCHEMA
    assert sorted(written.manifest["files"]) == [layout.LOCK_FILE, "snapshot/layers.py"]
    assert manifest.read(written.sidecar).data == written.manifest   # verified against the files
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no lock left


def test_a_failed_capture_leaves_the_previous_one(tmp_path):
    m = model(tmp_path)
    writer.write_capture(m, fill_with("six==1.16.0\n"))

    def broken(folder):
        fill_with("six==1.17.0\n")(folder)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        writer.write_capture(m, broken)
    cap = manifest.read(layout.sidecar_for(m))
    assert cap.lock_path.read_text() == "six==1.16.0\n"
    assert not list(tmp_path.glob(".m.h5.envrepro.tmp-*"))


def test_leftovers_of_a_killed_capture_are_recovered_first(tmp_path, capsys):
    """Read before anything is decided (tests/unit/sidecar/test_recovery.py has the rules): an empty temp
    folder is garbage; the folder set aside was the capture, so it goes back, and the new
    capture then replaces it."""
    m = model(tmp_path)
    (tmp_path / ".m.h5.envrepro.tmp-killed").mkdir()
    (tmp_path / ".m.h5.envrepro.old-123").mkdir()
    writer.write_capture(m, fill_with("six==1.16.0\n"))
    assert "put back the previous capture (it did not verify)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5", "m.h5.envrepro"]


def test_links_are_refused(tmp_path):
    m = model(tmp_path)

    def with_link(folder):
        (folder / "link").symlink_to(m)
        return {}

    with pytest.raises(InvalidCapture, match="symbolic link"):
        writer.write_capture(m, with_link)
    assert not layout.sidecar_for(m).exists()


def test_unwritable_folder_is_refused(tmp_path, monkeypatch):
    """The folder's writability as the OS reports it (as root chmod is not enforced, so the
    answer is faked): refused before anything is written, with the fix."""
    folder = tmp_path / "ro"
    folder.mkdir()
    m = model(folder)
    real_access = os.access
    monkeypatch.setattr(writer.os, "access",
                        lambda p, mode: False if Path(p) == folder else real_access(p, mode))
    with pytest.raises(CaptureError, match="not writable") as err:
        writer.write_capture(m, fill_with("x\n"))
    assert "copy the model somewhere writable" in str(err.value)
    assert sorted(p.name for p in folder.iterdir()) == [m.name]
