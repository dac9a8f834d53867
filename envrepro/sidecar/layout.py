"""Where everything of a capture lives: file names in the sidecar folder and container mounts.

Written once here so the capture side, the image build and the sandbox can't drift apart; the
manifest, the lock and the Dockerfile all quote these paths. Standard library only (no yaml): the
save hook and the lock writer import it inside training jobs. The format is docs/format.md.
"""
from __future__ import annotations

import os
from pathlib import Path

from envrepro.errors import ModelNotFound

SCHEMA = "envrepro/v1"
SIDECAR_SUFFIX = ".envrepro"            # my_model/ -> my_model.envrepro/

# Inside the sidecar folder
MANIFEST = "envrepro.yaml"              # written last; lists the sha256 of every other file
LOCK_FILE = "requirements.lock"
REQUIREMENTS_IN = "requirements.in"
SNAPSHOT_DIR = "snapshot"               # custom modules' source
WHEELS_DIR = "wheels"                   # wheels built from local/editable installs
REFERENCE_DIR = "reference"             # sample input and reference prediction (.npy)

# Inside a container (image build and sandbox). The runtime's own mount is
# envrepro.runtime.launch.CONTAINER_DIR.
CAPTURE_MOUNT = "/envrepro/capture"     # the sidecar folder, read-only
MODEL_MOUNT = "/envrepro/model"         # the folder holding the model
# Local wheels are locked as ``name @ file:///envrepro/capture/wheels/<file>``; the image build
# puts them at the same path.
WHEELS_MOUNT = f"{CAPTURE_MOUNT}/{WHEELS_DIR}"
BUILD_DIR = "/etc/envrepro-build"    # an image build's pip configuration and CA bundle


def sidecar_for(model_path: "os.PathLike[str] | str") -> Path:
    """``my_model/`` -> ``my_model.envrepro/``; ``m.h5`` -> ``m.h5.envrepro/``."""
    p = Path(os.path.abspath(model_path))
    if p.name.endswith(SIDECAR_SUFFIX):
        return p
    return p.with_name(p.name + SIDECAR_SUFFIX)


def model_for(sidecar: Path) -> Path:
    return sidecar.with_name(sidecar.name[: -len(SIDECAR_SUFFIX)])


def resolve_model(path: "os.PathLike[str] | str") -> Path:
    """Accept the model path or its sidecar; return the model path."""
    p = Path(os.path.abspath(path))
    if p.name.endswith(SIDECAR_SUFFIX):
        p = model_for(p)
    if not p.exists():
        raise ModelNotFound("no model at this path", str(p), "check the path, or save the model first")
    return p
