"""What one signature covers, and where it lives.

The signature is ``MODEL.envrepro.sig``, beside the model and its capture folder: not inside the
capture, whose seal refuses any file its manifest does not list (``sidecar.seal.verify_tree``)
and whose manifest can't hold the hash of a signature made over it. It covers, file by file,
every regular file of the model (the file, or every file of a SavedModel folder) and every file
of the capture folder, each named from the folder that holds both (``my_model/saved_model.pb``,
``my_model.envrepro/envrepro.yaml``). So a signature of one model never verifies another's
capture, a capture swapped in from another model, nor a file added, removed or changed on
either side. A symbolic link or special file anywhere is refused, never followed.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Tuple

from envrepro.errors import InvalidCapture
from envrepro.sidecar.layout import sidecar_for

SIG_SUFFIX = ".sig"                     # my_model.envrepro.sig beside my_model.envrepro/
SIGN_HINT = "sign it with `envrepro sign MODEL --key PRIVATE_KEY.pem`"


class SignatureError(InvalidCapture):
    """A capture that is unsigned, signed by no trusted key, or differs from what was signed;
    a key or signature that can't be used. Exit 2, like any capture that can't be trusted."""


def signature_for(model: "os.PathLike[str] | str") -> Path:
    """``my_model`` -> ``my_model.envrepro.sig``; ``m.h5`` -> ``m.h5.envrepro.sig``."""
    side = sidecar_for(model)
    return side.with_name(side.name + SIG_SUFFIX)


@dataclass
class Scope:
    """A model and its capture as one signature sees them."""

    model: Path
    capture: Path
    signature: Path
    files: List[Tuple[str, Path]] = field(default_factory=list)   # (name from root, path), sorted

    @property
    def root(self) -> Path:
        """The folder holding the model, its capture and the signature."""
        return self.model.parent


def _entries(top: Path, root: Path) -> List[Tuple[str, Path]]:
    """Every regular file of ``top`` (a file or folder), named from ``root``; a link or special
    file is refused (lstat, never followed)."""
    def refuse(p: Path, what: str) -> SignatureError:
        return SignatureError(f"{what}: a signed model and capture hold only regular files and folders", str(p),
                              "replace it with the file it stands for, capture and sign again")

    def kind(p: Path) -> str:
        mode = os.lstat(p).st_mode
        if stat.S_ISLNK(mode):
            raise refuse(p, "symbolic link")
        if stat.S_ISDIR(mode):
            return "dir"
        if not stat.S_ISREG(mode):
            raise refuse(p, "special file (device, FIFO or socket)")
        return "file"

    if kind(top) == "file":
        return [(top.relative_to(root).as_posix(), top)]
    out = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            p = Path(dirpath, name)
            if kind(p) == "file":
                out.append((p.relative_to(root).as_posix(), p))
    return out


def scope_of(model: "os.PathLike[str] | str") -> Scope:
    """The files a signature of ``model`` and its capture covers, checked (no link, no special
    file). SignatureError when the model or its capture is missing."""
    model = Path(os.path.abspath(model))
    capture = sidecar_for(model)
    for p, what in ((model, "no model at this path"), (capture, "no capture beside this model")):
        if not os.path.lexists(p):
            raise SignatureError(what, str(p), "a signature covers a model and its capture: capture it first")
    root = model.parent
    files = sorted(_entries(model, root) + _entries(capture, root))
    return Scope(model, capture, signature_for(model), files)
