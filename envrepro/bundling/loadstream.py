"""The stream ``docker load`` gets for an image bundle, instead of its archive: a new tar holding
only the config, the layers and a ``manifest.json`` written here with ``RepoTags: null``, so
docker can load the image only untagged, by id (the caller tags it). Every blob is hashed again
as it is streamed from the staged archive ``bundling.imagearchive.read`` checked; one that
changed meanwhile breaks the stream and docker loads nothing.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import Any, Iterator, List, Tuple

from envrepro.bundling.imagearchive import Blob, ImageArchive, refuse, shown

_CHUNK = 1 << 20


def _header(name: str, size: int, mode: int = 0o644, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type, info.mtime = (size if kind == tarfile.REGTYPE else 0), mode, kind, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _pad(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def sanitised_manifest(archive: ImageArchive) -> Tuple[bytes, List[Tuple[str, Blob]]]:
    """The ``manifest.json`` written for ``docker load`` (no tags) and the members it names."""
    config_name = archive.config.sha256 + ".json"
    members: List[Tuple[str, Blob]] = [(config_name, archive.config)]
    names: List[str] = []
    for blob in archive.layers:
        name = f"{blob.sha256}/layer.tar"
        names.append(name)
        if name not in dict(members):
            members.append((name, blob))
    manifest = [{"Config": config_name, "RepoTags": None, "Layers": names}]
    return json.dumps(manifest, separators=(",", ":")).encode("ascii"), members


def _chunks(archive: ImageArchive, bundle: str) -> Iterator[bytes]:
    manifest, members = sanitised_manifest(archive)
    with open(archive.path, "rb") as f:
        for name, blob in members:
            if name.endswith("/layer.tar"):
                yield _header(name.split("/")[0], 0, 0o755, tarfile.DIRTYPE)
            yield _header(name, blob.size)
            f.seek(blob.offset)
            h, left = hashlib.sha256(), blob.size
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
                yield chunk
            if left or h.hexdigest() != blob.sha256:
                # docker gets a truncated archive and loads nothing
                raise refuse(bundle, f"changed while it was loaded (member {shown(blob.name)})")
            yield _pad(blob.size)
    yield _header("manifest.json", len(manifest)) + manifest + _pad(len(manifest))
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


class _Stream(io.RawIOBase):
    """A read-only binary file over an iterator of byte chunks (not seekable: requests streams
    it to the engine with chunked transfer encoding)."""

    def __init__(self, chunks: Iterator[bytes]):
        super().__init__()
        self._chunks = chunks
        self._view = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not len(self._view):
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._view = memoryview(chunk)
        n = min(len(b), len(self._view))
        b[:n] = self._view[:n]
        self._view = self._view[n:]
        return n


def sanitised(archive: ImageArchive, bundle: str) -> io.RawIOBase:
    """What ``docker load`` reads: the config, the layers and a manifest.json naming no tag."""
    return _Stream(_chunks(archive, bundle))
