"""``envrepro images`` and ``envrepro images prune``: which environment images serve which captures.

``prune`` removes envrepro's images (label ``org.envrepro.key``) that no capture in the images
index still uses (``image.usage``). Labels are inherited through ``FROM``, so the label only finds
candidates: prune removes only tags in envrepro's own repositories, and never an image another
image is built on (``image.ownership``).

The containers ``envrepro serve`` started are listed with their image (``ImageRow.serving``) and
the orphaned ones are removed before a prune (``PruneResult.orphans``): ``serving.orphans`` finds
them (``commands.images_list``/``images_prune``); this module only shows them.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from envrepro.engine.base import ContainerEngine
from envrepro.errors import EnvreproError
from envrepro.image.origins import bundle_images
from envrepro.image.ownership import Image, are, listing, names, own_tag, stands_on, survey, tags_of
from envrepro.image.spec import HEAVY_LABEL, LABEL_KEY
from envrepro.image.usage import (KeyFor, index_path, locked, read_index, stale_reason, unreadable,
                                  write_index)

@dataclass
class ImageRow:
    tag: str
    id: str
    key: str
    size: int
    created: str
    captures: List[str] = field(default_factory=list)
    stale: Dict[str, str] = field(default_factory=dict)
    tags: List[str] = field(default_factory=list)         # envrepro's own tags (own_tag): what prune removes
    containers: List[str] = field(default_factory=list)   # containers created from it (prune keeps it)
    other_tags: List[str] = field(default_factory=list)   # the user's tags on the same image: never removed
    children: List[str] = field(default_factory=list)     # images built on it (prune keeps it)
    full_id: str = ""
    bundle: str = ""                                      # the bundle it was loaded from (origins), else ""
    serving: List[Dict[str, Any]] = field(default_factory=list)   # envrepro serve's containers of it (orphans.ServingContainer)

    @property
    def in_use(self) -> bool:
        return bool(self.captures or self.containers)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["in_use"] = self.in_use
        return d


def _row(img: Any) -> ImageRow:
    """A Docker images entry (dict from the low-level API, or an SDK Image) -> ImageRow."""
    img = listing(img)
    tags = tags_of(img)
    labels = img.get("Labels") or (img.get("Config") or {}).get("Labels") or {}  # list or inspect
    created = img.get("Created")
    if isinstance(created, (int, float)):
        created = _dt.datetime.fromtimestamp(created, _dt.timezone.utc).replace(microsecond=0).isoformat()
    image_id = str(img.get("Id") or "")
    return ImageRow(tag=tags[0] if tags else "<none>", id=image_id.split(":")[-1][:12],
                    key=str(labels.get(LABEL_KEY, "")), size=int(img.get("Size") or 0),
                    created=str(created or ""), tags=tags, full_id=image_id)


def _survey_rows(engine: ContainerEngine, key_for: Optional[KeyFor],
                 path: Optional[Path]) -> Tuple[List[ImageRow], List[Image], Dict[str, List[Image]]]:
    """envrepro's images (labelled, with at least one tag of its own), every labelled image, and
    for each row the images built on it."""
    index = read_index(path)["images"]
    images = survey(engine, LABEL_KEY)
    from_bundles = bundle_images()           # read once, not per row
    rows = []
    for im in images:
        own = [t for t in im.tags if own_tag(t, im.labels)]
        if not own:
            continue      # the user's image (built on one of envrepro's), or untagged
        row = _row(im.listed)
        row.tag, row.tags, row.other_tags = own[0], own, [t for t in im.tags if t not in own]
        row.bundle = str((from_bundles.get(row.full_id) or {}).get("bundle") or "")
        for root, entry in sorted(((index.get(row.key) or {}).get("captures") or {}).items()):
            why = stale_reason(root, entry, row.key, key_for)
            if why is None:
                row.captures.append(root)
            else:
                row.stale[root] = why
        rows.append(row)
    by_id = {im.id: im for im in images}
    own_ids = {r.full_id for r in rows}
    kids = {r.full_id: [b for b in images if stands_on(b, by_id[r.full_id], b.id in own_ids)] for r in rows}
    for row in rows:
        row.children = names(kids[row.full_id])
    return rows, images, kids


def list_images(engine: ContainerEngine, key_for: Optional[KeyFor] = None,
                path: Optional[Path] = None) -> List[ImageRow]:
    """envrepro's images (by label, with a tag of envrepro's own) with the captures in the index
    each one still serves, the user's tags on them and the images built on them."""
    return _survey_rows(engine, key_for, path)[0]


