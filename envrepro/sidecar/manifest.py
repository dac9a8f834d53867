"""Reading a capture (format ``envrepro/v1``, docs/format.md): parse, upgrade, verify.

A capture is a sidecar folder beside the model (``my_model.envrepro/`` for ``my_model/``,
``m.h5.envrepro/`` for ``m.h5``). ``envrepro.yaml`` is written last and lists the sha256 of
every other file in the folder under ``files``; a folder without a manifest, or whose files do
not match it, is not a valid capture. File names live in ``layout``; the capture is written
by ``writer`` (one transaction), which renders the manifest with :func:`dump`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List

import yaml

# libyaml's C loader/dumper when present (several times faster: the hook runs on every save)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

from envrepro import __version__
from envrepro.errors import InvalidCapture
from envrepro.fsutil import sha256_file
from envrepro.sidecar.layout import (LOCK_FILE, MANIFEST, SCHEMA, SIDECAR_SUFFIX, SNAPSHOT_DIR,
                                     model_for, sidecar_for)

# Schema upgrades: each function takes a manifest of schema N and returns schema N+1.
# ``envrepro/v0`` never shipped; the table exists so old captures keep loading when v2 comes.
UPGRADES: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {}
KNOWN_SCHEMAS = (SCHEMA,)


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


def dump(data: Dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=100)


def model_custom_objects(cap: Capture) -> Dict[str, str]:
    return dict(cap.get("load.custom_objects", {}) or {})


def snapshot_entries(cap: Capture) -> List[Dict[str, Any]]:
    return list(cap.get("snapshot.files", []) or [])
