"""The image archive of an image bundle (``image.tar``, ``docker save`` output), read whole
before anything is loaded.

``docker load`` trusts its archive: the last ``manifest.json`` wins, an OCI ``index.json``'s
name annotations or a legacy ``repositories`` file tag images, layers may be compressed, there is
no size limit. So ``read`` parses every member of the staged archive first and refuses, with one
line, anything but one image as ``docker save`` writes it (the legacy layout of Docker < 25:
``manifest.json``, ``repositories``, ``<config sha256>.json``, ``<id>/{VERSION,json,layer.tar}``;
or the OCI layout of Docker 25+: ``index.json``, ``oci-layout``, ``blobs/sha256/<hex>``, with
its ``manifest.json``):

- member names twice, also after normalisation (``./x``, ``x/`` and ``x``; ``a//b`` and
  ``a/b``), or not in normal form, absolute, with ``..``; members that are not regular files or
  folders (links, devices, FIFOs, sparse files), but for the one link ``docker save`` writes
  itself (``<id>/layer.tar`` -> ``../<id2>/layer.tar``, an image's repeated layer, read as its
  target); names ``docker save`` does not write;
- more than one image (manifest entries, index manifests, configs) or a layer not in the image;
- any tag other than the bundle's own, wherever the archive could name one (``RepoTags``, the
  ``repositories`` file, ``org.opencontainers.image.ref.name``/``io.containerd.image.name``
  annotations): none of them reaches ``docker load`` anyway;
- a config whose sha256 (the image id) is not its name or not the bundle's id; a layer whose
  sha256 is not the config's ``rootfs.diff_ids`` entry; a compressed layer (gzip, zstd, bzip2,
  xz); foreign layers;
- more than ``ENVREPRO_BUNDLE_IMAGE_MAX`` bytes in all or in one member (default 64 GiB).

``bundling.loadstream.sanitised`` then streams what ``docker load`` gets instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from envrepro.bundling.members import IMAGE_MEMBER, BundleError

LIMIT_ENV = "ENVREPRO_BUNDLE_IMAGE_MAX"
DEFAULT_LIMIT = 64 << 30          # bytes in all, and in any one member
JSON_MAX = 16 << 20               # manifest.json, a config, an OCI index or manifest
MAX_MEMBERS = 100_000
MAX_LAYERS = 1000                 # Docker itself stops at 128 (overlay2)
FIX = "nothing was loaded: ask its writer for a bundle written by `envrepro bundle`"
_CHUNK = 1 << 20
_HEX = r"[0-9a-f]{64}"
_CONFIG = re.compile(rf"^({_HEX})\.json$")
_LEGACY = re.compile(rf"^({_HEX})/(VERSION|json|layer\.tar)$")
_BLOB = re.compile(rf"^blobs/sha256/({_HEX})$")
_DIFF_ID = re.compile(rf"^sha256:({_HEX})$")
_TOP = ("manifest.json", "repositories", "index.json", "oci-layout")
_DIRS = re.compile(rf"^({_HEX}|blobs|blobs/sha256)$")
_NAME_KEYS = ("org.opencontainers.image.ref.name", "io.containerd.image.name")
# what a compressed stream starts with (Docker's archive.DetectCompression reads the same)
_MAGIC = ((b"\x1f\x8b\x08", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bzip2"),
          (b"\xfd7zXZ\x00", "xz"))
_SUFFIX = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class Blob:
    """A regular member of the archive: where its bytes are in the staged file, and their sha256."""

    name: str
    offset: int
    size: int
    sha256: str
    head: bytes = b""


@dataclass
class ImageArchive:
    """The one image of a checked archive: what ``sanitised`` streams to ``docker load``."""

    path: Path
    image_id: str                 # sha256:<hex>, the sha256 of the config
    config: Blob
    layers: List[Blob]            # in the config's rootfs order (a layer may appear twice)
    labels: Dict[str, str] = field(default_factory=dict)


def limit_from_env() -> int:
    """``ENVREPRO_BUNDLE_IMAGE_MAX``: bytes, or a number with k, m, g or t (binary units)."""
    text = os.environ.get(LIMIT_ENV, "").strip().lower()
    if not text:
        return DEFAULT_LIMIT
    m = re.match(r"^([0-9]+)([kmgt]?)i?b?$", text)
    value = int(m.group(1)) * _SUFFIX.get(m.group(2), 1) if m else 0
    if value <= 0:
        raise BundleError(f"{LIMIT_ENV}={text[:40]!r} is not a size", None,
                          "set it like 64g (bytes, or a number with k, m, g or t)")
    return value


def refuse(bundle: str, why: str) -> BundleError:
    return BundleError(f"{IMAGE_MEMBER} {why}", bundle, FIX)


def shown(name: str) -> str:
    return repr(name[:80])


def _normalised(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


def _check_name(name: str, seen: Dict[str, str], bundle: str) -> None:
    if (not name or "\\" in name or name.startswith("/")
            or any(ord(c) < 32 or ord(c) == 127 for c in name) or ".." in name.split("/")):
        raise refuse(bundle, f"has an unsafe member name {shown(name)}")
    key = _normalised(name)
    if key in seen:
        raise refuse(bundle, f"holds {shown(key)} twice (as {shown(seen[key])} and {shown(name)}; "
                              "names are compared normalised: ./x, x/ and x are one name)")
    seen[key] = name
    if key != name:
        raise refuse(bundle, f"has a member name not in normal form {shown(name)}")


def _kind(m: tarfile.TarInfo) -> Optional[str]:
    """None for a regular file or a folder, else what the member is."""
    if m.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and not m.issparse():
        return None
    if m.type == tarfile.DIRTYPE:
        return None
    if m.issym() or m.islnk():
        return f"a link (to {shown(m.linkname)})"
    if m.ischr() or m.isblk():
        return "a device file"
    if m.isfifo():
        return "a FIFO"
    if m.issparse():
        return "a sparse file"
    return f"a member of tar type {m.type!r}"


def _layer_alias(m: tarfile.TarInfo, found: Dict[str, Blob]) -> Optional[Blob]:
    """The one link ``docker save`` writes (legacy layout): ``<id>/layer.tar`` ->
    ``../<id2>/layer.tar``, a layer already written, when an image has the same layer twice.
    Its target's Blob, or None for any other member."""
    if not (m.issym() and _LEGACY.match(m.name) and m.name.endswith("/layer.tar")):
        return None
    target = re.match(rf"^\.\./({_HEX})/layer\.tar$", m.linkname)
    blob = found.get(f"{target.group(1)}/layer.tar") if target else None
    return blob if blob is not None and blob.size >= 0 and blob.name != m.name else None


