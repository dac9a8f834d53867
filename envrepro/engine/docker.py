"""The container engine: with its service part (``services.py``) and its commit/archive part
(``imagework.py``), the only code that imports the Docker SDK.

``DockerEngine`` implements ``envrepro.engine.base.ContainerEngine`` (repo2docker-style), the
interface everything else is typed against, so the engine can be faked in unit tests
(``tests/unit/fakes.py``) and swapped later. The SDK is imported lazily: ``import
envrepro.engine.docker`` stays cheap for commands that never need Docker (``envrepro doctor``).

Every failure leaves this module as an envrepro error with a readable paragraph: no engine
(``NoEngine``), a build that failed or whose daemon died (``BuildFailed``), a pull that was denied
or could not reach its registry (``PullFailed``), a container that could not start (``RunFailed``).
"""
from __future__ import annotations

import io
import os
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from envrepro.engine.base import (LineCallback, MountSpec, OutputCallback, PullFailed, RunFailed,
                                  TimedOut, as_mount)
from envrepro.engine.imagework import ImageWorkMixin
from envrepro.engine.output import Deadline, Kept, wait_timeout
from envrepro.engine.messages import ANSI as _ANSI, explain, split_ref as _split_ref
from envrepro.engine.services import ServiceMixin
from envrepro.errors import BuildFailed, EnvreproError, NoEngine

START_HINT = ("start one: `sudo dockerd &` (Linux) or Docker Desktop (macOS/Windows), or point "
              "DOCKER_HOST at a running engine; `envrepro doctor` needs no engine")


def _first_line(e: BaseException) -> str:
    text = getattr(e, "explanation", None) or str(e) or type(e).__name__
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__


def _why_unreachable(e: BaseException) -> str:
    """The short reason (connection refused, no such socket, permission denied), not the
    requests/urllib3 chain around it."""
    text = str(e)
    for needle, short in (("Connection refused", "connection refused"),
                          ("No such file or directory", "no such socket"),
                          ("Permission denied", "permission denied: add yourself to the docker group"),
                          ("timed out", "timed out"), ("Name or service not known", "unknown host")):
        if needle in text:
            return short
    return _first_line(e)[:160]


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _is_connection_error(e: BaseException) -> bool:
    import requests

    if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                      requests.exceptions.Timeout, ConnectionError)):
        return True
    try:
        from urllib3.exceptions import ProtocolError

        return isinstance(e, ProtocolError)
    except ImportError:  # pragma: no cover
        return False


