"""Which local images came from a bundle (``envrepro load FILE.tar``), not from a build here.

An image's labels can't be changed without changing its id, so the mark is kept beside the
images index: ``$XDG_CACHE_HOME/envrepro/bundle-images.json`` maps an image id to the bundle it
was loaded from (path, the sha256 of its ``image.tar``, tag, key, when). ``envrepro push``
refuses such an image unless told otherwise (``image.push``). Written atomically under a file
lock; a missing or unreadable file marks nothing (the cache can be deleted: the mark goes too).
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Dict, Optional

from envrepro.config import cache_dir
from envrepro.fsutil import atomic_write_text, file_lock

VERSION = 1


def origins_path() -> Path:
    return cache_dir() / "bundle-images.json"


def _read(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    images = data.get("images") if isinstance(data, dict) else None
    return images if isinstance(images, dict) else {}


def record_bundle_image(image_id: str, bundle: str, archive_sha256: str, tag: str, key: str,
                        path: Optional[Path] = None) -> None:
    """Remember that the image ``image_id`` was loaded from ``bundle``."""
    path = path or origins_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".lock")):
        images = _read(path)
        images[image_id] = {"bundle": bundle, "image_archive_sha256": archive_sha256, "tag": tag, "key": key,
                            "loaded": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()}
        atomic_write_text(path, json.dumps({"version": VERSION, "images": images}, indent=2, sort_keys=True) + "\n")


def bundle_images(path: Optional[Path] = None) -> Dict[str, Dict[str, Any]]:
    """Every image id loaded from a bundle -> its record (``bundle``, ...), read once."""
    return {str(k): dict(v) for k, v in _read(path or origins_path()).items() if isinstance(v, dict)}


def bundle_origin(image_id: Optional[str], path: Optional[Path] = None) -> Optional[Dict[str, Any]]:
    """The bundle the image ``image_id`` was loaded from (a dict with ``bundle``), or None."""
    if not image_id:
        return None
    entry = _read(path or origins_path()).get(str(image_id))
    return dict(entry) if isinstance(entry, dict) else None
