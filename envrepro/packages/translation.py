"""A translated lock and what differs from the capture's: the result of
``envrepro.packages.platforms.translate``, its differences, and its cache on the host.

Two targets: ``linux`` (a macOS/Windows capture built for Linux) and ``linux-gpu`` (``--gpus``:
the GPU build of the captured TensorFlow, for a capture from any platform). The capture is
hash-locked and never written: the translated lock lives in envrepro's cache,
``<cache>/translated/<sha256 of the captured lock>/<cpu|gpu>/requirements.lock``, beside
``translation.json`` (the differences), and is reused while the captured lock, platform and
Python are the same, so the image key (computed over the translated lock) is stable.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from envrepro.fsutil import atomic_write_text
from envrepro.sidecar import layout, lockfile

# Bump a target's version when what its translation makes changes: its cached locks are redone.
# gpu 2: tensorflow[and-cuda] from TensorFlow 2.14, Linux captures translated too.
VERSIONS = {"linux": 1, "linux-gpu": 2}
FOREIGN = {"darwin": "macOS", "win32": "Windows", "cygwin": "Windows"}
PLATFORM_NAMES = dict(FOREIGN, linux="Linux")
TARGET_NAMES = {"linux": "Linux", "linux-gpu": "Linux with GPUs"}


def platform_name(platform: str) -> str:
    return PLATFORM_NAMES.get(platform, platform)


@dataclass(frozen=True)
class Change:
    """One difference between the captured lock and the translated one."""

    kind: str                           # mapped | dropped | changed | added
    name: str
    version: Optional[str] = None       # captured version (None for added)
    new_name: Optional[str] = None
    new_version: Optional[str] = None
    reason: str = ""

    def text(self) -> str:
        if self.kind == "mapped":
            s = f"{self.name} {self.version} -> {self.new_name} {self.new_version}"
        elif self.kind == "changed":
            s = f"{self.name} {self.version} -> {self.new_version}"
        elif self.kind == "added":
            s = f"{self.new_name or self.name} {self.new_version} added"
        else:
            s = f"{self.name} {self.version} dropped"
        return f"{s} ({self.reason})" if self.reason else s


@dataclass
class Translation:
    """A capture's lock translated for ``target`` (``lock_text`` is what the image is built from)."""

    platform: str
    lock_text: str
    lock_path: Path
    changes: List[Change]
    python: str = ""
    notes: List[str] = field(default_factory=list)
    target: str = "linux"
    lock: lockfile.Lock = field(init=False, repr=False, compare=False)   # lock_text, parsed once

    def __post_init__(self) -> None:
        self.lock = lockfile.Lock.parse(self.lock_text)

    @property
    def source(self) -> str:
        return platform_name(self.platform)

    @property
    def target_name(self) -> str:
        return TARGET_NAMES.get(self.target, self.target)

    def summary(self) -> str:
        return f"translated for {self.target_name}: " + (
            ", ".join(c.text() for c in self.changes) or "no package differs")

    def to_dict(self) -> Dict[str, Any]:
        return {"from": self.source, "platform": self.platform, "for": self.target_name,
                "target": self.target, "lock": str(self.lock_path), "python": self.python,
                "changes": [c.text() for c in self.changes], "notes": list(self.notes)}


def diff(captured: Sequence[lockfile.LockEntry], translated: Sequence[lockfile.LockEntry],
         planned: Sequence[Change], where: str = "on Linux") -> List[Change]:
    """Every package whose pin differs: the table's changes, then what the resolution left out,
    changed or added (``where``: why, "needed on Linux", "needed by the GPU build")."""
    covered = {c.name for c in planned} | {lockfile.canonical_name(c.new_name.split("[", 1)[0])
                                           for c in planned if c.new_name}
    before = {e.name: e.version for e in captured}
    unpinned = {e.name for e in captured if e.unsafe}    # commented in the capture's lock
    after = {e.name: e.version for e in translated if not e.unsafe}
    out = list(planned)
    for name in sorted(set(before) - covered):
        if name not in after:
            if name in unpinned:
                continue
            out.append(Change("dropped", name, before[name], reason=f"not needed {where}"))
        elif after[name] != before[name]:
            out.append(Change("changed", name, before[name], None, after[name]))
    for name in sorted(set(after) - set(before) - covered):
        out.append(Change("added", name, None, name, after[name], f"needed {where}"))
    order = {"mapped": 0, "dropped": 1, "changed": 2, "added": 3}
    return sorted(out, key=lambda c: (order.get(c.kind, 9), c.name))


# -- the cache -----------------------------------------------------------------------------------
def cache_folder(lock_path: Path, target: str, cache: Path) -> Path:
    sha = hashlib.sha256(lock_path.read_bytes()).hexdigest()
    return cache / "translated" / sha / ("gpu" if target == "linux-gpu" else "cpu")


def cached(lock_path: Path, target: str, cache: Path, platform: str,
           python: str) -> Optional[Translation]:
    """The translation made earlier for this very lock, platform and Python X.Y, or None
    (missing, another version of the target, or its lock file no longer matches the recorded
    hash)."""
    folder = cache_folder(lock_path, target, cache)
    try:
        meta = json.loads((folder / "translation.json").read_text(encoding="utf-8"))
        text = (folder / layout.LOCK_FILE).read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    if (not isinstance(meta, dict) or meta.get("version") != VERSIONS[target]
            or meta.get("lock_sha256") != hashlib.sha256(text.encode()).hexdigest()
            or meta.get("platform") != platform or (meta.get("python") or python) != python):
        return None
    changes = [Change(**c) for c in meta.get("changes") or []]
    return Translation(str(meta.get("platform")), text, folder / layout.LOCK_FILE, changes,
                       str(meta.get("python") or ""), list(meta.get("notes") or []), target)


def store(folder: Path, t: Translation) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / layout.LOCK_FILE, t.lock_text)
    meta = {"version": VERSIONS[t.target], "target": t.target, "platform": t.platform,
            "python": t.python, "lock_sha256": hashlib.sha256(t.lock_text.encode()).hexdigest(),
            "changes": [asdict(c) for c in t.changes], "notes": t.notes}
    atomic_write_text(folder / "translation.json", json.dumps(meta, indent=2) + "\n")
