"""One lock's wheelhouse: every file its image build installs, in the store, and the install plan
that names them (``prepare``); then the read-only folder a build container mounts (``stage``).

Order for each pin: a stored file with a sha256 the lock pins (for a pin without hashes, the
file fetched for it before); else a wheel built before from its sdist for this target; else fetched now (``fetch``), several at a time; a pin without any
wheel is built from its sdist in a container (``sdists``). The install plan is the lock split as
for a Dockerfile build (``envrepro.image.dockerfile.install_plan``), with each built wheel's
sha256 in place of its sdist's, so every hashed pin is still installed with ``--require-hashes``.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping

from envrepro import progress
from envrepro.image import dockerfile as df
from envrepro.image.templates import WHEELS_DIR, fill, template_text
from envrepro.engine.base import ContainerEngine
from envrepro.sidecar import lockfile
from envrepro.sidecar.lockfile import LockEntry
from envrepro.packages.wheelhouse import fetch as fetching
from envrepro.packages.wheelhouse import sdists
from envrepro.packages.wheelhouse.store import WheelStore, link_or_copy
from envrepro.packages.wheelhouse.target import Target

Say = Callable[[str], None]
LOCAL_WHEEL_PREFIX = "file://" + WHEELS_DIR + "/"


class NotFromWheelhouse(Exception):
    """The lock has entries the wheelhouse can't hold (VCS checkouts, remote URLs): the image is
    built by the Dockerfile builder instead, which says why."""


@dataclass
class Wheelhouse:
    target: Target
    files: Dict[str, Path]                 # canonical name -> stored file
    plan: df.InstallPlan                   # what each install step installs
    built: List[str] = field(default_factory=list)      # names installed from wheels built from sdists
    downloaded: int = 0                    # files fetched from the index by this call
    seconds: float = 0.0

    def summary(self) -> Dict[str, Any]:
        return {"target": self.target.ident(), "files": len(self.files), "downloaded": self.downloaded,
                "built_from_source": list(self.built), "seconds": self.seconds}


def entries_for(lock_text: str, target: Target) -> List[LockEntry]:
    """The pins the image installs from the wheelhouse (the captured setuptools/wheel included;
    local wheels of the capture and entries whose marker is false for the target left out)."""
    out = []
    for e in lockfile.parse_lock(lock_text, include_unsafe=True):
        if e.url:
            if e.url.startswith(LOCAL_WHEEL_PREFIX):
                continue
            raise NotFromWheelhouse(f"the lock installs {e.name} from {e.url.split('#')[0][:80]} "
                                    "(a direct reference)")
        if not e.version:
            raise NotFromWheelhouse(f"the lock has no version for {e.name}")
        if fetching.applies(e, target):
            out.append(e)
    return out


def _with_built_hashes(plan: df.InstallPlan, built: Mapping[str, Path]) -> df.InstallPlan:
    def fix(text: str) -> str:
        if not text or not built:
            return text
        entries = [dataclasses.replace(e, hashes=("sha256:" + built[e.name].parent.name,))
                   if e.name in built and e.hashes else e for e in lockfile.parse_lock(text)]
        return lockfile.render_entries(entries, lockfile.lock_options(text))
    return dataclasses.replace(plan, heavy=fix(plan.heavy), rest=fix(plan.rest), unverified=fix(plan.unverified))


def prepare(lock_text: str, target: Target, engine: ContainerEngine, base: str, store: WheelStore,
            pip_settings: Mapping[str, Any], say: Say, run: fetching.Runner = fetching._run,
            pip: Any = None) -> Wheelhouse:
    """Every file the lock's image needs, in the store (fetched or built now if missing);
    ``pip``: the build's PipSettings for ``pip download`` (``pip_settings``: the same as a
    mapping, for the sdist lookup)."""
    t0 = time.perf_counter()
    entries = entries_for(lock_text, target)
    files: Dict[str, Path] = {}
    built: Dict[str, Path] = {}
    todo = []
    for e in entries:
        have = store.find(e.hashes, target.accepts) if e.hashes else fetching.stored_unhashed(store, target, e)
        if have is None:
            have = sdists.built_wheel(store, target, e)
            if have is not None:
                built[e.name] = have
        if have is not None:
            files[e.name] = have
        else:
            todo.append(e)
    builds = sdists.SdistBuilds(store, pip_settings, target, run)
    try:
        if todo:
            of = f" of {len(entries)}" if files else ""       # the others are stored already
            with progress.step(say, f"Fetching {len(todo)}{of} files into the wheelhouse",
                               total=len(todo), unit="files") as s:
                fetched = fetching.fetch(todo, target, store, say, run=run, pip=pip, on_no_wheel=builds.start,
                                         on_file=lambda name: s.advance(1),
                                         on_start=lambda what: s.update(detail=what))
                s.done(f"{fetched.downloaded} downloaded"
                       + (f", {len(fetched.source_only)} to build from source" if fetched.source_only else ""))
        else:
            fetched = fetching.Fetched()
            progress.note(say, f"Wheelhouse: all {len(entries)} files stored already")
        files.update(fetched.files)
        made = builds.build(engine, base, target, fetched.source_only, say, run)
    finally:
        builds.close()
    files.update(made)
    built.update(made)
    plan = _with_built_hashes(df.install_plan(lock_text), built)
    return Wheelhouse(target, files, plan, sorted(built), fetched.downloaded,
                      round(time.perf_counter() - t0, 3))


def stage(wh: Wheelhouse, store: WheelStore) -> Path:
    """A private folder for the build containers to mount read-only at /mnt: the install script,
    pip.sh, the lock files of each step and, in wheels/, links to exactly the stored files the
    lock pins. The caller removes it (``shutil.rmtree``) after the build."""
    folder = store.tmp_dir()
    wheels = folder / "wheels"
    wheels.mkdir()
    for path in sorted(set(wh.files.values())):
        link_or_copy(path, wheels / path.name)
    texts = dict(wh.plan.files())
    texts["install.sh"] = fill("wheelhouse-install.sh")
    texts["pip.sh"] = template_text("pip.sh")
    if wh.plan.require_hashes:
        texts["require-hashes"] = ""
    if wh.plan.unverified_names:
        texts["unverified-names"] = ", ".join(wh.plan.unverified_names) + "\n"
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    for dirpath, dirs, names in os.walk(folder):
        os.chmod(dirpath, 0o755)
        for n in names:
            os.chmod(os.path.join(dirpath, n), 0o644)
    return folder
