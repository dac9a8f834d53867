"""The one fake container engine for unit tests (``envrepro.engine.base.ContainerEngine``, in
memory), and the captures, image infos and loader reports the sandbox and image tests share.

Images are dicts shaped like ``docker image inspect`` output (``Id``, ``RepoTags``,
``RepoDigests``, ``Config.Labels``); ``images()`` answers like ``docker images`` (top-level
``Labels``). Builds read the labels from the Dockerfile's LABEL lines, so tests see what a real
build would label; builds and commits inherit the labels of the image they start from and record
it as Docker does (``Parent``, ``RootFS.Layers``). Runs are recorded and answered with
``run_result``. Failures are injected per call. tests/unit/engine/test_engine_base.py checks this fake against the protocol, signature by signature.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import re
import stat
import tarfile
from types import SimpleNamespace
from typing import Any, BinaryIO, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import pytest

from envrepro.engine.base import ContainerEngine, LineCallback, MountSpec, PullFailed, image_labels
from envrepro.errors import BuildFailed, EnvreproError
from envrepro.fsutil import sha256_tree
from envrepro.runtime import loader as rt
from envrepro.sidecar import manifest
from envrepro.sidecar import layout
from envrepro.sidecar import writer


# A small hashed lock, as pip-compile writes it.
LOCK = """six==1.16.0 \\
    --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254
    # via -r requirements.in
termcolor==1.1.0 \\
    --hash=sha256:1d6d69ce66211143803fbc56652b41d73b4a400a2891d7bf7a1cdf4c02de613b
    # via -r requirements.in
