"""Running the probe under another interpreter and reading its facts: the one place that does.

The probe (``envrepro/runtime/probe.py``) is standard-library-only and runs from envrepro's own
folder, so the training environment needs no envrepro installed: ``capture --python`` probes the
training venv this way, and ``doctor`` probes a target environment (``--no-load``). The probe
writes ``facts.json`` into the output folder; when it fails it says why on stderr and in
``error.json``.

A probe run that gives no facts is told as one line naming the model and the cause
(``probe_failure``): it failed (the probe's own error, else the last meaningful line of its
stderr, e.g. a traceback's ``ModuleNotFoundError: No module named 'foo'``), it was killed by a
signal (SIGKILL: usually the kernel's out-of-memory killer), it gave no answer in time (it runs in
its own process group, and the whole group is killed), or it exited 0 without valid facts. Its
full stderr rides along as the error's ``detail``, which ``--debug`` prints.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from envrepro import config
from envrepro.errors import CaptureError, ProbeError
from envrepro.runtime import launch
from envrepro.runtime.probe import ERROR_FILE, FACTS_FILE, PROBE_VERSION
from envrepro.runtime.reference import REFERENCE_DIR
from envrepro import shipped

DEBUG_HINT = "rerun with --debug for the probe's full output"

# The facts the capture reads, with the JSON types it reads them as (None: may be null).
_FACT_TYPES = {"python": (dict,), "distributions": (list,), "frameworks": (dict, type(None)),
               "model": (dict, type(None)), "modules": (list, type(None)),
               "custom_objects": (list, type(None)), "warnings": (list, type(None)),
               "reference": (dict, type(None)), "optimizer": (dict, type(None)),
               "load": (dict, type(None)), "env": (dict, type(None))}

# Lines of stderr that are never the cause: TensorFlow's C++ and absl logging, Python logging.
_NOISE = re.compile(r"(\d{4}-\d\d-\d\d[ T][\d:.]+: [IWEF] |[IWEF]\d{4} [\d:.]+ |(WARNING|INFO):)")


@dataclass
class ProbeRun:
    """One run of the probe: its facts, or (``facts`` None) how it failed."""

    facts: Optional[Dict[str, Any]]
    returncode: int
    stderr: str
    error: Optional[Dict[str, Any]] = None   # the probe's error.json, when it wrote one
    problem: Optional[str] = None            # exit 0 but no valid facts: what is wrong


def run_probe(python: str, model_path: Path, out_dir: Path, options: Sequence[str] = (),
              timeout: Optional[float] = None) -> ProbeRun:
    """Run the probe for ``model_path`` under ``python``, writing into ``out_dir``; ``timeout``
    defaults to the probe-timeout setting (``config.probe_timeout``).

    Raises OSError (the interpreter can't be started) and ``subprocess.TimeoutExpired`` (the
    probe and every process it started have been killed; ``stderr`` holds what it said): the
    callers say what that means for them."""
    timeout = config.probe_timeout() if timeout is None else timeout
    cmd = launch.host_argv(python, "probe", ["--model", model_path, "--out", out_dir, *options],
                            root=shipped.runtime_dir())
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1")
    returncode, stderr = _run_in_own_group(cmd, env, timeout)
    facts, problem = None, None
    if returncode == 0:
        facts, problem = read_facts(Path(out_dir))
    return ProbeRun(facts=facts, returncode=returncode, stderr=stderr,
                    error=_read_error(Path(out_dir)) if returncode else None, problem=problem)


def _run_in_own_group(cmd: Sequence[str], env: Dict[str, str], timeout: float) -> Tuple[int, str]:
    """Run ``cmd`` in a new session (its own process group) and return (exit code, stderr).

    On a timeout, or anything else ending the wait (Ctrl-C), the whole group is killed: a probe
    that started helpers (TensorFlow's compilers, a user's multiprocessing) leaves none behind,
    and a Ctrl-C, which no longer reaches the group from the terminal, still stops it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise subprocess.TimeoutExpired(cmd, timeout, stderr=_drain(proc)) from None
    except BaseException:
        _kill_group(proc)
        _drain(proc)
        raise
    return proc.returncode, err.decode("utf-8", "replace")


def _kill_group(proc: "subprocess.Popen[bytes]") -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows: no process groups to kill
            proc.kill()
    except OSError:  # already gone
        pass


def _drain(proc: "subprocess.Popen[bytes]") -> str:
    """What a killed probe said; a process that left the group and holds the pipe open is not
    waited for."""
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        if proc.stderr is not None:
            proc.stderr.close()
        proc.wait()
        return ""
    return (err or b"").decode("utf-8", "replace")


