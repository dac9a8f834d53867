"""The two containers of a migration: the source (the capture's own environment) and the target.

Both run in the sandbox of every model container (``sandbox.policy.run_args``: no network, no
capability, read-only root, the envrepro user, memory and pids limits). Each has one writable
mount, its own staging folder at ``/envrepro/out`` (``migrating.staging``); the target also sees
the source's accepted output, read-only, at ``/envrepro/source``. Each prints one line,
``ENVREPRO-MIGRATE {json}`` (``runtime/migrate/``), read here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from envrepro.engine.base import ContainerEngine, Mount
from envrepro.runtime import launch
from envrepro.sandbox.loadplan import captured_env, container_paths, make_plan
from envrepro.sandbox.policy import DEFAULT_MEMORY, run_args
from envrepro.sandbox.report import parse_report
from envrepro.sidecar import layout, manifest

PREFIX = "ENVREPRO-MIGRATE "
OUT_MOUNT = "/envrepro/out"
SOURCE_MOUNT = "/envrepro/source"
CODE_MOUNT = "/envrepro/code"
FORMATS = ("keras", "savedmodel", "onnx")
TIMEOUT = float(os.environ.get("ENVREPRO_MIGRATE_TIMEOUT", "3600"))


@dataclass
class SideRun:
    """What one side's container did: its exit code, its report line (None: it printed none)
    and the end of its stderr."""

    exit_code: int
    report: Optional[Dict[str, Any]]
    stderr_tail: str
    seconds: float = 0.0

    def error_line(self) -> str:
        err = (self.report or {}).get("error") or {}
        line = err.get("first_line") or err.get("message")
        if line:
            return f"{err.get('type', 'Error')}: {line}"[:400]
        tail = [ln for ln in self.stderr_tail.splitlines() if ln.strip()]
        last = f" (its last words: {tail[-1][:200]})" if tail else ""
        return (died(self.exit_code) + last)[:400]


def died(code: int) -> str:
    """What an exit code without a report means: a signal (a crash inside TensorFlow, or the
    memory limit's SIGKILL) or an exit before the runtime could report."""
    import signal

    if code > 128:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        hint = ": out of memory? (--memory)" if name == "SIGKILL" else ""
        return f"the process died of {name} (exit {code}) before it could report{hint}"
    return f"the process exited {code} without a report"


def parse(stdout: "str | bytes | None") -> Optional[Dict[str, Any]]:
    return parse_report(stdout, PREFIX)


def _python(image_info: Any) -> str:
    return getattr(image_info, "python", None) or "python"


def _run(engine: ContainerEngine, image_info: Any, entry: str, args: Dict[str, Any]) -> SideRun:
    import time

    t0 = time.perf_counter()
    code, out, err = engine.run(image_info.tag, launch.container_argv(_python(image_info), entry),
                                **args, stream=False, timeout=TIMEOUT)
    err = err.decode("utf-8", "replace") if isinstance(err, bytes) else (err or "")
    return SideRun(int(code), parse(out), "\n".join(err.splitlines()[-20:]),
                   round(time.perf_counter() - t0, 3))


def source_plan(capture: manifest.Capture, unsafe: bool = False, seed: int = 0) -> Dict[str, Any]:
    """The loader's plan for this capture, plus where to write the export."""
    plan = make_plan(capture, container_paths(capture), unsafe=unsafe)
    plan["migrate"] = {"out": OUT_MOUNT, "seed": seed}
    # Every recipe, the recorded one first: getting the architecture and weights out matters more
    # than the way the capture loaded it (a model whose optimizer its own Keras can't rebuild
    # still migrates with compile=False; the report says the optimizer was not carried).
    plan["all_recipes"] = True
    return plan


def run_source(capture: manifest.Capture, engine: ContainerEngine, image_info: Any, out: Path,
               unsafe: bool = False, memory: str = DEFAULT_MEMORY) -> SideRun:
    """Load the model in its reproduced environment and export it into ``out``."""
    paths = container_paths(capture)
    plan = source_plan(capture, unsafe)
    args = run_args(capture, paths, plan, memory=memory)
    args["mounts"] = list(args["mounts"]) + [Mount(str(out), OUT_MOUNT, read_only=False)]
    return _run(engine, image_info, "migrate.source", args)


def target_reference(capture: manifest.Capture) -> Optional[Dict[str, Any]]:
    """The capture's reference outputs as the target sees them; None for an inferred capture
    (nothing from the training environment to compare with)."""
    plan_ref = make_plan(capture, container_paths(capture)).get("reference")
    if not plan_ref:
        return None
    return {k: plan_ref[k] for k in ("outputs", "output_structure", "output_names", "atol", "rtol")}


def target_plan(capture: manifest.Capture, name: str, code_path: Optional[str],
                unsafe: bool = False, formats: List[str] = list(FORMATS)) -> Dict[str, Any]:
    paths = container_paths(capture)
    load_plan = make_plan(capture, paths)
    return {
        "source_dir": SOURCE_MOUNT,
        "out": OUT_MOUNT,
        "name": name,
        "custom_objects": dict(manifest.model_custom_objects(capture)),
        "modules": list(capture.get("load.modules") or []),
        "lambdas": list(capture.get("load.lambdas") or []),
        "snapshot_dir": CODE_MOUNT if code_path else paths.snapshot,
        "reference": target_reference(capture),
        # The training step the capture recorded: replayed on the .keras whose optimizer state
        # was carried (runtime/resume.py), None without one.
        "resume_check": load_plan.get("resume_check"),
        "safe_mode": not unsafe,
        "formats": list(formats),
    }


def run_target(capture: manifest.Capture, engine: ContainerEngine, image_info: Any, source: Path,
               out: Path, name: str, code_path: Optional[str] = None, unsafe: bool = False,
               memory: str = DEFAULT_MEMORY) -> SideRun:
    """Rebuild, write and verify the artifacts in the target environment."""
    from envrepro import shipped

    plan = target_plan(capture, name, code_path, unsafe)
    args = run_args(capture, container_paths(capture), plan, memory=memory)
    mounts = [Mount(str(capture.root), layout.CAPTURE_MOUNT), Mount(shipped.runtime_dir(), launch.CONTAINER_DIR),
              Mount(str(source), SOURCE_MOUNT), Mount(str(out), OUT_MOUNT, read_only=False)]
    if code_path:
        mounts.append(Mount(str(Path(code_path).resolve()), CODE_MOUNT))
    env = dict(args["environment"])
    for k in ("ENVREPRO_MODEL",):
        env.pop(k, None)
    env["PYTHONPATH"] = plan["snapshot_dir"]
    # The target's own Keras: none of the source's switches (TF_USE_LEGACY_KERAS, KERAS_BACKEND).
    for k in captured_env(capture):
        env.pop(k, None)
    args.update(mounts=mounts, environment=env)
    return _run(engine, image_info, "migrate.target", args)
