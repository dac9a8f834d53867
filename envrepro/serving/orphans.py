"""Which ``envrepro serve`` process a serving container belongs to, and the containers whose
process is gone (orphans): listed by ``envrepro images``, removed by the next ``envrepro serve``
and by ``envrepro images prune`` (and, at once, by the serve's watcher: ``serving.watcher``).

``envrepro serve`` labels every container it starts (the model's, its relay, the self-check's)
with its own identity (``Owner.labels``): its pid, its host name and, where the system says them
(Linux: ``/proc``), the machine id, the boot id, its pid namespace and its start time (clock ticks
since boot), so that a pid reused by another process is not taken for the owner. A container is

- ``alive``: its owner runs (the same pid, started at the recorded time);
- ``orphaned``: same host, machine and pid namespace, and the pid is gone, a zombie or another
  process now (or the machine rebooted since): nothing will stop it but envrepro;
- ``elsewhere``: another host, machine or pid namespace (a client sharing the engine): not judged
  here, never removed.

Only labels the container was started with count, not ones inherited from its image
(``ServiceOwnership.services``). Containers started by envrepro before these labels carry none and
are not listed."""
from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, cast

from envrepro import errors
from envrepro.engine.base import ContainerEngine, ServiceOwnership

OWNER = "org.envrepro.owner"
PID, HOST, MACHINE, BOOT, STARTED, PIDNS = (f"{OWNER}.{k}" for k in ("pid", "host", "machine", "boot", "started", "pidns"))
ROLE, WATCHER = f"{OWNER}.role", f"{OWNER}.watcher"
ALIVE, ORPHANED, ELSEWHERE = "alive", "orphaned", "elsewhere"
SWEEP_SECONDS = 5           # an orphan gets SIGTERM and this long to answer what it has in flight
STOP_MARGIN = 10            # past the drain's grace, the engine kills a server still running (as the self-check)

Say = Callable[[str], None]


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def process(pid: int) -> Optional[Tuple[str, str]]:
    """(state letter, start time in clock ticks since boot) of ``pid`` from ``/proc``, or None
    (no such process, or no ``/proc``: macOS, Windows)."""
    text = _read(f"/proc/{int(pid)}/stat")
    if ")" not in text:
        return None
    fields = text.rsplit(")", 1)[1].split()          # the command name may hold spaces and ")"
    return (fields[0], fields[19]) if len(fields) > 19 else None


def pid_alive(pid: int) -> Optional[bool]:
    """True when ``pid`` is a process (a zombie is not), False when not, None when this system
    can't tell without side effects (Windows: ``os.kill`` terminates)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # another user's process
        pass
    except OSError:
        return None
    seen = process(pid)
    return not (seen and seen[0] in ("Z", "X"))


@dataclass(frozen=True)
class Host:
    """Where a process runs, as far as this system says: what must match before a label's pid
    means anything here."""

    host: str
    machine: str = ""
    boot: str = ""
    pidns: str = ""

    @classmethod
    def current(cls) -> "Host":
        try:
            pidns = os.readlink("/proc/self/ns/pid")
        except OSError:
            pidns = ""
        return cls(socket.gethostname(), _read("/etc/machine-id") or _read("/var/lib/dbus/machine-id"),
                   _read("/proc/sys/kernel/random/boot_id"), pidns)


@dataclass(frozen=True)
class Owner:
    """This process, as the labels of the containers it starts name it."""

    pid: int
    started: str
    where: Host

    @classmethod
    def current(cls) -> "Owner":
        seen = process(os.getpid())
        return cls(os.getpid(), seen[1] if seen else "", Host.current())

    def labels(self, role: str, watcher: Optional[int] = None) -> Dict[str, str]:
        out = {PID: str(self.pid), HOST: self.where.host, MACHINE: self.where.machine, BOOT: self.where.boot,
               STARTED: self.started, PIDNS: self.where.pidns, ROLE: role}
        if watcher:
            out[WATCHER] = str(watcher)
        return out

    def owns(self, labels: Dict[str, str]) -> bool:
        """``labels`` name this very process (pid, start time and host)."""
        return (labels.get(PID) == str(self.pid) and labels.get(STARTED, "") == self.started
                and labels.get(HOST) == self.where.host and labels.get(BOOT, "") == self.where.boot)


def judge(labels: Dict[str, str], here: Optional[Host] = None) -> str:
    """``alive``, ``orphaned`` or ``elsewhere`` (module docstring) for a container's labels."""
    here = here or Host.current()
    if labels.get(HOST) != here.host:
        return ELSEWHERE
    for key, mine in ((MACHINE, here.machine), (PIDNS, here.pidns)):
        if labels.get(key) and mine and labels[key] != mine:
            return ELSEWHERE
    try:
        pid = int(labels.get(PID, ""))
    except ValueError:
        return ELSEWHERE
    if labels.get(BOOT) and here.boot and labels[BOOT] != here.boot:
        return ORPHANED                       # this machine rebooted since: no process survived that
    alive = pid_alive(pid)
    if alive is None:
        return ELSEWHERE                      # can't tell: never remove
    if not alive:
        return ORPHANED
    seen = process(pid)
    if labels.get(STARTED) and seen and seen[1] != labels[STARTED]:
        return ORPHANED                       # the pid is another process now
    return ALIVE


