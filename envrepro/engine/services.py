"""Long-running containers (a model server): start with published ports, follow logs, stop.

``ServiceMixin`` is part of ``DockerEngine`` (envrepro.engine.docker); it is kept in its own module
because ``run`` (run to completion, output collected) and a service (detached, stopped with a
grace period, its port published on the host) share little. Like docker.py, it imports the Docker
SDK lazily and turns every failure into an envrepro error.

A service with no network (``start(network_disabled=True)``, the default) still answers on its
published port. Docker publishes no port of a ``--network none`` container, and a container on an
``--internal`` network can still reach the host's own addresses, so the port is carried by
``envrepro.engine.relay`` instead: the service container gets ``--network none`` and a small tmpfs
volume; the relay, exec'd in it as its own user, listens on a unix socket there and forwards to
127.0.0.1:PORT; a second container of the same image, on the default bridge with the port
published, forwards from the port to that socket. Both relays run the base image's interpreter in
isolated mode (``python3 -I -S``) on envrepro's source, never the environment's ``python``, its
site-packages or the image's HEALTHCHECK. ``stop`` removes all of it.

``label_services`` gives every service started afterwards (its relay and the relay's volume too)
labels of the caller's: ``envrepro serve`` names its own process there, and ``services`` finds
the containers carrying such a label again (``envrepro.serving.orphans``: those whose process is
gone are removed).
"""
from __future__ import annotations

import inspect
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

from envrepro.engine import relay
from envrepro.engine.base import LineCallback, RunFailed

RELAY_UID = 10002                        # the relays' user: not the service's, not root
RELAY_USER = f"{RELAY_UID}:{RELAY_UID}"
RELAY_DIR = "/run/envrepro-relay"        # the tmpfs volume both containers mount (mode 0700)
RELAY_FOR = "org.envrepro.relay-for"     # label of a relay container: the service's id
RELAY_VOLUME = "org.envrepro.relay-volume"
RELAY_PYTHONS = ("/usr/local/bin/python3", "/usr/bin/python3")   # the base image's, not the venv's
RELAY_MEMORY = "128m"
RELAY_PIDS = 64
RELAY_START_SECONDS = 0.5                # a relay that exits within this is reported (no python3...)


def relay_argv(mode: str, pairs: Sequence[str]) -> List[str]:
    """The relay as a command: the first python3 of RELAY_PYTHONS, isolated, on the relay's
    source (``sh -c SCRIPT SOURCE ARGS...``: $0 is the source)."""
    script = ("for p in " + " ".join(RELAY_PYTHONS) + "; do "
              'if [ -x "$p" ]; then exec "$p" -I -S -c "$0" "$@"; fi; done; '
              f'echo "envrepro relay: no python3 in the image ({", ".join(RELAY_PYTHONS)})" >&2; exit 127')
    return ["/bin/sh", "-c", script, inspect.getsource(relay), mode, *pairs]


def _socket(port: int) -> str:
    return f"{RELAY_DIR}/{int(port)}.sock"