def _scan(path: Path, bundle: str, limit: int) -> Dict[str, Blob]:
    """Every member checked and every regular file hashed: name -> Blob (folders: size -1)."""
    out: Dict[str, Blob] = {}
    seen: Dict[str, str] = {}
    total = 0
    try:
        with tarfile.open(path, mode="r:") as tar:
            while True:
                m = tar.next()
                if m is None:
                    break
                if len(seen) >= MAX_MEMBERS:
                    raise refuse(bundle, f"has more than {MAX_MEMBERS} members")
                _check_name(m.name, seen, bundle)
                what = _kind(m)
                alias = _layer_alias(m, out)
                if alias is not None:     # docker save links a layer the image has twice
                    out[m.name] = Blob(m.name, alias.offset, alias.size, alias.sha256, alias.head)
                    continue
                if what is not None:
                    raise refuse(bundle, f"member {shown(m.name)} is {what}: only files and folders "
                                          "are loaded")
                if m.isdir():
                    out[m.name] = Blob(m.name, 0, -1, "")
                    continue
                total += m.size
                if m.size > limit or total > limit:
                    raise refuse(bundle, f"is larger than {limit} bytes ({LIMIT_ENV}; at member "
                                          f"{shown(m.name)})")
                h, head, left = hashlib.sha256(), b"", m.size
                src = tar.extractfile(m)
                while left > 0 and src is not None:
                    chunk = src.read(min(_CHUNK, left))
                    if not chunk:
                        raise refuse(bundle, f"is truncated (in member {shown(m.name)})")
                    if len(head) < 8:
                        head = (head + chunk)[:8]
                    h.update(chunk)
                    left -= len(chunk)
                out[m.name] = Blob(m.name, m.offset_data, m.size, h.hexdigest(), head)
    except BundleError:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        raise refuse(bundle, f"is not a docker save archive ({str(e)[:80] or type(e).__name__})") from None
    return out


def _read(path: Path, blob: Blob, bundle: str) -> bytes:
    if blob.size > JSON_MAX:
        raise refuse(bundle, f"member {shown(blob.name)} is implausibly large for JSON ({blob.size} bytes)")
    with open(path, "rb") as f:
        f.seek(blob.offset)
        data = f.read(blob.size)
    if hashlib.sha256(data).hexdigest() != blob.sha256:
        raise refuse(bundle, f"changed while it was read (member {shown(blob.name)})")
    return data


