"""Copy the source of custom modules into ``snapshot/``, safely.

A module inside a package is copied with its whole top-level package so relative imports still
work: its Python sources, native extensions and package data. What may be copied is decided in
``snapshotpolicy`` (regular files only, no secrets-looking or hidden names, no private keys);
every file left out is listed in ``SnapshotResult.skipped`` and in one capture warning. Copies
never follow a symbolic link out of the source tree: a link to ``~/.aws/credentials`` inside a
project folder is refused (left out and reported), never copied.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from envrepro.capturing import snapshotpolicy as policy
from envrepro.errors import CaptureError
from envrepro.fsutil import is_within
from envrepro.sidecar.layout import SIDECAR_SUFFIX

SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache", ".ipynb_checkpoints",
             "node_modules", ".tox", ".venv", "venv"}
SKIP_SUFFIXES = {".pyc", ".pyo"}
MAX_BYTES = 64 * 1024 * 1024  # a snapshot is source code: a larger tree is a mistake (data, venv)
WARNING_CHARS = 1500          # the skipped-files warning names files up to about this length
_CHUNK = 1 << 20
# Opening never blocks (a FIFO that appeared after the stat) and never follows a last link.
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_BINARY", 0))


def skipped_dir(name: str) -> bool:
    """A folder that holds no source of the project (caches, VCS data, virtualenvs, metadata,
    captures): never copied into a snapshot, never searched for custom classes."""
    return name in SKIP_DIRS or name.endswith((".egg-info", SIDECAR_SUFFIX))


@dataclass
class SnapshotResult:
    files: List[Dict[str, Any]] = field(default_factory=list)   # path, sha256, origin, module
    modules: Dict[str, str] = field(default_factory=dict)       # module name -> import name in snapshot
    refused: List[str] = field(default_factory=list)            # links out of the tree, not copied
    skipped: List[Dict[str, str]] = field(default_factory=list)  # path (in snapshot/), origin, reason
    warnings: List[str] = field(default_factory=list)


def _skip(result: SnapshotResult, src: "Path | str", rel: str, reason: str) -> None:
    result.skipped.append({"path": rel, "origin": str(src), "reason": reason})


def _copy_regular(path: str, expected: os.stat_result, dst: Path) -> Tuple[Optional[str], Optional[str]]:
    """Copy the regular file ``path`` (as ``expected`` by stat) to ``dst``: (sha256, None), or
    (None, why it was not copied) - unreadable, changed since the stat, or holds a private key."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        return None, f"unreadable ({e.strerror})"
    with os.fdopen(fd, "rb") as fi:
        now = os.fstat(fi.fileno())
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (expected.st_dev, expected.st_ino):
            return None, "changed while the snapshot was taken"
        dst.parent.mkdir(parents=True, exist_ok=True)
        digest, tail = hashlib.sha256(), b""
        with open(dst, "wb") as fo:
            for chunk in iter(lambda: fi.read(_CHUNK), b""):
                if policy.PRIVATE_KEY_RE.search(tail + chunk):
                    break
                tail = (tail + chunk)[-policy.PRIVATE_KEY_TAIL:]
                fo.write(chunk)
                digest.update(chunk)
            else:
                return digest.hexdigest(), None
    dst.unlink()
    return None, policy.PRIVATE_KEY


def _copy_file(src: Path, dst: Path, rel: str, tree_root: Path, result: SnapshotResult, module: str,
               budget: List[int]) -> None:
    """Copy one file if it is a regular file (or a link inside the tree to one); never opens
    anything else."""
    try:
        st = os.lstat(src)
    except OSError as e:
        return _skip(result, src, rel, f"unreadable ({e.strerror})")
    if stat.S_ISLNK(st.st_mode):
        if not is_within(src, tree_root):
            result.refused.append(str(src))
            return _skip(result, src, rel, f"symbolic link out of {tree_root}, not followed")
        try:
            st = os.stat(src)
        except OSError:
            return _skip(result, src, rel, "broken symbolic link")
        if not stat.S_ISREG(st.st_mode):
            return _skip(result, src, rel, f"link to a {policy.kind(st.st_mode)}")
    elif not stat.S_ISREG(st.st_mode):
        return _skip(result, src, rel, f"{policy.kind(st.st_mode)}, not a regular file")
    budget[0] += st.st_size
    if budget[0] > MAX_BYTES:
        raise CaptureError(
            f"custom-module snapshot exceeds {MAX_BYTES // (1024 * 1024)} MiB (is data or a virtualenv inside the package?)",
            str(tree_root), "move data out of the package, or pass the module with --module from a smaller package")
    # Read through the resolved path but write a regular file: the capture holds no links.
    sha256, why = _copy_regular(os.path.realpath(src), st, dst)
    if why:
        return _skip(result, src, rel, why)
    result.files.append({"path": None, "sha256": sha256, "origin": str(src), "module": module,
                         "_dst": dst})


