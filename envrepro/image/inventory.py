"""``envrepro images`` and ``envrepro images prune``: which environment images serve which captures.

Images are per environment, not per model, and Docker can't tell which captures still need one.
So every load records ``image key -> capture`` in a small index
(``$XDG_CACHE_HOME/envrepro/index.json``, default ``~/.cache/envrepro/index.json``), written
atomically under a file lock since several loads may run at once. ``prune`` removes the envrepro
images (label ``org.envrepro.key``) that no capture in the index still uses: the capture's folder
is gone, its manifest unreadable, or it was captured again into a different environment.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

from envrepro.image.spec import HEAVY_LABEL, LABEL_KEY
from envrepro.config import cache_dir
from envrepro.engine.base import ContainerEngine
from envrepro.sidecar import layout, manifest
from envrepro.errors import EnvreproError
from envrepro.fsutil import atomic_write_text, file_lock

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


def _write_index(path: Path, data: Dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _locked(path: Path):
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
    with _locked(path):
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
        _write_index(path, data)


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


@dataclass
class ImageRow:
    tag: str
    id: str
    key: str
    size: int
    created: str
    captures: List[str] = field(default_factory=list)
    stale: Dict[str, str] = field(default_factory=dict)
    tags: List[str] = field(default_factory=list)
    containers: List[str] = field(default_factory=list)   # containers created from it (prune keeps it)

    @property
    def in_use(self) -> bool:
        return bool(self.captures or self.containers)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["in_use"] = self.in_use
        return d


def _row(img: Any) -> ImageRow:
    """A Docker images entry (dict from the low-level API, or an SDK Image) -> ImageRow."""
    if not isinstance(img, dict):
        attrs = dict(getattr(img, "attrs", {}) or {})
        img = {"Id": getattr(img, "id", attrs.get("Id")), "RepoTags": getattr(img, "tags", None),
               "Labels": getattr(img, "labels", None), "Size": attrs.get("Size"),
               "Created": attrs.get("Created")}
    tags = [t for t in (img.get("RepoTags") or []) if t and t != "<none>:<none>"]
    labels = img.get("Labels") or (img.get("Config") or {}).get("Labels") or {}  # list or inspect
    created = img.get("Created")
    if isinstance(created, (int, float)):
        created = _dt.datetime.fromtimestamp(created, _dt.timezone.utc).replace(microsecond=0).isoformat()
    image_id = str(img.get("Id") or "")
    return ImageRow(tag=tags[0] if tags else "<none>", id=image_id.split(":")[-1][:12],
                    key=str(labels.get(LABEL_KEY, "")), size=int(img.get("Size") or 0),
                    created=str(created or ""), tags=tags)


def list_images(engine: ContainerEngine, key_for: Optional[KeyFor] = None,
                path: Optional[Path] = None) -> List[ImageRow]:
    """envrepro's images (by label) with the captures in the index each one still serves."""
    index = read_index(path)["images"]
    rows = []
    for img in engine.images(LABEL_KEY):
        row = _row(img)
        for root, entry in sorted(((index.get(row.key) or {}).get("captures") or {}).items()):
            why = stale_reason(root, entry, row.key, key_for)
            if why is None:
                row.captures.append(root)
            else:
                row.stale[root] = why
        rows.append(row)
    return rows


@dataclass
class PruneResult:
    removed: List[ImageRow] = field(default_factory=list)
    kept: List[ImageRow] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    cache: List[Dict[str, Any]] = field(default_factory=list)   # builder stages removed (--cache)

    @property
    def freed(self) -> int:
        return sum(r.size for r in self.removed) + sum(int(c.get("size") or 0) for c in self.cache)

    def to_dict(self) -> Dict[str, Any]:
        return {"removed": [r.to_dict() for r in self.removed], "kept": [r.to_dict() for r in self.kept],
                "failed": dict(self.failed), "dry_run": self.dry_run, "freed_bytes": self.freed}


BUILDER_LABEL = "org.envrepro.stage=builder"


def builder_cache(engine: ContainerEngine) -> List[Dict[str, Any]]:
    """Untagged builder-stage images (labelled by the Dockerfile) the classic builder keeps as
    cache: several hundred MB each; removing them only makes the next build of a new lock slower."""
    out = []
    for img in engine.images(BUILDER_LABEL):
        tags = [t for t in (img.get("RepoTags") or []) if t and t != "<none>:<none>"]
        if not tags:
            out.append({"id": str(img.get("Id", "")), "size": int(img.get("Size") or 0)})
    return out