def _json(path: Path, blob: Blob, bundle: str) -> Any:
    try:
        return json.loads(_read(path, blob, bundle).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise refuse(bundle, f"member {shown(blob.name)} is not JSON") from None


def _tag_forms(tag: str) -> Tuple[str, ...]:
    """How an archive may name the bundle's own tag: ``repo:tag``, the OCI ref name (the tag
    part) and containerd's full name."""
    return (tag, tag.rsplit(":", 1)[1], "docker.io/library/" + tag)


def _foreign_tags(names: List[str], tag: str) -> List[str]:
    return [n for n in names if n not in _tag_forms(tag)]


def _annotated_names(doc: Any) -> List[str]:
    """Every image or ref name an OCI index or manifest annotates, at any depth."""
    found: List[str] = []
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            notes = item.get("annotations")
            if isinstance(notes, dict):
                found += [str(notes[k]) for k in _NAME_KEYS if k in notes]
            stack += list(item.values())
        elif isinstance(item, list):
            stack += item
    return found


def _would_tag(bundle: str, names: List[str], tag: str, where: str) -> BundleError:
    return refuse(bundle, f"would tag {', '.join(n[:80] for n in names)} ({where}), not only {tag}")


def _blob_ref(name: Any, blobs: Dict[str, Blob], bundle: str, what: str) -> Blob:
    blob = blobs.get(name) if isinstance(name, str) else None
    if blob is None or blob.size < 0:
        raise refuse(bundle, f"manifest.json names a {what} {shown(str(name))} it does not hold")
    m = _BLOB.match(blob.name)
    if m and m.group(1) != blob.sha256:
        raise refuse(bundle, f"blob {shown(blob.name)} does not match its sha256 (damaged or edited)")
    return blob


def _compression(blob: Blob) -> Optional[str]:
    return next((kind for magic, kind in _MAGIC if blob.head.startswith(magic)), None)


def read(path: Path, bundle: str, tag: str, image_id: str, limit: Optional[int] = None) -> ImageArchive:
    """Check the staged image archive ``path`` of ``bundle`` (whose image is ``tag``, ``image_id``)
    member by member; its one image, or BundleError (one line) saying what is wrong."""
    limit = limit_from_env() if limit is None else limit
    blobs = _scan(path, bundle, limit)
    files = {n: b for n, b in blobs.items() if b.size >= 0}
    for name, blob in blobs.items():
        if blob.size < 0 and not _DIRS.match(name):
            raise refuse(bundle, f"has a folder docker save does not write: {shown(name)}")
        if blob.size >= 0 and not (name in _TOP or _CONFIG.match(name) or _LEGACY.match(name)
                                   or _BLOB.match(name)):
            raise refuse(bundle, f"has a member docker save does not write: {shown(name)}")
    if "manifest.json" not in files:
        raise refuse(bundle, "is not a docker save archive (no manifest.json)")
    entries = _json(path, files["manifest.json"], bundle)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise refuse(bundle, "has a manifest.json that is not a list of images")
    if len(entries) != 1:
        raise refuse(bundle, f"holds {len(entries)} images in its manifest.json (a bundle holds one)")
    entry = entries[0]
    unknown = sorted(set(entry) - {"Config", "RepoTags", "Layers", "LayerSources", "Parent"})
    if unknown:
        raise refuse(bundle, f"manifest.json has fields docker save does not write: {', '.join(unknown)[:80]}")
    if entry.get("LayerSources"):
        raise refuse(bundle, "names foreign layers (LayerSources), which docker would fetch")
    tags = entry.get("RepoTags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise refuse(bundle, "manifest.json has RepoTags that are not a list of tags")
    foreign = [t for t in (tags or []) if t != tag]
    if foreign:
        raise _would_tag(bundle, foreign, tag, "manifest.json")
    _check_repositories(path, files, tag, bundle)
    config_blob = _blob_ref(entry.get("Config"), files, bundle, "config")
    named = _CONFIG.match(config_blob.name) or _BLOB.match(config_blob.name)
    if not named or named.group(1) != config_blob.sha256:
        raise refuse(bundle, f"has an image config {shown(config_blob.name)} whose sha256 is not its "
                              "name (the image id): damaged or edited")
    if "sha256:" + config_blob.sha256 != image_id:
        raise refuse(bundle, f"holds image sha256:{config_blob.sha256[:12]}, not the bundle's "
                              f"{image_id[:19]}")
    config = _json(path, config_blob, bundle)
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if (not isinstance(diff_ids, list) or rootfs.get("type") != "layers"
            or not all(isinstance(d, str) and _DIFF_ID.match(d) for d in diff_ids)):
        raise refuse(bundle, "has an image config without rootfs.diff_ids")
    names = entry.get("Layers")
    if not isinstance(names, list) or len(names) != len(diff_ids):
        raise refuse(bundle, f"manifest.json lists {len(names) if isinstance(names, list) else 'no'} "
                              f"layers, its config {len(diff_ids)}")
    if len(names) > MAX_LAYERS:
        raise refuse(bundle, f"has {len(names)} layers (at most {MAX_LAYERS})")
    for n in names:
        if not (isinstance(n, str) and (_BLOB.match(n) or (_LEGACY.match(n) and n.endswith("/layer.tar")))):
            raise refuse(bundle, f"manifest.json names a layer {shown(str(n))} where docker save writes none")
    layers = [_blob_ref(n, files, bundle, "layer") for n in names]
    for blob, diff_id in zip(layers, diff_ids):
        packed = _compression(blob)
        if packed:
            raise refuse(bundle, f"has a {packed}-compressed layer {shown(blob.name)} (docker save "
                                  "writes them uncompressed)")
        if "sha256:" + blob.sha256 != diff_id:
            raise refuse(bundle, f"layer {shown(blob.name)} is not the layer its config names "
                                  "(sha256 differs from rootfs.diff_ids)")
    _check_rest(path, files, config_blob, layers, tag, bundle)
    labels = ((config.get("config") or {}).get("Labels") or {}) if isinstance(config, dict) else {}
    labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
    return ImageArchive(Path(path), image_id, config_blob, layers, labels)


def _check_repositories(path: Path, files: Dict[str, Blob], tag: str, bundle: str) -> None:
    """A legacy ``repositories`` file ({repo: {tag: layer id}}) may name the bundle's tag only."""
    if "repositories" not in files:
        return
    repos = _json(path, files["repositories"], bundle)
    if not isinstance(repos, dict) or not all(isinstance(v, dict) for v in repos.values()):
        raise refuse(bundle, "has a repositories file that is not {repository: {tag: id}}")
    named = [f"{repo}:{t}" for repo, ts in repos.items() for t in ts]
    foreign = [n for n in named if n != tag]
    if foreign:
        raise _would_tag(bundle, foreign, tag, "repositories")


def _check_rest(path: Path, files: Dict[str, Blob], config: Blob, layers: List[Blob], tag: str,
                bundle: str) -> None:
    """Every member the image does not use: small metadata only, naming nothing but its tag."""
    used = {config.name} | {b.name for b in layers} | {"manifest.json", "repositories"}
    layer_dirs = {b.name.split("/")[0] for b in layers if _LEGACY.match(b.name)}
    for name, blob in sorted(files.items()):
        if name in used:
            continue
        legacy = _LEGACY.match(name)
        if _CONFIG.match(name):
            raise refuse(bundle, f"holds a second image config {shown(name)} (a bundle holds one image)")
        if legacy and (legacy.group(2) == "layer.tar" or legacy.group(1) not in layer_dirs):
            raise refuse(bundle, f"holds {shown(name)}, which is not a layer of its image")
        if blob.size > JSON_MAX:
            raise refuse(bundle, f"holds {shown(name)} ({blob.size} bytes), which its image does not use")
        if legacy or name == "oci-layout":
            continue
        doc = _json(path, blob, bundle)          # index.json, an OCI manifest or index blob
        blob_name = _BLOB.match(name)
        if blob_name and blob_name.group(1) != blob.sha256:
            raise refuse(bundle, f"blob {shown(name)} does not match its sha256 (damaged or edited)")
        if isinstance(doc, dict) and "rootfs" in doc:
            raise refuse(bundle, f"holds a second image config {shown(name)} (a bundle holds one image)")
        if name == "index.json":
            listed = doc.get("manifests") if isinstance(doc, dict) else None
            if not isinstance(listed, list):
                raise refuse(bundle, "has an index.json without manifests")
            if len(listed) != 1:
                raise refuse(bundle, f"holds {len(listed)} images in its index.json (a bundle holds one)")
        if isinstance(doc, dict) and isinstance(doc.get("manifests"), list) and len(doc["manifests"]) > 1:
            raise refuse(bundle, f"holds {len(doc['manifests'])} images in {shown(name)} (a bundle holds one)")
        foreign = _foreign_tags(_annotated_names(doc), tag)
        if foreign:
            raise _would_tag(bundle, foreign, tag, f"{name[:80]} annotations")
