"""What envrepro asks of a container engine, declared once: the ``ContainerEngine`` protocol, the
values that cross it (``Mount``, a build container's ``Limits``) and the errors it raises
(``PullFailed``, ``RunFailed``, ``TimedOut``).

Everything outside ``envrepro.engine`` is typed against this protocol, not against Docker, so the
image and sandbox code can be exercised with the one fake in ``tests/unit/fakes.py`` and another
engine could be added without touching them. ``envrepro.engine.docker.DockerEngine`` is the
implementation; a unit test (tests/unit/engine/test_engine_base.py) checks that it and the fake have every
method below with the same signature. Standard library only: importing this is free.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import (Any, BinaryIO, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union)

from envrepro.errors import BuildFailed, EnvreproError, LoadFailed

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


class TimedOut(RunFailed):
    """``run(timeout=...)``: the container was still running after that many seconds and was
    killed (``seconds``). Its output so far is in ``stdout``/``stderr`` (bounded like ``run``'s)."""

    def __init__(self, what: str, seconds: float, stdout: str = "", stderr: str = ""):
        super().__init__(what)
        self.seconds, self.stdout, self.stderr = seconds, stdout, stderr


_MEMORY = re.compile(r"^[1-9][0-9]*[bkmg]?$", re.IGNORECASE)


@dataclass(frozen=True)
class Limits:
    """What one build container may use: ``memory`` (Docker's notation: ``4g``, ``512m``),
    ``pids`` (processes and threads) and ``seconds`` of wall-clock time (then it is killed)."""

    memory: str
    pids: int
    seconds: float

    def from_env(self, prefix: str) -> "Limits":
        """These limits with ``{prefix}_MEMORY``, ``{prefix}_PIDS`` and ``{prefix}_TIMEOUT``
        (seconds) from the environment, when set; EnvreproError naming a value that isn't one."""
        memory = os.environ.get(prefix + "_MEMORY", "").strip() or self.memory
        if not _MEMORY.match(memory):
            raise EnvreproError(f"{prefix}_MEMORY={memory!r} is not an amount of memory", None,
                                f"set it like {self.memory} (a number with b, k, m or g)")
        values: List[float] = []
        for name, kind, default in (("_PIDS", int, self.pids), ("_TIMEOUT", float, self.seconds)):
            text = os.environ.get(prefix + name, "").strip()
            try:
                value = kind(text) if text else default
            except ValueError:
                value = -1
            if not 0 < value < float("inf"):
                raise EnvreproError(f"{prefix}{name}={text!r} is not a positive number", None,
                                    f"set it like {default:g}" + (" (seconds)" if name == "_TIMEOUT" else ""))
            values.append(value)
        return Limits(memory, int(values[0]), float(values[1]))


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
              name: Optional[str] = None, gpus: bool = False, network_disabled: bool = True) -> str:
        """Start a detached service container (``ports``: container port -> (host address, host
        port, 0 for any)); its id. The caller stops it (``stop``). ``network_disabled`` (the
        default, as ``run``'s): the container has no network, only a loopback interface, and its
        ``ports`` are still published (the engine carries them: DockerEngine's relay)."""
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
            timeout: Optional[float] = None, cap_add: Sequence[str] = (),
            output_limit: Optional[int] = None) -> Tuple[int, str, str]:
        """Run to completion in a fresh container, removed afterwards: (exit, stdout, stderr).
        The defaults are the load-time sandbox (no network, read-only root, no capabilities).
        ``cap_add``: capabilities given back after ``cap_drop``. ``timeout``: wall-clock seconds,
        then the container is killed and TimedOut raised. ``output_limit``: keep only the last
        that many characters of each stream in memory (``on_output`` still sees all of it)."""
        ...

    def commit_run(self, image: str, command: Sequence[str], tag: str, mounts: Iterable[MountSpec] = (),
                   environment: Optional[Dict[str, str]] = None, changes: Sequence[str] = (),
                   tmpfs: Optional[Dict[str, str]] = None, on_line: Optional[LineCallback] = None,
                   timeout: Optional[float] = None, cap_add: Sequence[str] = (),
                   mem_limit: Optional[str] = None, pids_limit: Optional[int] = None) -> str:
        """Run ``command`` as root in a container of ``image`` with no network, then commit its
        file system as a new image tagged ``tag`` (``changes``: Dockerfile instructions such as
        USER or LABEL applied to its config); the image id. Mounts and tmpfs contents are not
        committed. BuildFailed when the command exits non-zero or is still running after
        ``timeout`` seconds (it is killed; nothing is tagged); the container is removed either way.
        The container has every capability dropped but ``cap_add``, no-new-privileges, and
        ``mem_limit``/``pids_limit``. Every output line goes to ``on_line`` (long lines split);
        only the last few are kept in memory, for the error."""
        ...

    def save_image(self, tag: str, fileobj: BinaryIO) -> None:
        """``docker save TAG``, streamed into the binary file ``fileobj`` (never held in memory)."""
        ...

    def load_images(self, fileobj: BinaryIO) -> List[str]:
        """``docker load`` from the binary file ``fileobj`` (read once, front to back: it may be a
        stream that can't seek): what it loaded (tags, else image ids). The engine applies every
        tag the archive names: untrusted archives go through ``bundling.imagearchive`` first,
        which hands over a stream naming none."""
        ...


class ServiceOwnership(Protocol):
    """What ``envrepro serve`` asks of an engine about the service containers it owns
    (``envrepro.serving.orphans``): labels that say which process started them, and the
    containers that carry such a label. Apart from ``ContainerEngine`` (whose method list
    tests/unit/engine/test_engine_base.py pins); ``DockerEngine`` and the unit tests' fake
    implement both, with the same signatures (tests/unit/serving/test_orphans.py checks)."""

    def label_services(self, labels: Dict[str, str]) -> None:
        """Every service container ``start`` starts from now on, and its relay (and the relay's
        volume), carries ``labels`` besides its own (replacing those of an earlier call)."""
        ...

    def services(self, label: str) -> List[Dict[str, Any]]:
        """The containers, running or not, whose own labels (given when they were started, not
        inherited unchanged from their image) match ``label`` (``"key"`` or ``"key=value"``).
        Each is a dict: ``id`` (full), ``name``, ``image`` (as it was started: a tag or an id),
        ``image_id``, ``running`` (bool), ``status`` (the engine's words), ``labels`` (its own),
        ``relay_for`` (the service whose port a relay container carries, else ""), ``ports``
        (``[{"port", "host", "host_port"}]``: what it publishes, a service's relays' included
        when they match too). Remove one with ``stop``."""
        ...