def _prune_heavy(engine: ContainerEngine, result: PruneResult) -> None:
    """Remove the wheelhouse builder's shared TensorFlow-closure images (``envrepro-heavy``) that
    no remaining environment image was built on (their label ``org.envrepro.heavy``). Only with
    ``--cache``: like the Dockerfile builder's stages, they are the build cache that makes the
    next environment with that closure (or this one, rebuilt) take seconds."""
    removed = {r.id for r in result.removed}
    envs = [i for i in engine.images(LABEL_KEY) if str(i.get("Id", "")) not in removed]
    used = {str((i.get("Labels") or {}).get(HEAVY_LABEL, "")) for i in envs}
    for img in engine.images(HEAVY_LABEL):
        labels = img.get("Labels") or {}
        if LABEL_KEY in labels or labels.get(HEAVY_LABEL) in used:
            continue
        entry = {"id": str(img.get("Id", "")), "size": int(img.get("Size") or 0),
                 "tag": next(iter(img.get("RepoTags") or []), "")}
        if not result.dry_run:
            try:
                for ref in [t for t in img.get("RepoTags") or [] if t != "<none>:<none>"] or [entry["id"]]:
                    engine.remove_image(ref)
            except EnvreproError as e:
                result.failed[entry["tag"] or entry["id"][:19]] = str(e)
                continue
        result.cache.append(entry)


def prune(engine: ContainerEngine, dry_run: bool = False, key_for: Optional[KeyFor] = None,
          path: Optional[Path] = None, cache: bool = False) -> PruneResult:
    """Remove the envrepro images no capture in the index still uses, and forget stale entries.

    "Still uses" means the capture's folder is there and its image key, recomputed with the base
    image recorded at load time (or by ``key_for(capture)``), is the image's key; for index
    entries without a base image, an unchanged lock and Python version.
    """
    path = path or index_path()
    result = PruneResult(dry_run=dry_run)
    rows = list_images(engine, key_for, path)
    why = unreadable(path) if rows and not dry_run else None
    if why:
        raise EnvreproError(f"the images index {path} {why}: envrepro can't tell which captures use its "
                            f"{len(rows)} image(s), so none was removed", None,
                            "run `envrepro load` on the models you keep (each load records its image), "
                            "then prune again; or remove images by hand with `docker rmi`")
    for row in rows:
        if not row.captures:
            # an image a container (running or stopped) was created from stays: removing its
            # tag would leave that container on an image no listing shows
            row.containers = engine.containers_using(row.id) if row.id else []
        if row.in_use:
            result.kept.append(row)
            continue
        if dry_run:
            result.removed.append(row)
            continue
        try:
            for ref in row.tags or [row.id]:
                engine.remove_image(ref)
            result.removed.append(row)
        except EnvreproError as e:
            result.failed[row.tag if row.tags else row.id] = str(e)
    if not dry_run:
        _forget(path, result.removed, result.kept + result.removed)
    if cache:
        _prune_heavy(engine, result)
        for entry in builder_cache(engine):
            if not dry_run:
                try:
                    engine.remove_image(entry["id"])
                except EnvreproError as e:
                    result.failed[entry["id"][:19]] = str(e)
                    continue
            result.cache.append(entry)
    return result


def _forget(path: Path, removed: Iterable[ImageRow], seen: Iterable[ImageRow]) -> None:
    """Drop index entries of removed images and the stale captures of every image looked at."""
    if not path.exists():
        return
    removed_keys = {r.key for r in removed}
    with _locked(path):
        data = read_index(path)
        images = data["images"]
        for key in removed_keys:
            images.pop(key, None)
        for row in seen:
            caps = (images.get(row.key) or {}).get("captures") or {}
            for root in row.stale:
                caps.pop(root, None)
        _write_index(path, data)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def render_images(rows: List[ImageRow]) -> str:
    if not rows:
        return "no envrepro images\n"
    out = []
    for r in rows:
        state = f"{len(r.captures)} capture(s)" if r.in_use else "unused (envrepro images prune removes it)"
        out.append(f"{r.tag}  {r.id}  {human_size(r.size)}  created {r.created}  {state}")
        out.extend(f"    {c}" for c in r.captures)
    return "\n".join(out) + "\n"


def render_prune(result: PruneResult) -> str:
    verb = "would remove" if result.dry_run else "removed"
    lines = [f"{verb} {r.tag} ({human_size(r.size)})" for r in result.removed]
    lines += [f"{verb} {'shared closure image ' + c['tag'] if c.get('tag') else 'builder cache ' + (c['id'][7:19] or c['id'][:12])} ({human_size(c['size'])})" for c in result.cache]
    lines += [f"could not remove {tag}: {why}" for tag, why in sorted(result.failed.items())]
    lines += [f"kept {r.tag}: used by container(s) {', '.join(r.containers)}" for r in result.kept if r.containers]
    cache = f" and {len(result.cache)} builder stage(s)" if result.cache else ""
    lines.append(f"{verb} {len(result.removed)} image(s){cache}, {human_size(result.freed)}; "
                 f"kept {len(result.kept)} in use")
    return "\n".join(lines) + "\n"
