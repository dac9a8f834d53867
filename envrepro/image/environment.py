"""The environment a command works with, worked out once: base image, lock, key, labels.

``load``, ``run``, ``shell``, ``serve``, ``build``, ``push``, ``bundle`` and ``dockerfile`` all
start here (``environment_for``), so "which base, which lock (the capture's own or its
translation for Linux or GPUs), which key" is decided in one place and never twice per command:

    capture -> base image -> lock for that base (translated when needed) -> key -> labels, spec

The value is frozen: what a command decided is what it builds, finds, pulls, bundles or prints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from envrepro.image.bases import cuda_base_needed, resolve_base
from envrepro.image.dockerfile import BuildSpec
from envrepro.image.spec import RUNTIME_VERSION, build_spec, capture_key, env_labels, image_tag, locked
from envrepro.packages.installplan import unverified_names
from envrepro.packages.pipconfig import PipSettings
from envrepro.packages.translation import Translation
from envrepro.sidecar.lockfile import Lock
from envrepro.sidecar.manifest import Capture


@dataclass(frozen=True)
class Environment:
    """One capture's environment image, as this command will have it."""

    capture: Capture
    base: str                           # the base image reference
    python_from_source: bool            # the base has no Python (a CUDA base): built in a stage
    lock: Lock                          # what the image installs: the capture's lock, or...
    translation: Optional[Translation]  # ...its translation for Linux or GPUs (None: as captured)
    key: str                            # the image key (``image.spec``)
    runtime_version: str = RUNTIME_VERSION

    @property
    def tag(self) -> str:
        return image_tag(self.key)

    @property
    def python_version(self) -> str:
        return str(self.capture.get("python.version"))

    @property
    def unverified(self) -> List[str]:
        """Pins installed without a hash check (a lock that mixes hashed and hashless ones)."""
        return unverified_names(self.lock)

    def labels(self) -> Dict[str, str]:
        """The labels its image carries (all but the base's digest, known once it is pulled)."""
        return env_labels(self.capture, self.base, self.key, self.lock, self.runtime_version,
                          self.translation)

    def spec(self, base_digest: str = "", pip: Optional[PipSettings] = None) -> BuildSpec:
        """What its Dockerfile and build context are rendered from (``pip``: the settings that
        go into the build; None: the host's)."""
        return build_spec(self.capture, self.base, base_digest, self.key, self.python_from_source,
                          pip, self.runtime_version, self.lock, self.translation)


def environment_for(capture: Capture, base_image: Optional[str] = None, gpus: bool = False,
                    pip: Optional[PipSettings] = None, say: Optional[Callable[[str], None]] = None,
                    runtime_version: str = RUNTIME_VERSION) -> Environment:
    """The environment of ``capture`` on ``base_image`` (None: the default for its Python, or
    a CUDA base with ``gpus``). A lock made on macOS or Windows, or a CPU lock with ``gpus``, is
    translated here (cached on the host; ``pip``: the settings the translation resolves with,
    ``say``: its progress)."""
    base = resolve_base(capture, base_image, gpus)
    lock, translation = locked(capture, gpus, pip, say)
    return Environment(capture, base, cuda_base_needed(capture, base_image, gpus), lock, translation,
                       capture_key(capture, base, lock, runtime_version), runtime_version)
