"""A small on-disk cache of JSON answers that are slow to get and change slowly (an index's files
for a release, a resolution of one set of requirements), kept under ``config.cache_dir()/<kind>/``.

An entry is keyed by the sha256 of everything that decides it and expires after ``ttl`` seconds.
Reading is forgiving (an absent, expired, unreadable or foreign entry is a miss) and writing is
best effort (a cache that can't be written costs the next lookup, nothing else). Entries are
written atomically, so concurrent captures never read half an entry.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

from envrepro import config
from envrepro.fsutil import atomic_write_text


def key_of(doc: Any) -> str:
    """sha256 of a JSON document (sorted keys): the key of what it decides."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class JsonCache:
    """Entries ``{"created": epoch seconds, "value": ...}`` in ``cache_dir()/kind/KEY.json``."""

    def __init__(self, kind: str, ttl: float) -> None:
        self.kind, self.ttl = kind, ttl

    def path(self, key: str) -> Path:
        return config.cache_dir() / self.kind / f"{key}.json"

    def get(self, key: str, now: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """``{"created", "value"}`` under ``key`` if fresh, else None."""
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("created"), (int, float)) \
                or "value" not in entry:
            return None
        age = (now if now is not None else time.time()) - entry["created"]
        return entry if 0 <= age < self.ttl else None

    def put(self, key: str, value: Any) -> None:
        try:
            path = self.path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({"created": time.time(), "value": value}, sort_keys=True))
        except (OSError, TypeError, ValueError):
            pass


def age_text(created: float) -> str:
    """How long ago ``created`` was, for a message: '5 min', '2 h 10 min'."""
    minutes = int(max(0.0, time.time() - created) // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