def _copy_tree(root: Path, dst_root: Path, result: SnapshotResult, module: str, budget: List[int],
               needed: Set[str]) -> None:
    def rel(path: Path) -> str:
        return path.relative_to(root.parent).as_posix()

    def unreadable(err: OSError) -> None:
        _skip(result, err.filename, rel(Path(err.filename)) + "/", f"unreadable folder ({err.strerror})")

    def holds_needed(folder: Path) -> bool:
        real = os.path.realpath(folder) + os.sep
        return any(n.startswith(real) for n in needed)

    for cur, dirs, files in os.walk(str(root), onerror=unreadable, followlinks=False):
        cur_p = Path(cur)
        kept = []
        for d in sorted(dirs):
            full = cur_p / d
            if skipped_dir(d):
                continue
            if full.is_symlink():
                # os.walk does not descend into linked folders; say so instead of silently dropping
                result.refused.append(str(full))
                _skip(result, full, rel(full) + "/", "linked folder, not followed")
                continue
            why = policy.folder_name_reason(d)
            if why and not holds_needed(full):
                _skip(result, full, rel(full) + "/", why)
                continue
            kept.append(d)
        dirs[:] = kept
        for name in sorted(files):
            src = cur_p / name
            if src.suffix in SKIP_SUFFIXES:
                continue
            why = policy.file_name_reason(name)
            if why and os.path.realpath(src) not in needed:
                _skip(result, src, rel(src), why)
                continue
            _copy_file(src, dst_root / rel(src), rel(src), root, result, module, budget)


def _shown(path: str) -> str:
    """A file name as one printable line (a name may hold a newline or escape codes)."""
    return path if path.isprintable() else ascii(path)


def skipped_warning(skipped: List[Dict[str, str]]) -> Optional[str]:
    """One line naming every file left out and why, by path (the first ones, when there are
    very many: the line stays short enough to read and to keep in the manifest's warnings)."""
    if not skipped:
        return None
    folders = sum(1 for s in skipped if s["path"].endswith("/"))
    counts = [f"{n} {what}{'s' if n != 1 else ''}"
              for n, what in ((len(skipped) - folders, "file"), (folders, "folder")) if n]
    items: List[str] = []
    for entry in sorted(skipped, key=lambda s: s["path"]):
        if items and sum(len(i) + 2 for i in items) > WARNING_CHARS:
            break
        items.append(f"{_shown(entry['path'])} ({entry['reason']})")
    more = len(skipped) - len(items)
    if more:
        items.append(f"and {more} more")
    return f"snapshot: skipped {' and '.join(counts)}: {', '.join(items)}; move or rename any the model needs"


def _prune_empty(folder: Path) -> None:
    """Folders left empty by a file copied then withdrawn (a private key found while copying)."""
    if not folder.is_dir():
        return
    for cur, _dirs, _files in os.walk(str(folder), topdown=False):
        if not os.listdir(cur):
            os.rmdir(cur)   # ``folder`` too: a snapshot with no file has no folder, as before


def copy_modules(modules: Iterable[Dict[str, Any]], snapshot_dir: Path, capture_root: Path) -> SnapshotResult:
    """Copy every module the probe found that no installed distribution provides.

    ``modules`` items come from the probe: module, file, distribution, top, root, source_root.
    """
    modules = [m for m in modules if not m.get("distribution")]  # the lock pins the others
    # The files that define the model's custom objects: copied even if a name rule matches.
    needed = {os.path.realpath(m["file"]) for m in modules if m.get("file")}
    result = SnapshotResult()
    done_roots: Dict[str, str] = {}
    budget = [0]
    for mod in modules:
        name = mod.get("module") or ""
        root = mod.get("root") or mod.get("file")
        if not root:
            result.warnings.append(f"module {name}: no source file (built-in or compiled); not snapshotted")
            continue
        root_p = Path(root)
        if name == "__main__":
            # A training script: importable under its file name if its top level is guarded.
            import_name = root_p.stem
            result.warnings.append(
                f"custom objects defined in the script {root_p} are snapshotted as module '{import_name}'; "
                "loading imports it, so guard its training code with `if __name__ == '__main__':`")
        else:
            import_name = name
        result.modules[name] = import_name
        key = str(root_p)
        if key in done_roots:
            continue
        done_roots[key] = import_name
        if not root_p.exists():
            result.warnings.append(f"module {name}: source {root_p} no longer exists; not snapshotted")
            continue
        if root_p.is_dir():
            _copy_tree(root_p, snapshot_dir, result, name, budget, needed)
        else:
            dst = snapshot_dir / (import_name + root_p.suffix if name == "__main__" else root_p.name)
            _copy_file(root_p, dst, dst.name, root_p.parent, result, name, budget)
    _prune_empty(snapshot_dir)
    warning = skipped_warning(result.skipped)
    if warning:
        result.warnings.append(warning)
    for entry in result.files:
        dst = entry.pop("_dst")
        entry["path"] = dst.relative_to(capture_root).as_posix()
    return result

