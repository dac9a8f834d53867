"""What identifies an environment image: its key, tag and labels, and the build spec the
Dockerfile and context are rendered from.

Images are per environment, not per model: the key is hashed over everything that goes into the
image (base image, Python version, canonical lock, the sha256 of each local wheel the capture
carries, the Dockerfile templates in ``images/`` and the runtime version), so "is it built?" is
one inspect call, models that share a lock share an image, and two captures whose wheels differ
never share one. A capture made on macOS or Windows is built from its lock translated for
Linux, and a GPU image (``--gpus``) of a capture without TensorFlow's GPU build from its lock
translated for GPUs (``envrepro.packages.platforms``, cached on the host); the key is computed over
that lock, so the CPU and GPU images of one capture never share a key.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Tuple, Union

from envrepro import config
from envrepro.image import dockerfile as df
from envrepro.packages import gpu as gpu_builds
from envrepro.packages import platforms
from envrepro.packages import pipconfig
from envrepro.packages.pipconfig import PipSettings
from envrepro.image.templates import template_text
from envrepro.fsutil import sha256_file
from envrepro.sidecar.manifest import Capture
from envrepro.sidecar.lockfile import Lock, as_lock

# Bump when the image layout the runtime scripts rely on changes (venv path, user, labels,
# templates in images/, dockerfile.py): every environment then gets a new key and is rebuilt.
RUNTIME_VERSION = "2"
IMAGE_REPO = "envrepro-env"
LABEL = "org.envrepro."
LABEL_KEY = LABEL + "key"   # the label ``envrepro images`` and prune find environment images by
HEAVY_LABEL = LABEL + "heavy"   # the wheelhouse builder's shared TensorFlow-closure image (commitbuild)
Progress = Callable[[str], None]


# Every template an image can be rendered from (images/): editing one changes every key.
TEMPLATES = ("env.Dockerfile", "python-from-source.Dockerfile", "pip.sh",
             "fragments/copy-wheels.Dockerfile", "fragments/install-heavy.Dockerfile",
             "fragments/install-tools.Dockerfile", "fragments/install-unverified.Dockerfile",
             "fragments/install.Dockerfile", "fragments/pip-env.Dockerfile",
             "fragments/rest-overlay.Dockerfile", "fragments/rest-stage.Dockerfile",
             "wheelhouse-install.sh")


@functools.lru_cache(maxsize=1)
def templates_digest() -> str:
    h = hashlib.sha256()
    for name in TEMPLATES:
        h.update(name.encode() + b"\0" + template_text(name).encode() + b"\0")
    return h.hexdigest()


def image_key(base_image: str, python_version: str, lock_text: "Union[str, Lock]",
              runtime_version: str = RUNTIME_VERSION, wheels: Optional[Mapping[str, str]] = None) -> str:
    """32 hex chars of sha256 over what defines the environment (comments in the lock don't);
    ``wheels``: file name -> sha256 of the local wheels copied into the build; ``lock_text``:
    the lock, parsed (``Lock``) or as text."""
    lock = as_lock(lock_text)
    fields = {"base": base_image, "python": python_version,
              "lock": lock.canonical, "runtime": runtime_version,
              "templates": templates_digest()}
    if wheels:
        fields["wheels"] = dict(sorted(wheels.items()))
    tools = sorted(f"{e.name}=={e.version}" for e in lock.tools)
    if tools:  # setuptools/wheel pins (commented in the lock) are installed too
        fields["tools"] = tools
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def image_tag(key: str) -> str:
    return f"{IMAGE_REPO}:{key[:16]}"


def _wheel_files(capture: Capture) -> Dict[str, Path]:
    folder = capture.root / "wheels"
    return {p.name: p for p in sorted(folder.glob("*.whl"))} if folder.is_dir() else {}


def _wheels(capture: Capture) -> Dict[str, bytes]:
    return {name: p.read_bytes() for name, p in _wheel_files(capture).items()}


def wheel_hashes(capture: Capture) -> Dict[str, str]:
    """sha256 of each local wheel the build copies from the capture (part of the image key)."""
    return {name: sha256_file(p) for name, p in _wheel_files(capture).items()}


def capture_key(capture: Capture, base_image: str, lock_text: "Union[str, Lock]",
                runtime_version: str = RUNTIME_VERSION) -> str:
    """The image key of ``capture`` built on ``base_image`` from its lock (or a translation)."""
    return image_key(base_image, str(capture.get("python.version")), lock_text, runtime_version,
                     wheel_hashes(capture))


def locked(capture: Capture, gpus: bool = False, pip: Optional[PipSettings] = None,
           say: Optional[Progress] = None) -> Tuple[Lock, Optional[platforms.Translation]]:
    """The lock the image is built from: the capture's own, or its translation (made once, then
    read from the cache) for Linux when it was made on macOS or Windows, for GPUs when ``gpus``
    and it doesn't pin TensorFlow's GPU build with its CUDA libraries (``envrepro.packages.gpu``)."""
    if not platforms.is_foreign(capture) and not (gpus and gpu_builds.needs_gpu_lock(capture)):
        return capture.lock, None
    t = platforms.translate(capture, config.cache_dir(), gpu=gpus,
                            pip=pip if pip is not None else pipconfig.host_pip_settings(), say=say)
    return t.lock, t


def lock_for(capture: Capture, gpus: bool = False, pip: Optional[PipSettings] = None,
             say: Optional[Progress] = None) -> Tuple[str, Optional[platforms.Translation]]:
    """:func:`locked`, with the lock as its text."""
    lock, t = locked(capture, gpus, pip, say)
    return lock.text, t


def build_spec(capture: Capture, base_image: str, base_digest: str, key: str,
               python_from_source: bool = False, pip: Optional[PipSettings] = None,
               runtime_version: str = RUNTIME_VERSION, lock_text: "Union[str, Lock, None]" = None,
               translation: Optional[platforms.Translation] = None) -> df.BuildSpec:
    """Everything the Dockerfile and the context are rendered from, for one capture
    (``python_from_source``: the base has no Python, ``bases.builds_python``; ``lock_text``: a
    translated lock instead of the capture's, ``translation`` its origin for the labels)."""
    lock = capture.lock if lock_text is None else as_lock(lock_text)
    python_version = str(capture.get("python.version"))
    pip = pip if pip is not None else pipconfig.host_pip_settings()
    ca = b""
    if pip.cert and os.path.isfile(pip.cert):
        ca = Path(pip.cert).read_bytes()
    labels = env_labels(capture, base_image, key, lock, runtime_version, translation)
    if base_digest:
        labels[LABEL + "base-digest"] = base_digest
    return df.BuildSpec(base_image=base_image, python_version=python_version, lock_text=lock.text,
                        lock=lock, labels=labels, pip=pip, ca_bundle=ca, wheels=_wheels(capture),
                        python_from_source=python_from_source)


def env_labels(capture: Capture, base_image: str, key: str, lock_text: "Union[str, Lock]",
               runtime_version: str = RUNTIME_VERSION,
               translation: Optional[platforms.Translation] = None) -> Dict[str, str]:
    """The labels an environment image of ``capture`` carries (all but ``base-digest``, known
    only once the base is pulled): what a pulled image is checked against (``image.registry``)."""
    labels = {LABEL_KEY: key, LABEL + "python": str(capture.get("python.version")),
              LABEL + "tensorflow": str(capture.get("frameworks.tensorflow") or ""),
              LABEL + "base": base_image, LABEL + "runtime-version": runtime_version,
              LABEL + "lock-sha256": hashlib.sha256(as_lock(lock_text).text.encode()).hexdigest()}
    if translation is not None:
        labels[LABEL + "translated-from"] = translation.platform
        labels[LABEL + "translated-for"] = translation.target
    return labels
