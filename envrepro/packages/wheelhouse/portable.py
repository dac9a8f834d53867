"""A capture's wheelhouse as a folder that travels (``envrepro bundle --wheels``), and back.

``export`` copies exactly the files an image build installs (the wheelhouse filled for the
capture's environment, ``bundling.wheels``) into a folder, with ``index.json``: the target
platform, each file's sha256, and which wheels were built from which sdists.

``import_dir`` is the other machine's side, and treats the folder as untrusted: a file is taken
into the local store only when its sha256 is one the capture's lock pins, or it is the declared
build of an sdist whose sha256 the lock pins (those run only inside the image, like the capture's
own wheels), or a pin the lock has no hash for. Anything else is refused with one line. After
an import, ``envrepro load`` finds every file locally and builds with no index at all.

Files enter the content-addressed store (found only by their own sha256), but what says "this
wheel is the build of that sdist" or "this file is that unhashed pin" is recorded for the
importing capture only (``scope_of``: its folder and sealed manifest), under
``imported/<scope>/``: the builds of every other capture on this machine never take them.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set

from envrepro.errors import InvalidCapture
from envrepro.sidecar.lockfile import Lock
from envrepro.sidecar.manifest import Capture
from envrepro.packages import directrefs
from envrepro.packages.wheelhouse import sdists
from envrepro.packages.wheelhouse.fetch import dist_name, dist_version, same_version, unhashed_parts
from envrepro.packages.wheelhouse.prepare import Wheelhouse, entries_for
from envrepro.fsutil import sha256_file
from envrepro.packages.wheelhouse.store import StoreError, WheelStore, digests, link_or_copy, safe_filename
from envrepro.packages.wheelhouse.target import Target

Say = Callable[[str], None]
INDEX = "index.json"
FORMAT = 1
MAX_INDEX_BYTES = 4 << 20


def export(wh: Wheelhouse, lock: Lock, dest_dir: Path) -> List[Path]:
    """Write the files of the wheelhouse ``wh`` (filled for ``lock``, ``image.wheelhouse_builder``)
    and ``index.json`` into ``dest_dir``."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    files: Dict[str, str] = {}
    for path in sorted(set(wh.files.values())):
        link_or_copy(path, dest_dir / path.name)
        files[path.name] = path.parent.name
        written.append(dest_dir / path.name)
    entries = {e.name: e for e in directrefs.pinned_lock(lock).every}   # a reference's sha256 from its URL too
    built = [{"name": name, "version": entries[name].version, "wheel": wh.files[name].name,
              "sha256": wh.files[name].parent.name, "sdist_sha256": digests(entries[name].hashes)}
             for name in wh.built]
    doc = {"format": FORMAT, "target": wh.target.to_doc(), "files": files, "built": built}
    (dest_dir / INDEX).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    written.append(dest_dir / INDEX)
    return written


def scope_of(capture: Capture) -> str:
    """32 hex chars naming one capture on this machine: its folder's real path and its sealed
    manifest (or, for a capture without one, its lock). Records of an import live under it."""
    from envrepro.sidecar.layout import MANIFEST

    h = hashlib.sha256(os.path.realpath(str(capture.root)).encode() + b"\0")
    try:
        h.update(sha256_file(Path(capture.root) / MANIFEST).encode())
    except OSError:
        h.update(capture.lock.canonical.encode())
    return h.hexdigest()[:32]


def _bad(src: Path, what: str) -> InvalidCapture:
    return InvalidCapture(f"the wheelhouse in {src} {what}", str(src),
                          "make the bundle again with `envrepro bundle MODEL --wheels`")


def _read_index(src: Path) -> Dict[str, Any]:
    path = src / INDEX
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_INDEX_BYTES:
            raise _bad(src, f"has no readable {INDEX}")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise _bad(src, f"has no readable {INDEX}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("files"), dict) \
            or not isinstance(doc.get("built", []), list) or not isinstance(doc.get("target"), dict):
        raise _bad(src, f"has an {INDEX} of an unknown format")
    return doc


def import_dir(src_dir: Path, capture: Capture, say: Say, store: Optional[WheelStore] = None) -> int:
    """Verify the folder's files against the capture's lock and add them to the local store;
    the number of files taken. InvalidCapture (exit 2) for any file the lock doesn't account for."""
    store = store or WheelStore()
    src = Path(src_dir)
    doc = _read_index(src)
    try:
        target = Target.from_doc(doc["target"])
    except ValueError:
        raise _bad(src, f"has an {INDEX} without a readable target") from None
    entries = entries_for(directrefs.pinned_lock(capture.lock), target)
    scope = scope_of(capture)
    pinned: Set[str] = {d for e in entries for d in digests(e.hashes)}
    unhashed = {f"{e.name}-{e.version}": e for e in entries if not e.hashes}
    built_ok: Dict[str, Dict[str, Any]] = {}
    for b in doc.get("built") or []:
        if isinstance(b, dict) and isinstance(b.get("sha256"), str) and isinstance(b.get("sdist_sha256"), list) \
                and set(map(str, b["sdist_sha256"])) & pinned:
            built_ok[b["sha256"]] = b
    taken = 0
    for name, declared in sorted(doc["files"].items()):
        path = src / str(name)
        if not safe_filename(str(name)) or path.is_symlink() or not path.is_file():
            raise _bad(src, f"lists {str(name)[:80]!r}, which is not a regular distribution file there")
        sha = sha256_file(path)
        if sha != declared:
            raise _bad(src, f"has {name} with sha256 {sha[:16]}..., not the {str(declared)[:16]}... its index says")

        loose = next((e for e in unhashed.values() if e.name == dist_name(str(name))
                      and same_version(dist_version(str(name)), e.version or "")), None)
        if sha not in pinned and sha not in built_ok and loose is None:
            raise _bad(src, f"has {name}, which the capture's lock does not pin")
        try:
            store.add(path, None, str(name)) if sha not in pinned else store.add(path, {sha}, str(name))
        except StoreError as e:
            raise _bad(src, str(e)) from None
        if sha in built_ok:
            b = built_ok[sha]
            for key in b["sdist_sha256"]:
                if key in pinned:
                    store.write_record({"wheel": str(name), "sha256": sha, "imported": True},
                                       *sdists.imported_parts(scope, target, key))
        elif loose is not None and sha not in pinned:
            store.write_record({"sha256": sha, "imported": True}, *unhashed_parts(target, loose, scope))
        taken += 1
    say(f"Imported {taken} file(s) into the wheelhouse ({target.ident()}), each checked against the lock")
    return taken
