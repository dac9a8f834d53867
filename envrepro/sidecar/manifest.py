"""Reading a capture (format ``envrepro/v1``, docs/format.md): parse, upgrade, verify.

A capture is a sidecar folder beside the model (``my_model.envrepro/`` for ``my_model/``,
``m.h5.envrepro/`` for ``m.h5``). ``envrepro.yaml`` is written last and lists the sha256 of
every other file in the folder under ``files``; a folder without a manifest, or whose files do
not match it, is not a valid capture. File names live in ``layout``; the capture is written
by ``writer`` (one transaction), which renders the manifest with :func:`dump`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, List, Optional

import yaml

# libyaml's C loader/dumper when present (several times faster: the hook runs on every save)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

from envrepro import __version__
from envrepro.errors import InvalidCapture
from envrepro.fsutil import sha256_file
from envrepro.sidecar.layout import (LOCK_FILE, MANIFEST, REFERENCE_DIR, SCHEMA, SIDECAR_SUFFIX,
                                     SNAPSHOT_DIR, model_for, sidecar_for)

# Schema upgrades: each function takes a manifest of schema N and returns schema N+1.
# ``envrepro/v0`` never shipped; the table exists so old captures keep loading when v2 comes.
UPGRADES: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {}
KNOWN_SCHEMAS = (SCHEMA,)


@dataclass
class Capture:
    """A capture read from disk: the manifest plus where it lives."""

    root: Path
    data: Dict[str, Any] = field(default_factory=dict)
    # Set by ``sandbox.run.prepare``: the model's hash against the recorded one (modelcheck).
    model_check: Optional[Dict[str, Any]] = None

    @property
    def model_path(self) -> Path:
        return model_for(self.root)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def get(self, dotted: str, default: Any = None) -> Any:
        cur: Any = self.data
        for part in dotted.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return default
            cur = cur[part]
        return cur

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE


def read(sidecar: "os.PathLike[str] | str", verify: bool = True) -> Capture:
    """Read and validate a capture. Raises InvalidCapture with the file and the fix.

    What a killed capture left beside it is recovered first (``recovery``): a capture killed
    while being replaced is found back in place, not reported missing."""
    root = Path(sidecar)
    if not root.name.endswith(SIDECAR_SUFFIX):
        root = sidecar_for(root)
    from envrepro.sidecar import recovery

    recovery.recover(root)
    return read_folder(root, verify=verify)


def read_folder(root: Path, verify: bool = True) -> Capture:
    """:func:`read` of the folder ``root`` as it is (no recovery, any folder name)."""
    manifest = root / MANIFEST
    if not root.is_dir():
        raise InvalidCapture("no capture beside this model", str(root),
                             "run `envrepro capture MODEL` (or `envrepro capture --infer MODEL`)")
    data = load_manifest(root)
    data = upgrade(data, manifest)
    # packaging is imported here, not at module level: the save hook imports the writer (and so
    # this module) inside training environments, which need not have it.
    from envrepro.sidecar import locktrust, schema
    check_resume(data, root)      # its own messages name the option that records it
    schema.check(data, str(manifest))
    check_tree(root)
    cap = Capture(root=root, data=data)
    lock = root / LOCK_FILE
    if lock.is_file():
        try:
            lock_text = lock.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidCapture(f"lock is unreadable ({type(e).__name__})", str(lock),
                                 "run `envrepro capture MODEL` again") from None
        locktrust.check_lock(lock_text, str(lock))
    if verify:
        verify_files(cap)
    return cap


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
        cap = Capture(root=root, data=load_manifest(root))
        check_tree(root)
        verify_files(cap)
        return True
    except Exception:  # noqa: BLE001 - whatever stops the check, the folder is not known whole
        return False


def upgrade(data: Dict[str, Any], manifest: Path) -> Dict[str, Any]:
    schema = data.get("schema")
    while schema in UPGRADES:
        data = UPGRADES[schema](data)
        schema = data.get("schema")
    if schema not in KNOWN_SCHEMAS:
        raise InvalidCapture(
            f"unknown capture schema {schema!r} (this envrepro {__version__} reads {', '.join(KNOWN_SCHEMAS)})",
            str(manifest), "upgrade envrepro (`pip install -U envrepro`) or capture again",
        )
    return data


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


def verify_files(cap: Capture) -> None:
    """Every file the manifest lists exists with its hash, and no unlisted file sneaked in."""
    files = cap.data.get("files") or {}
    if not isinstance(files, dict):
        raise InvalidCapture("manifest 'files' is not a mapping", str(cap.root / MANIFEST),
                             "run `envrepro capture MODEL` again")
    for rel, digest in sorted(files.items()):
        p = inside(cap.root, rel)
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
    for p in sorted(cap.root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(cap.root).as_posix()
            if "__pycache__" in rel.split("/") or rel.endswith((".pyc", ".pyo")):
                # compiled bytecode is never part of a capture; Python would run it instead of
                # the sealed source when its header matches
                raise InvalidCapture("compiled bytecode in the capture (a capture holds sources only; "
                                     "Python could run it instead of the checked source)", str(p),
                                     f"remove it: rm -r '{p.parent if p.parent.name == '__pycache__' else p}'")
            if rel not in files:
                raise InvalidCapture("file not listed in the manifest (added after the capture)",
                                     str(p), "remove it or run `envrepro capture MODEL` again")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_resume(data: Dict[str, Any], root: Path) -> None:
    """``resume_check`` (optional: captures without it are read as before) is checked like any
    untrusted value: its types, and its files inside ``reference/``, listed in ``files`` (sealed)
    and resolving inside the capture."""
    resume = data.get("resume_check")
    if resume is None:
        return

    def bad(why: str) -> None:
        raise InvalidCapture(f"manifest 'resume_check' {why}", str(root / MANIFEST),
                             "run `envrepro capture MODEL --resume-check` again")

    if not isinstance(resume, dict):
        bad("is not a mapping")
    if "skipped" in resume:
        if not isinstance(resume["skipped"], str):
            bad("'skipped' is not text")
        return
    weights = resume.get("weights")
    if not _number(resume.get("loss")):
        bad("has no finite 'loss'")
    if not (_count(resume.get("iterations")) and _count(resume.get("seed"))):
        bad("'iterations' or 'seed' is not a count")
    if not all(_number(resume.get(k)) and resume[k] >= 0 for k in ("atol", "rtol")):
        bad("'atol' and 'rtol' must be non-negative numbers")
    if not (isinstance(weights, dict) and _count(weights.get("arrays")) and _count(weights.get("params"))
            and _number(weights.get("sum")) and _number(weights.get("abs_sum"))
            and isinstance(weights.get("sha256"), str)):
        bad("'weights' is not a summary (arrays, params, sum, abs_sum, sha256)")
    targets = resume.get("targets")
    if not (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)):
        bad("'targets' is not a list of files")
    ref = data.get("reference")
    if not (isinstance(ref, dict) and ref.get("inputs")):
        bad("needs the reference inputs, and the capture has none")
    listed = data.get("files") or {}
    real_root = str(root.resolve())
    weights_file = resume.get("weights_file")
    if weights_file is not None and not isinstance(weights_file, str):
        bad("'weights_file' is not a file name")
    for rel in targets + ([weights_file] if weights_file else []):
        parts = PurePosixPath(rel).parts
        inside = os.path.commonpath([str((root / rel).resolve()), real_root]) == real_root
        if (PurePosixPath(rel).is_absolute() or ".." in parts or parts[:1] != (REFERENCE_DIR,)
                or not inside or not isinstance(listed, dict) or rel not in listed):
            bad(f"names {rel!r}, not a file of the capture's {REFERENCE_DIR}/ folder")


def dump(data: Dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=100)


def model_custom_objects(cap: Capture) -> Dict[str, str]:
    return dict(cap.get("load.custom_objects", {}) or {})


def snapshot_entries(cap: Capture) -> List[Dict[str, Any]]:
    return list(cap.get("snapshot.files", []) or [])
