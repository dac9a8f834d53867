"""``envrepro load FILE.tar``: verify the bundle, put its model and capture in place, load its
image (or import its wheelhouse), so the normal load finds everything on this machine.

Order, so that a bad bundle changes nothing: stage and verify everything in a temp folder beside
the destination (``verify.stage``) -> refuse a model or capture already there that differs ->
check the image archive names only the expected tag and that the capture computes the bundle's
key -> ``docker load`` -> the loaded image's ``org.envrepro.key`` label and id must be the
bundle's -> only then move the model and capture into place. The destination is
``NAME.bundle/`` beside ``NAME.tar`` unless ``into`` says otherwise.
"""
from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from envrepro.bundling import verify
from envrepro.bundling.members import IMAGE_MEMBER, SUFFIX, WHEELS_DIR, BundleError, BundleManifest
from envrepro.engine.base import ContainerEngine, image_labels
from envrepro.fsutil import fsync_dir, sha256_tree
from envrepro.sidecar import layout as sidecar_layout
from envrepro.sidecar import manifest as capture_manifest

Say = Callable[[str], None]


@dataclass
class Opened:
    bundle: Path
    model: Path                      # the model, in place
    manifest: BundleManifest
    base_image: Optional[str]        # the image bundle's base (the image key depends on it)
    loaded: List[str]                # what docker load loaded
    wheels: int = 0                  # wheels imported (--wheels bundles)


def is_bundle(arg: str) -> bool:
    """A regular file named ``*.tar`` whose first member is the bundle manifest."""
    return arg.endswith(SUFFIX) and os.path.isfile(arg) and verify.starts_with_manifest(arg)


def destination(bundle: Path, into: Optional[str]) -> Path:
    dest = Path(os.path.abspath(into)) if into else bundle.with_name(bundle.name[: -len(SUFFIX)] + ".bundle")
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise BundleError("the destination is not a folder", str(dest), "pass --into NEW_FOLDER")
    if not dest.parent.is_dir():
        raise BundleError("the destination's parent folder does not exist", str(dest.parent), "create it first")
    return dest


def _conflicts(staged: Path, target: Path) -> bool:
    """True when ``target`` exists and is not identical to ``staged`` (never overwritten)."""
    if not os.path.lexists(target):
        return False
    if target.is_symlink() or staged.is_dir() != target.is_dir():
        return True
    return sha256_tree(staged) != sha256_tree(target)


