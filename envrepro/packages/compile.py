"""Run ``pip-compile`` for a Linux target: the re-resolution step of a macOS/Windows capture.

pip-tools resolves for the interpreter and the machine it runs on (``--pip-args "--platform
... --python-version ..."`` is not honoured by its resolver: measured, it only offers the host
interpreter's wheels). So the resolution runs on a Linux host, under an interpreter of the
captured Python X.Y: this one when it matches, else the first of ``$ENVREPRO_RESOLVE_PYTHON``,
pyenv's ``X.Y.*`` builds, ``pythonX.Y`` on PATH. pip-tools is installed once into a small venv
of that interpreter in envrepro's cache when the interpreter lacks it.

The host's pip configuration is reduced to what the image build uses (http(s) indexes, trusted
hosts, CA bundle: ``pipconfig.host_pip_settings``): local ``file://`` indexes and ``--find-links``
folders are left out, so the resolution sees what the build will see. No hashes are asked of
pip-compile (it downloads every file of a release to hash it when the index has no JSON API):
``envrepro.packages.indexhashes.lookup_index`` adds them from the index's own file links. It runs
with ``--only-binary :all:`` (``envrepro.packages.binaryonly``): the capture's pins never get an sdist
built on this host.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from envrepro.packages import binaryonly
from envrepro.errors import PlatformError
from envrepro.interpreters import find_python

COMPILE_TIMEOUT = 1800
BOOTSTRAP_TIMEOUT = 600
PIP_TOOLS_REQUIREMENT = "pip-tools>=6"

Say = Callable[[str], None]


def pip_env() -> Dict[str, str]:
    """This process's environment without pip's own settings: only explicit options count."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def index_args(pip: Any) -> List[str]:
    """pip / pip-compile options for the build's pip settings (a ``pipconfig.PipSettings``)."""
    args: List[str] = []
    if getattr(pip, "index_url", None):
        args += ["--index-url", pip.index_url]
    for url in getattr(pip, "extra_index_urls", ()) or ():
        args += ["--extra-index-url", url]
    for host in getattr(pip, "trusted_hosts", ()) or ():
        args += ["--trusted-host", host]
    if getattr(pip, "cert", None):
        args += ["--cert", pip.cert]
    return args


def _run(cmd: Sequence[str], timeout: int, cwd: Optional[str] = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=pip_env(), timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise PlatformError(f"{' '.join(cmd[:4])} ... took more than {timeout} s", None,
                            "check the connection to the package index") from None
    except OSError as e:
        raise PlatformError(f"could not run {cmd[0]} ({e})", None, None) from None


def _has_piptools(python: str) -> bool:
    return subprocess.run([python, "-c", "import piptools"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=pip_env()).returncode == 0


def piptools_python(xy: str, cache: Path, pip: Any, say: Say) -> str:
    """An interpreter of Python ``xy`` that can run ``python -m piptools``; bootstraps a venv."""
    if not sys.platform.startswith("linux"):
        raise PlatformError(
            "re-resolving the lock for Linux needs a Linux host: pip-tools resolves for the "
            "machine it runs on", None, "run `envrepro load` on Linux, or capture on Linux")
    python = find_python(xy)
    if python is None:
        raise PlatformError(
            f"no Python {xy} on this host to re-resolve the lock for Linux under", None,
            f"install it (e.g. `pyenv install {xy}`) or point ENVREPRO_RESOLVE_PYTHON at one")
    if _has_piptools(python):
        return python
    venv = cache / "tools" / f"pip-tools-py{xy}"
    vpython = str(venv / "bin" / "python")
    if os.path.exists(vpython) and _has_piptools(vpython):
        return vpython
    say(f"Installing pip-tools for Python {xy} into {venv} (once)")
    shutil.rmtree(venv, ignore_errors=True)
    for cmd in ([python, "-m", "venv", str(venv)],
                [vpython, "-m", "pip", "install", "--quiet", *index_args(pip),
                 PIP_TOOLS_REQUIREMENT]):
        proc = _run(cmd, BOOTSTRAP_TIMEOUT)
        if proc.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise PlatformError(f"installing pip-tools for Python {xy} failed:\n"
                                + _tail(proc.stdout), None, "check the package index settings")
    return vpython


def _tail(text: str, n: int = 15) -> str:
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return "\n".join("  | " + ln for ln in lines[-n:])


class ResolutionFailed(PlatformError):
    """pip-compile could not resolve; ``output`` is what it printed, ``missing`` the pins it
    reported with no matching distribution."""

    def __init__(self, what: str, output: str, missing: List[str]):
        super().__init__(what, None, None)
        self.output = output
        self.missing = missing


_MISSING_RE = re.compile(r"(?:No matching distribution found for|Could not find a version that "
                         r"satisfies the requirement)\s+([A-Za-z0-9][A-Za-z0-9._-]*)")


def pip_compile(requirements: str, constraints: str, xy: str, pip: Any, cache: Path,
                say: Say, notes: Optional[List[str]] = None) -> str:
    """Resolve ``requirements`` (``-c constraints.txt`` may refer to ``constraints``) for Linux
    under Python ``xy``; return pip-compile's output (no hashes, ``# via`` annotations).

    Always ``--only-binary :all:`` (``binaryonly``): a capture's pins never get an sdist built,
    and so its setup.py run, on this host; sdist-only pins get a code-free stand-in and a line in
    ``notes``."""
    python = piptools_python(xy, cache, pip, say)
    say(f"Resolving for Linux with pip-tools under Python {xy} ({python})")
    with tempfile.TemporaryDirectory(prefix="envrepro-resolve-") as tmp:
        Path(tmp, "requirements.in").write_text(requirements, encoding="utf-8")
        Path(tmp, "constraints.txt").write_text(constraints, encoding="utf-8")
        out = Path(tmp, "requirements.lock")
        stub_dir = Path(tmp, "sdist-stand-ins")

        def attempt(extra: List[str]) -> Tuple[bool, str]:
            binary, links = extra[:2], extra[2:]          # --only-binary :all:, [--find-links DIR]
            cmd = [python, "-m", "piptools", "compile", "--no-header", "--no-emit-index-url",
                   "--no-emit-trusted-host", "--no-emit-find-links", "--cache-dir", str(cache / "pip-tools"),
                   *index_args(pip), *links, "--pip-args", " ".join(binary),
                   "--output-file", str(out), "requirements.in"]
            proc = _run(cmd, COMPILE_TIMEOUT, cwd=tmp)
            return proc.returncode == 0 and out.is_file(), proc.stdout or ""

        versions = binaryonly.pip_index_versions([python, "-m", "pip", *index_args(pip)], xy, pip_env())
        ok, output, stubs = binaryonly.resolve(attempt, versions, stub_dir,
                                               pins=binaryonly.constraint_pins(constraints))
        if not ok:
            missing = sorted({m.group(1) for m in _MISSING_RE.finditer(output)} - set(stubs))
            raise ResolutionFailed("pip-compile could not resolve the lock for Linux:\n"
                                   + _tail(output), output, missing)
        note = binaryonly.stubs_note(stubs)
        if note and notes is not None:
            notes.append(note)
        # pip-compile echoes the format control (--only-binary :all:) into its output: the lock
        # holds pins only (the build chooses its own options)
        return "".join(line for line in out.read_text(encoding="utf-8").splitlines(keepends=True)
                       if not line.startswith(("--only-binary", "--find-links", "-f ")))
