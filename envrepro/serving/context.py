"""The serving image's Dockerfile and build context, from a verified capture.

Two shapes of one Dockerfile. ``envrepro dockerfile --serve -o DIR`` writes a self-contained
context: the environment's own Dockerfile (the same text ``envrepro load`` builds, so an engine
that built the environment reuses every layer) followed by the serving layers of
``images/serve.Dockerfile``. ``envrepro build --serve`` starts the serving layers ``FROM`` the
environment image it found, pulled or built, and sends only them. Either way the image is the
environment + the runtime (the server) + the capture's snapshot and reference + the model.

Nothing a capture or a model holds reaches the Dockerfile text but values the schema checked
(names, versions) or that are quoted here; the model is copied as regular files and folders only
(a symbolic link or a special file in a model is refused: a link could pull a host file into the
image).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Tuple, Union

from envrepro.image.dockerfile import add_member, label_lines
from envrepro.image.templates import fill, template_text
from envrepro.errors import EnvreproError
from envrepro.fsutil import sha256_file
from envrepro.runtime import launch
from envrepro.runtime.serve import config as serveconfig
from envrepro.sandbox.loadplan import ContainerPaths, captured_env, make_plan
from envrepro.sidecar import layout, manifest
from envrepro import shipped

LABEL = "org.envrepro.serve."
SERVE_REPO = "envrepro-serve"
SERVE_VERSION = "1"          # bump when the serving layout changes: every serving key changes
NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
Source = Union[bytes, Path, None]   # file bytes, a file on disk, or None for a folder


class ServeError(EnvreproError):
    """A model or a name that can't be served as given (exit 2)."""


def serve_name(capture: manifest.Capture, name: Optional[str] = None) -> str:
    """NAME in the URLs: ``--name``, else the model's file or folder name without extension."""
    value = name if name is not None else serveconfig.model_name(capture.model_path)
    if not NAME_RE.match(value):
        raise ServeError(f"model name {value[:60]!r} can't be used in URLs", str(capture.model_path),
                         "pass --name with letters, digits, '.', '_' or '-' (1 to 128, starting with a letter or digit)")
    return value


def serve_paths(capture: manifest.Capture) -> ContainerPaths:
    return ContainerPaths(model=f"{serveconfig.MODEL_DIR}/{capture.model_path.name}",
                          capture=serveconfig.CAPTURE_DIR, runtime=serveconfig.RUNTIME_DIR)


def serve_plan(capture: manifest.Capture, name: str, unsafe: bool = False) -> Dict[str, Any]:
    """The loader's plan with the image's paths, for the server: no resume replay, no drift."""
    plan = make_plan(capture, serve_paths(capture), unsafe=unsafe)
    plan["resume_check"] = None
    plan["drift"] = False
    from envrepro.version import __version__

    plan[serveconfig.PLAN_LOCK_KEY] = lock_sha256(capture)          # envrepro_build_info{lock=...}
    plan[serveconfig.PLAN_VERSION_KEY] = __version__
    plan["serve"] = {"name": name, "lock_sha256": lock_sha256(capture),
                     "tensorflow": str(capture.get("frameworks.tensorflow") or ""),
                     "python": str(capture.get("python.version") or "")}
    return plan


def lock_sha256(capture: manifest.Capture) -> str:
    return sha256_file(capture.lock_path) if capture.lock_path.is_file() else ""


# -- the files -----------------------------------------------------------------------------
def _model_files(model: Path) -> Iterator[Tuple[str, Source]]:
    """(path under serve/model/, source) for the model: regular files and folders only."""
    def refuse(p: Path, what: str) -> EnvreproError:
        return ServeError(f"the model holds {what}: {p}", str(model),
                          "serving copies regular files and folders only; replace it with the file it points to")

    st = os.lstat(model)
    if stat.S_ISREG(st.st_mode):
        yield model.name, model
        return
    if not stat.S_ISDIR(st.st_mode):
        raise refuse(model, "something that is neither a file nor a folder")
    yield model.name, None
    for root, dirs, files in os.walk(model):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            p = Path(root, name)
            mode = os.lstat(p).st_mode
            rel = f"{model.name}/{p.relative_to(model).as_posix()}"
            if stat.S_ISLNK(mode):
                raise refuse(p, "a symbolic link")
            if stat.S_ISDIR(mode):
                yield rel, None
            elif stat.S_ISREG(mode):
                yield rel, p
            else:
                raise refuse(p, "a special file (FIFO, socket or device)")


def _runtime_files() -> Iterator[Tuple[str, Source]]:
    """The runtime package's modules, its subpackages (the server is ``serve/``) included."""
    root = Path(shipped.runtime_dir())
    top = f"serve/lib/{launch.PACKAGE}"
    yield "serve/lib", None
    yield top, None
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if (Path(folder, d) / "__init__.py").is_file())
        rel = Path(folder).relative_to(root).as_posix()
        dest = top if rel == "." else f"{top}/{rel}"
        if rel != ".":
            yield dest, None
        for name in sorted(f for f in files if f.endswith(".py")):
            yield f"{dest}/{name}", Path(folder, name)


