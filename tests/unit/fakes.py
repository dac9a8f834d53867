"""A fake container engine for unit tests: the ``envrepro.engine.docker.Engine`` interface, in memory.

Images are dicts shaped like ``docker image inspect`` output (``Id``, ``RepoTags``,
``RepoDigests``, ``Config.Labels``). Builds read the labels from the Dockerfile's LABEL lines, so
tests see what a real build would label. Failures are injected per call.
"""
from __future__ import annotations

import hashlib
import io
import re
import tarfile
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from envrepro.engine.docker import PullFailed
from envrepro.errors import BuildFailed


def image(tag: str, labels: Optional[Dict[str, str]] = None, digest: Optional[str] = None) -> Dict[str, Any]:
    """An inspect-shaped image record."""
    iid = "sha256:" + hashlib.sha256(tag.encode()).hexdigest()
    return {"Id": iid, "RepoTags": [tag], "RepoDigests": [digest] if digest else [],
            "Config": {"Labels": dict(labels or {})}, "Created": 0}


def dockerfile_of(context: bytes) -> str:
    with tarfile.open(fileobj=io.BytesIO(context)) as tar:
        member = tar.extractfile("Dockerfile")
        assert member is not None
        return member.read().decode()


def context_files(context: bytes) -> Dict[str, bytes]:
    out: Dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(context)) as tar:
        for m in tar.getmembers():
            if m.isfile():
                f = tar.extractfile(m)
                out[m.name] = f.read() if f else b""
    return out


class FakeEngine:
    def __init__(self, local: Iterable[Dict[str, Any]] = (), registry: Optional[Dict[str, Dict[str, Any]]] = None,
                 build_lines: Sequence[str] = ("Step 1/2 : FROM base", "Step 2/2 : RUN pip install"),
                 build_error: Optional[str] = None, pull_error: Optional[Dict[str, Exception]] = None):
        self.local: Dict[str, Dict[str, Any]] = {t: img for img in local for t in img["RepoTags"]}
        self.registry = dict(registry or {})
        self.build_lines = list(build_lines)
        self.build_error = build_error
        self.pull_error = dict(pull_error or {})
        self.builds: List[Tuple[bytes, str]] = []
        self.pulls: List[str] = []
        self.runs: List[Dict[str, Any]] = []
        self.run_result: Tuple[int, str, str] = (0, "", "")

    def connect(self) -> "FakeEngine":
        return self

    def inspect_image(self, tag: str) -> Optional[Dict[str, Any]]:
        img = self.local.get(tag)
        return dict(img) if img else None

    def image_exists(self, tag: str) -> bool:
        return tag in self.local

    def images(self, label_filter: Any = None) -> List[Dict[str, Any]]:
        key = label_filter.split("=")[0] if isinstance(label_filter, str) else None
        seen = {id(i): i for i in self.local.values()}
        return [i for i in seen.values() if key is None or key in i["Config"]["Labels"]]

    def tag(self, src: str, tag: str) -> None:
        img = self.local[src]
        img["RepoTags"].append(tag)
        self.local[tag] = img

    def remove_image(self, tag: str, force: bool = False) -> bool:
        return self.local.pop(tag, None) is not None

    def pull(self, ref: str, on_line: Optional[Callable[[str], None]] = None) -> bool:
        self.pulls.append(ref)
        if ref in self.pull_error:
            raise self.pull_error[ref]
        if ref not in self.registry:
            return False
        img = dict(self.registry[ref])
        img["RepoTags"] = [ref]
        self.local[ref] = img
        return True

    def build(self, context_tar_bytes: bytes, tag: str, buildargs: Optional[Dict[str, str]] = None,
              labels: Optional[Dict[str, str]] = None, on_line: Optional[Callable[[str], None]] = None,
              nocache: bool = False) -> str:
        self.builds.append((context_tar_bytes, tag))
        for line in self.build_lines:
            if on_line:
                on_line(line)
        if self.build_error:
            if on_line:
                on_line("ERROR: " + self.build_error)
            raise BuildFailed(f"image build failed: {self.build_error}")
        found = dict(re.findall(r'(org\.envrepro\.[a-z0-9-]+)="([^"]*)"', dockerfile_of(context_tar_bytes)))
        found.update(labels or {})
        img = image(tag, found)
        self.local[tag] = img
        return img["Id"]

    def run(self, image: str, command: Any = None, **kwargs: Any) -> Tuple[int, str, str]:
        self.runs.append(dict(kwargs, image=image, command=command))
        return self.run_result

    def raise_pull(self, ref: str, message: str = "dial tcp: lookup registry.example: no such host") -> None:
        self.pull_error[ref] = PullFailed(f"pulling {ref} failed: {message}")
