"""Get the environment image a capture needs: find it locally, pull it, or build it.

Order: local tag -> ``<registry>/envrepro-env:<key>`` when a registry is configured -> build
(``envrepro.build.spec`` says what the key covers). The host's pip settings and CA bundle go into
the builder stages only. A failed build is reported with the tail of its log and, for the
failures users meet (hash mismatch, a pin the index doesn't have), what to do about it.
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from envrepro import config
from envrepro.build import dockerfile as df
from envrepro.build import wheelhouse_builder
from envrepro.build.bases import base_digest, cuda_base_needed, ensure_base, resolve_base
from envrepro.build.pipconfig import PipSettings
from envrepro.build import registry as registry_images
from envrepro.build.spec import (LABEL, LABEL_KEY, RUNTIME_VERSION, Progress, build_spec, capture_key,
                                 env_labels, image_tag, lock_for)
from envrepro.build.templates import VENV
from envrepro.engine.base import ContainerEngine, image_labels
from envrepro.errors import BuildFailed, EnvreproError
from envrepro.sidecar.manifest import Capture

LOG_TAIL = 30


# -- progress ----------------------------------------------------------------------------------
_MILESTONE = re.compile(r"^(Step \d+/\d+ :|Using local image|Pulling |Building |Could not pull)")


class ConsoleProgress:
    """A rich spinner with the current step on a terminal; plain streamed lines otherwise."""

    def __init__(self, stream: Any = None):
        self.stream = stream or sys.stderr
        self.status: Any = None
        if getattr(self.stream, "isatty", lambda: False)():
            try:
                from rich.console import Console

                self.console = Console(file=self.stream)
                self.status = self.console.status("starting")
                self.status.start()
            except ImportError:  # pragma: no cover
                self.status = None
        self.step = ""

    def __call__(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        if self.status is None:
            self.stream.write(line + "\n")
            self.stream.flush()
            return
        from rich.markup import escape

        if _MILESTONE.match(line):
            self.step = line
            self.console.print(escape(line[:200]), highlight=False)
        self.status.update(f"{escape(self.step[:70])}  [dim]{escape(line.strip()[:70])}[/dim]")

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()


# -- ensure_image ------------------------------------------------------------------------------
@dataclass
class ImageInfo:
    tag: str
    key: str
    image_id: str
    source: str                      # "local" | "pulled" | "built"
    base_image: str
    base_digest: str
    labels: Dict[str, str] = field(default_factory=dict)
    log_path: Optional[Path] = None
    built_from_source: List[str] = field(default_factory=list)   # sdists pip built (when built)
    seconds: float = 0.0             # time spent finding, pulling or building it
    python: str = VENV + "/bin/python"    # the environment's interpreter inside the image
    unverified: List[str] = field(default_factory=list)  # installed without a hash check
    translation: Optional[Dict[str, Any]] = None  # lock translated for Linux or for GPUs
    builder: str = ""                # "wheelhouse" | "dockerfile" (when built)
    wheelhouse: Optional[Dict[str, Any]] = None   # what the wheelhouse fetched and built
    registry: Optional[Dict[str, Any]] = None    # the pull tried: ref, outcome, reason (build/registry.py)

    @property
    def built(self) -> bool:
        return self.source == "built"

    @property
    def pulled(self) -> bool:
        return self.source == "pulled"

    @property
    def pulled_from(self) -> Optional[str]:
        return (self.registry or {}).get("ref") if self.pulled else None

def _noise(line: str) -> bool:
    s = line.strip()
    return (not s or s.startswith(("---> ", "Removing intermediate container", "Successfully"))
            or set(s) <= set("━╸─|█ ") or s.startswith("[notice]"))


def _failure_message(tag: str, log: Path, lines: List[str], err: EnvreproError) -> BuildFailed:
    text = "\n".join(lines) + "\n" + err.what
    tail = [line for line in lines if not _noise(line)][-LOG_TAIL:]
    fix = err.fix
    if "THESE PACKAGES DO NOT MATCH THE HASHES" in text or "(hash mismatch)" in text or "does not pin" in text:
        fix = ("pip's hash check failed: a file the index serves differs from the one the lock "
               "pins. Check the capture's requirements.lock (edited?) and the index, or capture again")
    elif "no matching distribution found" in text.lower() or "could not find a version" in text.lower():
        fix = ("a pinned version is not on the index the build reaches: check the host's pip "
               "index settings (and its credentials), or whether the lock was made on another OS")
    reason = re.sub(r"^image build failed: ", "", err.what)
    m = re.search(r"returned a non-zero code: (\d+)", reason)
    step = next((line for line in reversed(lines) if line.startswith("Step ")), "")
    if m:
        reason = f"{step.split(' : ')[0] or 'a RUN step'} exited with code {m.group(1)}"
    what = (f"building {tag} failed: {reason}\n"
            + "\n".join("  | " + line for line in tail) + f"\nfull build log: {log}")
    return BuildFailed(what, None, fix)

def dockerfile_for(capture: Capture, base_image: Optional[str] = None, gpus: bool = False,
                   runtime_version: str = RUNTIME_VERSION) -> str:
    """The Dockerfile ``ensure_image`` would build (``envrepro dockerfile``); no engine needed."""
    base = resolve_base(capture, base_image, gpus)
    lock_text, t = lock_for(capture, gpus)
    key = capture_key(capture, base, lock_text, runtime_version)
    # pip settings only reach build/pip.conf in the context, never the Dockerfile text.
    return df.render(build_spec(capture, base, "", key, cuda_base_needed(capture, base_image, gpus),
                                PipSettings(), runtime_version, lock_text, t))

def ensure_image(capture: Capture, engine: ContainerEngine, base_image: Optional[str] = None,
                 registry: Optional[str] = None, gpus: bool = False,
                 on_progress: Optional[Progress] = None, pip: Optional[PipSettings] = None,
                 runtime_version: str = RUNTIME_VERSION, nocache: bool = False) -> ImageInfo:
    """Return the capture's environment image: local tag, else pulled, else built."""
    console = ConsoleProgress() if on_progress is None else None
    say: Progress = on_progress or console  # type: ignore[assignment]
    t0 = time.perf_counter()
    try:
        info = _ensure(capture, engine, base_image, registry, gpus, say, pip, runtime_version, nocache)
        info.seconds = round(time.perf_counter() - t0, 3)
        return info
    finally:
        if console is not None:
            console.close()