"""


def image(tag: Optional[str], labels: Optional[Dict[str, str]] = None, digest: Optional[str] = None,
          size: int = 0, created: int = 0, image_id: Optional[str] = None,
          on: Optional[Dict[str, Any]] = None, layer: bool = True) -> Dict[str, Any]:
    """An inspect-shaped image record (``tag`` None: untagged, like a builder stage). ``on``: the
    image it is built on, as Docker records it: ``Parent`` and ``RootFS.Layers`` (the parent's
    layers, plus one of its own unless ``layer`` is False: FROM plus metadata only)."""
    iid = image_id or "sha256:" + hashlib.sha256(str(tag).encode()).hexdigest()
    img = {"Id": iid, "RepoTags": [tag] if tag else [], "RepoDigests": [digest] if digest else [],
           "Config": {"Labels": dict(labels or {})}, "Created": created, "Size": size}
    if on is not None:
        layers = list((on.get("RootFS") or {}).get("Layers") or [])
        img.update(Parent=on["Id"], RootFS={"Type": "layers", "Layers": layers + (
            ["sha256:" + hashlib.sha256(f"layer of {iid}".encode()).hexdigest()] if layer else [])})
    return img


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


def _called_as(declared: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a recording method the declared signature: calls are bound (so checked) against it,
    and the method receives only the arguments the caller passed (``"gpus" not in run``)."""
    signature = inspect.signature(declared)

    def decorate(record: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(declared)
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            passed = dict(signature.bind(self, *args, **kwargs).arguments)
            del passed["self"]
            return record(self, **passed)
        return method
    return decorate


class FakeEngine:
    """``local``: images present; ``registry``: ref -> image a pull finds; ``run_result``:
    (exit, stdout, stderr) every run answers; ``build_error``/``pull_error``/``fail_remove``:
    failures to inject. Records ``builds`` (context, tag), ``pulls``, ``runs`` (the keyword
    arguments plus ``image`` and ``command``) and ``removed`` (image ids). Services: ``start``
    records ``started`` and adds a container ``services`` finds (with the labels of
    ``label_services``); ``stop`` records ``stopped``, answers ``stop_code`` and removes it and its
    relays (a container it never knew is not an error while it knows none); ``on_start(cid)``,
    ``on_follow(cid)``, ``on_stop(cid, timeout)``: hooks (a test sends a signal from one)."""

    def __init__(self, local: Iterable[Dict[str, Any]] = (), registry: Optional[Dict[str, Dict[str, Any]]] = None,
                 build_lines: Sequence[str] = ("Step 1/2 : FROM base", "Step 2/2 : RUN pip install"),
                 build_error: Optional[str] = None, pull_error: Optional[Dict[str, Exception]] = None,
                 run_result: Tuple[int, str, str] = (0, "", "")):
        self.store: List[Dict[str, Any]] = list(local)
        self.registry = dict(registry or {})
        self.build_lines = list(build_lines)
        self.build_error = build_error
        self.pull_error = dict(pull_error or {})
        self.run_result = run_result
        self.fail_remove: Set[str] = set()
        self.builds: List[Tuple[bytes, str]] = []
        self.pulls: List[str] = []
        self.runs: List[Dict[str, Any]] = []
        self.removed: List[str] = []

    @property
    def local(self) -> Dict[str, Dict[str, Any]]:
        """Tag -> image, for the tagged images present."""
        return {t: img for img in self.store for t in img.get("RepoTags") or []}

    def _find(self, ref: str) -> Optional[Dict[str, Any]]:
        return next((i for i in self.store if ref in (i.get("RepoTags") or []) or ref == i["Id"]), None)

    def connect(self) -> "FakeEngine":
        return self

    def inspect_image(self, tag: str) -> Optional[Dict[str, Any]]:
        img = self._find(tag)
        return dict(img) if img else None

    def image_exists(self, tag: str) -> bool:
        return self._find(tag) is not None

    def images(self, label_filter: Union[str, Sequence[str], None] = None) -> List[Dict[str, Any]]:
        wanted = [label_filter] if isinstance(label_filter, str) else list(label_filter or [])

        def matches(labels: Dict[str, str]) -> bool:
            for f in wanted:
                key, eq, value = f.partition("=")
                if key not in labels or (eq and labels[key] != value):
                    return False
            return True

        listed = [{"Id": i["Id"], "RepoTags": i.get("RepoTags") or None, "Labels": image_labels(i),
                   "Size": i.get("Size", 0), "Created": i.get("Created", 0)} for i in self.store]
        return sorted((i for i in listed if matches(i["Labels"])), key=lambda i: i["Created"], reverse=True)

    def tag(self, image: str, tag: str) -> None:
        img = self._find(image)
        assert img is not None, f"no image {image} to tag"
        for other in self.store:                  # as in Docker, a tag moves
            if other is not img and tag in (other.get("RepoTags") or []):
                other["RepoTags"] = [t for t in other["RepoTags"] if t != tag]
        img["RepoTags"] = list(img.get("RepoTags") or []) + ([tag] if tag not in (img.get("RepoTags") or []) else [])

    def start(self, image: str, command: Optional[Sequence[str]] = None,
              ports: Optional[Dict[int, Tuple[str, int]]] = None,
              environment: Optional[Dict[str, str]] = None, user: Optional[str] = None,
              read_only: bool = True, tmpfs: Optional[Dict[str, str]] = None,
              cap_drop: Sequence[str] = ("ALL",), security_opt: Sequence[str] = ("no-new-privileges",),
              mem_limit: Optional[str] = None, pids_limit: Optional[int] = None,
              name: Optional[str] = None, gpus: bool = False, network_disabled: bool = True) -> str:
        started = getattr(self, "started", None)
        if started is None:
            started = self.started = []
        labels = dict(getattr(self, "service_labels", {}))
        started.append(dict(image=image, command=command, ports=ports, environment=environment, user=user,
                            read_only=read_only, tmpfs=tmpfs, cap_drop=cap_drop, security_opt=security_opt,
                            mem_limit=mem_limit, pids_limit=pids_limit, name=name, gpus=gpus,
                            network_disabled=network_disabled, labels=labels))
        cid = f"ctr{len(started)}"
        img = self._find(image)
        self.add_service(cid, image, labels, ports=[{"port": p, "host": h, "host_port": hp or 40000 + len(started)}
                                                    for p, (h, hp) in (ports or {}).items()],
                         image_id=img["Id"] if img else "sha256:" + hashlib.sha256(image.encode()).hexdigest())
        if getattr(self, "on_start", None):
            self.on_start(cid)
        return cid

    # ServiceOwnership (envrepro.engine.base): labels for the services started, and finding them
    def label_services(self, labels: Dict[str, str]) -> None:
        self.service_labels = dict(labels)

    def add_service(self, cid: str, image: str, labels: Dict[str, str], ports: Sequence[Dict[str, Any]] = (),
                    relay_for: str = "", image_id: str = "", running: bool = True) -> Dict[str, Any]:
        """A container ``services`` finds (``start`` adds one per service; tests add orphans)."""
        entry = {"id": cid, "name": cid, "image": image, "image_id": image_id or "sha256:" + "d" * 64,
                 "running": running, "status": "Up 2 minutes" if running else "Exited (0)",
                 "labels": dict(labels, **({"org.envrepro.relay-for": relay_for} if relay_for else {})),
                 "relay_for": relay_for, "ports": list(ports)}
        self.service_containers = getattr(self, "service_containers", []) + [entry]
        return entry

    def services(self, label: str) -> List[Dict[str, Any]]:
        key, eq, value = label.partition("=")
        found = [dict(c) for c in getattr(self, "service_containers", [])
                 if key in c["labels"] and (not eq or c["labels"][key] == value)]
        for c in found:        # a service's ports are its relays' (those found too), as in Docker
            c["ports"] = list(c["ports"]) + [p for r in found if r["relay_for"] == c["id"] for p in r["ports"]]
        return found

    def host_port(self, container: str, port: int) -> Optional[int]:
        return getattr(self, "service_port", None)

    def container_state(self, container: str) -> Dict[str, Any]:
        return dict(getattr(self, "service_state", {"running": True, "exit_code": None, "oom_killed": False}))

    def follow_logs(self, container: str, on_line: LineCallback) -> None:
        for line in getattr(self, "service_logs", []):
            on_line(line)
        if getattr(self, "on_follow", None):
            self.on_follow(container)

    def container_logs(self, container: str, tail: int = 50) -> str:
        return "\n".join(getattr(self, "service_logs", [])[-tail:])

    def stop(self, container: str, timeout: int = 30) -> Optional[int]:
        stopped = getattr(self, "stopped", None)
        if stopped is None:
            stopped = self.stopped = []
        stopped.append((container, timeout))
        if getattr(self, "on_stop", None):
            self.on_stop(container, timeout)
        known = getattr(self, "service_containers", [])
        if known and not any(c["id"] == container for c in known):
            raise EnvreproError(f"finding container {container[:12]} failed: No such container: {container}")
        self.service_containers = [c for c in known if c["id"] != container and c["relay_for"] != container]
        return getattr(self, "stop_code", 0)

    def containers_using(self, image_id: str) -> List[str]:
        return sorted(getattr(self, "containers", {}).get(image_id, []))

    def remove_image(self, tag: str, force: bool = False) -> bool:
        if tag in self.fail_remove:
            raise EnvreproError(f"removing image {tag} failed: conflict: image is being used")
        img = self._find(tag)
        if img is None:
            return False
        tags = [t for t in img.get("RepoTags") or [] if t != tag]
        if tags:
            img["RepoTags"] = tags
        else:
            self.store.remove(img)
            self.removed.append(img["Id"])
        return True

    def pull(self, ref: str, on_line: Optional[LineCallback] = None) -> bool:
        self.pulls.append(ref)
        if ref in self.pull_error:
            raise self.pull_error[ref]
        if ref not in self.registry:
            return False
        img = dict(self.registry[ref])
        img["RepoTags"] = [ref]
        self.store.append(img)
        return True

    def push(self, ref: str) -> None:
        """Records ``pushes``; raises ``push_error[ref]`` when set; the pushed image gets a
        RepoDigests entry, as Docker adds one after a push."""
        self.pushes = getattr(self, "pushes", []) + [ref]
        if ref in getattr(self, "push_error", {}):
            raise self.push_error[ref]
        img = self._find(ref)
        assert img is not None, f"no image {ref} to push"
        digest = ref.rsplit(":", 1)[0] + "@sha256:" + hashlib.sha256((ref + img["Id"]).encode()).hexdigest()
        img["RepoDigests"] = list(img.get("RepoDigests") or []) + [digest]
        self.registry[ref] = dict(img, RepoDigests=[digest])

    def build(self, context_tar_bytes: bytes, tag: str, buildargs: Optional[Dict[str, str]] = None,
              labels: Optional[Dict[str, str]] = None, on_line: Optional[LineCallback] = None,
              nocache: bool = False) -> str:
        if hasattr(context_tar_bytes, "read"):      # a large context comes as a file
            context_tar_bytes = context_tar_bytes.read()
        self.builds.append((context_tar_bytes, tag))
        for line in self.build_lines:
            if on_line:
                on_line(line)
        if self.build_error:
            if on_line:
                on_line("ERROR: " + self.build_error)
            raise BuildFailed(f"image build failed: {self.build_error}")
        text = dockerfile_of(context_tar_bytes)
        found: Dict[str, str] = {}
        parent = re.match(r"FROM (\S+)\n", text)
        if parent and self._find(parent.group(1)) is not None:    # labels are inherited, as in Docker
            found.update(image_labels(self._find(parent.group(1))))
        found.update(re.findall(r'(org\.envrepro\.[a-z0-9.-]+)="([^"]*)"', text))
        found.update(labels or {})
        img = image(tag, found, on=self._find(parent.group(1)) if parent else None,
                    layer=bool(re.search(r"^(RUN|COPY|ADD) ", text, re.M)))
        for other in self.store:                  # a tag moves to the new image
            if tag in (other.get("RepoTags") or []):
                other["RepoTags"] = [t for t in other["RepoTags"] if t != tag]
        self.store.append(self._content_addressed(img))
        return img["Id"]

    @_called_as(ContainerEngine.run)
    def run(self, image: str, command: Any = None, **kwargs: Any) -> Tuple[int, str, str]:
        self.runs.append(dict(kwargs, image=image, command=command))
        return self.run_result

    def commit_run(self, image: str, command: Sequence[str], tag: str, mounts: Iterable[MountSpec] = (),
                   environment: Optional[Dict[str, str]] = None, changes: Sequence[str] = (),
                   tmpfs: Optional[Dict[str, str]] = None, on_line: Optional[LineCallback] = None,
                   timeout: Optional[float] = None, cap_add: Sequence[str] = (),
                   mem_limit: Optional[str] = None, pids_limit: Optional[int] = None) -> str:
        """Records ``commits``; the new image inherits ``image``'s labels plus the LABEL changes;
        ``commit_error``: the install step fails."""
        commits = getattr(self, "commits", None)
        if commits is None:
            commits = self.commits = []
        commits.append(dict(image=image, command=list(command), tag=tag, mounts=list(mounts),
                            environment=environment, changes=list(changes), tmpfs=tmpfs, timeout=timeout,
                            cap_add=list(cap_add), mem_limit=mem_limit, pids_limit=pids_limit))
        for line in getattr(self, "commit_lines", []):
            if on_line:
                on_line(line)
        if getattr(self, "commit_error", None):
            raise BuildFailed("image build failed: the install step returned a non-zero code: 1")
        found = dict(image_labels(self._find(image)))
        for change in changes:
            m = re.match(r'LABEL (\S+)=(".*")$', change)
            if m:
                found[m.group(1)] = json.loads(m.group(2))
        img = globals()["image"](tag, found, on=self._find(image))   # the module's image(), shadowed here
        for other in self.store:
            if tag in (other.get("RepoTags") or []):
                other["RepoTags"] = [t for t in other["RepoTags"] if t != tag]
        self.store.append(self._content_addressed(img))
        return img["Id"]

    def raise_pull(self, ref: str, message: str = "dial tcp: lookup registry.example: no such host") -> None:
        self.pull_error[ref] = PullFailed(f"pulling {ref} failed: {message}")

    def _content_addressed(self, img: Dict[str, Any]) -> Dict[str, Any]:
        """Give a built image Docker's kind of id, the sha256 of its config (which names its
        labels and its one layer, a small tar): ``save_image`` writes exactly those bytes."""
        layer = tar_bytes({"envrepro-fake/" + img["Id"].split(":")[-1][:16]: img["Id"].encode()})
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": image_labels(img)},
                             "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}},
                            sort_keys=True).encode()
        img["Id"] = "sha256:" + hashlib.sha256(config).hexdigest()
        self.blobs = getattr(self, "blobs", {})
        self.blobs[img["Id"]] = (config, layer)
        return img

    def save_image(self, tag: str, fileobj: BinaryIO) -> None:
        """A ``docker save`` archive as Docker 20.10 writes it (legacy layout): ``<v1 id>/``
        with VERSION, json and layer.tar, ``<config sha256>.json``, manifest.json, repositories.
        An image not built by this fake gets a config whose sha256 is not its id."""
        img = self._find(tag)
        if img is None:
            raise EnvreproError(f"saving image {tag} failed: No such image: {tag}")
        config, layer = getattr(self, "blobs", {}).get(img["Id"]) or (
            json.dumps({"config": {"Labels": image_labels(img)}, "rootfs": {"type": "layers", "diff_ids": []}}).encode(),
            None)
        hex_id = hashlib.sha256(config).hexdigest()
        v1 = hashlib.sha256(b"v1" + (layer or b"")).hexdigest()
        repo, _, name = tag.rpartition(":")
        entries = {}
        if layer is not None:
            entries.update({v1: None, f"{v1}/VERSION": b"1.0", f"{v1}/json": b'{"id":"%s"}' % v1.encode(),
                            f"{v1}/layer.tar": layer})
        entries.update({f"{hex_id}.json": config,
                        "manifest.json": json.dumps([{"Config": f"{hex_id}.json", "RepoTags": [tag],
                                                      "Layers": [f"{v1}/layer.tar"] if layer else []}]).encode(),
                        "repositories": json.dumps({repo: {name: v1}}).encode()})
        fileobj.write(tar_bytes(entries))
        self.saved = getattr(self, "saved", []) + [tag]

    def load_images(self, fileobj: BinaryIO) -> List[str]:
        """``docker load`` as Docker 20.10 does it: the last member of a name wins, each
        manifest.json entry's config and layers are checked (diff ids), its RepoTags tag the
        image (moving those tags). Records ``loads`` (what it answered) and ``load_members``."""
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        self.load_members = getattr(self, "load_members", []) + [sorted(files)]
        loaded: List[str] = []
        for entry in json.loads(files["manifest.json"]):
            config = files[entry["Config"]]
            parsed = json.loads(config)
            diff_ids = ["sha256:" + hashlib.sha256(files[n]).hexdigest() for n in entry.get("Layers") or []]
            if diff_ids != parsed["rootfs"]["diff_ids"]:
                raise EnvreproError("loading images failed: invalid diffID for layer")
            iid = "sha256:" + hashlib.sha256(config).hexdigest()
            tags = list(entry.get("RepoTags") or [])
            for other in self.store:                  # a loaded tag moves to the loaded image
                other["RepoTags"] = [t for t in other.get("RepoTags") or [] if t not in tags]
            kept = next((i for i in self.store if i["Id"] == iid), None)
            if kept is None:
                kept = image(None, (parsed.get("config") or {}).get("Labels") or {}, image_id=iid)
                self.store.append(kept)
                self.blobs = getattr(self, "blobs", {})
                layers = [files[n] for n in entry.get("Layers") or []]
                self.blobs[iid] = (config, layers[0] if len(layers) == 1 else None)
            kept["RepoTags"] = list(kept.get("RepoTags") or []) + [t for t in tags if t not in (kept.get("RepoTags") or [])]
            loaded += tags or [iid]
        self.loads = getattr(self, "loads", []) + [loaded]
        return loaded


