"""What a killed capture leaves beside the model, recovered: no capture lost, nothing deleted unread.

A capture is written into ``.<name>.tmp-*`` and swapped into place (``fsutil.replace_dir``). A
kill at any step leaves at most, beside ``<name>``:

- ``.<name>.tmp-*`` that is not sealed (``seal.sealed``: its manifest, written last, lists
  every file with its hash): a capture still being written, or the old capture half removed
  after the swap. Garbage.
- ``.<name>.tmp-*`` that is sealed: the new capture, killed before its swap (or its first
  rename); or the old one, swapped out and killed before its removal.
- ``.<name>.old-*``: the old capture renamed aside where no swap is possible, killed before the
  new one was renamed in (the new one, complete, is then the sealed ``.tmp-*``).

Every leftover is read (sealed or not) before anything is decided:

- ``<name>`` missing: the sealed leftover goes back into place - a sealed temp folder before an
  aside one, the newest manifest first. A sealed temp folder is a capture finished to its last
  hash, the one the killed command was putting in (for the save hook: the one that describes
  the model now saved); the old one is then a previous version. With no sealed leftover, an
  ``.old-*`` still goes back: it was the user's capture, as it was.
- ``<name>`` there and sealed: each leftover is a previous version or garbage, and is removed.
- ``<name>`` there but not sealed (edited, damaged, or a link): garbage temp folders are
  removed; the rest is kept and said, until a capture verifies again.

Concurrency: recovery renames and removes only under the capture lock. The writer holds it and
recovers first. A reader tries the lock without waiting: when a capture holds it, the leftovers
are that capture's own temp folder, or ones it recovers first thing, and a reader must neither
touch them nor wait (the probe runs under the lock, for minutes). A reader that can't write the
folder (a read-only mount) only reports. Links are never leftovers: not followed, not removed.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from envrepro import fsutil
from envrepro.sidecar.seal import sealed
from envrepro.sidecar.layout import MANIFEST


@dataclass
class Leftover:
    path: Path
    aside: bool         # ``.<name>.old-*``: the old capture renamed aside
    sealed: bool        # written whole (its manifest verifies)
    mtime: float        # of its manifest (0 when not sealed)

    @property
    def what(self) -> str:
        if self.aside:
            return "the previous capture" if self.sealed else "the previous capture (it did not verify)"
        return "a complete capture"


def lock_path(sidecar: Path) -> Path:
    """The capture lock: writers hold it for the whole capture, recovery while it renames."""
    return sidecar.with_name(f".{sidecar.name}.lock")


def survey(sidecar: Path) -> List[Leftover]:
    """Every leftover of ``sidecar``, read (hashes verified)."""
    out = []
    for p in fsutil.leftovers(sidecar.parent, sidecar.name):
        ok = sealed(p)
        mtime = 0.0
        if ok:
            try:
                mtime = os.lstat(str(p / MANIFEST)).st_mtime
            except OSError:
                ok = False
        out.append(Leftover(p, p.name.startswith(f".{sidecar.name}{fsutil.OLD_TAG}"), ok, mtime))
    return out


def pick(found: List[Leftover]) -> Optional[Leftover]:
    """The leftover to put back when ``<name>`` is missing (see the module's rules)."""
    candidates = [f for f in found if f.sealed or f.aside]
    if not candidates:
        return None
    return max(candidates, key=lambda f: (f.sealed, not f.aside, f.mtime, f.path.name))


def recover(sidecar: Path) -> None:
    """For readers, before reading ``sidecar``: recover its leftovers if no capture is running
    (see the module's rules); a folder that can't be written is only reported on."""
    sidecar = Path(sidecar)
    if not fsutil.leftovers(sidecar.parent, sidecar.name):
        return                                  # the usual case: one folder listing
    if not os.access(str(sidecar.parent), os.W_OK):
        report_only(sidecar)
        return
    try:
        with fsutil.file_lock(lock_path(sidecar), blocking=False) as held:
            if held:
                recover_locked(sidecar)
    except OSError:                             # the lock file can't be made
        report_only(sidecar)


def recover_locked(sidecar: Path) -> List[Path]:
    """Recover ``sidecar``'s leftovers, the capture lock held. Returns the leftovers kept."""
    found = survey(sidecar)
    if not found:
        return []
    if os.path.lexists(str(sidecar)):
        current_sealed = not sidecar.is_symlink() and sealed(sidecar)
    else:
        back = pick(found)
        current_sealed = False
        if back is not None:
            try:
                fsutil.rename_noreplace(back.path, sidecar)
                fsutil.fsync_dir(sidecar.parent)
            except OSError as e:
                say(f"{back.path}: {back.what} a killed capture left could not be put back at "
                    f"{sidecar.name} ({e.strerror or e}); rename it there")
                return [f.path for f in found]
            found.remove(back)
            current_sealed = back.sealed
            say(f"{sidecar}: a capture was killed while writing this one; put back {back.what} "
                f"it left at {back.path.name}")
    kept = []
    for f in found:
        if current_sealed or not (f.sealed or f.aside):
            fsutil.remove_tree(f.path)
        else:
            kept.append(f.path)
            say(f"{f.path}: kept {f.what} a killed capture left, as {sidecar.name} does not "
                "verify (a capture that verifies replaces both)")
    return kept


def report_only(sidecar: Path) -> None:
    """Say where a missing capture is, when it can't be put back from here."""
    if os.path.lexists(str(sidecar)):
        return
    back = pick(survey(sidecar))
    if back is not None:
        say(f"{sidecar}: missing, but a killed capture left {back.what} at {back.path} and this "
            f"folder can't be written here: rename it to {sidecar.name}")


def say(message: str) -> None:
    sys.stderr.write(f"envrepro: warning: {message}\n")
    sys.stderr.flush()
