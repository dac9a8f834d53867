"""``envrepro bundle MODEL -o FILE.tar``: one tar with the model, its capture and its environment.

The environment is the image (``docker save`` of what ``ensure_image`` found or built), or with
``--wheels`` the wheelhouse ``envrepro.bundling.wheels.export_for_capture`` writes; the signature
``MODEL.envrepro.sig`` goes along when there is one that matches them. Every member is
hashed before the manifest (the first member) is written, and hashed again while it is copied
into the tar: a file that changed in between fails the bundle. The tar is written to a temp file
beside FILE.tar, fsynced and renamed: a failure never leaves half a bundle under that name.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, List, Optional, Tuple

from envrepro.version import __version__
from envrepro.bundling.members import (IMAGE_MEMBER, MANIFEST_NAME, MODEL_DIR, SUFFIX, WHEELS_DIR,
                                      BundleError, BundleManifest, Member, Written)
from envrepro.engine.base import ContainerEngine
from envrepro.fsutil import fsync_dir, sha256_file
from envrepro.sidecar import layout as sidecar_layout
from envrepro.sidecar.manifest import Capture
from envrepro.signing.gate import carried_signature

Say = Callable[[str], None]


class _HashingWriter:
    """A binary file that hashes and counts what is written through it."""

    def __init__(self, f: BinaryIO):
        self.f, self.h, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.size += len(data)
        return self.f.write(data)


class _HashingReader:
    def __init__(self, f: BinaryIO):
        self.f, self.h = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        return data


def check_output(output: str, capture: Capture) -> Path:
    out = Path(os.path.abspath(output))
    if not out.name.endswith(SUFFIX) or out.name == SUFFIX:
        raise BundleError("a bundle's name ends with .tar", str(out), "envrepro bundle MODEL -o NAME.tar")
    if out.is_dir() or (out.is_symlink() and not out.is_file()):
        raise BundleError("is a folder or a dangling link, not a bundle file", str(out), "choose another -o")
    if not out.parent.is_dir():
        raise BundleError("the folder for the bundle does not exist", str(out.parent), "create it first")
    real = os.path.realpath(out.parent)
    for inside in (capture.model_path, capture.root):
        root = os.path.realpath(inside)
        if os.path.commonpath([real, root]) == root:
            raise BundleError("a bundle can't be written inside the model or its capture", str(out),
                              "write it beside them: -o ../NAME.tar")
    return out


def tree_members(path: Path, name: str) -> List[Tuple[Member, Optional[Path]]]:
    """``path`` (a file or folder) as members under ``name``: folders, then files, sorted; a
    link or special file anywhere is refused (a bundle holds files and folders only)."""
    def refuse(p: Path, what: str) -> BundleError:
        return BundleError(f"{what}: a bundle holds only regular files and folders", str(p),
                           "replace it with the file it stands for, then capture and bundle again")

    def one(p: Path, rel: str) -> Tuple[Member, Optional[Path]]:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            raise refuse(p, "symbolic link")
        if stat.S_ISDIR(st.st_mode):
            return Member(rel, "dir"), None
        if not stat.S_ISREG(st.st_mode):
            raise refuse(p, "special file (device, FIFO or socket)")
        return Member(rel, "file", st.st_size, sha256_file(p)), p

    out = [one(path, name)]
    if out[0][0].type == "dir":
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for entry in dirnames + sorted(filenames):
                full = Path(dirpath, entry)
                out.append(one(full, f"{name}/{full.relative_to(path).as_posix()}"))
    return out


def _tarinfo(member: Member, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(member.name)
    info.mtime = int(mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if member.type == "dir":
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.type, info.mode, info.size = tarfile.REGTYPE, 0o644, member.size
    return info


def write_tar(out: Path, bundle: BundleManifest, sources: List[Tuple[Member, Optional[Path]]]) -> int:
    """The manifest first, then every member streamed from disk and hashed again; temp file,
    fsync, rename. Returns the bundle's size."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=str(out.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                raw = bundle.to_json()
                head = tarfile.TarInfo(MANIFEST_NAME)
                head.size, head.mtime, head.mode = len(raw), int(time.time()), 0o644
                tar.addfile(head, io.BytesIO(raw))
                now = time.time()
                for member, src in sources:
                    info = _tarinfo(member, os.path.getmtime(src) if src else now)
                    if src is None:
                        tar.addfile(info)
                        continue
                    with open(src, "rb") as fh:
                        reader = _HashingReader(fh)
                        try:
                            tar.addfile(info, reader)    # reads exactly member.size bytes
                        except OSError:
                            raise BundleError("file shrank while it was being bundled", str(src),
                                              "run `envrepro bundle` again when nothing writes there") from None
                        if reader.h.hexdigest() != member.sha256 or fh.read(1):
                            raise BundleError("file changed while it was being bundled", str(src),
                                              "run `envrepro bundle` again when nothing writes there")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(out.parent)
    return out.stat().st_size


