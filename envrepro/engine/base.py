"""What envrepro asks of a container engine, declared once: the ``ContainerEngine`` protocol, the
values that cross it (``Mount``) and the errors it raises (``PullFailed``, ``RunFailed``).

Everything outside ``envrepro.engine`` is typed against this protocol, not against Docker, so the
image and sandbox code can be exercised with the one fake in ``tests/unit/fakes.py`` and another
engine could be added without touching them. ``envrepro.engine.docker.DockerEngine`` is the
implementation; a unit test (tests/unit/engine/test_engine_base.py) checks that it and the fake have every
method below with the same signature. Standard library only: importing this is free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import (Any, BinaryIO, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union)

from envrepro.errors import BuildFailed, LoadFailed

try:  # Python 3.8 has typing.Protocol; the guard keeps `import envrepro` working on 3.7 hosts
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore[assignment,misc]

LineCallback = Callable[[str], None]
OutputCallback = Callable[[str, str], None]   # (stream name "stdout"|"stderr", text)


class PullFailed(BuildFailed):
    """A registry refused a pull or could not be reached (the image can't be had)."""


class RunFailed(LoadFailed):
    """A container could not be created or started (not: the command inside it failed)."""


@dataclass(frozen=True)
class Mount:
    """A bind mount. Runtime convention: model, snapshot and runtime scripts go in read-only."""

    source: str
    target: str
    read_only: bool = True


MountSpec = Union[Mount, Dict[str, Any], Tuple[str, str], Tuple[str, str, bool]]


def as_mount(m: MountSpec) -> Mount:
    """A Mount from any of the shapes ``run`` accepts (Mount, dict, (source, target[, ro]))."""
    if isinstance(m, Mount):
        return m
    if isinstance(m, dict):
        return Mount(str(m["source"]), str(m["target"]), bool(m.get("read_only", True)))
    return Mount(str(m[0]), str(m[1]), bool(m[2]) if len(m) > 2 else True)


def image_labels(info: Optional[Dict[str, Any]]) -> Dict[str, str]:
    """The labels of an inspected image (``Config.Labels``), never None."""
    return dict(((info or {}).get("Config") or {}).get("Labels") or {})


class ContainerEngine(Protocol):
    """The calls envrepro makes on an engine. Images are ``docker image inspect``-shaped dicts
    (``Id``, ``RepoTags``, ``RepoDigests``, ``Config.Labels``); listings are ``docker images``
    -shaped (``Id``, ``RepoTags``, ``Labels``, ``Size``, ``Created``)."""

    def connect(self) -> "ContainerEngine":
        """Reach the engine now, or raise NoEngine with one line saying how to start one."""
        ...

    def inspect_image(self, tag: str) -> Optional[Dict[str, Any]]:
        """The inspected image, or None when there is no such image."""
        ...

    def image_exists(self, tag: str) -> bool:
        ...

    def images(self, label_filter: Union[str, Sequence[str], None] = None) -> List[Dict[str, Any]]:
        """Images whose labels match (``"org.envrepro.key"`` or ``"k=v"``), newest first."""
        ...

    def containers_using(self, image_id: str) -> List[str]:
        """Names of the containers (running or stopped) created from image ``image_id``."""
        ...

    def tag(self, image: str, tag: str) -> None:
        ...

    def remove_image(self, tag: str, force: bool = False) -> bool:
        """Remove a tag (and the image when no other tag holds it). False if it wasn't there."""
        ...

    def pull(self, ref: str, on_line: Optional[LineCallback] = None) -> bool:
        """True when pulled, False when the registry has no such image; PullFailed when it
        denies access or can't be reached (so callers can tell "build it" from "say so")."""
        ...

    def push(self, ref: str) -> None:
        ...

    def build(self, context_tar_bytes: bytes, tag: str, buildargs: Optional[Dict[str, str]] = None,
              labels: Optional[Dict[str, str]] = None, on_line: Optional[LineCallback] = None,
              nocache: bool = False) -> str:
        """Build from an in-memory tar context, tag only after success; the image id."""
        ...

    def start(self, image: str, command: Optional[Sequence[str]] = None,
              ports: Optional[Dict[int, Tuple[str, int]]] = None,
              environment: Optional[Dict[str, str]] = None, user: Optional[str] = None,
              read_only: bool = True, tmpfs: Optional[Dict[str, str]] = None,
              cap_drop: Sequence[str] = ("ALL",), security_opt: Sequence[str] = ("no-new-privileges",),
              mem_limit: Optional[str] = None, pids_limit: Optional[int] = None,
              name: Optional[str] = None, gpus: bool = False) -> str:
        """Start a detached service container (``ports``: container port -> (host address, host
        port, 0 for any)); its id. The caller stops it (``stop``)."""
        ...

    def host_port(self, container: str, port: int) -> Optional[int]:
        """The host port published for the container's ``port``, or None."""
        ...

    def container_state(self, container: str) -> Dict[str, Any]:
        """``{"running": bool, "exit_code": int or None, "oom_killed": bool}``."""
        ...

    def follow_logs(self, container: str, on_line: LineCallback) -> None:
        """Call ``on_line`` with each line the container prints, until it exits."""
        ...

    def container_logs(self, container: str, tail: int = 50) -> str:
        """The last ``tail`` lines of the container's output ("" when unavailable)."""
        ...

    def stop(self, container: str, timeout: int = 30) -> Optional[int]:
        """SIGTERM, SIGKILL after ``timeout`` seconds; the exit code; the container is removed."""
        ...

    def run(self, image: str, command: Union[str, Sequence[str], None] = None,
            mounts: Iterable[MountSpec] = (), environment: Optional[Dict[str, str]] = None,
            user: Optional[str] = None, network_disabled: bool = True, read_only: bool = True,
            tmpfs: Optional[Dict[str, str]] = None, cap_drop: Sequence[str] = ("ALL",),
            security_opt: Sequence[str] = ("no-new-privileges",), mem_limit: Optional[str] = None,
            pids_limit: Optional[int] = None, workdir: Optional[str] = None, stream: bool = True,
            on_output: Optional[OutputCallback] = None, gpus: bool = False,
            timeout: Optional[float] = None) -> Tuple[int, str, str]:
        """Run to completion in a fresh container, removed afterwards: (exit, stdout, stderr).
        The defaults are the load-time sandbox (no network, read-only root, no capabilities)."""
        ...

    def commit_run(self, image: str, command: Sequence[str], tag: str, mounts: Iterable[MountSpec] = (),
                   environment: Optional[Dict[str, str]] = None, changes: Sequence[str] = (),
                   tmpfs: Optional[Dict[str, str]] = None, on_line: Optional[LineCallback] = None,
                   timeout: Optional[float] = None) -> str:
        """Run ``command`` as root in a container of ``image`` with no network, then commit its
        file system as a new image tagged ``tag`` (``changes``: Dockerfile instructions such as
        USER or LABEL applied to its config); the image id. Mounts and tmpfs contents are not
        committed. BuildFailed when the command exits non-zero (nothing is tagged); the container
        is removed either way."""
        ...

    def save_image(self, tag: str, fileobj: BinaryIO) -> None:
        """``docker save TAG``, streamed into the binary file ``fileobj`` (never held in memory)."""
        ...

    def load_images(self, fileobj: BinaryIO) -> List[str]:
        """``docker load`` from the binary file ``fileobj``: what it loaded (tags, else image ids)."""
        ...