@dataclass
class PruneResult:
    removed: List[ImageRow] = field(default_factory=list)
    kept: List[ImageRow] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    cache: List[Dict[str, Any]] = field(default_factory=list)   # builder stages removed (--cache)
    untagged: List[ImageRow] = field(default_factory=list)      # envrepro's tags removed, the image kept (the user's tags)
    dangling: List[str] = field(default_factory=list)           # untagged images with envrepro's labels, left alone
    orphans: List[Dict[str, Any]] = field(default_factory=list)   # serving containers whose envrepro serve was gone, removed

    @property
    def freed(self) -> int:
        return sum(r.size for r in self.removed) + sum(int(c.get("size") or 0) for c in self.cache)

    def to_dict(self) -> Dict[str, Any]:
        return {"removed": [r.to_dict() for r in self.removed], "kept": [r.to_dict() for r in self.kept],
                "untagged": [r.to_dict() for r in self.untagged], "dangling": list(self.dangling),
                "failed": dict(self.failed), "dry_run": self.dry_run, "freed_bytes": self.freed,
                "orphans": list(self.orphans)}


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


def _untag(engine: ContainerEngine, row: ImageRow, result: PruneResult) -> bool:
    """Remove envrepro's own tags of ``row`` (the image goes with the last tag); False when the
    engine refused (said in ``result.failed``)."""
    if not result.dry_run:
        try:
            for ref in row.tags:
                engine.remove_image(ref)
        except EnvreproError as e:
            result.failed[row.tag] = str(e)
            return False
    return True


def _prune_heavy(engine: ContainerEngine, result: PruneResult) -> None:
    """Remove the wheelhouse builder's shared TensorFlow-closure images (``envrepro-heavy``) that
    no image stands on: no environment image records it (label ``org.envrepro.heavy``) and no
    image is built on it. Only with ``--cache``: like the Dockerfile builder's stages, they are
    the build cache that makes the next environment with that closure (or this one, rebuilt)
    take seconds. Judged against the images there now: after a real prune's removals, or in a
    dry run before any."""
    images = survey(engine, HEAVY_LABEL)
    for h in images:
        own = [t for t in h.tags if own_tag(t, h.labels)]
        if not own or LABEL_KEY in h.labels:
            continue      # an environment image (see prune), or not envrepro's tag
        hkey = h.labels.get(HEAVY_LABEL)
        if any(b.id != h.id and (b.labels.get(HEAVY_LABEL) == hkey or stands_on(b, h, False)) for b in images):
            continue
        row = _row(h.listed)
        row.tag, row.tags, row.other_tags = own[0], own, [t for t in h.tags if t not in own]
        if not _untag(engine, row, result):
            continue
        if row.other_tags:
            result.untagged.append(row)
        else:
            result.cache.append({"id": h.id, "size": row.size, "tag": row.tag})


def prune(engine: ContainerEngine, dry_run: bool = False, key_for: Optional[KeyFor] = None,
          path: Optional[Path] = None, cache: bool = False) -> PruneResult:
    """Remove envrepro's tags from the images no capture in the index still uses, and forget
    stale entries.

    "Still uses" means the capture's folder is there and its image key, recomputed with the base
    image recorded at load time (or by ``key_for(capture)``), is the image's key; for index
    entries without a base image, an unchanged lock and Python version.

    Only envrepro's own tags go (``own_tag``). An unused image is kept whole while a container
    was created from it or any image that stays is built on it (the user's ``FROM`` it, a
    serving image in use); with a tag of the user's too, only envrepro's tags go and the image
    stays. Images built on each other go together, children first.
    """
    path = path or index_path()
    result = PruneResult(dry_run=dry_run)
    rows, images, kids = _survey_rows(engine, key_for, path)
    why = unreadable(path) if rows and not dry_run else None
    if why:
        raise EnvreproError(f"the images index {path} {why}: envrepro can't tell which captures use its "
                            f"{len(rows)} image(s), so none was removed", None,
                            "run `envrepro load` on the models you keep (each load records its image), "
                            "then prune again; or remove images by hand with `docker rmi`")
    result.dangling = [i.id.split(":")[-1][:12] for i in images if not i.tags]
    for row in rows:
        if not row.captures:
            # an image a container (running or stopped) was created from stays: removing its
            # tag would leave that container on an image no listing shows
            row.containers = engine.containers_using(row.id) if row.id else []
    # the images that go whole: unused, no tag of the user's, nothing that stays built on them
    going = {r.full_id for r in rows if not r.in_use and not r.other_tags}
    changed = True
    while changed:
        changed = False
        for r in rows:
            if r.full_id in going and any(b.id not in going for b in kids[r.full_id]):
                going.discard(r.full_id)
                changed = True
    staying: set = set()      # ids of images that stay after all (a removal the engine refused)
    done: set = set()
    pending = [r for r in rows if not r.in_use]
    while pending:
        ready = [r for r in pending if all(b.id in done or b.id in staying or b.id not in going
                                           for b in kids[r.full_id])] or pending
        for r in ready:
            pending.remove(r)
            blocking = [b for b in kids[r.full_id] if b.id not in done]
            r.children = names(blocking)
            if blocking:
                staying.add(r.full_id)
                result.kept.append(r)
            elif not _untag(engine, r, result):
                staying.add(r.full_id)
            elif r.other_tags:          # untagged: the image stays, under the user's tags
                staying.add(r.full_id)
                result.untagged.append(r)
            else:
                done.add(r.full_id)
                result.removed.append(r)
    result.kept = [r for r in rows if r.in_use] + result.kept
    if not dry_run:
        _forget(path, result.removed + result.untagged, rows)
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
    """Drop index entries of removed images (unless another image of that key stays) and the
    stale captures of every image looked at."""
    if not path.exists():
        return
    removed = list(removed)
    gone = {r.full_id for r in removed}
    seen = list(seen)
    removed_keys = {r.key for r in removed} - {r.key for r in seen if r.full_id not in gone}
    with locked(path):
        data = read_index(path)
        images = data["images"]
        for key in removed_keys:
            images.pop(key, None)
        for row in seen:
            caps = (images.get(row.key) or {}).get("captures") or {}
            for root in row.stale:
                caps.pop(root, None)
        write_index(path, data)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def _serving_line(c: Dict[str, Any]) -> str:
    ports = ", ".join(c.get("ports") or []) or "no port"
    running = "running" if c.get("running") else (c.get("status") or "stopped")
    state = {"alive": f"envrepro serve pid {c.get('pid')} runs",
             "orphaned": f"ORPHANED: envrepro serve pid {c.get('pid')} is gone (`envrepro images prune` or the "
                         "next `envrepro serve` removes it)",
             }.get(str(c.get("state")), f"envrepro serve pid {c.get('pid')} on {c.get('host')}: not judged here")
    return f"  {c.get('id')}  {c.get('image')}  {ports}  {c.get('role')}, {running}  {state}"


