"""Crash-safe file operations: atomic writes, folder fsync, a capture lock, content hashes.

Captures are written into a temporary sibling folder and renamed into place; the manifest goes
last and holds the hashes of everything else, so a capture killed at any point reads as the old
capture, the new one, or incomplete - never as half of one.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]
_CHUNK = 1 << 20


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_tree(path: PathLike) -> str:
    """Hash a file, or a folder as the sorted list of (relative path, file hash, link target)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for root, dirs, files in os.walk(p):
        dirs.sort()
        for name in sorted(files):
            full = Path(root, name)
            rel = full.relative_to(p).as_posix()
            h.update(rel.encode() + b"\0")
            if full.is_symlink():
                h.update(b"link:" + os.readlink(full).encode() + b"\0")
            else:
                h.update(sha256_file(full).encode() + b"\n")
    return h.hexdigest()


def fsync_dir(path: PathLike) -> None:
    if os.name != "posix":
        return
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Temp file in the same folder, write, flush, fsync, os.replace, fsync the folder."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_tree(path: PathLike) -> None:
    """fsync every file and folder below path (before it is renamed into place)."""
    for root, dirs, files in os.walk(str(path)):
        for name in files:
            full = os.path.join(root, name)
            if os.path.islink(full):
                continue
            with open(full, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(root)


def replace_dir(tmp_dir: PathLike, final_dir: PathLike) -> None:
    """Move a fully written temp folder into place, keeping the old one until the new one is in.

    rename() can't replace a non-empty folder, so the old capture is first renamed aside, then
    the new one in, then the old one removed. A crash between the two renames leaves the old
    capture under ``<name>.old-*``, which readers ignore and the next capture cleans up.
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    make_readable(tmp_dir)
    fsync_tree(tmp_dir)
    old = None
    if final_dir.exists() or final_dir.is_symlink():
        old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    fsync_dir(final_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def make_readable(root: PathLike) -> None:
    """mkdtemp/mkstemp create 0700/0600 entries; a capture must be readable like the model beside
    it (the load sandbox runs as another uid). Honour the umask, as a plain mkdir would."""
    umask = os.umask(0)
    os.umask(umask)
    for cur, _dirs, files in os.walk(str(root)):
        os.chmod(cur, 0o777 & ~umask)
        for name in files:
            full = os.path.join(cur, name)
            if not os.path.islink(full):
                os.chmod(full, 0o666 & ~umask)


def cleanup_stale(parent: PathLike, name: str) -> None:
    """Remove temp/old folders a killed capture of ``name`` left behind."""
    for entry in Path(parent).glob(f".{name}.*"):
        if entry.name.endswith(".lock"):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: PathLike) -> Iterator[None]:
    """An exclusive advisory lock (blocking) on ``path``, created if missing.

    On POSIX the lock file is removed on release, so a capture leaves nothing beside the model
    but its sidecar. A waiter whose lock is on a file the holder has since removed tries again
    on the file now at ``path``, so two holders never hold two different files.
    """
    if os.name != "posix":  # pragma: no cover - Windows: can't remove an open file
        import msvcrt

        fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
            yield
        finally:
            os.close(fd)  # closing releases the lock
        return
    import fcntl

    while True:
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = os.stat(str(path))
        except FileNotFoundError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        if os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(str(path))
        os.close(fd)  # closing releases the lock


def is_within(path: PathLike, root: PathLike) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
        return True
    except ValueError:
        return False
