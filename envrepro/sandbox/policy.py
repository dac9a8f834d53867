"""The sandbox of every container envrepro starts for a model (load, ``run``, ``shell``), built in
one place (:func:`run_args`): no network, a non-root user, read-only mounts and root filesystem, a
tmpfs ``/tmp``, no capabilities, no privilege escalation, memory and pids limits.

``gpus=True`` (``--gpus all``) adds the host's GPUs to that container, and only that: the image
was built on a CUDA base for it (``ensure_image(gpus=True)``), the sandbox stays the same. The same
sandbox is rendered as a ``docker run`` command line for the TTY shell (:func:`docker_run_argv`).
Why each flag is there: docs/threat-model.md.
"""
from __future__ import annotations

import json as jsonlib
import os
import stat
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from envrepro import errors
from envrepro.image.templates import USER_UID
from envrepro.engine.base import Mount
from envrepro.sandbox.loadplan import ContainerPaths, container_paths, make_plan
from envrepro.sidecar import manifest
from envrepro import shipped

SANDBOX_USER = f"{USER_UID}:{USER_UID}"   # the image's envrepro user, never root
DEFAULT_MEMORY = "4g"
PIDS_LIMIT = 512
WORKDIR = "/tmp"
TMPFS = {"/tmp": "rw,nosuid,nodev,size=1g"}


def mount_cli(m: Mount) -> str:
    """A ``--mount`` value; its fields are CSV, so paths with commas or quotes get quoted."""
    def field_(k: str, v: str) -> str:
        kv = f"{k}={v}"
        return '"' + kv.replace('"', '""') + '"' if ("," in kv or '"' in kv) else kv

    parts = ["type=bind", field_("source", m.source), field_("target", m.target)]
    if m.read_only:
        parts.append("readonly")
    return ",".join(parts)


def sandbox_mounts(capture: manifest.Capture, paths: ContainerPaths) -> List[Mount]:
    return [
        Mount(str(capture.model_path), paths.model),
        Mount(str(capture.root), paths.capture),
        Mount(shipped.runtime_dir(), paths.runtime),
    ]


def sandbox_env(paths: ContainerPaths, plan: Dict[str, Any],
                extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The container's whole environment: nothing of the host's leaks in."""
    env = {
        "HOME": "/tmp",
        "PYTHONPATH": paths.snapshot,
        "PYTHONDONTWRITEBYTECODE": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "ENVREPRO_MODEL": paths.model,
        "ENVREPRO_PLAN": jsonlib.dumps(plan, sort_keys=True),
    }
    env.update(plan.get("env") or {})
    if os.environ.get("ENVREPRO_DEBUG") == "1":
        env["ENVREPRO_DEBUG"] = "1"
    env.update(extra or {})
    return env


def run_args(capture: manifest.Capture, paths: Optional[ContainerPaths] = None,
             plan: Optional[Dict[str, Any]] = None, memory: str = DEFAULT_MEMORY,
             unsafe: bool = False, extra_env: Optional[Dict[str, str]] = None,
             gpus: bool = False) -> Dict[str, Any]:
    """The sandbox of every model container, as keyword arguments of ``ContainerEngine.run``.

    No writable host mount at all: the loader reports on stdout, the plan travels in
    ``ENVREPRO_PLAN``, and scratch space is the tmpfs ``/tmp``. ``gpus``: every host GPU is
    passed in (``ContainerEngine.run(gpus=True)``, ``docker run --gpus all``); the key is absent
    otherwise.
    """
    paths = paths or container_paths(capture)
    plan = plan if plan is not None else make_plan(capture, paths, unsafe=unsafe)
    gpu: Dict[str, Any] = {"gpus": True} if gpus else {}
    return {**gpu, 
        "mounts": sandbox_mounts(capture, paths),
        "environment": sandbox_env(paths, plan, extra_env),
        "user": SANDBOX_USER,
        "network_disabled": True,
        "read_only": True,
        "tmpfs": dict(TMPFS),
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": memory,
        "pids_limit": PIDS_LIMIT,
        "workdir": WORKDIR,
    }


def docker_run_argv(image: str, command: Sequence[str], args: Dict[str, Any],
                    interactive: bool = True, tty: Optional[bool] = None,
                    docker: str = "docker") -> List[str]:
    """The same sandbox as ``run_args`` as a ``docker run`` command line (for a TTY shell)."""
    argv = [docker, "run", "--rm"]
    if interactive:
        argv.append("-i")
        if tty if tty is not None else sys.stdin.isatty():
            argv.append("-t")
    if args.get("network_disabled"):
        argv += ["--network", "none"]
    if args.get("gpus"):
        argv += ["--gpus", "all"]
    argv += ["--user", args["user"]]
    if args.get("read_only"):
        argv.append("--read-only")
    for target, opts in sorted((args.get("tmpfs") or {}).items()):
        argv += ["--tmpfs", f"{target}:{opts}" if opts else target]
    for cap in args.get("cap_drop") or []:
        argv += ["--cap-drop", cap]
    for opt in args.get("security_opt") or []:
        argv += ["--security-opt", opt]
    if args.get("mem_limit"):
        argv += ["--memory", str(args["mem_limit"])]
    if args.get("pids_limit"):
        argv += ["--pids-limit", str(args["pids_limit"])]
    for m in args.get("mounts") or []:
        argv += ["--mount", mount_cli(m)]
    for k, v in sorted((args.get("environment") or {}).items()):
        argv += ["-e", f"{k}={v}"]
    if args.get("workdir"):
        argv += ["-w", args["workdir"]]
    return argv + [image] + list(command)


def check_readable(trees: Sequence[Path], folders: Sequence[Path] = ()) -> None:
    """The sandbox user (uid 10001) reads the mounts as "other": refuse early, naming the file,
    rather than fail inside the container with a bare PermissionError.

    ``trees`` are checked with everything below them, ``folders`` only themselves (the capture
    root must be traversable, but the loader never reads its manifest). Only meaningful on Linux,
    where bind mounts keep host permissions.
    """
    if not sys.platform.startswith("linux"):
        return
    for top, recursive in [(t, True) for t in trees] + [(f, False) for f in folders]:
        for p in (_walk(top) if recursive else [top]):
            st = p.lstat()
            need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else 0)
            if stat.S_ISLNK(st.st_mode) or st.st_mode & need == need:
                continue
            raise errors.EnvreproError(
                f"not readable by the sandbox user (uid {USER_UID}) inside the container", str(p),
                f"chmod a+rX {p}" if not recursive else f"chmod -R a+rX {top}")


def _walk(top: Path):
    yield top
    if top.is_dir() and not top.is_symlink():
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                yield Path(root, name)
