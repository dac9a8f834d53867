"""One lock's wheelhouse: every file its image build installs, in the store, and the install plan
that names them (``prepare``). The read-only folder a build container mounts is made from it by
the commit builder (``image.commitbuild.stage``).

Order for each pin: a stored file with a sha256 the lock pins (for a pin without hashes, the
file fetched for it before); else a wheel built before from its sdist for this target; else fetched now (``fetch``), several at a time; a pin without any
wheel is built from its sdist in a container (``sdists``). The install plan is the lock split as
for a Dockerfile build (``envrepro.packages.installplan``), with each built wheel's
sha256 in place of its sdist's, so every hashed pin is still installed with ``--require-hashes``.

A direct reference (``name @ https://...``, allowed by ``--allow-direct-references``) is pinned as
``name==version`` with its archive's sha256 (``envrepro.packages.directrefs``): downloaded by the
host from its URL, not the index, then a wheel is used as it is, an sdist built like the others.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from envrepro import progress
from envrepro.engine.base import ContainerEngine
from envrepro.packages import directrefs
from envrepro.packages.installplan import InstallPlan, install_plan
from envrepro.sidecar.layout import WHEELS_MOUNT
from envrepro.sidecar.lockfile import Lock, LockEntry, as_lock
from envrepro.packages.wheelhouse import fetch as fetching
from envrepro.packages.wheelhouse import sdists
from envrepro.packages.wheelhouse.store import WheelStore
from envrepro.packages.wheelhouse.target import Target

Say = Callable[[str], None]
LOCAL_WHEEL_PREFIX = "file://" + WHEELS_MOUNT + "/"


class NotFromWheelhouse(Exception):
    """The lock has entries the wheelhouse can't hold (a requirement without a version): the image
    is built by the Dockerfile builder instead, which says why. A lock with direct references never
    is (``directrefs``)."""


@dataclass
class Wheelhouse:
    target: Target
    files: Dict[str, Path]                 # canonical name -> stored file
    plan: InstallPlan                      # what each install step installs
    built: List[str] = field(default_factory=list)      # names installed from wheels built from sdists
    downloaded: int = 0                    # files fetched by this call (index and direct references)
    seconds: float = 0.0

    def summary(self) -> Dict[str, Any]:
        return {"target": self.target.ident(), "files": len(self.files), "downloaded": self.downloaded,
                "built_from_source": list(self.built), "seconds": self.seconds}


def entries_for(lock: "Union[str, Lock]", target: Target) -> List[LockEntry]:
    """The pins the image installs from the wheelhouse (the captured setuptools/wheel included;
    local wheels of the capture and entries whose marker is false for the target left out; a
    direct reference as ``directrefs.DirectRef.pinned``, DirectReferenceRefused for one of a kind
    never built or a wheel that does not fit the target)."""
    lock = as_lock(lock)
    out = []
    for e in lock.every:
        ref = None
        if e.url:
            if e.url.startswith(LOCAL_WHEEL_PREFIX):
                continue
            ref = directrefs.parse(e, lock)
            e = ref.pinned()
        if not e.version:
            raise NotFromWheelhouse(f"the lock has no version for {e.name}")
        if fetching.applies(e, target):
            if ref is not None and ref.wheel and not target.accepts(ref.filename):
                raise directrefs.DirectReferenceRefused(
                    f"{directrefs.where(lock, ref.entry)}: a wheel the image's Python ({target.ident()}) "
                    "can't install", None, "point the lock at a wheel for Linux and the captured Python, or an sdist")
            out.append(e)
    return out


def prepare(lock: "Union[str, Lock]", target: Target, engine: ContainerEngine, base: str, store: WheelStore,
            pip_settings: Mapping[str, Any], say: Say, run: fetching.Runner = fetching._run,
            pip: Any = None, scope: Optional[str] = None) -> Wheelhouse:
    """Every file the lock's image needs, in the store (fetched or built now if missing);
    ``pip``: the build's PipSettings for ``pip download`` (``pip_settings``: the same as a
    mapping, for the sdist lookup); ``scope``: the capture being built (``portable.scope_of``),
    whose bundle's carried files are then taken too (no other capture's are)."""
    t0 = time.perf_counter()
    lock = as_lock(lock)
    entries = entries_for(lock, target)
    files: Dict[str, Path] = {}
    built: Dict[str, Path] = {}
    todo = []
    for e in entries:
        have = store.find(e.hashes, target.accepts) if e.hashes else fetching.stored_unhashed(store, target, e, scope)
        if have is None:
            have = sdists.built_wheel(store, target, e, scope)
            if have is not None:
                built[e.name] = have
        if have is not None:
            files[e.name] = have
        else:
            todo.append(e)
    refs = directrefs.by_name(lock)        # downloaded from their URL by the host, not from the index
    direct = [refs[e.name] for e in todo if e.name in refs]
    todo = [e for e in todo if e.name not in refs]
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
            if not direct:
                progress.note(say, f"Wheelhouse: all {len(entries)} files stored already")
        files.update(fetched.files)
        direct_files, fetched_direct = directrefs.fetch(direct, store, say, pip_settings.get("cert"))
        direct_sdists = []
        for ref in direct:
            if ref.wheel:
                files[ref.name] = direct_files[ref.name]
            else:                           # built like any source-only pin, with no network
                builds.add_sdist(ref.pinned(), direct_files[ref.name])
                direct_sdists.append(ref.pinned())
        made = builds.build(engine, base, target, fetched.source_only + direct_sdists, say, run)
    finally:
        builds.close()
    files.update(made)
    built.update(made)
    plan = install_plan(directrefs.pinned_lock(lock), {name: path.parent.name for name, path in built.items()})
    return Wheelhouse(target, files, plan, sorted(built), fetched.downloaded + fetched_direct,
                      round(time.perf_counter() - t0, 3))
