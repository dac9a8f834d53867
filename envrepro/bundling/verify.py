"""Check a bundle from its first byte to its last while staging it in a fresh folder.

Every byte is untrusted. The first member must be the manifest (``layout.parse`` checks it);
then every member must be safe (``extract.check``), listed, of its listed type, and a file's
size and sha256 must match while it is copied; nothing may be missing, added or listed twice;
the padding after each file and the end of the archive must be zeros (so a truncated or
appended-to file is refused too). Anything else: ``BundleError``, one line naming the bundle and
what is wrong. Nothing is put in place here: the caller moves the staged files only after
``stage`` returned.
"""
from __future__ import annotations

import tarfile
from pathlib import Path
from typing import BinaryIO, Optional, Set

from envrepro.bundling import extract
from envrepro.bundling.members import MANIFEST_MAX, MANIFEST_NAME, BundleError, BundleManifest, parse

FIX = "copy the bundle again from its source, or write it again with `envrepro bundle`"
BLOCK = tarfile.BLOCKSIZE


def starts_with_manifest(path: "str | Path") -> bool:
    """The file's first tar header names the bundle manifest (a cheap test; ``stage`` checks)."""
    try:
        with open(path, "rb") as f:
            header = f.read(BLOCK)
        info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    except (OSError, tarfile.TarError, ValueError):
        return False
    return info.name == MANIFEST_NAME and info.isreg()


def _zeros(raw: BinaryIO, start: int, end: Optional[int]) -> bool:
    raw.seek(start)
    left = None if end is None else end - start
    while left is None or left > 0:
        chunk = raw.read(1 << 20 if left is None else min(1 << 20, left))
        if not chunk:
            return left is None or left == 0
        if chunk.count(0) != len(chunk):
            return False
        if left is not None:
            left -= len(chunk)
    return True


def stage(bundle: Path, staging: Path, use_filter: Optional[bool] = None) -> BundleManifest:
    """Verify ``bundle`` and copy its members into the empty folder ``staging``; its manifest."""
    name = str(bundle)

    def refuse(why: str) -> BundleError:
        return BundleError(why, name, FIX)

    try:
        with open(bundle, "rb") as f, open(bundle, "rb") as raw:
            try:
                tar = tarfile.open(fileobj=f, mode="r:")
            except tarfile.TarError:
                raise refuse("not a tar file (or an empty one)") from None
            with tar:
                return _stage(tar, raw, staging, name, refuse, use_filter)
    except BundleError:
        raise
    except extract.Refused as e:
        raise refuse(f"unsafe member, nothing extracted: {e}") from None
    except (tarfile.TarError, EOFError) as e:
        raise refuse(f"truncated or damaged ({str(e)[:80] or type(e).__name__})") from None
    except OSError as e:
        raise BundleError(f"can't read or stage the bundle ({e.strerror or e})", name,
                          "check the file and free space beside it") from None


def _stage(tar: tarfile.TarFile, raw: BinaryIO, staging: Path, name: str, refuse, use_filter) -> BundleManifest:
    first = tar.next()
    if first is None or first.name != MANIFEST_NAME or not first.isreg():
        raise refuse(f"not an envrepro bundle ({MANIFEST_NAME} is not its first member)")
    if first.size > MANIFEST_MAX:
        raise refuse(f"{MANIFEST_NAME} is implausibly large ({first.size} bytes)")
    src = tar.extractfile(first)
    data = src.read() if src else b""
    if len(data) != first.size:
        raise refuse("truncated (in its manifest)")
    _padding(raw, first, refuse)
    manifest = parse(data, name)
    listed = {m.name: m for m in manifest.members}
    seen: Set[str] = set()
    dest = str(staging)
    while True:
        member = tar.next()
        if member is None:
            break
        extract.check(member, dest, use_filter)
        want = listed.get(member.name)
        if want is None:
            raise refuse(f"member {member.name[:80]!r} is not listed in the manifest (added after the "
                         "bundle was written)")
        if member.name in seen:
            raise refuse(f"member {member.name[:80]!r} appears twice")
        seen.add(member.name)
        if (want.type == "dir") != member.isdir():
            raise refuse(f"member {member.name[:80]!r} is a {extract.kind_of(member)}, the manifest "
                         f"says {want.type}")
        if member.isreg() and member.size != want.size:
            raise refuse(f"member {member.name[:80]!r} has {member.size} bytes, the manifest says "
                         f"{want.size} (damaged or edited)")
        size, digest = extract.write(tar, member, dest)
        if member.isreg():
            if size != want.size:
                raise refuse(f"truncated (member {member.name[:80]!r} ends early)")
            if digest != want.sha256:
                raise refuse(f"member {member.name[:80]!r} does not match its sha256 in the manifest "
                             "(damaged or tampered with)")
            _padding(raw, member, refuse)
    missing = [n for n in listed if n not in seen]
    if missing:
        raise refuse(f"incomplete: {len(missing)} listed member(s) missing, first {missing[0][:80]!r} "
                     "(truncated?)")
    end = tar.offset
    raw.seek(0, 2)
    total = raw.tell()
    # envrepro writes (as tarfile and GNU tar do) two zero blocks, then zeros up to a whole
    # record: a bundle of any other length was cut short or appended to
    want = -(-(end + 2 * BLOCK) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE
    if total < want:
        raise refuse("truncated (no end-of-archive marker)" if total - end < 2 * BLOCK
                     else "truncated (its last record is cut short)")
    if total > want:
        raise refuse("damaged or appended to (data after the end of the archive)")
    if not _zeros(raw, end, None):
        raise refuse("damaged or appended to (data after the last member)")
    return manifest


def _padding(raw: BinaryIO, member: tarfile.TarInfo, refuse) -> None:
    start = member.offset_data + member.size
    end = member.offset_data + -(-member.size // BLOCK) * BLOCK
    if end > start and not _zeros(raw, start, end):
        raise refuse(f"damaged (bytes after member {member.name[:80]!r} are not zeros)")