def read_facts(out_dir: Path) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """``(facts, None)``, or ``(None, what is wrong)`` when ``facts.json`` is missing, not JSON,
    or not facts of this probe's version and shape (the interpreter given is not a Python that
    ran the probe, or something wrote over its answer)."""
    path = out_dir / FACTS_FILE
    if not path.is_file():
        return None, f"wrote no {FACTS_FILE}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None, f"its {FACTS_FILE} is not JSON: {e}"
    if not isinstance(data, dict):
        return None, f"its {FACTS_FILE} is not a JSON object"
    if data.get("probe_version") != PROBE_VERSION:
        return None, (f"its {FACTS_FILE} has probe_version {data.get('probe_version')!r}, "
                      f"not {PROBE_VERSION}")
    for key, types in _FACT_TYPES.items():
        if not isinstance(data.get(key), types):
            return None, f"its {FACTS_FILE} has no valid {key!r}"
    for key in ("distributions", "modules", "custom_objects"):
        if not all(isinstance(item, dict) for item in data.get(key) or []):
            return None, f"its {FACTS_FILE} has no valid {key!r}"
    ref = data.get("reference") or {}
    for key in ("inputs", "outputs"):
        names = ref.get(key) or []
        if not isinstance(names, list) or not all(
                isinstance(n, str) and (out_dir / REFERENCE_DIR / os.path.basename(n)).is_file()
                for n in names):
            return None, f"its {FACTS_FILE} names reference {key} it did not write"
    return data, None


def _read_error(out_dir: Path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads((out_dir / ERROR_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"].strip():
        return data
    return None


def last_meaningful_line(stderr: str) -> Optional[str]:
    """The line of ``stderr`` that says why the probe failed: the last one that is not blank or
    logging (a traceback ends with the exception)."""
    for line in reversed(stderr.splitlines()):
        text = line.strip()
        if text and not _NOISE.match(text):
            text = text.replace("envrepro-probe: error: ", "", 1)
            return text if len(text) <= 300 else text[:297] + "..."
    return None


def probe_failure(run: ProbeRun, python: str, model_path: Path) -> ProbeError:
    """The one-line error for a probe run without facts (exit 2)."""
    model, detail = str(model_path), run.stderr
    if run.returncode < 0:
        try:
            name = signal.Signals(-run.returncode).name
        except ValueError:
            name = f"signal {-run.returncode}"
        fix = DEBUG_HINT
        if name == "SIGKILL":
            fix = ("SIGKILL is usually the out-of-memory killer: free memory or capture on a "
                   f"larger machine; {DEBUG_HINT}")
        return ProbeError(f"the capture probe under {python} was killed by {name}", model, fix,
                          detail=detail)
    if run.returncode == 0:
        return ProbeError(f"the capture probe under {python} exited 0 but {run.problem}", model,
                          f"pass the training environment's python; {DEBUG_HINT}", detail=detail)
    if run.error is not None and run.error.get("kind") == "sample":   # the user's --sample
        fix = run.error.get("fix")
        return ProbeError(run.error["error"].strip(), model, fix if isinstance(fix, str) else None,
                          detail=detail)
    if run.error is not None:
        cause, fix = run.error["error"].strip(), run.error.get("fix")
        fix = f"{fix}; {DEBUG_HINT}" if isinstance(fix, str) and fix.strip() else DEBUG_HINT
    else:
        cause, fix = last_meaningful_line(run.stderr) or f"exit code {run.returncode}", DEBUG_HINT
    return ProbeError(f"the capture probe failed under {python}: {cause}", model, fix,
                      detail=detail)


def capture_facts(python: str, model_path: Path, out_dir: Path, modules: Sequence[str],
                  code_paths: Sequence[str], sample: Optional[str] = None,
                  timeout: Optional[float] = None, resume_check: bool = False) -> Dict[str, Any]:
    """The facts of a capture from outside (``capture --python``): the full probe (the model is
    loaded there, custom objects found, the reference prediction computed, and with
    ``resume_check`` one training step recorded on a fresh copy). ``timeout``: the
    probe-timeout setting when None. Every failure is a ProbeError/CaptureError naming the
    model."""
    model = str(model_path)
    if not (os.path.isfile(python) and os.access(python, os.X_OK)) and not shutil.which(python):
        raise CaptureError(f"interpreter not found or not executable: {python}", model,
                           "pass the training environment's python, e.g. /path/to/venv/bin/python")
    timeout = config.probe_timeout() if timeout is None else timeout
    options = []
    for m in modules:
        options += ["--module", m]
    for c in code_paths:
        options += ["--code-path", os.path.abspath(c)]
    if sample:
        options += ["--sample", os.path.abspath(sample)]
    if resume_check:
        options.append("--resume-check")
    try:
        run = run_probe(python, model_path, out_dir, options, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise ProbeError(f"the capture probe under {python} gave no answer after {timeout:g} s "
                         "and was stopped with every process it started", model,
                         "allow more time with --timeout SECONDS, ENVREPRO_PROBE_TIMEOUT or "
                         "probe_timeout in config.yaml",
                         detail=e.stderr if isinstance(e.stderr, str) else None) from None
    except OSError as e:
        raise ProbeError(f"could not start the capture probe under {python} ({e.strerror})",
                         model, "pass the training environment's python") from None
    if run.facts is None:
        raise probe_failure(run, python, model_path)
    return run.facts
