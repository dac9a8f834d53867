"""Long-running containers (a model server): start with published ports, follow logs, stop.

``ServiceMixin`` is part of ``DockerEngine`` (envrepro.engine.docker); it is kept in its own module
because ``run`` (run to completion, output collected) and a service (detached, stopped with a
grace period, its port published on the host) share little. Like docker.py, it imports the Docker
SDK lazily and turns every failure into an envrepro error.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

from envrepro.engine.base import LineCallback, RunFailed


class ServiceMixin:
    """Service containers on a Docker engine (needs ``self.client`` and ``self._fail``)."""

    client: Any
    _fail: Any     # DockerEngine._fail: an SDK exception -> an envrepro error

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
              name: Optional[str] = None, gpus: bool = False) -> str:
        """Start a detached container; ``ports`` maps a container port to (host address, host
        port; 0 picks a free one). Returns the container id; the caller stops and removes it."""
        from docker.types import DeviceRequest

        kwargs: Dict[str, Any] = dict(
            environment=environment or {}, read_only=read_only, tmpfs=tmpfs or None,
            cap_drop=list(cap_drop) or None, security_opt=list(security_opt) or None,
            detach=True, stdin_open=False, tty=False,
            ports={f"{p}/tcp": (host, hp or None) for p, (host, hp) in (ports or {}).items()})
        for key, value in (("user", user), ("mem_limit", mem_limit), ("pids_limit", pids_limit),
                           ("name", name)):
            if value is not None:
                kwargs[key] = value
        if gpus:
            kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        try:
            container = self.client.containers.run(image, list(command) if command else None, **kwargs)
        except Exception as e:
            raise self._fail(e, f"starting a container from {image}", RunFailed) from None
        return str(container.id)

    def host_port(self, container: str, port: int) -> Optional[int]:
        """The host port published for ``port``, or None (not published, or not running)."""
        c = self._container(container)
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
        container is removed."""
        c = self._container(container)
        code: Optional[int] = None
        try:
            c.stop(timeout=timeout)
            status = c.wait(timeout=timeout + 30)
            code = int(status.get("StatusCode", -1)) if isinstance(status, dict) else int(status)
        except Exception as e:
            raise self._fail(e, f"stopping container {container[:12]}", RunFailed) from None
        finally:
            try:
                c.remove(force=True)
            except Exception:
                pass
        return code
