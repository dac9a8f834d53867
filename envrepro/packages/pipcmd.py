"""Running pip on the host: its environment, its output without credentials, and the one
subprocess call of ``pip download`` (``run_pip``). Every host module that runs pip or pip-tools is
in ``packages/`` and uses these (docs/architecture.md, "Where pip runs").
"""
from __future__ import annotations

import os
import re
import subprocess
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

PIP_TIMEOUT = 1800   # seconds one ``pip download`` may take


def packaging_module(name: str) -> Any:
    """``packaging.<name>``, or the copy vendored in pip when packaging isn't installed."""
    import importlib

    try:
        return importlib.import_module(f"packaging.{name}")
    except ImportError:  # pragma: no cover - pip-tools depends on packaging
        return importlib.import_module(f"pip._vendor.packaging.{name}")


def pip_subprocess_env(**extra: str) -> Dict[str, str]:
    """Environment for running pip under another interpreter: no version check, no prompt, and
    none of this process's PYTHONPATH leaking into that interpreter's imports."""
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", **extra)
    env.pop("PYTHONPATH", None)
    return env


def redact(text: str) -> str:
    """Drop credentials from URLs in a message."""
    return re.sub(r"(//)[^/@\s]+@", r"\1", text)


def run_pip(argv: List[str], on_line: Optional[Callable[[str], None]] = None) -> Tuple[int, str]:
    """Run pip; with ``on_line``, each output line as pip prints it (for the progress display
    and the build log), else all at the end."""
    env = pip_subprocess_env()
    if on_line is None:
        try:
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env, timeout=PIP_TIMEOUT)
        except subprocess.TimeoutExpired:
            return 124, f"pip download did not finish within {PIP_TIMEOUT} s"
        return p.returncode, p.stdout
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", env=env)
    timed_out: List[bool] = []
    timer = threading.Timer(PIP_TIMEOUT, lambda: (timed_out.append(True), proc.kill()))
    timer.daemon = True
    timer.start()
    out: List[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            on_line(line.rstrip("\n"))
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if timed_out:
        return 124, f"pip download did not finish within {PIP_TIMEOUT} s"
    return code, "".join(out)
