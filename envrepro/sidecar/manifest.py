"""The capture format ``envrepro/v1``: where a capture lives, how it is read, checked and written.

A capture is a sidecar folder beside the model (``my_model.envrepro/`` for ``my_model/``,
``m.h5.envrepro/`` for ``m.h5``). ``envrepro.yaml`` is written last and lists the sha256 of
every other file in the folder under ``files``; a folder without a manifest, or whose files do
not match it, is not a valid capture.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import yaml

# libyaml's C loader/dumper when present (several times faster: the hook runs on every save)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

from envrepro import __version__
from envrepro.errors import InvalidCapture, ModelNotFound
from envrepro.fsutil import atomic_write_text, sha256_file

SCHEMA = "envrepro/v1"
MANIFEST = "envrepro.yaml"
LOCK_FILE = "requirements.lock"
REQUIREMENTS_IN = "requirements.in"
SNAPSHOT_DIR = "snapshot"
WHEELS_DIR = "wheels"
REFERENCE_DIR = "reference"
SIDECAR_SUFFIX = ".envrepro"

# File magic of the model formats (also read by ``modelfiles``; the probe keeps its own copy,
# being standard-library-only and runnable on its own).
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
LFS_MAGIC = b"version https://git-lfs"

# Schema upgrades: each function takes a manifest of schema N and returns schema N+1.
# ``envrepro/v0`` never shipped; the table exists so old captures keep loading when v2 comes.
UPGRADES: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {}
KNOWN_SCHEMAS = (SCHEMA,)


def sidecar_for(model_path: "os.PathLike[str] | str") -> Path:
    """``my_model/`` -> ``my_model.envrepro/``; ``m.h5`` -> ``m.h5.envrepro/``."""
    p = Path(os.path.abspath(model_path))
    if p.name.endswith(SIDECAR_SUFFIX):
        return p
    return p.with_name(p.name + SIDECAR_SUFFIX)


def model_for(sidecar: Path) -> Path:
    return sidecar.with_name(sidecar.name[: -len(SIDECAR_SUFFIX)])


def detect_format(model_path: Path) -> str:
    """savedmodel | h5 | keras, from the files (magic bytes), not the name alone."""
    if model_path.is_dir():
        if (model_path / "saved_model.pb").exists() or (model_path / "saved_model.pbtxt").exists():
            return "savedmodel"
        raise ModelNotFound(
            "folder is not a SavedModel (no saved_model.pb)", str(model_path),
            "pass the folder model.save() wrote, or an .h5/.keras file",
        )
    if not model_path.is_file():
        raise ModelNotFound("no model at this path", str(model_path),
                            "check the path, or save the model first")
    with open(model_path, "rb") as f:
        head = f.read(64)
    if head.startswith(HDF5_MAGIC):
        return "h5"
    if head.startswith(ZIP_MAGIC):
        return "keras"
    if head.startswith(LFS_MAGIC):
        raise ModelNotFound("file is a Git LFS pointer, not the model", str(model_path),
                            "run `git lfs pull`")
    raise ModelNotFound("not a Keras model file (neither HDF5 nor .keras zip)", str(model_path),
                        "pass a SavedModel folder, an .h5 or a .keras file")


def resolve_model(path: "os.PathLike[str] | str") -> Path:
    """Accept the model path or its sidecar; return the model path."""
    p = Path(os.path.abspath(path))
    if p.name.endswith(SIDECAR_SUFFIX):
        p = model_for(p)
    if not p.exists():
        raise ModelNotFound("no model at this path", str(p), "check the path, or save the model first")
    return p


@dataclass
class Capture:
    """A capture read from disk: the manifest plus where it lives."""

    root: Path
    data: Dict[str, Any] = field(default_factory=dict)

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
    """Read and validate a capture. Raises InvalidCapture with the file and the fix."""
    root = Path(sidecar)
    if not root.name.endswith(SIDECAR_SUFFIX):
        root = sidecar_for(root)
    manifest = root / MANIFEST
    if not root.is_dir():
        raise InvalidCapture("no capture beside this model", str(root),
                             "run `envrepro capture MODEL` (or `envrepro capture --infer MODEL`)")
    if not manifest.is_file():
        raise InvalidCapture("capture is incomplete (no envrepro.yaml: the capture was interrupted)",
                             str(root), "run `envrepro capture MODEL` again")
    try:
        data = yaml.load(manifest.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidCapture(f"manifest is unreadable ({reason})", str(manifest),
                             "run `envrepro capture MODEL` again") from None
    if not isinstance(data, dict):
        raise InvalidCapture("manifest is not a mapping", str(manifest),
                             "run `envrepro capture MODEL` again")
    data = upgrade(data, manifest)
    cap = Capture(root=root, data=data)
    if verify:
        verify_files(cap)
    return cap


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


def verify_files(cap: Capture) -> None:
    """Every file the manifest lists exists with its hash, and no unlisted file sneaked in."""
    files = cap.data.get("files") or {}
    if not isinstance(files, dict):
        raise InvalidCapture("manifest 'files' is not a mapping", str(cap.root / MANIFEST),
                             "run `envrepro capture MODEL` again")
    for rel, digest in sorted(files.items()):
        p = cap.root / rel
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
            if "__pycache__" in rel.split("/"):
                continue
            if rel not in files:
                raise InvalidCapture("file not listed in the manifest (added after the capture)",
                                     str(p), "remove it or run `envrepro capture MODEL` again")


def list_files(root: Path) -> Dict[str, str]:
    """sha256 of every file below root except the manifest (for ``files:``)."""
    out: Dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            raise InvalidCapture("symbolic link inside the capture", str(p), "remove it")
        if p.is_file() and p.name != MANIFEST:
            out[p.relative_to(root).as_posix()] = sha256_file(p)
    return out


def dump(data: Dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=100)


def write_manifest(root: Path, data: Dict[str, Any]) -> Dict[str, Any]:
    """Fill ``files`` from disk and write the manifest atomically (the last write of a capture)."""
    data = dict(data)
    data["schema"] = SCHEMA
    data["files"] = list_files(root)
    atomic_write_text(root / MANIFEST, dump(data))
    return data


def model_custom_objects(cap: Capture) -> Dict[str, str]:
    return dict(cap.get("load.custom_objects", {}) or {})


def snapshot_entries(cap: Capture) -> List[Dict[str, Any]]:
    return list(cap.get("snapshot.files", []) or [])