def _ensure(capture: Capture, engine: ContainerEngine, base_image: Optional[str], registry: Optional[str],
            gpus: bool, say: Progress, pip: Optional[PipSettings], runtime_version: str,
            nocache: bool) -> ImageInfo:
    python_version = str(capture.get("python.version"))
    base = resolve_base(capture, base_image, gpus)
    lock_text, translation = lock_for(capture, gpus, pip, say)
    if translation is not None:
        say(translation.summary())
    unverified = df.unverified_names(lock_text)
    key = capture_key(capture, base, lock_text, runtime_version)
    tag = image_tag(key)
    extras: Dict[str, Any] = {"unverified": unverified,
                              "translation": translation.to_dict() if translation else None}

    def found(info: Dict[str, Any], source: str) -> ImageInfo:
        labels = image_labels(info)
        return ImageInfo(tag, key, str(info.get("Id", "")), source, base,
                         labels.get(LABEL + "base-digest", ""), labels, **extras)

    info = engine.inspect_image(tag)
    if info and image_labels(info).get(LABEL_KEY) == key:
        say(f"Using local image {tag}")
        return found(info, "local")
    reg = registry_images.resolve(registry)
    if reg:   # used only when its labels match the capture (build/registry.py)
        expected = env_labels(capture, base, key, lock_text, runtime_version, translation)
        pulled, extras["registry"] = registry_images.pull_verified(engine, reg, tag, expected, say)
        if pulled is not None:
            return found(pulled, "pulled")
    base_info = ensure_base(engine, base, say)
    spec = build_spec(capture, base, base_digest(base_info), key,
                      cuda_base_needed(capture, base_image, gpus), pip, runtime_version, lock_text,
                      translation)
    why_not = wheelhouse_builder.unsupported(spec)
    logs = config.cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"build-{key[:16]}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    lines: List[str] = []
    if unverified:
        say("Installing without hash verification (no hash in the lock): " + ", ".join(unverified))
    with open(log_path, "w", encoding="utf-8") as log:
        def on_line(line: str) -> None:
            lines.append(line)
            log.write(line + "\n")
            log.flush()
            say(line)

        if why_not is None:
            say(f"Building {tag} from the wheelhouse (base {base}, Python {python_version}); log: {log_path}")
            try:
                built = wheelhouse_builder.build_image(capture, engine, spec, base_info, tag, on_line,
                                                       runtime_version, nocache=nocache)
            except wheelhouse_builder.NotFromWheelhouse as e:
                why_not = str(e)
            except BuildFailed as e:
                raise _failure_message(tag, log_path, lines, e) from None
            else:
                final = engine.inspect_image(tag) or {"Id": built.image_id}
                return ImageInfo(tag, key, str(final.get("Id", built.image_id)), "built", base,
                                 spec.labels.get(LABEL + "base-digest", ""),
                                 image_labels(final) or dict(spec.labels), log_path,
                                 built.wheelhouse.built, builder="wheelhouse",
                                 wheelhouse=built.wheelhouse.summary(), **extras)
        dockerfile = df.render(spec)
        context = df.build_context(spec, dockerfile)
        on_line(f"Building {tag} with the Dockerfile builder ({why_not}); base {base}, Python {python_version}")
        log.write(dockerfile + "\n# ---- build output ----\n")
        try:
            image_id = engine.build(context, tag, labels=None, on_line=on_line, nocache=nocache)
        except BuildFailed as e:
            raise _failure_message(tag, log_path, lines, e) from None
    sdists = sorted({m.group(1) for line in lines
                     for m in [re.search(r"Building wheel for (\S+)", line)] if m})
    final = engine.inspect_image(tag) or {"Id": image_id}
    return ImageInfo(tag, key, str(final.get("Id", image_id)), "built", base,
                     spec.labels.get(LABEL + "base-digest", ""), image_labels(final) or dict(spec.labels),
                     log_path, sdists, builder="dockerfile", **extras)

def summarize(info: ImageInfo) -> Dict[str, Any]:
    return {"tag": info.tag, "key": info.key, "id": info.image_id, "source": info.source,
            "base": info.base_image, "base_digest": info.base_digest,
            "log": str(info.log_path) if info.log_path else None,
            "built_from_source": info.built_from_source, "seconds": info.seconds,
            "unverified": info.unverified, "translation": info.translation,
            "builder": info.builder, "wheelhouse": info.wheelhouse,
            "pulled_from": info.pulled_from, "registry": info.registry}
