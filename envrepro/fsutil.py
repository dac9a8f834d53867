"""Crash-safe file operations: atomic writes, folder fsync, folder swaps, a capture lock, hashes.

Captures are written into a temporary sibling folder and swapped into place; the manifest goes
last and holds the hashes of everything else, so a capture killed at any point leaves the old
capture or the new one in place - never half of one - and its leftovers are recovered by
``envrepro.sidecar.recovery``.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import platform
import secrets
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]
_CHUNK = 1 << 20
# Beside ``<name>``: ``.<name>.tmp-*`` is a capture being written (or, after a swap, the old one
# being removed); ``.<name>.old-*`` is the old capture renamed aside (when no swap is possible).
TMP_TAG = ".tmp-"
OLD_TAG = ".old-"


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
            crash_point("atomic-write:written")
            os.fsync(f.fileno())
        crash_point("atomic-write:fsynced")
        os.replace(tmp, path)
        crash_point("atomic-write:renamed")
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
    """Move a fully written temp folder into place, replacing the folder there.

    Linux swaps the two in one step (renameat2 RENAME_EXCHANGE): there is no instant without the
    old or the new folder at ``final_dir``; the old one, now at the temp name, is then removed.
    Where no swap is possible (not Linux, an old kernel, a filesystem without it) the old folder
    is renamed aside to ``.<name>.old-*`` first: a kill between that rename and the next leaves
    both beside the model, the new one complete, and ``envrepro.sidecar.recovery`` finishes the
    move. The caller holds the capture lock; ``crash_point`` names each step (writer.CRASH_STEPS).
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    make_readable(tmp_dir)
    crash_point("before-fsync-tree")
    fsync_tree(tmp_dir)
    crash_point("before-swap")
    if not os.path.lexists(str(final_dir)):
        os.rename(str(tmp_dir), str(final_dir))
        crash_point("after-swap")
        fsync_dir(final_dir.parent)
        return
    if exchange(tmp_dir, final_dir):
        old = tmp_dir                           # the old capture, under the temp name
    else:
        old = final_dir.with_name(f".{final_dir.name}{OLD_TAG}{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(str(final_dir), str(old))
        try:
            crash_point("between-renames")
            os.rename(str(tmp_dir), str(final_dir))
        except BaseException:
            with contextlib.suppress(OSError):
                rename_noreplace(old, final_dir)   # put the old one back
            raise
    crash_point("after-swap")
    fsync_dir(final_dir.parent)
    crash_point("before-old-removal")
    remove_tree(old)


def remove_tree(path: PathLike) -> None:
    """Remove a folder (a link is removed, never followed), entry by entry; errors are ignored."""
    path = str(path)
    if os.path.islink(path):
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(path)):
            entry = os.path.join(path, name)
            if os.path.isdir(entry) and not os.path.islink(entry):
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry)
            crash_point("removing-old")
    shutil.rmtree(path, ignore_errors=True)


# renameat2(2): swap two paths in one step (Linux 3.15+; glibc 2.28+ has the wrapper).
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_SYS_RENAMEAT2 = {"x86_64": 316, "amd64": 316, "aarch64": 276, "arm64": 276}
# The kernel or the filesystem can't do it: fall back to plain renames. (EPERM: container
# seccomp profiles that predate renameat2 refuse it so.)
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EPERM, errno.ENOTSUP,
                getattr(errno, "EOPNOTSUPP", errno.ENOTSUP)}
_RENAMEAT2: list = []


