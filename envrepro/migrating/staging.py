"""The folders a migration's containers write into, and what the host accepts back from them.

Each side (source, target) gets one empty folder of its own, bind-mounted writable at
``/envrepro/out``; nothing else of the host is writable in the sandbox. What comes back was
written by the model's environment, with the model's code loaded: it is read as untrusted bytes.
:func:`accepted` walks it without following anything: only regular files and folders, names of
printable characters, bounded in count and size; anything else refuses the whole folder, naming
the entry. Only accepted folders are mounted into the next side or copied into ``OUT``, and
copying makes plain files owned by the user (:func:`copy_accepted`).
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator, List, Tuple

from envrepro import errors

MAX_BYTES = int(os.environ.get("ENVREPRO_MIGRATE_MAX_BYTES", str(8 << 30)))
MAX_ENTRIES = 100_000
MAX_DEPTH = 16


class Refused(errors.EnvreproError):
    """A container wrote something the host does not take back."""

    exit_code = errors.EXIT_INTERNAL


def new_folder(prefix: str) -> Path:
    """An empty folder the sandbox user can write (it is a bind mount of its own: the folders
    above it are not reachable from the container)."""
    path = Path(tempfile.mkdtemp(prefix=f"envrepro-migrate-{prefix}-"))
    os.chmod(path, 0o777)
    return path


def _entries(root: Path) -> Iterator[Tuple[Path, os.stat_result, int]]:
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                p = Path(entry.path)
                st = os.lstat(p)
                yield p, st, depth
                if stat.S_ISDIR(st.st_mode):
                    stack.append((p, depth + 1))


def accepted(root: Path, what: str) -> List[Path]:
    """The relative paths of ``root``'s files, or Refused naming the first thing not taken."""
    files: List[Path] = []
    total = count = 0
    for p, st, depth in _entries(root):
        rel = p.relative_to(root)
        count += 1
        name = p.name
        if not name.isprintable() or name in (".", "..") or "\\" in name:
            raise Refused(f"the {what} wrote a file name envrepro does not take: {str(rel)!r}", str(root))
        if stat.S_ISLNK(st.st_mode) or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise Refused(f"the {what} wrote {rel}, which is not a regular file or folder", str(root))
        if depth >= MAX_DEPTH:
            raise Refused(f"the {what} wrote folders nested deeper than {MAX_DEPTH}", str(root))
        if count > MAX_ENTRIES:
            raise Refused(f"the {what} wrote more than {MAX_ENTRIES} files", str(root))
        if stat.S_ISREG(st.st_mode):
            total += st.st_size
            if total > MAX_BYTES:
                raise Refused(f"the {what} wrote more than {MAX_BYTES >> 20} MiB", str(root),
                              "raise ENVREPRO_MIGRATE_MAX_BYTES for a model this large")
            files.append(rel)
    return sorted(files)


def copy_accepted(root: Path, rel: Path, dest: Path) -> None:
    """Copy one accepted file or folder (``rel`` under ``root``) to ``dest``: contents only,
    re-checked as it goes (a folder is copied file by file, nothing followed)."""
    src = root / rel
    st = os.lstat(src)
    if stat.S_ISDIR(st.st_mode):
        dest.mkdir(parents=True, exist_ok=True)
        for f in accepted(src, "migration"):
            target = dest / f
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy_file(src / f, target)
    elif stat.S_ISREG(st.st_mode):
        dest.parent.mkdir(parents=True, exist_ok=True)
        _copy_file(src, dest)
    else:
        raise Refused(f"{rel} is not a regular file or folder", str(root))


def _copy_file(src: Path, dest: Path) -> None:
    fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fin, open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def remove(path: Path) -> None:
    """Remove a staging folder (the runtime writes with umask 0, so the host may delete it)."""
    shutil.rmtree(path, ignore_errors=True)
