"""What a bundle holds, by name, and its manifest (``envrepro-bundle.json``, the first member).

::

    envrepro-bundle.json        format, model, capture seal, image key/tag/id, every member's
                                type, size and sha256
    model/NAME                  the model file, or folder (its files below it)
    model/NAME.envrepro/...     its capture
    model/NAME.envrepro.sig     their signature (``envrepro sign``), when signed
    image.tar                   the environment image, ``docker save`` output     (image bundles)
    wheels/...                  the wheelhouse of ``envrepro.packages.wheelhouse``         (--wheels bundles)

The manifest is parsed as untrusted input: every field is type-checked here, once.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Dict, List, Optional

from envrepro.errors import EnvreproError

FORMAT = "envrepro-bundle/1"
KNOWN_FORMATS = (FORMAT,)
MANIFEST_NAME = "envrepro-bundle.json"
MANIFEST_MAX = 16 << 20           # a manifest listing every file of a large SavedModel fits
MODEL_DIR = "model"
IMAGE_MEMBER = "image.tar"
WHEELS_DIR = "wheels"
SIGNATURE_SUFFIX = ".sig"         # model/NAME.envrepro.sig (envrepro.signing.scope.SIG_SUFFIX)
KINDS = ("image", "wheels")
SUFFIX = ".tar"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_BASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,255}$")


class BundleError(EnvreproError):
    """A bundle that can't be written, read or trusted (exit 2, like a bad capture)."""


@dataclass
class Member:
    name: str
    type: str                  # "file" | "dir"
    size: int = 0
    sha256: str = ""

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"name": self.name, "type": self.type}
        if self.type == "file":
            d.update(size=self.size, sha256=self.sha256)
        return d


@dataclass
class BundleManifest:
    kind: str                              # "image" | "wheels"
    model_name: str
    model_sha256: str                      # the capture's model.sha256
    capture_sha256: str                    # sha256 of the capture's envrepro.yaml: its seal
    image: Dict[str, str] = field(default_factory=dict)   # key, tag, id, base_image (image bundles)
    members: List[Member] = field(default_factory=list)
    envrepro_version: str = ""
    created: str = ""
    format: str = FORMAT

    @property
    def model_member(self) -> str:
        return f"{MODEL_DIR}/{self.model_name}"

    @property
    def capture_member(self) -> str:
        from envrepro.sidecar.layout import SIDECAR_SUFFIX

        return f"{MODEL_DIR}/{self.model_name}{SIDECAR_SUFFIX}"

    @property
    def signature_member(self) -> str:
        """``model/NAME.envrepro.sig``: the signature of the model and its capture, when signed."""
        return f"{self.capture_member}{SIGNATURE_SUFFIX}"

    def to_json(self) -> bytes:
        """Compact JSON (no whitespace outside strings) with ``sha256`` over the rest: any
        changed byte of the manifest fails to parse or fails that digest."""
        data = {"format": self.format, "envrepro_version": self.envrepro_version, "created": self.created,
                "kind": self.kind,
                "model": {"name": self.model_name, "sha256": self.model_sha256},
                "capture": {"manifest_sha256": self.capture_sha256},
                "image": self.image or None, "members": [m.to_dict() for m in self.members]}
        data["sha256"] = _self_digest(data)
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode("ascii")


def _self_digest(data: Dict[str, Any]) -> str:
    import hashlib

    rest = {k: v for k, v in data.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(rest, separators=(",", ":"), sort_keys=True).encode("utf-8")).hexdigest()


def safe_name(name: str) -> bool:
    """A member name as envrepro writes it: relative, normalised POSIX, no ``..``, no empty,
    ``.`` or backslash part, printable, not absurdly long."""
    if not name or len(name) > 4096 or name != name.strip() or "\\" in name or "\0" in name:
        return False
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return False
    p = PurePosixPath(name)
    return (not p.is_absolute() and p.as_posix() == name
            and all(part not in ("", ".", "..") for part in name.split("/")))


def in_payload(name: str, kind: str) -> bool:
    """The member belongs under one of the bundle's fixed places for its kind."""
    if name == MODEL_DIR or name.startswith(MODEL_DIR + "/"):
        return True
    if kind == "image":
        return name == IMAGE_MEMBER
    return name == WHEELS_DIR or name.startswith(WHEELS_DIR + "/")