class DockerEngine(ServiceMixin, ImageWorkMixin):
    """A Docker engine reached through the Docker SDK (``docker.from_env``)."""

    def __init__(self, client: Any = None, timeout: int = 600):
        self._client = client
        self._timeout = timeout

    # -- connection -------------------------------------------------------------------------
    def connect(self) -> "DockerEngine":
        """Reach the engine now, or raise NoEngine with one line saying how to start one."""
        if self._client is not None:
            return self
        try:
            import docker
        except ImportError:
            raise NoEngine("the Docker SDK for Python is not installed", None,
                           "pip install docker") from None
        try:
            client = docker.from_env(timeout=self._timeout)
            client.ping()
        except Exception as e:  # DockerException, requests ConnectionError, ...
            raise NoEngine(f"no Docker engine answers at {_docker_host()} ({_why_unreachable(e)})",
                           None, START_HINT) from None
        self._client = client
        return self

    @property
    def client(self) -> Any:
        if self._client is None:
            self.connect()
        return self._client

    @property
    def api(self) -> Any:
        return self.client.api

    def _fail(self, e: BaseException, action: str, cls: type = EnvreproError) -> EnvreproError:
        """Turn an SDK/requests exception into an envrepro error with a readable paragraph."""
        if _is_connection_error(e):
            return NoEngine(f"the Docker engine at {_docker_host()} stopped answering while {action} "
                            f"(did the daemon die or restart?): {_first_line(e)}", None, START_HINT)
        reason = _first_line(e)
        return cls(f"{action} failed: {reason}", None, explain(reason))

    # -- images -----------------------------------------------------------------------------
    def inspect_image(self, tag: str) -> Optional[Dict[str, Any]]:
        import docker.errors

        try:
            return dict(self.api.inspect_image(tag))
        except docker.errors.NotFound:
            return None
        except Exception as e:
            raise self._fail(e, f"inspecting image {tag}") from None

    def image_exists(self, tag: str) -> bool:
        return self.inspect_image(tag) is not None

    def images(self, label_filter: Union[str, Sequence[str], None] = None) -> List[Dict[str, Any]]:
        """Images whose labels match (``"org.envrepro.key"`` or ``"k=v"``), newest first."""
        filters: Dict[str, Any] = {}
        if label_filter:
            filters["label"] = [label_filter] if isinstance(label_filter, str) else list(label_filter)
        try:
            out = self.api.images(filters=filters or None)
        except Exception as e:
            raise self._fail(e, "listing images") from None
        return sorted((dict(i) for i in out), key=lambda i: i.get("Created", 0), reverse=True)

    def containers_using(self, image_id: str) -> List[str]:
        """Names of the containers, running or stopped, whose image is ``image_id``."""
        try:
            found = self.api.containers(all=True, filters={"ancestor": image_id})
        except Exception as e:
            raise self._fail(e, "listing containers") from None
        return sorted(str((c.get("Names") or [c.get("Id", "")])[0]).lstrip("/") for c in found)

    def tag(self, image: str, tag: str) -> None:
        repo, name = _split_ref(tag)
        try:
            self.api.tag(image, repo, name, force=True)
        except Exception as e:
            raise self._fail(e, f"tagging {image} as {tag}") from None

    def remove_image(self, tag: str, force: bool = False) -> bool:
        """Remove a tag (and the image when no other tag holds it). False if it wasn't there."""
        import docker.errors

        try:
            self.api.remove_image(tag, force=force)
            return True
        except docker.errors.NotFound:
            return False
        except Exception as e:
            raise self._fail(e, f"removing image {tag}") from None

    def pull(self, ref: str, on_line: Optional[LineCallback] = None) -> bool:
        """Pull ``ref``. True when pulled, False when the registry has no such image.

        Raises PullFailed when the registry denies access or can't be reached, so callers can
        tell "not published" (build it) from "can't reach it" (say so, then build).
        """
        import docker.errors

        repo, tag = _split_ref(ref)
        try:
            for item in self.api.pull(repo, tag=tag, stream=True, decode=True):
                if item.get("error"):
                    raise _PullStreamError(str(item.get("error")))
                if on_line and item.get("status"):
                    on_line(" ".join(str(item[k]) for k in ("id", "status") if item.get(k)))
            return True
        except docker.errors.NotFound as e:
            # Docker Hub answers 404 "pull access denied ... may require 'docker login'" for a
            # repository that doesn't exist; only an explicit 401 means credentials are missing.
            reason = _first_line(e)
            if "unauthorized" in reason.lower() or "authentication required" in reason.lower():
                raise PullFailed(f"pulling {ref} failed: {reason}", None, explain(reason)) from None
            return False
        except _PullStreamError as e:
            if "not found" in str(e).lower() or "manifest unknown" in str(e).lower():
                return False
            raise PullFailed(f"pulling {ref} failed: {e}", None, explain(str(e))) from None
        except Exception as e:
            raise self._fail(e, f"pulling {ref}", PullFailed) from None

    def push(self, ref: str) -> None:
        repo, tag = _split_ref(ref)
        try:
            for item in self.api.push(repo, tag=tag, stream=True, decode=True):
                if item.get("error"):
                    raise PullFailed(f"pushing {ref} failed: {item['error']}", None, explain(str(item["error"])))
        except EnvreproError:
            raise
        except Exception as e:
            raise self._fail(e, f"pushing {ref}", PullFailed) from None

    # -- build ------------------------------------------------------------------------------
    def build(self, context_tar_bytes: bytes, tag: str, buildargs: Optional[Dict[str, str]] = None,
              labels: Optional[Dict[str, str]] = None, on_line: Optional[LineCallback] = None,
              nocache: bool = False) -> str:
        """Build from a tar context (bytes, or a binary file for large ones); tag only after
        success. Returns the image id.

        Build output is streamed line by line to ``on_line``. The tag is applied after the
        build succeeded, so a failed build never leaves a tag pointing at anything.
        """
        tail: List[str] = []
        image_id: Optional[str] = None

        def emit(text: str) -> None:
            for line in _ANSI.sub("", text).splitlines():
                tail.append(line)
                del tail[:-200]
                if on_line:
                    on_line(line)

        try:
            fileobj = context_tar_bytes if hasattr(context_tar_bytes, "read") else io.BytesIO(context_tar_bytes)
            stream = self.api.build(fileobj=fileobj, custom_context=True,
                                    rm=True, forcerm=True, pull=False, decode=True, nocache=nocache,
                                    buildargs=buildargs or None, labels=labels or None)
            for item in stream:
                if "stream" in item:
                    emit(str(item["stream"]))
                    if str(item["stream"]).startswith("Successfully built "):
                        image_id = image_id or str(item["stream"]).split()[-1]
                if isinstance(item.get("aux"), dict) and item["aux"].get("ID"):
                    image_id = item["aux"]["ID"]
                if "error" in item or "errorDetail" in item:
                    detail = item.get("error") or (item.get("errorDetail") or {}).get("message", "")
                    emit(f"ERROR: {detail}")
                    raise BuildFailed(f"image build failed: {str(detail).strip()}", None,
                                      explain(str(detail)))
        except EnvreproError:
            raise
        except Exception as e:
            if _is_connection_error(e):
                raise BuildFailed(f"the Docker engine stopped answering in the middle of the build "
                                  f"(did the daemon die or restart?): {_first_line(e)}", None,
                                  "check `docker info`, then run the same command again: finished "
                                  "layers are cached") from None
            raise self._fail(e, "building the image", BuildFailed) from None
        if not image_id:
            raise BuildFailed("image build ended without an image id (engine output was cut short)",
                              None, "run the same command again")
        self.tag(image_id, tag)
        return image_id

    # -- run --------------------------------------------------------------------------------
    def run(self, image: str, command: Union[str, Sequence[str], None] = None,
            mounts: Iterable[MountSpec] = (), environment: Optional[Dict[str, str]] = None,
            user: Optional[str] = None, network_disabled: bool = True, read_only: bool = True,
            tmpfs: Optional[Dict[str, str]] = None, cap_drop: Sequence[str] = ("ALL",),
            security_opt: Sequence[str] = ("no-new-privileges",), mem_limit: Optional[str] = None,
            pids_limit: Optional[int] = None, workdir: Optional[str] = None, stream: bool = True,
            on_output: Optional[OutputCallback] = None, gpus: bool = False,
            timeout: Optional[float] = None, cap_add: Sequence[str] = (),
            output_limit: Optional[int] = None) -> Tuple[int, str, str]:
        """Run a command to completion in a fresh, sandboxed container; remove it afterwards.

        Defaults are the load-time sandbox: no network, read-only root, every capability dropped,
        no-new-privileges. ``stream`` forwards output as it comes (to ``on_output(name, text)``,
        else to this process's stdout/stderr) while still collecting it for the caller (the
        last ``output_limit`` characters of each stream, when given). ``timeout``: wall-clock
        seconds, then the container is killed and TimedOut raised.
        """
        from docker.types import DeviceRequest
        from docker.types import Mount as DockerMount

        kwargs: Dict[str, Any] = dict(
            mounts=[DockerMount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
                    for m in map(as_mount, mounts)],
            environment=environment or {}, read_only=read_only, tmpfs=tmpfs or None,
            cap_drop=list(cap_drop) or None, cap_add=list(cap_add) or None,
            security_opt=list(security_opt) or None, detach=True, stdin_open=False, tty=False)
        if network_disabled:
            kwargs["network_mode"] = "none"
        for key, value in (("user", user), ("mem_limit", mem_limit), ("pids_limit", pids_limit),
                           ("working_dir", workdir)):
            if value is not None:
                kwargs[key] = value
        if gpus:
            kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        try:
            container = self.client.containers.create(image, command, **kwargs)
        except Exception as e:
            raise self._fail(e, f"creating a container from {image}", RunFailed) from None
        out, err = Kept(output_limit), Kept(output_limit)
        deadline: Optional[Deadline] = None
        try:
            try:
                # Attach before starting: attaching to a running container can miss a short
                # run's output, or wait forever for a container that already exited.
                frames = container.attach(stdout=True, stderr=True, stream=True, logs=True,
                                          demux=True) if stream else None
                container.start()
                deadline = Deadline(container, timeout)
                if stream:
                    for o, e in frames:
                        for name, chunk, sink in (("stdout", o, out), ("stderr", e, err)):
                            if chunk:
                                text = chunk.decode("utf-8", "replace")
                                sink.add(text)
                                if on_output:
                                    on_output(name, text)
                                else:
                                    (sys.stdout if name == "stdout" else sys.stderr).write(text)
                status = container.wait(timeout=wait_timeout(timeout))
                if not stream:
                    for sink, which in ((out, dict(stdout=True, stderr=False)), (err, dict(stdout=False, stderr=True))):
                        if output_limit is None:
                            sink.add(container.logs(**which).decode("utf-8", "replace"))
                            continue
                        for chunk in container.logs(stream=True, follow=False, **which):
                            sink.add(chunk.decode("utf-8", "replace"))
            except Exception as e:
                if deadline is not None and deadline.stop():
                    raise TimedOut(f"a container of {image} was still running after {timeout:g} s and "
                                   "was stopped", float(timeout or 0), out.text(), err.text()) from None
                raise self._fail(e, f"running a container from {image}", RunFailed) from None
            if deadline.stop():
                raise TimedOut(f"a container of {image} was still running after {timeout:g} s and was "
                               "stopped", float(timeout or 0), out.text(), err.text())
            code = int(status.get("StatusCode", -1)) if isinstance(status, dict) else int(status)
            return code, out.text(), err.text()
        finally:
            if deadline is not None:
                deadline.stop()
            try:
                container.remove(force=True)
            except Exception:
                pass

class _PullStreamError(Exception):
    pass
