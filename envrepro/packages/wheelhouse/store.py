"""The host wheelhouse: a content-addressed cache of the files environment images are installed
from (``$XDG_CACHE_HOME/envrepro/wheels``, default ``~/.cache/envrepro/wheels``).

A file lives at ``sha256/<aa>/<sha256>/<file name>`` and is only ever added after its sha256 was
computed while it was written and, for a hashed lock entry, found among the hashes the lock pins.
So a lock's ``--hash=sha256:...`` values are the keys: "is it here?" is one ``stat`` per hash, and
two locks that pin the same file share it. Nothing is ever modified in place: an entry appears by
an atomic rename of a complete, verified file, so a killed fetch leaves only a temporary file in
``tmp/`` (removed by the next fetch that finds it old).

Two small records sit beside the files:

- ``built/<target>/<sdist sha256>-<toolset>.json``: the wheel built here from a source-only pin
  for one target (base image + Python) with one set of build tools, so each sdist is built once
  per target and toolset (``envrepro.packages.wheelhouse.sdists``);
- ``unhashed/<target>/<name>-<version>.json``: the file this host fetched from its index for a pin
  the lock gives no hash for;
- ``imported/<capture scope>/built|unhashed/...``: the same two, written by a bundle's import for
  the one capture it carried (``portable.scope_of``), and read only by that capture's builds;
- ``targets/<base digest>.json``: the platform a base image accepts (``envrepro.packages.wheelhouse.target``).

Everything here can be deleted; it is fetched or built again when needed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional

from envrepro import config
from envrepro.fsutil import atomic_write_text, sha256_file

_HEX = re.compile(r"^[0-9a-f]{64}$")
_RECORD_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+:-]{0,200}$")
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*\.(whl|tar\.gz|zip|tar\.bz2|tgz)$")
STALE_TMP_SECONDS = 24 * 3600


class StoreError(Exception):
    """A file whose content is not what its key says (never added)."""


def is_sha256(value: str) -> bool:
    return bool(_HEX.match(value))


def safe_filename(name: str) -> bool:
    """A distribution file name we are willing to store and mount (no paths, no oddities)."""
    return bool(_FILENAME.match(name)) and ".." not in name and len(name) < 256


def digests(hashes: Iterable[str]) -> list:
    """The sha256 hex digests of ``--hash`` values (``sha256:<hex>``); other algorithms ignored."""
    out = []
    for h in hashes:
        algo, _, hexd = str(h).partition(":")
        if algo == "sha256" and is_sha256(hexd.lower()):
            out.append(hexd.lower())
    return out


class WheelStore:
    """The wheelhouse folder. Safe to use from several processes at once (atomic renames)."""

    def __init__(self, root: Optional[Path] = None):
        self.root = Path(root) if root is not None else config.cache_dir() / "wheels"

    # -- files ------------------------------------------------------------------------------
    def _folder(self, sha: str) -> Path:
        return self.root / "sha256" / sha[:2] / sha

    def get(self, sha: str) -> Optional[Path]:
        """The stored file whose sha256 is ``sha``, or None."""
        if not is_sha256(sha):
            return None
        folder = self._folder(sha)
        try:
            names = [n for n in os.listdir(folder) if not n.startswith(".")]
        except OSError:
            return None
        return folder / names[0] if len(names) == 1 and safe_filename(names[0]) else None

    def find(self, hashes: Iterable[str], accept: Optional[Callable[[str], bool]] = None) -> Optional[Path]:
        """The first stored file among a lock entry's ``--hash`` values that ``accept`` takes (by
        file name: a wheel for the image's platform, ``Target.accepts``)."""
        for sha in digests(hashes):
            found = self.get(sha)
            if found is not None and (accept is None or accept(found.name)):
                return found
        return None

    def tmp_dir(self) -> Path:
        """A private temporary folder on the store's file system (for downloads and builds)."""
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        self._clean_stale(tmp)
        return Path(tempfile.mkdtemp(prefix="fetch-", dir=tmp))

    @staticmethod
    def _clean_stale(tmp: Path) -> None:
        now = time.time()
        for p in tmp.iterdir():
            try:
                if now - p.stat().st_mtime > STALE_TMP_SECONDS:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
            except OSError:
                pass

    def add(self, path: Path, allowed: Optional[Iterable[str]] = None, name: Optional[str] = None) -> Path:
        """Move the file at ``path`` into the store under its sha256 (computed here) and return
        its stored path. ``allowed``: the sha256 digests it must have (a lock entry's hashes);
        StoreError when it has none of them, or its name is not a distribution file name."""
        name = name or path.name
        if not safe_filename(name):
            raise StoreError(f"{name!r} is not a distribution file name")
        sha = sha256_file(path)
        if allowed is not None:
            allowed = set(allowed)
            if sha not in allowed:
                raise StoreError(f"{name} has sha256 {sha[:16]}..., which the lock does not pin "
                                 f"({', '.join(sorted(a[:16] + '...' for a in allowed)) or 'no sha256'})")
        existing = self.get(sha)
        if existing is not None:
            return existing
        folder = self._folder(sha)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="." + sha[:8], dir=folder.parent))
        try:
            link_or_copy(path, staging / name)
            with open(staging / name, "rb") as f:
                os.fsync(f.fileno())
            try:
                os.rename(staging, folder)
            except OSError:      # another process stored the same file first
                if self.get(sha) is None:
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder / name

    # -- records ----------------------------------------------------------------------------
    def _record_path(self, parts: Iterable[str]) -> Path:
        """``root/part/...``, each part one plain name (no separator, no leading dot): a record
        path never leaves the store, whatever a carried index said."""
        parts = list(parts)
        if not parts or not all(isinstance(p, str) and _RECORD_PART.match(p) for p in parts):
            raise StoreError(f"not a record name: {'/'.join(map(str, parts))[:120]!r}")
        return self.root.joinpath(*parts)

    def read_record(self, *parts: str) -> Optional[Dict[str, Any]]:
        try:
            doc = json.loads(self._record_path(parts).read_text(encoding="utf-8"))
        except (OSError, ValueError, StoreError):
            return None
        return doc if isinstance(doc, dict) else None

    def write_record(self, doc: Dict[str, Any], *parts: str) -> None:
        path = self._record_path(parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")

    def size(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.root / "sha256"):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
        return total


def link_or_copy(src: Path, dest: Path) -> None:
    """A hard link (same file system: no bytes copied), else a copy."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