def _archive_tags(path: Path, bundle: str) -> List[str]:
    """The tags a ``docker save`` archive would give its images (its manifest.json)."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            for m in tar:
                if m.name == "manifest.json" and m.isreg() and m.size < (1 << 20):
                    f = tar.extractfile(m)
                    entries = json.loads(f.read().decode("utf-8")) if f else None
                    if isinstance(entries, list):
                        return [str(t) for e in entries if isinstance(e, dict)
                                for t in (e.get("RepoTags") or [])]
    except (tarfile.TarError, OSError, ValueError, EOFError):
        pass
    raise BundleError(f"{IMAGE_MEMBER} is not a docker save archive", bundle,
                      "write the bundle again with `envrepro bundle`")


def refuse_foreign(capture: capture_manifest.Capture) -> None:
    """A macOS/Windows capture's image key needs its lock translated for Linux, which needs an
    index: such a bundle could not be loaded offline, so none is written or read."""
    from envrepro.packages import platforms

    if platforms.is_foreign(capture):
        raise BundleError("bundles hold Linux captures only (this one's lock would need an index to be "
                          "translated for Linux)", str(capture.root), "capture the model on Linux")


def expected_key(capture: capture_manifest.Capture, base_image: str) -> str:
    """The key ``ensure_image`` computes for this capture on this base (same code)."""
    from envrepro.image.environment import environment_for

    refuse_foreign(capture)
    return environment_for(capture, base_image).key


def _load_image(m: BundleManifest, staging: Path, capture: capture_manifest.Capture,
                engine: ContainerEngine, name: str, say: Say) -> List[str]:
    from envrepro.image.spec import LABEL_KEY, image_tag

    key = expected_key(capture, m.image["base_image"])
    if key != m.image["key"] or m.image["tag"] != image_tag(key):
        raise BundleError("the bundle's image was not built for its capture (image key differs)", name,
                          "write the bundle again with `envrepro bundle`")
    archive = staging / IMAGE_MEMBER
    tags = _archive_tags(archive, name)
    if tags != [m.image["tag"]]:
        raise BundleError(f"{IMAGE_MEMBER} would tag {', '.join(tags) or 'nothing'}, not only "
                          f"{m.image['tag']}", name, "write the bundle again with `envrepro bundle`")
    say(f"Loading image {m.image['tag']} from the bundle")
    with open(archive, "rb") as f:
        loaded = engine.load_images(f)
    info = engine.inspect_image(m.image["tag"]) or {}
    if image_labels(info).get(LABEL_KEY) != key or str(info.get("Id")) != m.image["id"]:
        engine.remove_image(m.image["tag"], force=True)
        raise BundleError("the image loaded from the bundle is not the one its manifest names (label "
                          "org.envrepro.key or id differs); it was removed again", name,
                          "write the bundle again with `envrepro bundle`")
    return loaded


def wheelhouse_module():
    """``envrepro.bundling.wheels`` (export_for_capture, import_dir), or one line saying the
    wheelhouse (``envrepro.packages.wheelhouse``) is missing."""
    try:
        from envrepro.packages import wheelhouse  # noqa: F401 - the check
        from envrepro.bundling import wheels
    except ImportError:
        raise BundleError("this envrepro has no wheelhouse support (envrepro.packages.wheelhouse)", None,
                          "use an image bundle: envrepro bundle MODEL -o FILE.tar") from None
    return wheels


def open_bundle(path: str, engine_factory: Callable[[], ContainerEngine], into: Optional[str] = None,
                say: Optional[Say] = None, use_filter: Optional[bool] = None) -> Opened:
    say = say or (lambda line: None)
    bundle = Path(os.path.abspath(path))
    name = str(bundle)
    dest = destination(bundle, into)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=str(dest.parent)))
    try:
        say(f"Verifying bundle {bundle.name}")
        m = verify.stage(bundle, staging, use_filter)
        root = staging / m.capture_member
        sealed = next(x for x in m.members if x.name == f"{m.capture_member}/{sidecar_layout.MANIFEST}")
        if sealed.sha256 != m.capture_sha256:
            raise BundleError("the capture in the bundle is not the one its manifest names", name, verify.FIX)
        capture = capture_manifest.read_folder(root)
        if capture.get("model.sha256") != m.model_sha256 or capture.get("model.name") not in (None, m.model_name):
            raise BundleError("the capture in the bundle is not the capture of its model", name, verify.FIX)
        pairs = [(staging / m.model_member, dest / m.model_name),
                 (root, dest / (m.model_name + sidecar_layout.SIDECAR_SUFFIX))]
        for staged, target in pairs:
            if _conflicts(staged, target):
                raise BundleError("already there and different from the bundle's: not overwritten", str(target),
                                  "move it away, or pass --into ANOTHER_FOLDER")
        loaded: List[str] = []
        if m.kind == "image":
            loaded = _load_image(m, staging, capture, engine_factory(), name, say)
        dest.mkdir(exist_ok=True)
        for staged, target in pairs:
            if not os.path.lexists(target):
                os.rename(staged, target)
        fsync_dir(dest)
        wheels = 0
        if m.kind == "wheels":
            wheelhouse = wheelhouse_module()
            placed = capture_manifest.read(dest / (m.model_name + sidecar_layout.SIDECAR_SUFFIX))
            wheels = wheelhouse.import_dir(staging / WHEELS_DIR, placed, say)
        return Opened(bundle, dest / m.model_name, m,
                      m.image.get("base_image") if m.kind == "image" else None, loaded, wheels)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