def tar_bytes(entries: Dict[str, Optional[bytes]]) -> bytes:
    """An uncompressed tar of ``entries`` (name -> bytes; None: a folder), in that order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()



# --- translated locks (macOS/Windows captures, --gpus) without the index or pip-compile ---------

def fake_lookup(pins, facts):
    """``indexhashes.lookup_index`` stand-in: every pin has a Linux wheel and one hash."""
    from envrepro.packages import indexhashes

    return {name: indexhashes.IndexInfo({"sha256:" + hashlib.sha256(f"{name}=={v}".encode()).hexdigest()},
                                        found=True, wheel_ok=True)
            for name, v in pins.items()}, "fake index"


class FakeResolver:
    """pip-compile stand-in: records (requirements.in, constraints.txt, X.Y), answers ``output``."""

    def __init__(self, output: str):
        self.output, self.calls = output, []

    def __call__(self, requirements: str, constraints: str, xy: str) -> str:
        self.calls.append((requirements, constraints, xy))
        return self.output


def translate_into_cache(capture, resolution: str, gpu: bool = True, lookup=fake_lookup):
    """Translate ``capture`` into envrepro's cache with ``resolution`` as pip-compile's answer, as
    a real load would have (later loads read it from there). Returns (Translation, resolver)."""
    from envrepro import config
    from envrepro.packages import platforms

    resolver = FakeResolver(resolution)
    t = platforms.translate(capture, config.cache_dir(), gpu=gpu, resolver=resolver, lookup=lookup,
                            machine="x86_64")
    return t, resolver


# --- captures, image infos, loader reports -----------------------------------------------------

@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    """Never touch the real ~/.cache/envrepro/index.json (import it into a test module)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("ENVREPRO_DEBUG", raising=False)
    return tmp_path / "xdg-cache"


