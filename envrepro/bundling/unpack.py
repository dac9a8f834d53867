"""``envrepro load FILE.tar``: verify the bundle, put its model and capture in place, load its
image (or import its wheelhouse), so the normal load finds everything on this machine.

Order, so that a bad bundle changes nothing: stage and verify everything in a temp folder beside
the destination (``verify.stage``) -> refuse a model or capture already there that differs ->
check that the capture computes the bundle's key and the image archive whole
(``imagearchive.read``: one image, the bundle's id, no other tag, no link, no compressed layer,
a size limit) -> refuse when ``envrepro-env:KEY`` exists with another id -> ``docker load`` of a
sanitised stream naming no tag -> put back any tag that moved -> the loaded image's
``org.envrepro.key`` label and id must be the bundle's -> tag it by id, record it as loaded from
this bundle (``image.origins``) -> only then move the model and capture into place. The
destination is ``NAME.bundle/`` beside ``NAME.tar`` unless ``into`` says otherwise.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from envrepro.bundling import imagearchive, loadstream, verify
from envrepro.bundling.members import IMAGE_MEMBER, SUFFIX, WHEELS_DIR, BundleError, BundleManifest
from envrepro.engine.base import ContainerEngine, image_labels
from envrepro.errors import EnvreproError
from envrepro.fsutil import fsync_dir, sha256_tree
from envrepro.sidecar import layout as sidecar_layout
from envrepro.sidecar import manifest as capture_manifest
from envrepro.signing.gate import staged_signature

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


def _tag_ids(engine: ContainerEngine) -> Dict[str, str]:
    """Every local tag -> the id of its image."""
    return {str(t): str(row.get("Id")) for row in engine.images()
            for t in (row.get("RepoTags") or []) if t and t != "<none>:<none>"}


def _remove_if_unused(engine: ContainerEngine, image_id: str) -> None:
    """Remove the image loaded from a refused bundle, unless a tag or a container uses it now."""
    info = engine.inspect_image(image_id)
    if info is None or info.get("RepoTags") or engine.containers_using(image_id):
        return
    try:
        engine.remove_image(image_id)
    except EnvreproError:
        pass        # another image is built on it, or the engine refused: left untagged


def _put_back(engine: ContainerEngine, moved: Dict[str, Optional[str]]) -> List[str]:
    """Tag each moved tag's old image again (remove a tag the load made); the tags that could
    not be put back."""
    stuck: List[str] = []
    for t, old in sorted(moved.items()):
        try:
            if old:
                engine.tag(old, t)
            else:
                engine.remove_image(t, force=True)     # untags only, when a container uses it
        except EnvreproError:
            stuck.append(t)
    return stuck


def _exists_refusal(tag: str, existing: str, m: BundleManifest, name: str) -> BundleError:
    return BundleError(f"{tag} already exists here as image {existing[:19]}, not the bundle's "
                       f"{m.image['id'][:19]}: it is never replaced by a bundle's image", name,
                       f"if you trust this bundle more than the image here, remove that one "
                       f"(`docker rmi {tag}`) and load again")


def _load_image(m: BundleManifest, staging: Path, capture: capture_manifest.Capture,
                engine: ContainerEngine, name: str, say: Say) -> List[str]:
    """Check the image archive whole (``imagearchive.read``), load it untagged from a sanitised
    stream, put back any tag that moved, then tag it ``envrepro-env:KEY`` by id: never over an
    image of another id. The image is recorded as loaded from this bundle (``image.origins``)."""
    from envrepro.image.origins import record_bundle_image
    from envrepro.image.spec import LABEL_KEY, image_tag

    key, tag, image_id = m.image["key"], m.image["tag"], m.image["id"]
    if expected_key(capture, m.image["base_image"]) != key or tag != image_tag(key):
        raise BundleError("the bundle's image was not built for its capture (image key differs)", name,
                          "write the bundle again with `envrepro bundle`")
    archive = imagearchive.read(staging / IMAGE_MEMBER, name, tag, image_id)
    if archive.labels.get(LABEL_KEY) != key:
        raise BundleError(f"the bundle's image is not labelled org.envrepro.key={key}", name,
                          "write the bundle again with `envrepro bundle`")
    existing = engine.inspect_image(tag)
    if existing is not None and str(existing.get("Id")) != image_id:
        raise _exists_refusal(tag, str(existing.get("Id")), m, name)
    was_here = engine.inspect_image(image_id) is not None
    before = _tag_ids(engine)
    say(f"Loading image {tag} from the bundle")
    loaded = engine.load_images(loadstream.sanitised(archive, name))
    # a tag now on the bundle's image that was elsewhere or nowhere before: the load moved it
    # (the bundle's own tag on its own id is what this load makes anyway: another envrepro
    # process may have put it there meanwhile)
    moved = {t: before.get(t) for t, i in _tag_ids(engine).items()
             if before.get(t) != i and (i == image_id or i in loaded or t in loaded)
             and not (t == tag and i == image_id)}
    stuck = _put_back(engine, moved)
    info = engine.inspect_image(image_id) or {}
    refusal: Optional[BundleError] = None
    if moved or any(x != image_id for x in loaded):
        back = f"could not put back {', '.join(stuck)[:200]}" if stuck else "put back as it was"
        refusal = BundleError(f"docker load tagged {', '.join(sorted(moved) or loaded)[:200]} from the bundle; "
                              f"{back}", name, imagearchive.FIX)
    elif image_labels(info).get(LABEL_KEY) != key or str(info.get("Id")) != image_id:
        refusal = BundleError("the image loaded from the bundle is not the one its manifest names (label "
                              "org.envrepro.key or id differs); it was removed again", name,
                              "write the bundle again with `envrepro bundle`")
    else:
        existing = engine.inspect_image(tag)    # again: something may have made it meanwhile
        if existing is not None and str(existing.get("Id")) != image_id:
            refusal = _exists_refusal(tag, str(existing.get("Id")), m, name)
    if refusal is not None:
        if not was_here:
            _remove_if_unused(engine, image_id)
        raise refusal
    engine.tag(image_id, tag)
    sealed = next(x.sha256 for x in m.members if x.name == IMAGE_MEMBER)
    if not was_here:
        record_bundle_image(image_id, name, sealed, tag, key)
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
        pairs += staged_signature(staging / m.model_member, dest, name)  # checked before any image is loaded
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
