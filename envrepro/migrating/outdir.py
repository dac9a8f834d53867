"""Where a migration's artifacts go (``-o OUT``, default ``MODEL.migrated/`` beside the model).

``OUT`` is taken only when it is new, an empty folder, or an earlier migration of the same model
(its ``migration.json`` names it): anything else is refused before any work, so a migration
never writes over a user's files. The artifacts are written in a temp folder beside ``OUT`` and
swapped in whole (``fsutil.replace_dir``): a killed migration leaves the old ``OUT`` or the new.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from envrepro import errors
from envrepro.sidecar import layout

REPORT = "migration.json"
SUFFIX = ".migrated"


def default_out(model_path: Path) -> Path:
    return model_path.parent / (model_path.name + SUFFIX)


def _earlier_migration_of(out: Path, model_path: Path) -> bool:
    try:
        data = json.loads((out / REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("model") == str(model_path)


def check_out(out: Optional[str], model_path: Path) -> Path:
    """The folder to write, refused (exit 2) when it holds something else."""
    path = Path(os.path.abspath(out)) if out else default_out(model_path)
    model_path = Path(os.path.abspath(model_path))
    sidecar = layout.sidecar_for(model_path)
    for inside in (model_path, sidecar):
        if path == inside or inside in path.parents or path in inside.parents:
            raise errors.EnvreproError("the migration's output can't be the model, its capture or a "
                                       "folder holding them", str(path), "pass another -o OUT")
    if not os.path.lexists(path):
        if not path.parent.is_dir():
            raise errors.EnvreproError("the output's folder does not exist", str(path.parent),
                                       "create it or pass another -o OUT")
        return path
    if path.is_symlink() or not path.is_dir():
        raise errors.EnvreproError("the output exists and is not a folder", str(path),
                                   "pass another -o OUT, or remove it")
    if any(path.iterdir()) and not _earlier_migration_of(path, model_path):
        raise errors.EnvreproError("the output folder exists and holds something else (not an "
                                   "earlier migration of this model)", str(path),
                                   "pass another -o OUT, or empty it")
    return path


def temp_beside(out: Path) -> Path:
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def place(tmp: Path, out: Path) -> None:
    from envrepro.fsutil import replace_dir

    replace_dir(tmp, out)
