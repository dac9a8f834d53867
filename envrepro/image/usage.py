"""Which captures use which environment image: the images index.

Images are per environment, not per model, and Docker can't tell which captures still need one.
So every load, run, shell, ``build --serve`` and ``serve`` records ``image key -> capture`` in a
small index (``$XDG_CACHE_HOME/envrepro/index.json``, default ``~/.cache/envrepro/index.json``),
written atomically under a file lock since several commands may run at once. An entry is stale
when the capture's folder is gone, its manifest unreadable, or it was captured again into a
different environment (``stale_reason``); ``image.inventory`` lists and prunes from it.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from envrepro.config import cache_dir
from envrepro.engine.base import ContainerEngine, image_labels
from envrepro.errors import EnvreproError
from envrepro.fsutil import atomic_write_text, file_lock
from envrepro.image.spec import LABEL, LABEL_KEY, image_tag
from envrepro.sidecar import layout, manifest

INDEX_VERSION = 1
KeyFor = Callable[[manifest.Capture], Optional[str]]


def index_path() -> Path:
    return cache_dir() / "index.json"


def _empty() -> Dict[str, Any]:
    return {"version": INDEX_VERSION, "images": {}}


def read_index(path: Optional[Path] = None) -> Dict[str, Any]:
    """The index, or an empty one when missing or unreadable (it is a cache, never a blocker)."""
    path = path or index_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _empty()
    if not isinstance(data, dict) or not isinstance(data.get("images"), dict):
        return _empty()
    return data


def unreadable(path: Optional[Path] = None) -> Optional[str]:
    """Why the index can't tell which images are used (missing, unreadable, not an index), or
    None. ``read_index`` treats all of these as empty, which is right for listing but would make
    prune remove every image."""
    path = path or index_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "is missing"
    except (OSError, ValueError) as e:
        return f"is unreadable ({type(e).__name__})"
    if not isinstance(data, dict) or not isinstance(data.get("images"), dict):
        return "is not an envrepro images index"
    return None


def write_index(path: Path, data: Dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return file_lock(path.with_name(path.name + ".lock"))


def fingerprint(capture: manifest.Capture) -> str:
    """What, on the capture's side, decides its environment image: the lock, local wheels and the
    Python version. A capture taken again into another environment changes it."""
    files = capture.get("files") or {}
    parts = sorted((rel, h) for rel, h in files.items()
                   if rel == layout.LOCK_FILE or rel.startswith(layout.WHEELS_DIR + "/"))
    payload = json.dumps({"files": parts, "python": capture.get("python.version")}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def record_use(image_info: Any, capture: manifest.Capture, path: Optional[Path] = None) -> None:
    """Remember that ``capture`` was loaded with the image ``image_info`` (tag, key)."""
    key = getattr(image_info, "key", None)
    if not key:
        return
    path = path or index_path()
    with locked(path):
        data = read_index(path)
        entry = data["images"].setdefault(key, {"tag": None, "captures": {}})
        entry["tag"] = getattr(image_info, "tag", None) or entry.get("tag")
        entry.setdefault("captures", {})[str(capture.root)] = {
            "model": str(capture.model_path),
            "base_image": getattr(image_info, "base_image", None),
            "translated": bool(getattr(image_info, "translation", None)),
            "fingerprint": fingerprint(capture),
            "last_used": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        }
        write_index(path, data)


def stale_reason(capture_root: str, entry: Dict[str, Any], key: str,
                 key_for: Optional[KeyFor] = None) -> Optional[str]:
    """Why this capture no longer uses the image ``key`` (None: it still does)."""
    root = Path(capture_root)
    if not (root / layout.MANIFEST).is_file():
        return "capture folder is gone"
    try:
        cap = manifest.read(root, verify=False)
    except EnvreproError:
        return "capture is unreadable"
    now = key_for(cap) if key_for is not None else key_with_recorded_base(cap, entry)
    if now is not None:
        return None if now == key else f"capture now uses image key {now}"
    if entry.get("fingerprint") != fingerprint(cap):
        return "capture was taken again into another environment"
    return None


def key_with_recorded_base(capture: manifest.Capture, entry: Dict[str, Any]) -> Optional[str]:
    """The image key this capture would get now, with the base image it was loaded with (a
    ``--base-image`` or GPU base stays what the user chose). None when it can't be computed."""
    base = entry.get("base_image")
    if not base:
        return None
    from envrepro.packages.platforms import is_foreign

    if is_foreign(capture) or entry.get("translated"):
        return None  # built from a lock translated for Linux or GPUs: the fingerprint decides
    try:
        from envrepro.image.spec import capture_key

        return capture_key(capture, base, capture.lock)
    except (ImportError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class UsedImage:
    """What ``record_use`` keeps of an image, read from its labels."""

    tag: str
    key: str
    base_image: Optional[str]
    translation: Optional[str]


def record_image_use(engine: ContainerEngine, ref: str, capture: manifest.Capture,
                     path: Optional[Path] = None) -> Optional[str]:
    """Record that ``capture`` uses the environment of the image ``ref`` (the environment image,
    or a serving image built on it: it carries the environment's labels), as a load does. Returns
    why the index was not updated, or None: a served model is served all the same."""
    try:
        labels = image_labels(engine.inspect_image(ref))
        key = labels.get(LABEL_KEY)
        if key:
            record_use(UsedImage(image_tag(key), key, labels.get(LABEL + "base") or None,
                                 labels.get(LABEL + "translated-from") or None), capture, path)
    except (EnvreproError, OSError, ValueError) as e:
        return f"images index not updated ({e})"
    return None


class RecordingStarts:
    """``engine``, except that starting a container records first that ``capture`` uses the
    image's environment (``record_image_use``; ``warn`` gets why, when the index can't be
    updated). For ``envrepro serve``: the server runs until it is stopped or killed, so its use is
    recorded as it starts, not when it ends."""

    def __init__(self, engine: ContainerEngine, capture: manifest.Capture, warn: Callable[[str], None]):
        self._engine, self._capture, self._warn = engine, capture, warn
        self._recorded: set = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def start(self, image: str, *args: Any, **kwargs: Any) -> str:
        if image not in self._recorded:
            self._recorded.add(image)
            why = record_image_use(self._engine, image, self._capture)
            if why:
                self._warn(why)
        return self._engine.start(image, *args, **kwargs)
