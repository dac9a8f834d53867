"""Render environment Dockerfiles and their build contexts. Pure: strings and bytes, no Docker.

The Dockerfile text is in ``images/`` (``env.Dockerfile`` and the fragments in
``images/fragments/``); this module decides which fragments go in and fills in their values
(``envrepro.image.templates``).
The lock is installed in the steps of its install plan (``envrepro.packages.installplan``):
heavy (TensorFlow's closure, a shared cached layer), rest, and the hashless entries of a mixed lock.

The context is an in-memory tar whose owners, modes and times are normalised, so identical inputs
give identical bytes and the engine's cache hits.
"""
from __future__ import annotations

import io
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from envrepro.packages import directrefs
from envrepro.packages.installplan import InstallPlan, install_plan
from envrepro.packages.pipconfig import PipSettings, render_pip_conf
from envrepro.sidecar.lockfile import Lock
from envrepro.image.templates import WHEELS_DIR, fill, template_text


# -- the Dockerfile ----------------------------------------------------------------------------
@dataclass
class BuildSpec:
    """Everything one environment image is built from."""

    base_image: str
    python_version: str
    lock_text: str
    labels: Dict[str, str] = field(default_factory=dict)
    pip: PipSettings = field(default_factory=PipSettings)
    ca_bundle: bytes = b""
    wheels: Dict[str, bytes] = field(default_factory=dict)   # file name -> bytes (capture wheels/)
    python_from_source: bool = False    # base has no Python (CUDA bases): build it in a stage
    lock: Optional[Lock] = field(default=None, compare=False, repr=False)   # lock_text, parsed

    def __post_init__(self) -> None:
        if self.lock is None:
            self.lock = Lock.parse(self.lock_text)


def label_lines(labels: Dict[str, str]) -> str:
    """A LABEL instruction for ``labels``: values JSON-quoted, ``$`` escaped ("" for none)."""
    if not labels:
        return ""
    items = [f"{k}={json.dumps(str(v), ensure_ascii=False).replace('$', chr(92) + '$')}" for k, v in sorted(labels.items())]
    return "LABEL " + " \\\n      ".join(items)


def _install_step(fname: str, require_hashes: bool, find_links: bool) -> str:
    flags = "--no-deps --no-cache-dir" + (" --require-hashes" if require_hashes else "")
    if find_links:
        flags += f" --find-links {WHEELS_DIR}"
    return fill("fragments/install.Dockerfile", FILE=fname, FLAGS=flags)


def install_steps(plan: InstallPlan, wheels: bool) -> Tuple[List[str], List[str]]:
    """The install instructions of the heavy builder stage and of the rest builder stage
    (``wheels``: the capture has local wheels, copied where the lock's ``file://`` URLs point)."""
    heavy: List[str] = []
    rest: List[str] = []
    if plan.tools:
        heavy.append(fill("fragments/install-tools.Dockerfile",
                          INSTALL=_install_step("tools.lock", False, False)))
    if plan.heavy:
        heavy.append(fill("fragments/install-heavy.Dockerfile",
                          INSTALL=_install_step("heavy.lock", plan.require_hashes, False)))
    if wheels:
        rest.append(fill("fragments/copy-wheels.Dockerfile"))
    if plan.rest:
        rest.append(_install_step("rest.lock", plan.require_hashes, wheels))
    if plan.unverified:
        rest.append(fill("fragments/install-unverified.Dockerfile",
                         INSTALL=_install_step("unverified.lock", False, wheels),
                         NAMES=", ".join(plan.unverified_names)))
    return heavy, rest


def render(spec: BuildSpec) -> str:
    """The Dockerfile text for ``spec`` (what ``envrepro dockerfile`` prints)."""
    heavy_steps, rest_steps = install_steps(install_plan(spec.lock), bool(spec.wheels))
    xy = ".".join(spec.python_version.split(".")[:2])
    pip_env = fill("fragments/pip-env.Dockerfile")
    python_stage, python_base = "", spec.base_image
    if spec.python_from_source:
        python_stage = fill("python-from-source.Dockerfile", CUDA_BASE=spec.base_image,
                            PYTHON_VERSION=spec.python_version, PYTHON_XY=xy)
        python_base = "envrepro-python"
    rest_stage = rest_overlay = ""
    if rest_steps:
        rest_stage = fill("fragments/rest-stage.Dockerfile", PIP_ENV=pip_env, STEPS="\n".join(rest_steps))
        rest_overlay = fill("fragments/rest-overlay.Dockerfile")
    text = fill("env.Dockerfile", PYTHON_VERSION=spec.python_version, PYTHON_STAGE=python_stage,
                PYTHON_BASE=python_base, PIP_ENV=pip_env, HEAVY_STEPS="\n".join(heavy_steps),
                REST_STAGE=rest_stage, REST_OVERLAY=rest_overlay, LABELS=label_lines(spec.labels))
    return direct_references_note(spec) + re.sub(r"\n{3,}", "\n\n", text)


def direct_references_note(spec: BuildSpec) -> str:
    """Comment lines heading the Dockerfile of a lock with direct references ("" without): envrepro
    never builds it (``image.wheelhouse_builder.refuse_dockerfile``), and says what a ``docker build``
    of it would do."""
    refs = directrefs.direct_references(spec.lock)
    if not refs:
        return ""
    names = ", ".join(f"{e.name} @ {directrefs.shown_url(e.url or '')}" for e in refs[:3])
    more = f" and {len(refs) - 3} more" if len(refs) > 3 else ""
    return ("# envrepro: this lock has direct references (" + names.replace("\n", " ") + more + ").\n"
            "# envrepro never builds them with this Dockerfile: only with --allow-direct-references, from https\n"
            "# archives pinned by sha256 that the host downloads, each sdist built in a container with no network.\n"
            "# `docker build` of this file would let pip download and build them in a stage with a network\n"
            "# and the pip configuration (index credentials included) of build/pip.conf.\n")


# -- the build context -------------------------------------------------------------------------
def add_member(tar: tarfile.TarFile, name: str, data: "Optional[Union[bytes, Path]]", mode: int = 0o644) -> None:
    """One context entry, the same bytes for the same content (root-owned, mtime 0, so the layer
    cache hits): ``data`` bytes, a file on disk (streamed, never held in memory) or None for a
    folder."""
    ti = tarfile.TarInfo(name)
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.mtime = 0
    if data is None:
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(ti)
        return
    ti.mode = mode
    if isinstance(data, bytes):
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))
        return
    ti.size = os.path.getsize(data)
    with open(data, "rb") as f:
        tar.addfile(ti, f)


def build_context(spec: BuildSpec, dockerfile: Optional[str] = None) -> bytes:
    """The build context as tar bytes: same spec, same bytes (so the layer cache hits)."""
    files: Dict[str, Optional[bytes]] = {
        "Dockerfile": (dockerfile if dockerfile is not None else render(spec)).encode(),
        "build": None,
        "build/pip.conf": render_pip_conf(spec.pip, bool(spec.ca_bundle)).encode(),
        "build/ca.crt": spec.ca_bundle,
        "build/pip.sh": template_text("pip.sh").encode(),
    }
    for fname, text in install_plan(spec.lock).files().items():
        files[fname] = text.encode()
    if spec.wheels:
        files["wheels"] = None
        for fname, data in spec.wheels.items():
            files["wheels/" + Path(fname).name] = data
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(files):
            add_member(tar, name, files[name])
    return buf.getvalue()