@pytest.fixture
def cap(tmp_path):
    """A capture of a SavedModel with a snapshot, a reference and an optimizer."""
    return make_capture(tmp_path)


def make_capture(tmp_path, name="my_model", fmt="savedmodel", **overrides):
    """A real capture on disk (model folder + sidecar with a valid manifest)."""
    import numpy as np

    tmp_path.mkdir(parents=True, exist_ok=True)
    model = tmp_path / name
    if fmt == "savedmodel":
        model.mkdir()
        (model / "saved_model.pb").write_bytes(b"pb")
    else:
        model.write_bytes(b"\x89HDF\r\n\x1a\n" if fmt == "h5" else b"PK\x03\x04")
    root = layout.sidecar_for(model)
    (root / "snapshot").mkdir(parents=True)
    (root / "snapshot" / "custom_layers.py").write_text("X = 1\n")
    (root / "reference").mkdir()
    np.save(root / "reference" / "input_0.npy", np.zeros((2, 3), "float32"))
    np.save(root / "reference" / "output_0.npy", np.zeros((2, 1), "float32"))
    (root / "requirements.lock").write_text("tensorflow-cpu==2.4.1\n")
    data = {
        "schema": layout.SCHEMA,
        "model": {"name": name, "format": fmt, "sha256": sha256_tree(model)},
        "python": {"version": "3.8.18"},
        "frameworks": {"tensorflow": "2.4.1", "keras": "2.4.0", "keras_flavor": "tf.keras", "tf_keras": None},
        "env": {"TF_USE_LEGACY_KERAS": "1", "KERAS_BACKEND": None},
        "load": {"compile": True,
                 "custom_objects": {"MyCustomLayer": "custom_layers:MyCustomLayer",
                                    "team>Huberish": "losses:Huberish"},
                 "modules": ["custom_layers"]},
        "snapshot": {"files": [{"path": "snapshot/custom_layers.py", "module": "custom_layers"}]},
        "reference": {"inputs": ["reference/input_0.npy"], "outputs": ["reference/output_0.npy"],
                      "input_structure": "single", "input_names": ["x"], "output_structure": "single",
                      "output_names": ["y"], "tolerance": {"atol": 1e-05, "rtol": 0.0001}},
        "optimizer": {"class": "Adam", "config": {"lr": 0.001}, "iterations": 12, "state_saved": True,
                      "num_weights": 5},
    }
    data.update(overrides)
    writer.write_manifest(root, data)
    # Capture writes the manifest 0600 (mkstemp); the sandbox user needs to read it.
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0))
    return manifest.read(root)