def render_images(rows: List[ImageRow]) -> str:
    if not rows:
        return "no envrepro images\n"
    out = []
    for r in rows:
        if r.in_use and not r.captures:
            state = f"used by container(s) {', '.join(r.containers)}"
        elif r.in_use:
            state = f"{len(r.captures)} capture(s)"
        elif r.children:
            state = f"unused, kept: {are(r.children)} built on it"
        elif r.other_tags:
            state = f"unused (envrepro images prune untags it; the image stays as {', '.join(r.other_tags)})"
        else:
            state = "unused (envrepro images prune removes it)"
        also = f"  also tagged {', '.join(r.other_tags)}" if r.other_tags and (r.in_use or r.children) else ""
        origin = f"  loaded from bundle {r.bundle}" if r.bundle else ""
        out.append(f"{r.tag}  {r.id}  {human_size(r.size)}  created {r.created}  {state}{also}{origin}")
        out.extend(f"    {c}" for c in r.captures)
    serving = [c for r in rows for c in r.serving]
    if serving:
        out.append("serving containers (envrepro serve):")
        out.extend(_serving_line(c) for c in serving)
    return "\n".join(out) + "\n"


def render_prune(result: PruneResult) -> str:
    verb = "would remove" if result.dry_run else "removed"
    untag = "would untag" if result.dry_run else "untagged"
    lines = [f"{verb} orphaned serving container {c.get('id')} ({c.get('image')}, {c.get('role')}; its envrepro "
             f"serve pid {c.get('pid')} is gone)" for c in result.orphans]
    lines += [f"{verb} {r.tag} ({human_size(r.size)})" for r in result.removed]
    lines += [f"{verb} {'shared closure image ' + c['tag'] if c.get('tag') else 'builder cache ' + (c['id'][7:19] or c['id'][:12])} ({human_size(c['size'])})" for c in result.cache]
    lines += [f"{untag} {', '.join(r.tags)} (image kept: tagged {', '.join(r.other_tags)})" for r in result.untagged]
    lines += [f"could not remove {tag}: {why}" for tag, why in sorted(result.failed.items())]
    lines += [f"kept {r.tag}: used by container(s) {', '.join(r.containers)}" for r in result.kept if r.containers]
    lines += [f"kept {r.tag}: {are(r.children)} built on it" for r in result.kept if not r.in_use]
    if result.dangling:
        lines.append(f"left {len(result.dangling)} untagged image(s) with envrepro's labels "
                     f"({', '.join(result.dangling)}): prune removes only the tags envrepro makes "
                     "(`docker image prune` removes dangling images)")
    cache = f" and {len(result.cache)} builder stage(s)" if result.cache else ""
    untagged = f"{untag} {len(result.untagged)}; " if result.untagged else ""
    lines.append(f"{verb} {len(result.removed)} image(s){cache}, {human_size(result.freed)}; "
                 f"{untagged}kept {len(result.kept)} in use or built on")
    return "\n".join(lines) + "\n"