def save_image(engine: ContainerEngine, tag: str, folder: Path) -> Tuple[Member, Path]:
    """``docker save`` into a temp file in ``folder``, hashed while it streams."""
    fd, tmp = tempfile.mkstemp(prefix=".envrepro-image.", suffix=".tar", dir=str(folder))
    try:
        with os.fdopen(fd, "wb") as f:
            w = _HashingWriter(f)
            engine.save_image(tag, w)  # type: ignore[arg-type]
        return Member(IMAGE_MEMBER, "file", w.size, w.h.hexdigest()), Path(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def bundle(capture: Capture, output: str, engine: Optional[ContainerEngine] = None,
           image_info: Any = None, wheels: bool = False, say: Optional[Say] = None,
           engine_factory: Optional[Callable[[], ContainerEngine]] = None) -> Written:
    """Write the bundle of ``capture`` (already verified by the caller) to ``output``.
    ``image_info``: what ``ensure_image`` returned (image bundles); ``wheels``: a wheelhouse
    instead of the image (``envrepro.bundling.wheels.export_for_capture``, which connects to the
    engine through ``engine_factory`` when it has to probe the base image)."""
    say = say or (lambda line: None)
    out = check_output(output, capture)
    model = capture.model_path
    sources = (tree_members(model, f"{MODEL_DIR}/{model.name}")
               + tree_members(capture.root, f"{MODEL_DIR}/{capture.root.name}"))
    signed = carried_signature(model)     # beside the model, checked against it; None: unsigned
    if signed is not None:
        sources += tree_members(signed, f"{MODEL_DIR}/{signed.name}")
    seal = sha256_file(capture.root / sidecar_layout.MANIFEST)
    image = {}
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.parts-", dir=str(out.parent)))
    try:
        if wheels:
            from envrepro.bundling.unpack import wheelhouse_module

            wheelhouse = wheelhouse_module()
            house = staging / WHEELS_DIR
            house.mkdir()
            count = len(wheelhouse.export_for_capture(capture, house, say, engine_factory=engine_factory))
            sources += tree_members(house, WHEELS_DIR)
        else:
            assert engine is not None and image_info is not None
            say(f"Saving image {image_info.tag}")
            member, path = save_image(engine, image_info.tag, staging)
            sources.append((member, path))
            image = {"key": image_info.key, "tag": image_info.tag, "id": image_info.image_id,
                     "base_image": image_info.base_image}
            count = 0
        manifest = BundleManifest("wheels" if wheels else "image", model.name,
                                  str(capture.get("model.sha256") or ""), seal, image,
                                  [m for m, _ in sources], __version__,
                                  time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        say(f"Writing {out}")
        size = write_tar(out, manifest, sources)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Written(str(out), manifest.kind, size, len(sources) + 1, model.name,
                   image.get("tag"), count)
