"""Copy the source of custom modules into ``snapshot/``, safely.

A module inside a package is copied with its whole top-level package so relative imports still
work. Copies never follow a symbolic link out of the source tree: a link to ``~/.aws/credentials``
inside a project folder is refused (left out and reported), never copied.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List

from envrepro.errors import CaptureError
from envrepro.fsutil import is_within, sha256_file
from envrepro.sidecar.layout import SIDECAR_SUFFIX

SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache", ".ipynb_checkpoints",
             "node_modules", ".tox", ".venv", "venv"}
SKIP_SUFFIXES = {".pyc", ".pyo"}
MAX_BYTES = 64 * 1024 * 1024  # a snapshot is source code: a larger tree is a mistake (data, venv)


def skipped_dir(name: str) -> bool:
    """A folder that holds no source of the project (caches, VCS data, virtualenvs, metadata,
    captures): never copied into a snapshot, never searched for custom classes."""
    return name in SKIP_DIRS or name.endswith((".egg-info", SIDECAR_SUFFIX))


@dataclass
class SnapshotResult:
    files: List[Dict[str, Any]] = field(default_factory=list)   # path, sha256, origin, module
    modules: Dict[str, str] = field(default_factory=dict)       # module name -> import name in snapshot
    refused: List[str] = field(default_factory=list)            # links out of the tree, not copied
    warnings: List[str] = field(default_factory=list)


def _copy_file(src: Path, dst: Path, tree_root: Path, result: SnapshotResult, module: str,
               budget: List[int]) -> None:
    if src.is_symlink():
        if not is_within(src, tree_root) or not os.path.isfile(os.path.realpath(src)):
            result.refused.append(str(src))
            result.warnings.append(
                f"{src}: symbolic link pointing out of {tree_root} was not copied into the snapshot")
            return
    size = os.path.getsize(src)
    budget[0] += size
    if budget[0] > MAX_BYTES:
        raise CaptureError(
            f"custom-module snapshot exceeds {MAX_BYTES // (1024 * 1024)} MiB (is data or a virtualenv inside the package?)",
            str(tree_root), "move data out of the package, or pass the module with --module from a smaller package")
    dst.parent.mkdir(parents=True, exist_ok=True)
    # Read through the resolved path but write a regular file: the capture holds no links.
    with open(os.path.realpath(src), "rb") as fi, open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo)
    result.files.append({"path": None, "sha256": sha256_file(dst), "origin": str(src), "module": module,
                         "_dst": dst})


def _copy_tree(root: Path, dst_root: Path, result: SnapshotResult, module: str, budget: List[int]) -> None:
    for cur, dirs, files in os.walk(str(root), followlinks=False):
        cur_p = Path(cur)
        kept = []
        for d in sorted(dirs):
            full = cur_p / d
            if skipped_dir(d):
                continue
            if full.is_symlink():
                # os.walk does not descend into linked folders; say so instead of silently dropping
                result.refused.append(str(full))
                result.warnings.append(f"{full}: linked folder was not copied into the snapshot")
                continue
            kept.append(d)
        dirs[:] = kept
        for name in sorted(files):
            src = cur_p / name
            if src.suffix in SKIP_SUFFIXES:
                continue
            _copy_file(src, dst_root / src.relative_to(root.parent), root, result, module, budget)


def copy_modules(modules: Iterable[Dict[str, Any]], snapshot_dir: Path, capture_root: Path) -> SnapshotResult:
    """Copy every module the probe found that no installed distribution provides.

    ``modules`` items come from the probe: module, file, distribution, top, root, source_root.
    """
    result = SnapshotResult()
    done_roots: Dict[str, str] = {}
    budget = [0]
    for mod in modules:
        name = mod.get("module") or ""
        if mod.get("distribution"):
            continue  # recorded as a requirement (the lock pins it)
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
            _copy_tree(root_p, snapshot_dir, result, name, budget)
        else:
            dst = snapshot_dir / (import_name + root_p.suffix if name == "__main__" else root_p.name)
            _copy_file(root_p, dst, root_p.parent, result, name, budget)
    for entry in result.files:
        dst = entry.pop("_dst")
        entry["path"] = dst.relative_to(capture_root).as_posix()
    return result

