"""Write one tar member into a staging folder, safely: only regular files and folders, only
inside the destination, never through a link, never over an existing file.

Every member first goes through tarfile's ``data`` filter where this Python has it (3.12, and the
backports in 3.8.17+, 3.9.17+, 3.10.12+, 3.11.4+), then through the same checks made by hand
(``manual_check``): where the filter is missing they are the only ones. Nothing is extracted by
tarfile itself: files are copied from ``extractfile`` into a fresh file (``O_EXCL|O_NOFOLLOW``)
while they are hashed, so what is checked is exactly what was written.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
from typing import Optional, Tuple

_CHUNK = 1 << 20


class Refused(Exception):
    """A member that must not be extracted; the message says why (one line)."""


def has_data_filter() -> bool:
    return hasattr(tarfile, "data_filter")


def kind_of(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link (to {member.linkname[:80]!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname[:80]!r})"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    if member.issparse():
        return "a sparse file"
    if member.isreg() or member.isdir():
        return "file" if member.isreg() else "folder"
    return "an unknown kind of member"


def manual_check(member: tarfile.TarInfo, dest: str) -> None:
    """The data filter's checks, by hand: no absolute path, no ``..``, nothing resolving outside
    ``dest``, no link, device, FIFO or other special member."""
    name = member.name
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise Refused(f"member {name[:80]!r} has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise Refused(f"member {name[:80]!r} leads out of the destination (..)")
    real_dest = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(real_dest, name))
    if os.path.commonpath([target, real_dest]) != real_dest:
        raise Refused(f"member {name[:80]!r} would be written outside the destination")
    what = kind_of(member)
    if what not in ("file", "folder"):
        raise Refused(f"member {name[:80]!r} is {what}: a bundle holds only files and folders")


def check(member: tarfile.TarInfo, dest: str, use_filter: Optional[bool] = None) -> None:
    """Refused unless ``member`` is safe to write under ``dest``."""
    what = kind_of(member)
    if what not in ("file", "folder"):      # named first: the clearest reason
        raise Refused(f"member {member.name[:80]!r} is {what}: a bundle holds only files and folders")
    if use_filter is None:
        use_filter = has_data_filter()
    if use_filter:
        try:
            tarfile.data_filter(member, dest)  # type: ignore[attr-defined]
        except tarfile.FilterError as e:  # type: ignore[attr-defined]
            raise Refused(f"member {member.name[:80]!r} refused by tarfile's data filter "
                          f"({type(e).__name__}: it would leave the destination)") from None
    manual_check(member, dest)


def write(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: str) -> Tuple[int, str]:
    """Write a checked member under ``dest``: (size, sha256) of a file's bytes, (0, "") for a folder."""
    real_dest = os.path.realpath(dest)
    target = os.path.join(real_dest, member.name)
    parent = os.path.dirname(target)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    if os.path.realpath(parent) != parent:     # a link on the way: never write through it
        raise Refused(f"member {member.name[:80]!r} would be written through a link")
    if member.isdir():
        if os.path.lexists(target) and not (os.path.isdir(target) and not os.path.islink(target)):
            raise Refused(f"member {member.name[:80]!r} is a folder where a file already is")
        os.makedirs(target, mode=0o755, exist_ok=True)
        return 0, ""
    src = tar.extractfile(member)
    if src is None:
        raise Refused(f"member {member.name[:80]!r} has no data")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except FileExistsError:
        raise Refused(f"member {member.name[:80]!r} appears twice") from None
    h, size = hashlib.sha256(), 0
    with os.fdopen(fd, "wb") as out:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return size, h.hexdigest()
