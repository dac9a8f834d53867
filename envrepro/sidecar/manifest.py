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

# libyaml's C dumper when present (several times faster: the hook runs on every save)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

from envrepro.version import __version__
from envrepro.errors import InvalidCapture
from envrepro.sidecar.lockfile import Lock
from envrepro.sidecar.seal import check_tree, load_manifest, verify_tree
from envrepro.sidecar.layout import (LOCK_FILE, MANIFEST, REFERENCE_DIR, SCHEMA, SIDECAR_SUFFIX,
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
    # Set by ``sandbox.container.prepare``: the model's hash against the recorded one (modelcheck).
    model_check: Optional[Dict[str, Any]] = None
    parsed_lock: Optional[Lock] = field(default=None, repr=False, compare=False)

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

    @property
    def lock(self) -> Lock:
        """The capture's lock, parsed once: by :func:`read` when it verified the capture's files,
        else on first use (``verify=False``, a capture made in memory). OSError: no lock file."""
        if self.parsed_lock is None:
            self.parsed_lock = Lock.parse(self.lock_path.read_text(encoding="utf-8"))
        return self.parsed_lock


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
    checked: Optional[Lock] = None
    if lock.is_file():
        try:
            lock_text = lock.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidCapture(f"lock is unreadable ({type(e).__name__})", str(lock),
                                 "run `envrepro capture MODEL` again") from None
        checked = locktrust.check_lock(lock_text, str(lock))
    if verify:
        verify_files(cap)
        cap.parsed_lock = checked   # the sealed lock, checked: it travels parsed from here
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
    """Every file the capture's manifest lists exists with its hash, and no unlisted file
    sneaked in (``seal.verify_tree``)."""
    verify_tree(cap.root, cap.data)


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
