"""Images made and moved without a Dockerfile: a container's work committed as an image (the
wheelhouse builder, ``envrepro.image.commitbuild``), and images saved to or loaded from an
archive (bundles, ``envrepro.bundling``).

``ImageWorkMixin`` is part of ``DockerEngine`` (envrepro.engine.docker), kept in its own module like
``ServiceMixin``. It imports the Docker SDK lazily and turns every failure into an envrepro error.
"""
from __future__ import annotations

import re
from typing import Any, BinaryIO, Dict, Iterable, List, Optional, Sequence

from envrepro.engine.base import LineCallback, MountSpec, as_mount
from envrepro.engine.messages import explain, split_ref as _split_ref
from envrepro.engine.output import Deadline, Lines, wait_timeout
from envrepro.errors import BuildFailed, EnvreproError


class ImageWorkMixin:
    """Commit builds and image archives on a Docker engine (needs ``self.client``, ``self.api``
    and ``self._fail``)."""

    client: Any
    api: Any
    _fail: Any     # DockerEngine._fail: an SDK exception -> an envrepro error

    def commit_run(self, image: str, command: Sequence[str], tag: str, mounts: Iterable[MountSpec] = (),
                   environment: Optional[Dict[str, str]] = None, changes: Sequence[str] = (),
                   tmpfs: Optional[Dict[str, str]] = None, on_line: Optional[LineCallback] = None,
                   timeout: Optional[float] = None, cap_add: Sequence[str] = (),
                   mem_limit: Optional[str] = None, pids_limit: Optional[int] = None) -> str:
        """Run ``command`` as root in a container of ``image`` with no network, every capability
        dropped but ``cap_add``, no-new-privileges and the limits, then commit it as ``tag``.

        The build container is hardened like ``run``'s and shares its deadline and bounded output
        (``engine.output``).
        """
        from docker.types import Mount as DockerMount

        kwargs: Dict[str, Any] = dict(
            network_mode="none", detach=True, stdin_open=False, tty=False,
            mounts=[DockerMount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
                    for m in map(as_mount, mounts)],
            environment=environment or {}, tmpfs=tmpfs or None, user="0:0",
            cap_drop=["ALL"], cap_add=list(cap_add) or None, security_opt=["no-new-privileges"])
        for key, value in (("mem_limit", mem_limit), ("pids_limit", pids_limit)):
            if value is not None:
                kwargs[key] = value
        try:
            container = self.client.containers.create(image, list(command), **kwargs)
        except Exception as e:
            raise self._fail(e, f"creating a build container from {image}", BuildFailed) from None
        lines = Lines(on_line)
        deadline: Optional[Deadline] = None
        try:
            try:
                frames = container.attach(stdout=True, stderr=True, stream=True, logs=True)
                container.start()
                deadline = Deadline(container, timeout)
                for chunk in frames:
                    lines.feed(chunk)
                lines.close()
                status = container.wait(timeout=wait_timeout(timeout))
            except Exception as e:
                if deadline is not None and deadline.stop():
                    status = {"StatusCode": 137}
                else:
                    raise self._fail(e, f"running a build container from {image}", BuildFailed) from None
            if deadline.stop():
                raise BuildFailed(f"image build failed: the install step was still running after {timeout:g} s "
                                  "and was stopped", None, "a slow disk or a very large lock: allow it more time")
            code = int(status.get("StatusCode", -1)) if isinstance(status, dict) else int(status)
            if code != 0:
                why = explain("\n".join(list(lines.tail)[-20:]))
                if self._oom_killed(container):
                    why = f"it ran out of memory (the limit is {mem_limit}): allow it more"
                raise BuildFailed(f"image build failed: the install step returned a non-zero code: {code}",
                                  None, why)
            repo, name = _split_ref(tag)
            try:
                committed = container.commit(repository=repo, tag=name, changes=list(changes) or None)
            except Exception as e:
                raise self._fail(e, f"committing {tag}", BuildFailed) from None
            return str(committed.id)
        finally:
            if deadline is not None:
                deadline.stop()
            try:
                container.remove(force=True)
            except Exception:
                pass

    @staticmethod
    def _oom_killed(container: Any) -> bool:
        try:
            container.reload()
            return bool(((container.attrs or {}).get("State") or {}).get("OOMKilled"))
        except Exception:
            return False


    def save_image(self, tag: str, fileobj: BinaryIO) -> None:
        """``docker save TAG`` streamed into ``fileobj`` chunk by chunk (images can be > 1 GB)."""
        try:
            for chunk in self.api.get_image(tag):
                fileobj.write(chunk)
        except EnvreproError:
            raise
        except Exception as e:
            raise self._fail(e, f"saving image {tag}") from None

    def load_images(self, fileobj: BinaryIO) -> List[str]:
        """``docker load`` from ``fileobj``, streamed by requests as it is read (a file, or a
        stream that can't seek: chunked transfer encoding, nothing held in memory); the tags it
        loaded, else the image ids ("Loaded image: TAG" / "Loaded image ID: sha256:..."). An
        exception raised while the stream is read ends the upload: docker gets a truncated
        archive and loads nothing."""

        loaded: List[str] = []
        try:
            for item in self.api.load_image(fileobj, quiet=True) or ():
                if isinstance(item, dict) and (item.get("error") or item.get("errorDetail")):
                    detail = item.get("error") or (item.get("errorDetail") or {}).get("message", "")
                    raise EnvreproError(f"loading images failed: {str(detail).strip()}", None,
                                        explain(str(detail)))
                text = str(item.get("stream", "")) if isinstance(item, dict) else ""
                for line in text.splitlines():
                    m = re.match(r"^Loaded image(?: ID)?: (\S+)$", line.strip())
                    if m:
                        loaded.append(m.group(1))
        except EnvreproError:
            raise
        except Exception as e:
            raise self._fail(e, "loading images") from None
        return loaded