def image_info(key="k1", tag=None, **kw):
    base = dict(tag=tag or f"envrepro/env:{key}", key=key, image_id="sha256:" + "c" * 64, source="built",
                base_image="python:3.8-slim", base_digest="sha256:" + "b" * 64, log_path=None)
    base.update(kw)
    return SimpleNamespace(**base)


def loader_report(**kw):
    rep = {
        "report_version": 1, "ok": True, "stage": "verify", "exit_code": 0, "error": None, "mismatches": [],
        "versions": {"python": "3.8.18", "tensorflow": "2.4.1", "keras": "2.4.0", "keras_module": "tf.keras",
                     "numpy": "1.19.5"},
        "timings": {"import_tf": 2.1, "import_modules": 0.01, "load": 0.8, "predict": 0.3, "total": 3.4},
        "load": {"ok": True, "format": "h5", "compile": True, "safe_mode": True, "custom_objects": ["MyCustomLayer"]},
        "reference": {"checked": True, "max_abs_diff": 3e-08, "allclose": True, "atol": 1e-05, "rtol": 1e-04,
                      "shapes": {"expected": [[2, 1]], "got": [[2, 1]]}, "per_output": []},
        "optimizer": {"expected": {"class": "Adam"}, "restored": "Adam", "iterations": 12, "weights_restored": 5,
                      "ok": True, "problems": []},
        "network": {"interfaces": ["lo"], "non_loopback": [], "route": False, "isolated": True},
    }
    rep.update(kw)
    return rep


def report_stdout(rep):
    return "some noise\nWARNING tf\n" + rt.REPORT_PREFIX + json.dumps(rep) + "\n"
