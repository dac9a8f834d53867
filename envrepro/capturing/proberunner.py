"""Running the probe under another interpreter and reading its facts: the one place that does.

The probe (``envrepro/runtime/probe.py``) is standard-library-only and runs from envrepro's own
folder, so the training environment needs no envrepro installed: ``capture --python`` probes the
training venv this way, and ``doctor`` probes a target environment (``--no-load``). The probe
writes ``facts.json`` into the output folder and says on stderr why it failed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from envrepro.errors import CaptureError, ProbeError
from envrepro.runtime import launch
from envrepro.runtime.probe import FACTS_FILE

PROBE_TIMEOUT = float(os.environ.get("ENVREPRO_PROBE_TIMEOUT", "900"))


@dataclass
class ProbeRun:
    """One run of the probe: its facts, or (``facts`` None) how it failed."""

    facts: Optional[Dict[str, Any]]
    returncode: int
    stderr: str


def run_probe(python: str, model_path: Path, out_dir: Path, options: Sequence[str] = (),
              timeout: float = PROBE_TIMEOUT) -> ProbeRun:
    """Run the probe for ``model_path`` under ``python``, writing into ``out_dir``.

    Raises OSError (the interpreter can't be started) and ``subprocess.TimeoutExpired``: the
    callers say what that means for them."""
    cmd = launch.host_argv(python, "probe", ["--model", model_path, "--out", out_dir, *options])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          timeout=timeout, check=False)
    facts_file = Path(out_dir) / FACTS_FILE
    facts = None
    if proc.returncode == 0 and facts_file.is_file():
        facts = json.loads(facts_file.read_text(encoding="utf-8"))
    return ProbeRun(facts=facts, returncode=proc.returncode,
                    stderr=proc.stderr.decode("utf-8", "replace"))


def capture_facts(python: str, model_path: Path, out_dir: Path, modules: Sequence[str],
                  code_paths: Sequence[str], sample: Optional[str] = None,
                  resume_check: bool = False) -> Dict[str, Any]:
    """The facts of a capture from outside (``capture --python``): the full probe (the model is
    loaded there, custom objects found, the reference prediction computed, and with
    ``resume_check`` one training step recorded on a fresh copy)."""
    if not (os.path.isfile(python) and os.access(python, os.X_OK)) and not shutil.which(python):
        raise CaptureError("interpreter not found or not executable", python,
                           "pass the training environment's python, e.g. /path/to/venv/bin/python")
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
        run = run_probe(python, model_path, out_dir, options)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"probe did not finish within {PROBE_TIMEOUT:.0f} s", python,
                         "set ENVREPRO_PROBE_TIMEOUT to allow more") from None
    except OSError as e:
        raise ProbeError(f"could not start the probe ({e.strerror})", python,
                         "pass the training environment's python") from None
    if run.facts is None:
        err = run.stderr.strip().splitlines()
        line = next((l for l in reversed(err) if l.startswith("envrepro-probe:")), err[-1] if err else "")
        line = line.replace("envrepro-probe: error: ", "")
        raise ProbeError(f"probe failed under {python}: {line or 'exit code %d' % run.returncode}",
                         str(model_path), "rerun with ENVREPRO_DEBUG=1 for the probe's traceback")
    return run.facts
