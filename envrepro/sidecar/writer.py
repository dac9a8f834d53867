"""THE capture transaction: how a capture reaches disk, whoever made its content.

A capture is written into a temporary sibling folder and swapped into place only when complete,
its manifest last (holding the sha256 of every other file). So a capture killed at any point
leaves the old capture or the new one in place, never half of one, and what it leaves beside it
is recovered (``recovery``) before the next capture or read; two captures of one model serialise
on a file lock. The crash-safe primitives are in ``envrepro.fsutil``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict

from envrepro.errors import CaptureError, InvalidCapture
from envrepro.fsutil import TMP_TAG, atomic_write_text, crash_point, file_lock, replace_dir, sha256_file
from envrepro.sidecar import recovery
from envrepro.sidecar.layout import MANIFEST, SCHEMA, sidecar_for
from envrepro.sidecar.manifest import dump

# The steps of the transaction, in order, where ENVREPRO_TEST_CRASH_AT=<step> kills the process
# (``fsutil.crash_point``; tests/unit/sidecar/test_crash_safety.py kills a capture at each). Killed up to
# ``before-swap``, the old capture is the one in place; from ``between-renames`` (the fallback
# when the folders can't be swapped in one step: recovery finishes the move) on, the new one.
# ``atomic-write:*`` are the steps of every atomic file write: the first such write of a capture
# is its manifest unless ``fill`` makes one (the real capture writes its lock so).
CRASH_STEPS = (
    "tmp-created",              # the temp folder exists, empty; ``fill`` writes into it next
    "atomic-write:written",     # the manifest's temp file written, not fsynced
    "atomic-write:fsynced",
    "atomic-write:renamed",     # the manifest in place in the temp folder, the folder not fsynced
    "before-fsync-tree",
    "before-swap",              # every file and folder fsynced
    "between-renames",          # fallback only: the old capture renamed aside, the new not in
    "after-swap",               # the new capture in place, the parent folder not fsynced
    "before-old-removal",
    "removing-old",             # after each entry of the old capture removed
)


@dataclass
class Written:
    """A capture now on disk."""

    sidecar: Path
    manifest: Dict[str, Any]        # as written, ``files`` and ``schema`` filled in
    seconds: float                  # spent writing the manifest and moving the folder in


def write_capture(model_path: Path, fill: Callable[[Path], Dict[str, Any]]) -> Written:
    """Write the capture of ``model_path``: ``fill(folder)`` writes the capture's files into the
    (temporary) folder and returns the manifest data; the manifest goes last, then the folder
    replaces the previous capture. What a killed capture left is recovered first. Any failure,
    an interrupt included, removes the temporary folder and leaves the previous capture as it
    was; a kill leaves the old or the new capture in place (see CRASH_STEPS)."""
    sidecar = sidecar_for(model_path)
    parent = sidecar.parent
    if not os.access(parent, os.W_OK):
        raise CaptureError("folder is not writable, the capture can't be written beside the model",
                           str(parent), "copy the model somewhere writable")
    with file_lock(recovery.lock_path(sidecar)):
        kept = recovery.recover_locked(sidecar)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sidecar.name}{TMP_TAG}", dir=str(parent)))
        crash_point("tmp-created")
        try:
            data = fill(tmp)
            t = time.perf_counter()
            data = write_manifest(tmp, data)
            replace_dir(tmp, sidecar)
            seconds = time.perf_counter() - t
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)   # the new capture, or after the swap the old
            raise
        if kept:        # the capture now verifies: the earlier ones kept beside it can go
            recovery.recover_locked(sidecar)
    return Written(sidecar=sidecar, manifest=data, seconds=seconds)


def list_files(root: Path) -> Dict[str, str]:
    """sha256 of every file below root except the manifest (for ``files:``)."""
    out: Dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            raise InvalidCapture("symbolic link inside the capture", str(p), "remove it")
        if p.is_file() and p.name != MANIFEST:
            out[p.relative_to(root).as_posix()] = sha256_file(p)
    return out


def write_manifest(root: Path, data: Dict[str, Any]) -> Dict[str, Any]:
    """Fill ``files`` from disk and write the manifest atomically (the last write of a capture)."""
    data = dict(data)
    data["schema"] = SCHEMA
    data["files"] = list_files(root)
    atomic_write_text(root / MANIFEST, dump(data))
    return data