def _capture_files(capture: manifest.Capture) -> Iterator[Tuple[str, Source]]:
    """The snapshot and reference the server imports and warms up with (hash-verified files)."""
    yield "serve/capture", None
    for folder in (layout.SNAPSHOT_DIR, layout.REFERENCE_DIR):
        top = capture.root / folder
        if not top.is_dir():
            continue
        yield f"serve/capture/{folder}", None
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(dirs):
                yield f"serve/capture/{Path(root, name).relative_to(capture.root).as_posix()}", None
            for name in sorted(files):
                p = Path(root, name)
                if os.path.islink(p) or not p.is_file():
                    continue        # the reader refused links; nothing else is copied
                yield f"serve/capture/{p.relative_to(capture.root).as_posix()}", p


def serve_files(capture: manifest.Capture, plan: Dict[str, Any]) -> List[Tuple[str, Source]]:
    files: List[Tuple[str, Source]] = [("serve", None)]
    files += list(_runtime_files())
    files += list(_capture_files(capture))
    files.append(("serve/plan.json", json.dumps(plan, indent=1, sort_keys=True).encode()))
    files.append(("serve/model", None))
    files += [(f"serve/model/{rel}", src) for rel, src in _model_files(capture.model_path)]
    return files


def _digest(files: List[Tuple[str, Source]]) -> str:
    h = hashlib.sha256()
    for name, src in files:
        h.update(name.encode() + b"\0")
        if isinstance(src, bytes):
            h.update(hashlib.sha256(src).hexdigest().encode())
        elif src is not None:
            h.update(sha256_file(src).encode())
        h.update(b"\n")
    return h.hexdigest()


# -- the Dockerfile ------------------------------------------------------------------------
def _env_lines(capture: manifest.Capture, name: str) -> str:
    env = dict(serveconfig.PROCESS_ENV, **dict(captured_env(capture)))
    env["ENVREPRO_SERVE_NAME"] = name
    return "ENV " + " \\\n    ".join(f"{k}={json.dumps(v)}" for k, v in sorted(env.items()))


def entrypoint() -> List[str]:
    return serveconfig.server_argv("python")


def serving_layers(capture: manifest.Capture, name: str, labels: Dict[str, str]) -> str:
    return fill("serve.Dockerfile", SERVE_ROOT=serveconfig.ROOT, CAPTURE_DIR=serveconfig.CAPTURE_DIR,
                PLAN_FILE=serveconfig.PLAN_FILE, MODEL_DIR=serveconfig.MODEL_DIR,
                SERVE_ENV=_env_lines(capture, name), PORT=str(serveconfig.PORT),
                LIVE_PATH=serveconfig.LIVE_PATH, ENTRYPOINT=json.dumps(entrypoint()),
                LABELS=label_lines(labels))


@dataclass
class ServeContext:
    """What the serving image is made of (``files``: context path -> source) and its key."""

    capture: manifest.Capture
    name: str
    env_key: str
    plan: Dict[str, Any]
    files: List[Tuple[str, Source]] = field(default_factory=list)
    key: str = ""

    @property
    def tag(self) -> str:
        return f"{SERVE_REPO}:{self.key[:16]}"

    def labels(self) -> Dict[str, str]:
        return {LABEL + "key": self.key, LABEL + "name": self.name, LABEL + "env-key": self.env_key,
                LABEL + "model-sha256": str(self.capture.get("model.sha256") or ""),
                LABEL + "lock-sha256": self.plan["serve"]["lock_sha256"],
                LABEL + "tensorflow": self.plan["serve"]["tensorflow"],
                LABEL + "python": self.plan["serve"]["python"], LABEL + "port": str(serveconfig.PORT)}


def serve_context(capture: manifest.Capture, env_key: str, name: Optional[str] = None,
                  unsafe: bool = False) -> ServeContext:
    """The serving context of ``capture`` on the environment ``env_key``."""
    n = serve_name(capture, name)
    plan = serve_plan(capture, n, unsafe)
    files = serve_files(capture, plan)
    h = hashlib.sha256(json.dumps({"version": SERVE_VERSION, "env": env_key, "files": _digest(files),
                                   "template": template_text("serve.Dockerfile")}, sort_keys=True).encode())
    return ServeContext(capture, n, env_key, plan, files, h.hexdigest()[:32])


def dockerfile(ctx: ServeContext, env_dockerfile: Optional[str] = None, env_image: Optional[str] = None) -> str:
    """The whole Dockerfile (``env_dockerfile``: the environment's own text, self-contained) or the
    serving layers on ``env_image`` (what ``envrepro build --serve`` sends)."""
    layers = serving_layers(ctx.capture, ctx.name, ctx.labels())
    if env_dockerfile is not None:
        return env_dockerfile.rstrip("\n") + "\n\n" + layers
    return f"FROM {env_image}\n\n" + layers


# -- writing it ----------------------------------------------------------------------------
def write_tar(out: BinaryIO, text: str, files: List[Tuple[str, Source]]) -> None:
    """The build context as a tar stream (model files streamed from disk, not held in memory)."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        add_member(tar, "Dockerfile", text.encode())
        for name, src in files:
            add_member(tar, name, src)


def write_dir(folder: Path, text: str, files: List[Tuple[str, Source]]) -> None:
    """The build context as a folder for ``docker build DIR``: modes as in the tar."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(text, encoding="utf-8")
    for name, src in files:
        dest = folder / name
        if src is None:
            dest.mkdir(parents=True, exist_ok=True)
            dest.chmod(0o755)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as fo:
            if isinstance(src, bytes):
                fo.write(src)
            else:
                with open(src, "rb") as fi:
                    while True:
                        chunk = fi.read(1 << 20)
                        if not chunk:
                            break
                        fo.write(chunk)
        dest.chmod(0o644)