@dataclass
class ServingContainer:
    """A container ``envrepro serve`` started (the model's, the self-check's, or a relay left
    without its model), with its relays and the state of its owner."""

    id: str
    image: str
    image_id: str
    role: str                              # serve | self-check | relay
    state: str                             # alive | orphaned | elsewhere
    pid: int
    host: str
    running: bool
    status: str
    ports: List[str] = field(default_factory=list)        # "127.0.0.1:8501" (published, by its relay)
    relays: List[str] = field(default_factory=list)
    watcher: Optional[int] = None
    full_id: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def ownership(engine: ContainerEngine) -> Optional[ServiceOwnership]:
    """The engine's ``ServiceOwnership`` side, or None for an engine without one."""
    if callable(getattr(engine, "services", None)) and callable(getattr(engine, "label_services", None)):
        return cast(ServiceOwnership, engine)
    return None


def listing(engine: ContainerEngine, here: Optional[Host] = None) -> List[ServingContainer]:
    """Every container with an owner's labels: services with their relays folded in, then the
    relays whose service is gone."""
    own = ownership(engine)
    if own is None:
        return []
    here = here or Host.current()
    found = own.services(PID)
    ids = {c["id"] for c in found}
    out: List[ServingContainer] = []
    for c in found:
        if c["relay_for"] and c["relay_for"] in ids:
            continue
        labels = c["labels"]
        try:
            pid = int(labels.get(PID, ""))
            watcher: Optional[int] = int(labels[WATCHER]) if labels.get(WATCHER) else None
        except ValueError:
            pid, watcher = 0, None
        relays = [r["id"] for r in found if r["relay_for"] == c["id"]]
        ports = sorted({f"{p['host']}:{p['host_port']}" for p in c["ports"]})
        out.append(ServingContainer(
            c["id"][:12], c["image"], c["image_id"], "relay" if c["relay_for"] else labels.get(ROLE, "serve"),
            judge(labels, here), pid, labels.get(HOST, ""), bool(c["running"]), c["status"], ports,
            [r[:12] for r in relays], watcher, c["id"]))
    return out


def _remove(engine: ContainerEngine, cid: str, timeout: int) -> Optional[str]:
    """Stop and remove ``cid`` (its relays and their volume with it); why not, or None. A
    container already gone (another sweep, its watcher) counts as removed."""
    try:
        engine.stop(cid, timeout=timeout)
    except errors.EnvreproError as e:
        own = ownership(engine)
        try:
            still = own is not None and any(c["id"] == cid for c in own.services(PID))
        except errors.EnvreproError:
            still = True
        return str(e) if still else None
    return None


def sweep(engine: ContainerEngine, here: Optional[Host] = None, dry_run: bool = False,
          timeout: int = SWEEP_SECONDS, say: Optional[Say] = None,
          failed: Optional[Dict[str, str]] = None) -> List[ServingContainer]:
    """Remove the orphans (SIGTERM, ``timeout`` s to drain, then removed with their relays);
    the ones removed (with ``dry_run``: that would be). ``failed``: container id -> why not."""
    orphans = [c for c in listing(engine, here) if c.state == ORPHANED]
    done: List[ServingContainer] = []
    for c in orphans:
        if not dry_run:
            why = _remove(engine, c.full_id, timeout)
            if why:
                if failed is not None:
                    failed[c.id] = why
                continue
        done.append(c)
    if done and say and not dry_run:
        say(f"Removed {len(done)} serving container(s) whose envrepro serve is gone: "
            + ", ".join(f"{c.id} ({c.image}, pid {c.pid})" for c in done))
    return done


ROUNDS, ROUND_WAIT = 5, 1.0


def remove_owned(engine: ContainerEngine, owner: Owner, timeout: int = 0) -> Tuple[List[str], Dict[str, str]]:
    """Remove every container ``owner`` started that is still there (services first: each takes
    its relays with it): (removed ids, id -> why not)."""
    own = ownership(engine)
    if own is None:
        return [], {}
    removed: List[str] = []
    failed: Dict[str, str] = {}
    for round_ in range(ROUNDS):
        # a relay whose service is gone (or could not be removed) is found in a later round; a
        # container another stop is still removing ("removal in progress") is waited for
        mine = [c for c in own.services(f"{PID}={owner.pid}") if owner.owns(c["labels"])]
        ids = {c["id"] for c in mine}
        for cid in [cid for cid in failed if cid not in ids]:
            del failed[cid]                  # its removal finished after all
            removed.append(cid)
        todo = [c for c in mine if c["id"] not in failed
                and not (c["relay_for"] and c["relay_for"] in ids and c["relay_for"] not in failed)]
        if not todo:
            if not failed or round_ == ROUNDS - 1:
                break
            time.sleep(ROUND_WAIT)
            continue
        for c in todo:
            why = _remove(engine, c["id"], timeout)
            if why:
                failed[c["id"]] = why
            else:
                removed.append(c["id"])
    return removed, failed


def attach(rows: List[Any], containers: List[ServingContainer], row_type: Any) -> List[Any]:
    """``envrepro images``: each serving container in the ``serving`` list of its image's row
    (``row_type``: ``image.inventory.ImageRow``); one of an image not listed gets a row of its own."""
    by_id = {r.full_id: r for r in rows}
    for c in containers:
        row = by_id.get(c.image_id)
        if row is None:
            row = by_id[c.image_id] = row_type(tag=c.image or "<none>", id=c.image_id.split(":")[-1][:12],
                                               key="", size=0, created="", full_id=c.image_id)
            rows.append(row)
        if not row.captures and c.id not in row.containers:
            row.containers.append(c.id)     # in use (prune keeps an image a container runs from)
        row.serving.append(c.to_dict())
    return rows
