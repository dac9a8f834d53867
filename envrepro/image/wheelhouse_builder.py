"""``ensure_image``'s choice of builder, and the wheelhouse build end to end: the base's platform
(``packages.wheelhouse.target``), the lock's files in the host wheelhouse
(``packages.wheelhouse.prepare``), the read-only staging folder, and the committed layers
(``image.commitbuild``).

The Dockerfile builder is used instead, and the build output says why, when:
- ``ENVREPRO_BUILDER=dockerfile`` asks for it;
- the base has no Python (CUDA bases build one in a Dockerfile stage);
- the engine is remote (``DOCKER_HOST=tcp://...``): it can't bind-mount this host's wheelhouse;
- the lock has entries the wheelhouse can't hold (a requirement without a version).

Never for a lock with direct references (``packages.directrefs``: built only here, on a local
engine), nor with pip settings that carry credentials unless ``ENVREPRO_DOCKERFILE_PIP_CREDENTIALS=1``
lets them into its builder stages, which have a network and build sdists (``refuse_dockerfile``).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from envrepro import progress
from envrepro.image import commitbuild
from envrepro.image.dockerfile import BuildSpec
from envrepro.errors import EnvreproError
from envrepro.packages import directrefs, pipconfig
from envrepro.packages.pipconfig import PipSettings, pip_mapping
from envrepro.image.spec import RUNTIME_VERSION
from envrepro.engine.base import ContainerEngine
from envrepro.sidecar.manifest import Capture
from envrepro.packages.wheelhouse import portable
from envrepro.packages.wheelhouse import prepare as whplan
from envrepro.packages.wheelhouse import target as whtarget
from envrepro.packages.wheelhouse.prepare import NotFromWheelhouse, Wheelhouse
from envrepro.packages.wheelhouse.store import WheelStore
from envrepro.sidecar.lockfile import Lock

__all__ = ["NotFromWheelhouse", "unsupported", "wheelhouse_for", "build_image", "Built"]
Say = Callable[[str], None]


@dataclass
class Built:
    image_id: str
    wheelhouse: Wheelhouse


def unsupported(spec: BuildSpec) -> Optional[str]:
    """Why this build can't come from the wheelhouse, or None when it can."""
    return builder_reason(spec.python_from_source)


def builder_reason(python_from_source: bool) -> Optional[str]:
    """``unsupported`` before the build spec exists (``python_from_source``: a base without Python)."""
    choice = os.environ.get("ENVREPRO_BUILDER", "").strip().lower()
    if choice == "dockerfile":
        return "ENVREPRO_BUILDER=dockerfile"
    if python_from_source:
        return "the base image has no Python (built in a Dockerfile stage)"
    if not commitbuild.engine_is_local():
        return "the engine is remote (DOCKER_HOST) and can't mount this host's wheelhouse"
    return None


def refuse_dockerfile(lock: Lock, pip: PipSettings, why: str, path: Optional[str] = None) -> None:
    """Refuse (one line, exit 2) a Dockerfile build (``why``: the reason it was chosen) of a lock
    with direct references, or with pip settings whose URLs carry credentials (unless
    ``ENVREPRO_DOCKERFILE_PIP_CREDENTIALS=1``): its builder stages have a network and run the
    build backends of the sdists they install."""
    refs = directrefs.direct_references(lock)
    if refs:
        raise directrefs.DirectReferenceRefused(
            f"{directrefs.where(lock, refs[0])}: direct references are built only by the wheelhouse builder "
            f"on a local engine, and this build would use the Dockerfile builder ({why})", path,
            "unset ENVREPRO_BUILDER, use a local engine (no DOCKER_HOST=tcp://) and a base image with Python")
    secret = pipconfig.credentialed_urls(pip)
    if secret and not pipconfig.credentials_allowed():
        raise EnvreproError(
            f"the host's pip settings carry credentials ({secret[0]}), and the Dockerfile builder ({why}) would "
            "put them in a build stage that has a network and runs the build backends of the sdists it installs",
            None, "build on a local engine (the wheelhouse builder: unset ENVREPRO_BUILDER and DOCKER_HOST), or set "
            f"{pipconfig.CREDENTIALS_ENV}=1 to let them into the builder stages")


def wheelhouse_for(lock: Lock, engine: ContainerEngine, base: str, base_info: Dict[str, Any],
                   pip: PipSettings, say: Say, store: WheelStore, scope: Optional[str] = None) -> Wheelhouse:
    """Every file ``lock`` installs on ``base``, in the host wheelhouse ``store`` (fetched with
    ``pip``'s settings, sdists built in a container of the base): what an image build from the
    wheelhouse mounts, and what ``envrepro bundle --wheels`` carries. ``scope``: the capture's
    (``portable.scope_of``), so files its own bundle carried are taken."""
    directrefs.check(lock)                    # refused unless allowed, before anything is fetched
    target = whtarget.probe(engine, base, base_info, store)
    whplan.entries_for(lock, target)          # NotFromWheelhouse before any download
    return whplan.prepare(lock, target, engine, base, store, pip_mapping(pip), say, pip=pip, scope=scope)


def build_image(capture: Capture, engine: ContainerEngine, spec: BuildSpec, base_info: Dict[str, Any],
                tag: str, say: Say, runtime_version: str = RUNTIME_VERSION,
                store: Optional[WheelStore] = None, nocache: bool = False) -> Built:
    """Fill the wheelhouse for ``spec``'s lock, then build ``tag`` from it with no network
    (``nocache``: install TensorFlow's closure again even when its image exists)."""
    store = store or WheelStore()
    wh = wheelhouse_for(spec.lock, engine, spec.base_image, base_info, spec.pip, say, store,
                        portable.scope_of(capture))
    progress.log(say, f"Wheelhouse ready in {wh.seconds:.1f} s: {len(wh.files)} file(s), {wh.downloaded} downloaded"
                 + (f", built from source: {', '.join(wh.built)}" if wh.built else ""))
    staging = commitbuild.stage(wh, store)
    try:
        wheels = capture.root / "wheels"
        image_id = commitbuild.build(engine, spec.base_image, base_info, wh, staging, tag, spec.labels, say,
                                     wheels if wheels.is_dir() and any(wheels.glob("*.whl")) else None,
                                     runtime_version, reuse_heavy=not nocache)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Built(image_id, wh)
