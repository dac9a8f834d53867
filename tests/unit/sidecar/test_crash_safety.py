"""Crash safety of the capture transaction (sidecar/writer.py, fsutil.replace_dir, recovery).

A capture is SIGKILLed (in a subprocess, ENVREPRO_TEST_CRASH_AT) at every step of writing and
replacing, over an existing capture; afterwards the old or the new capture - which one is said
per step - is in place and verifies, any command's recovery leaves no leftover, and the next
capture succeeds. Both ways of replacing: the one-step swap (renameat2 RENAME_EXCHANGE) and the
two renames used where no swap is possible (ENVREPRO_TEST_NO_EXCHANGE=1).
"""
import os
import signal
import subprocess
import sys

import pytest
from support import REPO

from envrepro import fsutil
from envrepro.errors import InvalidCapture
from envrepro.sidecar import layout, manifest, writer

OLD, NEW, NEXT = "six==1.16.0\n", "six==1.17.0\n", "six==1.18.0\n"
SNAPSHOT_FILES = ("a.py", "b.py")
FILL_STEPS = ("fill:lock-written",) + tuple(f"fill:{name}-written" for name in SNAPSHOT_FILES)

# The child: the real writer, with the fill below (crash points after each file it writes).
CHILD = r"""
import sys
from pathlib import Path
from envrepro.fsutil import crash_point
from envrepro.sidecar import layout, writer

model, text = Path(sys.argv[1]), sys.argv[2]

def fill(folder):
    (folder / layout.LOCK_FILE).write_text(text)
    crash_point("fill:lock-written")
    (folder / layout.SNAPSHOT_DIR).mkdir()
    for name in ("a.py", "b.py"):
        (folder / layout.SNAPSHOT_DIR / name).write_text(text)
        crash_point("fill:" + name + "-written")
    return {"model": {"name": model.name}}

writer.write_capture(model, fill)
"""


def fill_with(text):
    def fill(folder):
        (folder / layout.LOCK_FILE).write_text(text)
        (folder / layout.SNAPSHOT_DIR).mkdir()
        for name in SNAPSHOT_FILES:
            (folder / layout.SNAPSHOT_DIR / name).write_text(text)
        return {"model": {"name": "m.h5"}}
    return fill


def make_model(tmp_path):
    m = tmp_path / "m.h5"
    m.write_bytes(b"\x89HDF\r\n\x1a\n" + b"0" * 32)
    return m


def kill_capture_at(step, model, text, fallback):
    env = dict(os.environ, ENVREPRO_TEST_CRASH_AT=step,
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("ENVREPRO_TEST_NO_EXCHANGE", None)
    if fallback:
        env["ENVREPRO_TEST_NO_EXCHANGE"] = "1"
    return subprocess.run([sys.executable, "-c", CHILD, str(model), text], capture_output=True,
                          text=True, env=env, timeout=60)


def exchange_works(tmp_path):
    a, b = tmp_path / "swap-a", tmp_path / "swap-b"
    a.mkdir()
    b.mkdir()
    try:
        return fsutil.exchange(a, b)
    finally:
        a.rmdir()
        b.rmdir()


def steps(mode):
    """The steps a capture goes through: ``swap`` and ``renames`` replace an old capture,
    ``fresh`` writes the first one."""
    order = ["tmp-created", *FILL_STEPS, *writer.CRASH_STEPS[1:]]
    if mode != "renames":
        order.remove("between-renames")
    if mode == "fresh":
        order.remove("before-old-removal")
        order.remove("removing-old")
    return order


def expected(mode, step):
    """Which capture a kill at ``step`` leaves. Over an old capture: the old one until the swap,
    the new one from the swap on (the fallback's two renames: from the first, recovery moving
    the complete new capture in). A first capture: none until its manifest is in place, then the
    new one (put in place by recovery until the rename)."""
    order = steps(mode)
    if mode == "fresh":
        return NEW if order.index(step) >= order.index("atomic-write:renamed") else None
    return OLD if order.index(step) <= order.index("before-swap") else NEW


CASES = [(mode, step) for mode in ("swap", "renames", "fresh") for step in steps(mode)]


def test_every_step_of_the_transaction_is_covered():
    assert set(writer.CRASH_STEPS) <= {step for _mode, step in CASES}
    assert {expected("swap", "before-swap"), expected("swap", "after-swap")} == {OLD, NEW}


@pytest.mark.parametrize("mode,step", CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_a_capture_killed_at_any_step_leaves_the_old_or_the_new_capture(tmp_path, capsys, mode, step):
    if mode == "swap" and not exchange_works(tmp_path):
        pytest.skip("this system or filesystem can't swap folders in one step (renameat2)")
    m = make_model(tmp_path)
    sidecar = layout.sidecar_for(m)
    if mode != "fresh":
        writer.write_capture(m, fill_with(OLD))
    proc = kill_capture_at(step, m, NEW, fallback=(mode == "renames"))
    assert proc.returncode == -signal.SIGKILL, f"never reached {step}: {proc.stderr[-2000:]}"
    want = expected(mode, step)

    # As the kill left it, before any recovery: over an old capture, a capture that verifies is
    # in place at every step but one (the fallback's gap between its two renames).
    if mode == "swap" or (mode == "renames" and step != "between-renames"):
        assert manifest.read_folder(sidecar).lock_path.read_text() == want
    missing = not os.path.lexists(sidecar)
    assert missing == (step == "between-renames" or (mode == "fresh" and step != "after-swap"))
    # every kill leaves a folder behind, but that of a first capture after its rename; the old
    # capture is renamed aside (.old-*) by the fallback only, the swap moves it to the temp name
    left = [p.name for p in fsutil.leftovers(tmp_path, sidecar.name)]
    assert bool(left) == (mode != "fresh" or step != "after-swap")
    aside = any(".old-" in name for name in left)
    assert aside == (mode == "renames" and expected(mode, step) == NEW), left

    # As any command finds it: recovered, then read and verified.
    if want is None:
        with pytest.raises(InvalidCapture, match="no capture beside this model"):
            manifest.read(sidecar)
    else:
        assert manifest.read(sidecar).lock_path.read_text() == want
    assert ("put back" in capsys.readouterr().err) == (missing and want is not None)
    assert fsutil.leftovers(tmp_path, sidecar.name) == []

    # The next capture succeeds and leaves nothing beside the model but itself.
    writer.write_capture(m, fill_with(NEXT))
    assert manifest.read(sidecar).lock_path.read_text() == NEXT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5", "m.h5.envrepro"]


def test_a_killed_capture_is_recovered_by_the_next_capture_too(tmp_path, capsys):
    """The writer recovers before it writes: the gap of the fallback closed by the next capture."""
    m = make_model(tmp_path)
    writer.write_capture(m, fill_with(OLD))
    assert kill_capture_at("between-renames", m, NEW, fallback=True).returncode == -signal.SIGKILL
    writer.write_capture(m, fill_with(NEXT))
    assert "put back a complete capture" in capsys.readouterr().err
    assert manifest.read(layout.sidecar_for(m)).lock_path.read_text() == NEXT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5", "m.h5.envrepro"]
