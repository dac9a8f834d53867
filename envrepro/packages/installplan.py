"""The install plan: a lock split into the files an image build installs, in order.

- ``tools.lock``: the lock's commented setuptools/wheel pins, first, without hashes, so the venv
  matches the captured one;
- ``heavy.lock``: TensorFlow's dependency closure, so environments that differ only outside it
  share the expensive cached layer;
- ``rest.lock``: everything else;
- ``unverified.lock``: only when the lock mixes hashed and hashless entries (VCS checkouts, local
  wheels locked offline, pins the index had no file for). pip's hash checking is all-or-nothing,
  so the hashed entries keep ``--require-hashes`` and the hashless ones are installed after them
  without it, and named in the build output and the load report.

Both builders install from it: the Dockerfile builder (``image.dockerfile``) and the wheelhouse
builder (``packages.wheelhouse.prepare``, with each wheel built from an sdist pinned by its hash).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple, Union

from envrepro.sidecar import lockfile
from envrepro.sidecar.lockfile import Lock, as_lock


@dataclass(frozen=True)
class InstallPlan:
    """The lock as the files the builder stage installs, each a canonical text ("" when empty)."""

    heavy: str                  # TensorFlow's closure (hashed entries only when the lock mixes)
    rest: str                   # the others (idem)
    unverified: str             # hashless entries of a mixed lock, installed without hash check
    require_hashes: bool        # heavy and rest are installed with --require-hashes
    unverified_names: Tuple[str, ...] = ()
    tools: str = ""             # the lock's commented "unsafe" pins (setuptools, wheel): installed
                                # first, without hashes, so the venv matches the captured one
    sizes: Tuple[Tuple[str, int], ...] = ()   # (file, how many packages it installs)

    def files(self) -> Dict[str, str]:
        """Non-empty files, by context name."""
        return {name: text for name, text in (("tools.lock", self.tools), ("heavy.lock", self.heavy),
                                              ("rest.lock", self.rest),
                                              ("unverified.lock", self.unverified)) if text}

    def packages(self, *files: str) -> int:
        """How many packages the files named (``heavy.lock``...) install together."""
        return sum(n for name, n in self.sizes if name in files)


def install_plan(lock: "Union[str, Lock]", built: Optional[Mapping[str, str]] = None) -> InstallPlan:
    """Split a lock for the build: all hashed -> ``--require-hashes`` throughout; none hashed ->
    neither; mixed -> hashed heavy/rest with ``--require-hashes``, then the hashless ones.
    ``built``: name -> sha256 of the wheel built from a pinned sdist, pinned in its place, so
    ``--require-hashes`` still holds (the wheelhouse, ``wheelhouse.prepare``)."""
    lock = as_lock(lock)
    entries = [dataclasses.replace(e, hashes=("sha256:" + built[e.name],)) if built and e.name in built and e.hashes
               else e for e in lock.entries]
    options = list(lock.options)
    hashed = [e for e in entries if e.hashes]
    mixed = bool(hashed) and len(hashed) < len(entries)
    heavy, rest = lockfile.split_closure(entries)   # the closure over all entries, then filtered
    hashless = [e for e in entries if not e.hashes] if mixed else []
    if mixed:
        heavy, rest = [e for e in heavy if e.hashes], [e for e in rest if e.hashes]
    tools = list(lock.tools)
    return InstallPlan(heavy=lockfile.render_entries(heavy, options),
                       rest=lockfile.render_entries(rest, options),
                       unverified=lockfile.render_entries(hashless, options),
                       require_hashes=bool(hashed),
                       unverified_names=tuple(sorted(e.name for e in hashless)),
                       tools="".join(f"{e.name}=={e.version}\n" for e in sorted(tools, key=lambda e: e.name)),
                       sizes=(("tools.lock", len(tools)), ("heavy.lock", len(heavy)), ("rest.lock", len(rest)),
                              ("unverified.lock", len(hashless))))


def unverified_names(lock: "Union[str, Lock]") -> List[str]:
    """Entries the build installs without a hash check (empty unless the lock mixes)."""
    return list(install_plan(lock).unverified_names)
