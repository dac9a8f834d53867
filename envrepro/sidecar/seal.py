"""Is a capture folder whole? Its manifest parses, every file it lists is there with its sha256,
nothing is unlisted, nothing is a link. ``envrepro.yaml`` is written last, so that is what a kill
can break: ``manifest.read`` checks it before it trusts a capture, ``recovery`` to tell a finished
capture from a killed one. Only yaml is imported (the save hook runs where packaging may be
missing).
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any, Dict

import yaml

from envrepro.errors import InvalidCapture
from envrepro.fsutil import sha256_file
from envrepro.sidecar.layout import MANIFEST, SNAPSHOT_DIR

# libyaml's C loader when present (several times faster: the hook runs on every save)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_manifest(root: Path) -> Dict[str, Any]:
    """The manifest of the folder ``root`` parsed (a mapping), not yet upgraded or checked."""
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise InvalidCapture("capture is incomplete (no envrepro.yaml: the capture was interrupted)",
                             str(root), "run `envrepro capture MODEL` again")
    try:
        data = yaml.load(manifest.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as e:  # ValueError: a 5000-digit int
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise InvalidCapture(f"manifest is unreadable ({reason})", str(manifest),
                             "run `envrepro capture MODEL` again") from None
    if not isinstance(data, dict):
        raise InvalidCapture("manifest is not a mapping", str(manifest),
                             "run `envrepro capture MODEL` again")
    return data


def sealed(root: Path) -> bool:
    """The folder ``root`` holds a capture that was written whole: its manifest parses and every
    file matches the hashes it lists, nothing unlisted, no link. That is what a kill can break
    (the manifest goes last); the schema is not judged (a newer envrepro's capture is whole too),
    and nothing beyond yaml is imported (the save hook runs where packaging may be missing)."""
    try:
        if root.is_symlink() or not root.is_dir():
            return False
        data = load_manifest(root)
        check_tree(root)
        verify_tree(root, data)
        return True
    except Exception:  # noqa: BLE001 - whatever stops the check, the folder is not known whole
        return False


def check_tree(root: Path) -> None:
    """No symbolic link anywhere in the capture (checked with lstat, never followed): a link
    would let a listed path read or shadow a file outside the capture."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            if p.is_symlink():
                raise InvalidCapture("capture holds a symbolic link (a capture never does)", str(p),
                                     "remove it or run `envrepro capture MODEL` again")


def inside(root: Path, rel: str) -> Path:
    """``root / rel`` when it resolves inside the capture, else InvalidCapture."""
    p = root / rel
    real_root = str(root.resolve())
    if os.path.commonpath([str(p.resolve()), real_root]) != real_root or PurePosixPath(rel).is_absolute():
        raise InvalidCapture("manifest names a path outside the capture", str(p),
                             "run `envrepro capture MODEL` again")
    return p


def verify_tree(root: Path, data: Dict[str, Any]) -> None:
    """Every file the manifest ``data`` lists exists in ``root`` with its hash, and no unlisted
    file sneaked in."""
    files = data.get("files") or {}
    if not isinstance(files, dict):
        raise InvalidCapture("manifest 'files' is not a mapping", str(root / MANIFEST),
                             "run `envrepro capture MODEL` again")
    for rel, digest in sorted(files.items()):
        p = inside(root, rel)
        if p.is_symlink():
            raise InvalidCapture("capture holds a symbolic link (a capture never does)", str(p),
                                 "remove it or run `envrepro capture MODEL` again")
        if not p.is_file():
            raise InvalidCapture("file listed in the manifest is missing", str(p),
                                 "run `envrepro capture MODEL` again")
        if sha256_file(p) != digest:
            hint = "restore it from the capture or run `envrepro capture MODEL` again"
            what = "file changed since the capture (sha256 mismatch)"
            if rel.startswith(SNAPSHOT_DIR + "/"):
                what = "snapshot file edited after the capture (sha256 mismatch)"
            raise InvalidCapture(what, str(p), hint)
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(root).as_posix()
            if "__pycache__" in rel.split("/") or rel.endswith((".pyc", ".pyo")):
                # compiled bytecode is never part of a capture; Python would run it instead of
                # the sealed source when its header matches
                raise InvalidCapture("compiled bytecode in the capture (a capture holds sources only; "
                                     "Python could run it instead of the checked source)", str(p),
                                     f"remove it: rm -r '{p.parent if p.parent.name == '__pycache__' else p}'")
            if rel not in files:
                raise InvalidCapture("file not listed in the manifest (added after the capture)",
                                     str(p), "remove it or run `envrepro capture MODEL` again")