def parse(raw: bytes, bundle: str) -> BundleManifest:
    """The manifest, checked field by field; BundleError naming the bundle otherwise."""
    def bad(why: str) -> BundleError:
        return BundleError(f"not a usable bundle: {MANIFEST_NAME} {why}", bundle,
                           "write it again with `envrepro bundle MODEL -o FILE.tar`")

    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad("is not JSON") from None
    if not isinstance(data, dict):
        raise bad("is not an object")
    fmt = data.get("format")
    if fmt not in KNOWN_FORMATS:
        from envrepro.version import __version__

        raise BundleError(f"unknown bundle format {str(fmt)[:40]!r} (this envrepro {__version__} reads "
                          f"{', '.join(KNOWN_FORMATS)})", bundle, "upgrade envrepro, or write the bundle again")
    if data.get("sha256") != _self_digest(data):
        raise BundleError(f"{MANIFEST_NAME} does not match its own sha256 (damaged or edited)", bundle,
                          "copy the bundle again from its source, or write it again")
    kind = data.get("kind")
    model, capture, image = data.get("model"), data.get("capture"), data.get("image")
    if kind not in KINDS:
        raise bad(f"has an unknown kind {str(kind)[:20]!r}")
    if not (isinstance(model, dict) and isinstance(model.get("name"), str) and safe_name(model["name"])
            and "/" not in model["name"] and _HEX64.match(str(model.get("sha256", "")))):
        raise bad("'model' is not a name and a sha256")
    if not (isinstance(capture, dict) and _HEX64.match(str(capture.get("manifest_sha256", "")))):
        raise bad("'capture' has no manifest sha256")
    if kind == "image":
        if not (isinstance(image, dict) and re.match(r"^[0-9a-f]{32}$", str(image.get("key", "")))
                and _TAG.match(str(image.get("tag", ""))) and _IMAGE_ID.match(str(image.get("id", "")))
                and _BASE.match(str(image.get("base_image", "")))):
            raise bad("'image' is not a key, tag, id and base image")
        image = {k: str(image[k]) for k in ("key", "tag", "id", "base_image")}
    elif image is not None:
        raise bad("has an image in a wheels bundle")
    members = data.get("members")
    if not isinstance(members, list) or not members:
        raise bad("'members' is not a list")
    out: List[Member] = []
    for m in members:
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            raise bad("lists a member without a name")
        name, mtype = m["name"], m.get("type")
        if not safe_name(name) or not in_payload(name, kind):
            raise bad(f"lists an unsafe member name {name[:80]!r}")
        if mtype == "file":
            size = m.get("size")
            if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0
                    and _HEX64.match(str(m.get("sha256", "")))):
                raise bad(f"member {name[:80]!r} has no size and sha256")
            out.append(Member(name, "file", size, str(m["sha256"])))
        elif mtype == "dir":
            out.append(Member(name, "dir"))
        else:
            raise bad(f"member {name[:80]!r} is neither a file nor a folder")
    if len({m.name for m in out}) != len(out):
        raise bad("lists a member twice")
    result = BundleManifest(kind, model["name"], model["sha256"], capture["manifest_sha256"],
                            image or {}, out, str(data.get("envrepro_version", ""))[:40],
                            str(data.get("created", ""))[:40], fmt)
    names = {m.name for m in out}
    from envrepro.sidecar.layout import MANIFEST

    if result.model_member not in names or f"{result.capture_member}/{MANIFEST}" not in names:
        raise bad("does not list the model and its capture")
    for m in out:       # under model/: the model, its capture and their signature (a file), nothing else
        if m.name == result.signature_member:
            if m.type != "file":
                raise bad(f"lists the signature {m.name[:80]!r} as a folder")
        elif m.name.startswith(MODEL_DIR + "/") and not any(
                m.name == top or m.name.startswith(top + "/") for top in (result.model_member, result.capture_member)):
            raise bad(f"lists {m.name[:80]!r}, which is neither the model, its capture nor their signature")
    if kind == "image" and IMAGE_MEMBER not in names:
        raise bad(f"does not list {IMAGE_MEMBER}")
    return result


@dataclass
class Written:
    """``envrepro bundle``'s result."""

    path: str
    kind: str
    size: int
    members: int
    model: str
    image_tag: Optional[str] = None
    wheels: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return {"bundle": self.path, "kind": self.kind, "size": self.size, "members": self.members,
                "model": self.model, "image": self.image_tag, "wheels": self.wheels}

    def text(self) -> str:
        what = f"image {self.image_tag}" if self.kind == "image" else f"{self.wheels} wheel(s)"
        return (f"wrote {self.path} ({self.size / 1e6:.1f} MB, {self.members} members: {self.model}, its "
                f"capture and {what}); load it anywhere, offline: envrepro load {self.path}")
