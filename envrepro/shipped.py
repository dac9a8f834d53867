"""The files envrepro ships and reads at run time, found through the package, never the source tree.

Templates (``envrepro.images``), data tables (``envrepro.data``) and the runtime package
(``envrepro.runtime``, mounted into containers and run under foreign interpreters) are read with
importlib.resources, so envrepro works from a wheel, from a read-only site-packages and from a zip
on ``sys.path`` as well as from a checkout. A file missing from the install is one line naming it
and the fix (exit 70, ``errors.BrokenInstall``), not a traceback.

The runtime must be a real folder (Docker mounts it, foreign interpreters import it by path):
where the package is not on a file system (a zip), its files are copied once into the cache, in a
folder named by their digest, and that folder is used instead.
"""
from __future__ import annotations

import functools
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

from envrepro.errors import BrokenInstall

RUNTIME_PACKAGE = "envrepro.runtime"


def _resource(package: str, name: str):
    """The Traversable for ``name`` (``a/b`` allowed) in ``package``; BrokenInstall when the
    package itself is missing."""
    from importlib import resources

    try:
        node = resources.files(package)
    except ModuleNotFoundError:
        raise BrokenInstall.missing(package.replace(".", "/") + "/") from None
    for part in name.split("/"):
        node = node / part
    return node


if sys.version_info < (3, 9):  # pragma: no cover - Python 3.8 has no importlib.resources.files
    def _resource(package: str, name: str):  # type: ignore[no-redef]  # noqa: F811
        import importlib

        try:
            mod = importlib.import_module(package)
        except ModuleNotFoundError:
            raise BrokenInstall.missing(package.replace(".", "/") + "/") from None
        return Path(mod.__file__).parent.joinpath(*name.split("/"))  # type: ignore[arg-type]


def text(package: str, name: str) -> str:
    """The text of data file ``name`` shipped in ``package`` (e.g. ``envrepro.images``,
    ``fragments/install.Dockerfile``)."""
    try:
        return _resource(package, name).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise BrokenInstall.missing(package.replace(".", "/") + "/" + name) from None


def _runtime_sources() -> Dict[str, bytes]:
    """Every ``.py`` of the runtime package, its subpackages too (``serve/``), by relative path."""
    def walk(node, prefix: str) -> Dict[str, bytes]:
        found: Dict[str, bytes] = {}
        for p in node.iterdir():
            if p.is_dir() and p.name != "__pycache__":
                found.update(walk(p, prefix + p.name + "/"))
            elif p.name.endswith(".py") and p.is_file():
                found[prefix + p.name] = p.read_bytes()
        return found
    return walk(_resource(RUNTIME_PACKAGE, ""), "")


def _expected_runtime_files() -> List[str]:
    """The runtime modules the install says it has (its RECORD); [] for a checkout or an editable
    install, whose RECORD lists no source file."""
    try:
        from importlib import metadata

        files = metadata.files("envrepro") or []
    except Exception:  # noqa: BLE001 - no metadata (a bare checkout, a zip): nothing to compare
        return []
    prefix = RUNTIME_PACKAGE.replace(".", "/") + "/"
    return sorted(str(f)[len(prefix):] for f in files
                  if str(f).startswith(prefix) and str(f).endswith(".py") and "__pycache__" not in str(f))


@functools.lru_cache(maxsize=1)
def runtime_dir() -> str:
    """The runtime package's folder on this machine's file system, complete."""
    from envrepro import runtime

    here = Path(runtime.__file__).parent
    if here.is_dir():
        for name in _expected_runtime_files():
            if not (here / name).is_file():
                raise BrokenInstall.missing(f"envrepro/runtime/{name}")
        if not (here / "__init__.py").is_file():
            raise BrokenInstall.missing("envrepro/runtime/__init__.py")
        return str(here)
    return _materialize(_runtime_sources())


def _materialize(files: Dict[str, bytes]) -> str:
    """Copy the runtime's files into ``<cache>/runtime/<digest>/`` once (atomically: a temp folder
    renamed into place) and return that folder."""
    if "__init__.py" not in files:
        raise BrokenInstall.missing("envrepro/runtime/__init__.py")
    from envrepro import config, fsutil

    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    root = config.cache_dir() / "runtime"
    final = root / h.hexdigest()[:16]
    if (final / "__init__.py").is_file():
        return str(final)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".runtime-", dir=str(root)))
    try:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        fsutil.make_readable(tmp)     # the sandbox user mounts and reads it
        try:
            fsutil.rename_noreplace(tmp, final)
        except FileExistsError:   # another process put the same files there first
            if not (final / "__init__.py").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)
