"""The base image an environment is built on: ``python:X.Y-slim`` for the captured Python unless
the user chose another (``envrepro.config``), or for ``--gpus`` with TensorFlow before 2.14 the
CUDA/cuDNN image the captured TensorFlow was tested with (``envrepro/data/gpu_bases.yaml``; it has
no Python, the build compiles the captured one). From 2.14 the GPU build's CUDA libraries come as
pip wheels (``tensorflow[and-cuda]``, ``envrepro.packages.gpu``) and the base stays
``python:X.Y-slim``. A base present locally is used as it is; a missing one is pulled.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from envrepro import config
from envrepro.packages.gpu import cuda_as_wheels
from envrepro import shipped
from envrepro.engine.base import ContainerEngine, LineCallback
from envrepro.errors import BuildFailed, EnvreproError
from envrepro.sidecar.manifest import Capture

def python_xy(version: str) -> str:
    """"3.8.18" -> "3.8": the part of the captured version a base image tag names."""
    parts = str(version).split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        raise EnvreproError(f"not a Python version: {version!r}", None, "check python.version in the manifest")
    return ".".join(parts[:2])


def default_base(python_version: str, base_image: Optional[str] = None) -> str:
    """The base image: argument, else ENVREPRO_BASE_IMAGE, else config ``base_image``, else
    ``python:X.Y-slim`` for the captured X.Y. ``{python}``/``{xy}`` in an override are filled in."""
    chosen = config.base_image_setting(base_image)
    if not chosen:
        return f"python:{python_xy(python_version)}-slim"
    return chosen.replace("{python}", python_version).replace("{xy}", python_xy(python_version))


@dataclass(frozen=True)
class GpuBase:
    """A CUDA/cuDNN runtime image (without Python: the build compiles the captured one on it)."""

    image: str
    cuda: str
    cudnn: str
    ubuntu: str


def _minor(v: str) -> Tuple[int, int]:
    m = re.match(r"^(\d+)\.(\d+)", str(v))
    if not m:
        raise EnvreproError(f"not a TensorFlow version: {v!r}", None, "check frameworks.tensorflow")
    return int(m.group(1)), int(m.group(2))


def gpu_bases() -> List[Dict[str, Any]]:
    import yaml

    return list(yaml.safe_load(shipped.text("envrepro.data", "gpu_bases.yaml"))["bases"])


def gpu_base(tf_version: str) -> GpuBase:
    """The CUDA/cuDNN base TensorFlow ``tf_version`` was tested with (envrepro/data/gpu_bases.yaml)."""
    want = _minor(tf_version)
    for row in gpu_bases():
        if _minor(row["tf_min"]) <= want and (row["tf_max"] is None or want <= _minor(row["tf_max"])):
            return GpuBase(row["image"], str(row["cuda"]), str(row["cudnn"]), str(row["ubuntu"]))
    raise EnvreproError(f"no known CUDA base for TensorFlow {tf_version}", None,
                        "pass --base-image with a CUDA image that has Python")


def cuda_base_needed(capture: Capture, base_image: Optional[str] = None, gpus: bool = False) -> bool:
    """True when the image goes on the CUDA base of the table: ``--gpus``, no base chosen by the
    user, TensorFlow before 2.14 (later ones get CUDA as pip wheels). That base has no Python: the
    build compiles the captured one (``python_from_source``); a base the user chose must have one."""
    return bool(gpus and not base_image
                and not cuda_as_wheels(str(capture.get("frameworks.tensorflow") or "")))


def resolve_base(capture: Capture, base_image: Optional[str] = None, gpus: bool = False) -> str:
    """The base for this capture: the user's choice always wins, else the CUDA base when
    ``cuda_base_needed``, else the default (``python:X.Y-slim``)."""
    if cuda_base_needed(capture, base_image, gpus):
        return gpu_base(str(capture.get("frameworks.tensorflow") or "")).image
    return default_base(str(capture.get("python.version")), base_image)


def base_digest(info: Dict[str, Any]) -> str:
    """What pins the base: its registry digest, else (a base built locally) its image id."""
    digests = info.get("RepoDigests") or []
    return str(digests[0]) if digests else str(info.get("Id", ""))


def ensure_base(engine: ContainerEngine, base: str, say: LineCallback) -> Dict[str, Any]:
    """A base present locally is used as it is (never pulled); a missing one is pulled."""
    info = engine.inspect_image(base)
    if info:
        return info
    say(f"Pulling base image {base}")
    try:
        pulled = engine.pull(base, on_line=say)
    except BuildFailed as e:
        raise BuildFailed(f"base image {base} is not present locally and could not be pulled: {e.what}",
                          None, e.fix or "pull it by hand, or pick another with --base-image / "
                          "ENVREPRO_BASE_IMAGE") from None
    info = engine.inspect_image(base) if pulled else None
    if not info:
        raise BuildFailed(f"base image {base} is neither present locally nor on its registry", None,
                          "pull or build it, or pick another with --base-image / ENVREPRO_BASE_IMAGE")
    return info
