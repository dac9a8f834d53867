"""Finding a CPython X.Y on this host: this interpreter, an explicit one, pyenv's builds, PATH.

Several steps need an interpreter of the *captured* Python rather than this one: ``capture
--infer`` resolves (and checks Lambda bytecode) under it, and the platform translation runs
pip-compile under it. They all search the same way, here.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from envrepro.errors import EnvreproError

# An interpreter to try first, for every X.Y it reports (e.g. a CI's own build).
EXPLICIT_ENV = "ENVREPRO_RESOLVE_PYTHON"


def python_xy(version: str) -> str:
    """``3.8.18`` -> ``3.8``."""
    m = re.match(r"\s*(\d+)\.(\d+)", str(version))
    if not m:
        raise EnvreproError(f"not a Python version: {version!r}", None,
                            "check python.version in the manifest")
    return f"{m.group(1)}.{m.group(2)}"


def python_version(python: str) -> Optional[str]:
    """The full version (``3.8.18``) of an interpreter, by running it; None if it doesn't run."""
    try:
        out = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             timeout=60, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def _pyenv_root() -> str:
    if os.environ.get("PYENV_ROOT"):
        return os.environ["PYENV_ROOT"]
    try:
        out = subprocess.run(["pyenv", "root"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, timeout=10, check=True).stdout.strip()
        if out:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    return os.path.join(os.path.expanduser("~"), ".pyenv")


def _pyenv_pythons(xy: str) -> List[str]:
    """pyenv's ``X.Y.Z`` builds of ``xy``, newest first (``3.8-dev`` and the like left out)."""
    found = sorted(Path(_pyenv_root(), "versions").glob(f"{xy}.*"),
                   key=lambda p: [int(x) if x.isdigit() else -1 for x in p.name.split(".")])
    return [str(p / "bin" / "python") for p in reversed(found)
            if re.fullmatch(rf"{re.escape(xy)}\.\d+", p.name) and (p / "bin" / "python").exists()]


def find_interpreter(xy: str) -> Optional[Tuple[str, str]]:
    """(executable, full version) of a Python ``xy`` on this host, or None: this interpreter,
    ``$ENVREPRO_RESOLVE_PYTHON``, pyenv's newest ``xy.*``, ``pythonX.Y`` on PATH, in that order,
    each checked by running it."""
    if "%d.%d" % sys.version_info[:2] == xy:
        return sys.executable, "%d.%d.%d" % sys.version_info[:3]
    explicit = os.environ.get(EXPLICIT_ENV)
    candidates = ([explicit] if explicit else []) + _pyenv_pythons(xy)
    on_path = shutil.which(f"python{xy}")
    if on_path:
        candidates.append(on_path)
    for python in candidates:
        version = python_version(python)
        if version and python_xy(version) == xy:
            return python, version
    return None


def find_python(xy: str) -> Optional[str]:
    """An interpreter of Python ``xy`` on this host, or None (see :func:`find_interpreter`)."""
    found = find_interpreter(xy)
    return found[0] if found else None
