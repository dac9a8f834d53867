"""THE capture transaction: how a capture reaches disk, whoever made its content.

A capture is written into a temporary sibling folder and renamed into place only when complete,
its manifest last (holding the sha256 of every other file). So a capture killed at any point
reads as the old capture, the new one, or incomplete, never as half of one; two captures of one
model serialise on a file lock. The crash-safe primitives are in ``envrepro.fsutil``.
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
from envrepro.fsutil import atomic_write_text, cleanup_stale, file_lock, replace_dir, sha256_file
from envrepro.sidecar.layout import MANIFEST, SCHEMA, sidecar_for
from envrepro.sidecar.manifest import dump


@dataclass
class Written:
    """A capture now on disk."""

    sidecar: Path
    manifest: Dict[str, Any]        # as written, ``files`` and ``schema`` filled in
    seconds: float                  # spent writing the manifest and moving the folder in


def write_capture(model_path: Path, fill: Callable[[Path], Dict[str, Any]]) -> Written:
    """Write the capture of ``model_path``: ``fill(folder)`` writes the capture's files into the
    (temporary) folder and returns the manifest data; the manifest goes last, then the folder
    replaces the previous capture. Any failure, an interrupt included, removes the temporary
    folder and leaves the previous capture as it was."""
    sidecar = sidecar_for(model_path)
    parent = sidecar.parent
    if not os.access(parent, os.W_OK):
        raise CaptureError("folder is not writable, the capture can't be written beside the model",
                           str(parent), "copy the model somewhere writable")
    with file_lock(parent / f".{sidecar.name}.lock"):
        cleanup_stale(parent, sidecar.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sidecar.name}.tmp-", dir=str(parent)))
        try:
            data = fill(tmp)
            t = time.perf_counter()
            data = write_manifest(tmp, data)
            replace_dir(tmp, sidecar)
            seconds = time.perf_counter() - t
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
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
