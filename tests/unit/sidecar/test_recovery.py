"""envrepro.sidecar.recovery: a killed capture's leftovers are read before anything is decided;
a capture is put back, kept or removed by the rules of the module, under the capture lock."""
import os
import shutil
from pathlib import Path

import pytest

from envrepro import commands, fsutil
from envrepro.diagnose import doctor
from envrepro.errors import InvalidCapture
from envrepro.sidecar import layout, manifest, recovery, writer


def capture(tmp_path, text="six==1.16.0\n"):
    m = tmp_path / "m.h5"
    if not m.exists():
        m.write_bytes(b"\x89HDF\r\n\x1a\n" + b"0" * 32)

    def fill(folder):
        (folder / layout.LOCK_FILE).write_text(text)
        (folder / layout.SNAPSHOT_DIR).mkdir()
        (folder / layout.SNAPSHOT_DIR / "layers.py").write_text("X = 1\n")
        return {"model": {"name": "m.h5"}}

    return writer.write_capture(m, fill).sidecar


def aside(sidecar, tag=".old-1-aa"):
    """Move the capture aside, as the fallback's first rename does."""
    moved = sidecar.with_name(f".{sidecar.name}{tag}")
    os.rename(sidecar, moved)
    return moved


def names(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def test_a_missing_capture_is_put_back_from_the_folder_set_aside(tmp_path, capsys):
    sidecar = capture(tmp_path)
    moved = aside(sidecar)
    assert manifest.read(sidecar).lock_path.read_text() == "six==1.16.0\n"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"put back the previous capture it left at {moved.name}" in err
    assert names(tmp_path) == ["m.h5", "m.h5.envrepro"]


def test_a_complete_temp_folder_is_put_back_before_the_old_one(tmp_path):
    sidecar = capture(tmp_path)
    old = aside(sidecar)
    capture(tmp_path, "six==1.17.0\n")
    aside(sidecar, ".tmp-xyz")                  # the new one, complete, not yet renamed in
    assert manifest.read(sidecar).lock_path.read_text() == "six==1.17.0\n"
    assert not old.exists() and names(tmp_path) == ["m.h5", "m.h5.envrepro"]


def test_an_aside_capture_that_does_not_verify_still_goes_back(tmp_path):
    """It was the user's capture: put back as it was (edited), not deleted."""
    sidecar = capture(tmp_path)
    (sidecar / layout.SNAPSHOT_DIR / "layers.py").write_text("X = 2\n")
    aside(sidecar)
    (tmp_path / ".m.h5.envrepro.tmp-half").mkdir()   # a capture killed while writing: garbage
    with pytest.raises(InvalidCapture, match="snapshot file edited"):
        manifest.read(sidecar)
    assert (sidecar / layout.SNAPSHOT_DIR / "layers.py").read_text() == "X = 2\n"
    assert names(tmp_path) == ["m.h5", "m.h5.envrepro"]


def test_leftovers_beside_a_capture_that_does_not_verify_are_kept_until_one_does(tmp_path, capsys):
    sidecar = capture(tmp_path)
    shutil.copytree(sidecar, tmp_path / ".m.h5.envrepro.old-7-bb")
    (sidecar / layout.LOCK_FILE).write_text("six==9\n")
    with pytest.raises(InvalidCapture, match="sha256 mismatch"):
        manifest.read(sidecar)
    assert "kept the previous capture" in capsys.readouterr().err
    assert (tmp_path / ".m.h5.envrepro.old-7-bb").is_dir()
    capture(tmp_path, "six==1.17.0\n")             # a capture that verifies: the kept one goes
    assert names(tmp_path) == ["m.h5", "m.h5.envrepro"]


def test_a_reader_leaves_a_running_capture_alone(tmp_path):
    sidecar = capture(tmp_path)
    half = tmp_path / ".m.h5.envrepro.tmp-running"
    half.mkdir()
    with fsutil.file_lock(recovery.lock_path(sidecar)):    # the running capture
        manifest.read(sidecar)
        assert half.is_dir()
    manifest.read(sidecar)                                  # no capture running: garbage goes
    assert not half.exists()


def test_a_read_only_folder_is_only_reported_on(tmp_path, monkeypatch, capsys):
    sidecar = capture(tmp_path)
    moved = aside(sidecar)
    real_access = os.access
    monkeypatch.setattr(recovery.os, "access",
                        lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    with pytest.raises(InvalidCapture, match="no capture beside this model"):
        manifest.read(sidecar)
    err = capsys.readouterr().err
    assert f"left the previous capture at {moved}" in err and f"rename it to {sidecar.name}" in err
    assert moved.is_dir() and not os.path.lexists(sidecar)


def test_links_are_never_leftovers(tmp_path):
    sidecar = capture(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    os.rename(sidecar, elsewhere)
    link = tmp_path / ".m.h5.envrepro.old-1-aa"
    link.symlink_to(elsewhere)
    with pytest.raises(InvalidCapture, match="no capture beside this model"):
        manifest.read(sidecar)
    assert link.is_symlink() and manifest.read_folder(elsewhere)


def test_a_linked_capture_is_not_judged_its_leftovers_are_kept(tmp_path):
    sidecar = capture(tmp_path)
    shutil.copytree(sidecar, tmp_path / ".m.h5.envrepro.old-1-aa")
    os.rename(sidecar, tmp_path / "elsewhere")
    sidecar.symlink_to(tmp_path / "elsewhere")
    assert recovery.recover_locked(sidecar) == [tmp_path / ".m.h5.envrepro.old-1-aa"]


def test_inspect_and_doctor_recover_before_looking_for_the_capture(tmp_path):
    sidecar = capture(tmp_path)
    aside(sidecar)
    assert commands.inspect(str(tmp_path / "m.h5")).capture is not None
    aside(sidecar)
    assert doctor._read_capture(tmp_path / "m.h5")[0] is not None
    assert names(tmp_path) == ["m.h5", "m.h5.envrepro"]