def _renameat2() -> Optional[Callable[[bytes, bytes, int], int]]:
    """``renameat2(AT_FDCWD, a, AT_FDCWD, b, flags)`` as a function returning 0 or an errno;
    None off Linux or without ctypes."""
    if _RENAMEAT2:
        return _RENAMEAT2[0]
    fn = None
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            c_fn = getattr(libc, "renameat2", None)
            if c_fn is not None:
                c_fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                 ctypes.c_uint]
                c_fn.restype = ctypes.c_int

                def call(a: bytes, b: bytes, flags: int) -> int:
                    return 0 if c_fn(_AT_FDCWD, a, _AT_FDCWD, b, flags) == 0 else ctypes.get_errno()
                fn = call
            elif platform.machine().lower() in _SYS_RENAMEAT2:
                nr = _SYS_RENAMEAT2[platform.machine().lower()]
                syscall = libc.syscall
                syscall.restype = ctypes.c_long

                def call(a: bytes, b: bytes, flags: int) -> int:
                    rc = syscall(ctypes.c_long(nr), ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(a),
                                 ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(b), ctypes.c_uint(flags))
                    return 0 if rc == 0 else ctypes.get_errno()
                fn = call
        except (ImportError, OSError, AttributeError):
            fn = None
    _RENAMEAT2.append(fn)
    return fn


def exchange(a: PathLike, b: PathLike) -> bool:
    """Swap the entries at ``a`` and ``b`` in one step. False when this system or filesystem
    can't (nothing moved: the caller falls back); other failures raise OSError.
    ENVREPRO_TEST_NO_EXCHANGE=1 forces the fallback (tests)."""
    fn = _renameat2()
    if fn is None or os.environ.get("ENVREPRO_TEST_NO_EXCHANGE") == "1":
        return False
    err = fn(os.fsencode(str(a)), os.fsencode(str(b)), _RENAME_EXCHANGE)
    if err == 0:
        return True
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def rename_noreplace(src: PathLike, dst: PathLike) -> None:
    """Rename ``src`` to ``dst``, refusing (FileExistsError) when ``dst`` exists, even as a link or
    an empty folder: in one step where renameat2 allows, else checked just before."""
    fn = _renameat2()
    if fn is not None and os.environ.get("ENVREPRO_TEST_NO_EXCHANGE") != "1":
        err = fn(os.fsencode(str(src)), os.fsencode(str(dst)), _RENAME_NOREPLACE)
        if err == 0:
            return
        if err not in _UNSUPPORTED:
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    if os.path.lexists(str(dst)):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(str(src), str(dst))


def crash_point(step: str) -> None:
    """Test hook: with ENVREPRO_TEST_CRASH_AT=<step> the process is killed (SIGKILL: no cleanup
    runs) when it reaches ``step``. The steps of a capture are ``writer.CRASH_STEPS``."""
    if os.environ.get("ENVREPRO_TEST_CRASH_AT") == step:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


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


def leftovers(parent: PathLike, name: str) -> List[Path]:
    """The temp (``.<name>.tmp-*``) and aside (``.<name>.old-*``) folders that captures of
    ``name`` left behind, sorted; links are not leftovers (never followed, never removed)."""
    out = []
    prefixes = (f".{name}{TMP_TAG}", f".{name}{OLD_TAG}")
    try:
        entries = list(os.scandir(str(parent)))
    except OSError:
        return []
    for entry in entries:
        if entry.name.startswith(prefixes) and entry.is_dir(follow_symlinks=False):
            out.append(Path(entry.path))
    return sorted(out)


@contextlib.contextmanager
def file_lock(path: PathLike, blocking: bool = True) -> Iterator[bool]:
    """An exclusive advisory lock on ``path``, created if missing; yields True once held. With
    ``blocking=False`` it yields False at once when another process holds it.

    On POSIX the lock file is removed on release, so a capture leaves nothing beside the model
    but its sidecar. A waiter whose lock is on a file the holder has since removed tries again
    on the file now at ``path``, so two holders never hold two different files.
    """
    if os.name != "posix":  # pragma: no cover - Windows: can't remove an open file
        import msvcrt

        fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)
            except OSError:
                if blocking:
                    raise
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the lock
        return
    import fcntl

    while True:
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
            current = os.stat(str(path))
        except FileNotFoundError:
            os.close(fd)
            continue
        except BlockingIOError:
            os.close(fd)
            fd = -1
        except BaseException:
            os.close(fd)
            raise
        if fd == -1 or os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)
    if fd == -1:
        yield False
        return
    try:
        yield True
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