class ServiceMixin:
    """Service containers on a Docker engine (needs ``self.client`` and ``self._fail``)."""

    client: Any
    api: Any
    _fail: Any     # DockerEngine._fail: an SDK exception -> an envrepro error
    _service_labels: Dict[str, str] = {}     # label_services: set per instance, never mutated

    def label_services(self, labels: Dict[str, str]) -> None:
        """Every service started from now on (its relay and the relay's volume too) carries
        ``labels`` besides its own."""
        self._service_labels = {str(k): str(v) for k, v in (labels or {}).items()}

    def _container(self, container: str) -> Any:
        try:
            return self.client.containers.get(container)
        except Exception as e:
            raise self._fail(e, f"finding container {container[:12]}", RunFailed) from None

    def start(self, image: str, command: Optional[Sequence[str]] = None,
              ports: Optional[Dict[int, Tuple[str, int]]] = None,
              environment: Optional[Dict[str, str]] = None, user: Optional[str] = None,
              read_only: bool = True, tmpfs: Optional[Dict[str, str]] = None,
              cap_drop: Sequence[str] = ("ALL",), security_opt: Sequence[str] = ("no-new-privileges",),
              mem_limit: Optional[str] = None, pids_limit: Optional[int] = None,
              name: Optional[str] = None, gpus: bool = False, network_disabled: bool = True) -> str:
        """Start a detached container; ``ports`` maps a container port to (host address, host
        port; 0 picks a free one). ``network_disabled``: ``--network none``, the ports carried
        by the relay (module docstring). Returns the container id; the caller stops it."""
        from docker.types import DeviceRequest

        kwargs: Dict[str, Any] = dict(
            environment=environment or {}, read_only=read_only, tmpfs=tmpfs or None,
            cap_drop=list(cap_drop) or None, security_opt=list(security_opt) or None,
            detach=True, stdin_open=False, tty=False)
        for key, value in (("user", user), ("mem_limit", mem_limit), ("pids_limit", pids_limit),
                           ("name", name)):
            if value is not None:
                kwargs[key] = value
        if gpus:
            kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        if self._service_labels:
            kwargs["labels"] = dict(self._service_labels)
        if not network_disabled:
            kwargs["ports"] = {f"{p}/tcp": (host, hp or None) for p, (host, hp) in (ports or {}).items()}
            return self._run_detached(image, command, kwargs)
        kwargs["network_mode"] = "none"
        if not ports:
            return self._run_detached(image, command, kwargs)
        return self._start_relayed(image, command, kwargs, dict(ports), name)

    def _run_detached(self, image: str, command: Optional[Sequence[str]], kwargs: Dict[str, Any]) -> str:
        try:
            container = self.client.containers.run(image, list(command) if command else None, **kwargs)
        except Exception as e:
            raise self._fail(e, f"starting a container from {image}", RunFailed) from None
        return str(container.id)

    def _start_relayed(self, image: str, command: Optional[Sequence[str]], kwargs: Dict[str, Any],
                       ports: Dict[int, Tuple[str, int]], name: Optional[str]) -> str:
        """The service with no network, its ports carried by the two relays."""
        from docker.types import Mount as DockerMount

        volume = f"envrepro-relay-{uuid.uuid4().hex[:16]}"
        mount = DockerMount(target=RELAY_DIR, source=volume, type="volume", read_only=False)
        cid: Optional[str] = None
        try:
            try:
                self.client.volumes.create(
                    name=volume, driver="local", labels={**self._service_labels, RELAY_VOLUME: volume},
                    driver_opts={"type": "tmpfs", "device": "tmpfs",
                                 "o": f"uid={RELAY_UID},gid={RELAY_UID},mode=0700,size=1m"})
            except Exception as e:
                raise self._fail(e, "creating the relay's volume", RunFailed) from None
            cid = self._run_detached(image, command, dict(kwargs, mounts=[mount]))
            inner: List[str] = []
            outer: List[str] = []
            for port in sorted(ports):
                inner += [_socket(port), str(int(port))]
                outer += [str(int(port)), _socket(port)]
            try:
                exec_id = self.api.exec_create(cid, relay_argv("unix-to-tcp", inner), user=RELAY_USER,
                                               stdout=True, stderr=True)["Id"]
                self.api.exec_start(exec_id, detach=True)
            except Exception as e:
                if self._exited(cid):
                    return cid        # the service died at once: its state and logs say why
                raise self._fail(e, f"starting the relay in container {cid[:12]}", RunFailed) from None
            try:
                relay_container = self.client.containers.run(
                    image, None, entrypoint=relay_argv("tcp-to-unix", outer), user=RELAY_USER,
                    environment={}, read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"],
                    mem_limit=RELAY_MEMORY, pids_limit=RELAY_PIDS, healthcheck={"test": ["NONE"]},
                    labels={**self._service_labels, RELAY_FOR: cid, RELAY_VOLUME: volume}, mounts=[mount],
                    ports={f"{p}/tcp": (host, hp or None) for p, (host, hp) in ports.items()},
                    detach=True, stdin_open=False, tty=False,
                    **({"name": f"{name}-relay"} if name else {}))
            except Exception as e:
                raise self._fail(e, f"starting the relay for container {cid[:12]}", RunFailed) from None
            self._check_relays(cid, exec_id, relay_container)
            return cid
        except BaseException:
            if cid is not None:
                try:
                    self._teardown(self._container(cid))
                except Exception:
                    pass
            self._remove_volume(volume)
            raise

    def _exited(self, cid: str) -> bool:
        try:
            c = self._container(cid)
            c.reload()
            return not (c.attrs.get("State") or {}).get("Running")
        except Exception:
            return False

    def _check_relays(self, cid: str, exec_id: str, relay_container: Any) -> None:
        """RunFailed when either relay exited right away (no python3 in the image, a port taken);
        not when the service itself did (the caller reads its state and logs)."""
        end = time.monotonic() + RELAY_START_SECONDS
        while True:
            if self._exited(cid):
                return
            try:
                inner = self.api.exec_inspect(exec_id)
                relay_container.reload()
                outer = relay_container.attrs.get("State") or {}
            except Exception as e:
                raise self._fail(e, "checking the relays", RunFailed) from None
            if not inner.get("Running") and inner.get("ExitCode") is not None and not self._exited(cid):
                code = inner.get("ExitCode")
                why = {127: f"the image has no python3 in {' or '.join(RELAY_PYTHONS)}",
                       3: f"it could not listen on its socket in {RELAY_DIR} (an engine remapping user ids?)"}
                raise RunFailed(f"the relay in the service container exited with code {code}"
                                + (f": {why[code]}" if code in why else ""), None,
                                "the model is served with no network through a relay that needs python3 "
                                "in the image, `docker exec` and tmpfs volumes from the engine")
            if not outer.get("Running"):
                logs = relay_container.logs(stdout=True, stderr=True, tail=5).decode("utf-8", "replace")
                last = logs.strip().splitlines()[-1] if logs.strip() else ""
                raise RunFailed(f"the relay container exited with code {outer.get('ExitCode')}"
                                + (f": {last}" if last else ""), None, None)
            if time.monotonic() >= end:
                return
            time.sleep(0.1)

    def _relays(self, container: str) -> List[Any]:
        """The relay containers of service ``container`` (none for a service with a network)."""
        try:
            cid = self._container(container).id
            return list(self.client.containers.list(all=True, filters={"label": f"{RELAY_FOR}={cid}"}))
        except Exception:
            return []

    def _remove_volume(self, volume: str) -> None:
        try:
            self.client.volumes.get(volume).remove(force=True)
        except Exception:
            pass

    def _teardown(self, service: Any) -> None:
        """Remove the service container, then its relays, then the relays' volume (found among
        the service's mounts, so a service whose relays never started leaves none)."""
        relays = self._relays(service.id)
        volumes = [str(m.get("Name")) for m in (service.attrs.get("Mounts") or [])
                   if m.get("Type") == "volume" and m.get("Destination") == RELAY_DIR and m.get("Name")]
        for c in [service, *relays]:
            try:
                c.remove(force=True)
            except Exception:
                pass
        for volume in volumes:
            self._remove_volume(volume)

    def services(self, label: str) -> List[Dict[str, Any]]:
        """The containers, running or not, whose own labels match ``label`` ("key" or
        "key=value"): a label inherited unchanged from the image is not the container's own (an
        image committed from a labelled container must not make its containers look owned).
        A service's ports are those its relays publish (when they match too)."""
        import docker.errors

        try:
            listed = self.api.containers(all=True, filters={"label": [label]})
        except Exception as e:
            raise self._fail(e, "listing containers", RunFailed) from None
        inherited: Dict[str, Dict[str, str]] = {}
        key, eq, value = label.partition("=")
        out: List[Dict[str, Any]] = []
        for c in listed:
            image_id = str(c.get("ImageID") or "")
            if image_id not in inherited:
                try:
                    inherited[image_id] = dict((self.api.inspect_image(image_id).get("Config") or {}).get("Labels") or {})
                except docker.errors.NotFound:
                    inherited[image_id] = {}
                except Exception as e:
                    raise self._fail(e, f"inspecting image {image_id[:19]}", RunFailed) from None
            own = {k: v for k, v in (c.get("Labels") or {}).items() if inherited[image_id].get(k) != v}
            if key not in own or (eq and own[key] != value):
                continue
            ports: Dict[Tuple[int, int], Dict[str, Any]] = {}
            for p in c.get("Ports") or []:
                if p.get("PublicPort") and p.get("Type", "tcp") == "tcp":
                    entry = {"port": int(p.get("PrivatePort") or 0), "host": str(p.get("IP") or "0.0.0.0"),
                             "host_port": int(p["PublicPort"])}
                    slot = (entry["port"], entry["host_port"])      # the IPv4 entry over the IPv6 one
                    if slot not in ports or ":" in ports[slot]["host"]:
                        ports[slot] = entry
            out.append({"id": str(c.get("Id") or ""), "name": str((c.get("Names") or [""])[0]).lstrip("/"),
                        "image": str(c.get("Image") or ""), "image_id": image_id,
                        "running": c.get("State") == "running", "status": str(c.get("Status") or ""),
                        "labels": own, "relay_for": own.get(RELAY_FOR, ""), "ports": list(ports.values())})
        by_id = {s["id"]: s for s in out}
        for s in out:
            if s["relay_for"] in by_id:
                by_id[s["relay_for"]]["ports"] = by_id[s["relay_for"]]["ports"] + s["ports"]
        return out

    def host_port(self, container: str, port: int) -> Optional[int]:
        """The host port published for ``port`` (by the service's relay when it has no network),
        or None (not published, or not running)."""
        relays = self._relays(container)
        c = relays[0] if relays else self._container(container)
        try:
            c.reload()
            bound = (c.attrs.get("NetworkSettings") or {}).get("Ports") or {}
            for entry in bound.get(f"{port}/tcp") or []:
                if entry.get("HostPort"):
                    return int(entry["HostPort"])
        except Exception as e:
            raise self._fail(e, f"inspecting container {container[:12]}", RunFailed) from None
        return None

    def container_state(self, container: str) -> Dict[str, Any]:
        """``{"running": bool, "exit_code": int or None, "oom_killed": bool}``."""
        c = self._container(container)
        try:
            c.reload()
            st = c.attrs.get("State") or {}
        except Exception as e:
            raise self._fail(e, f"inspecting container {container[:12]}", RunFailed) from None
        running = bool(st.get("Running"))
        return {"running": running, "exit_code": None if running else st.get("ExitCode"),
                "oom_killed": bool(st.get("OOMKilled"))}

    def follow_logs(self, container: str, on_line: LineCallback) -> None:
        """Send the container's output, line by line, until it exits (or the caller interrupts)."""
        c = self._container(container)
        pending = ""
        try:
            for chunk in c.logs(stream=True, follow=True, stdout=True, stderr=True):
                pending += chunk.decode("utf-8", "replace")
                *lines, pending = pending.split("\n")
                for line in lines:
                    on_line(line)
        except Exception as e:
            raise self._fail(e, f"following container {container[:12]}", RunFailed) from None
        if pending:
            on_line(pending)

    def container_logs(self, container: str, tail: int = 50) -> str:
        try:
            return self._container(container).logs(stdout=True, stderr=True, tail=tail).decode("utf-8", "replace")
        except Exception:
            return ""

    def stop(self, container: str, timeout: int = 30) -> Optional[int]:
        """SIGTERM (the image's STOPSIGNAL), SIGKILL after ``timeout`` s; the exit code, then the
        container is removed, and its relays and their volume after it (the relays carry the
        answers to the requests drained in the meantime)."""
        c = self._container(container)
        code: Optional[int] = None
        try:
            c.stop(timeout=timeout)
            status = c.wait(timeout=timeout + 30)
            code = int(status.get("StatusCode", -1)) if isinstance(status, dict) else int(status)
        except Exception as e:
            raise self._fail(e, f"stopping container {container[:12]}", RunFailed) from None
        finally:
            self._teardown(c)
        return code
