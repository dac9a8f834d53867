"""Get the environment image a capture needs: find it locally, pull it, or build it.

Order: local tag -> ``<registry>/envrepro-env:<key>`` when a registry is configured -> build
(``envrepro.image.spec`` says what the key covers). The host's pip settings and CA bundle go into
the Dockerfile builder's stages only (with credentials in them, only when the user opts in:
``wheelhouse_builder.refuse_dockerfile``). A lock with direct references is refused before the
base is pulled or anything fetched, unless allowed (``packages.directrefs``). A failed build is
reported with the tail of its log and, for the failures users meet (hash mismatch, a pin the
index doesn't have), what to do about it.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from envrepro import config, progress, reporter
from envrepro.image import dockerfile as df
from envrepro.image import wheelhouse_builder
from envrepro.image.bases import base_digest, ensure_base
from envrepro.image.environment import environment_for
from envrepro.packages import directrefs
from envrepro.packages.pipconfig import PipSettings
from envrepro.image import registry as registry_images
from envrepro.image.spec import LABEL, LABEL_KEY, RUNTIME_VERSION, Progress
from envrepro.image.templates import VENV
from envrepro.engine.base import ContainerEngine, image_labels
from envrepro.errors import BuildFailed, EnvreproError
from envrepro.sidecar.manifest import Capture

LOG_TAIL = 30


# -- progress ----------------------------------------------------------------------------------
# What the screen shows of a build (steps, counts, elapsed time) is envrepro.progress; the name
# stays for callers that made one themselves.
ConsoleProgress = reporter.Reporter


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
    registry: Optional[Dict[str, Any]] = None    # the pull tried: ref, outcome, reason (image/registry.py)

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
    if err.what.startswith("the direct reference "):
        pass                    # its own fix: the file comes from the URL's server, not the index
    elif "THESE PACKAGES DO NOT MATCH THE HASHES" in text or "(hash mismatch)" in text or "does not pin" in text:
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
    env = environment_for(capture, base_image, gpus, runtime_version=runtime_version)
    # pip settings only reach build/pip.conf in the context, never the Dockerfile text.
    return df.render(env.spec(pip=PipSettings()))


def ensure_image(capture: Capture, engine: ContainerEngine, base_image: Optional[str] = None,
                 registry: Optional[str] = None, gpus: bool = False,
                 on_progress: Optional[Progress] = None, pip: Optional[PipSettings] = None,
                 runtime_version: str = RUNTIME_VERSION, nocache: bool = False,
                 verbose: bool = False) -> ImageInfo:
    """Return the capture's environment image: local tag, else pulled, else built.

    ``on_progress`` gets the steps (``envrepro.progress``) and, as log lines, the tools' output,
    all of which also goes to the build log; None: a ``reporter.Reporter`` on stderr, showing
    the tools' output only when ``verbose``."""
    console = reporter.Reporter(verbose=verbose) if on_progress is None else None
    out = progress.BuildLog(on_progress or console)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    try:
        info = _ensure(capture, engine, base_image, registry, gpus, out, pip, runtime_version, nocache)
        info.seconds = round(time.perf_counter() - t0, 3)
        return info
    except BaseException:
        out.abort()
        raise
    finally:
        if console is not None:
            console.close()


def _ensure(capture: Capture, engine: ContainerEngine, base_image: Optional[str], registry: Optional[str],
            gpus: bool, say: progress.BuildLog, pip: Optional[PipSettings], runtime_version: str,
            nocache: bool) -> ImageInfo:
    with progress.LazyStep(say) as translating:       # a step only when the lock is translated
        env = environment_for(capture, base_image, gpus, pip, translating, runtime_version)
    if env.translation is not None:
        say.note(env.translation.summary())
    base, key, tag, unverified = env.base, env.key, env.tag, env.unverified
    extras: Dict[str, Any] = {"unverified": unverified,
                              "translation": env.translation.to_dict() if env.translation else None}

    def found(info: Dict[str, Any], source: str) -> ImageInfo:
        labels = image_labels(info)
        return ImageInfo(tag, key, str(info.get("Id", "")), source, base,
                         labels.get(LABEL + "base-digest", ""), labels, **extras)

    info = engine.inspect_image(tag)
    if info and image_labels(info).get(LABEL_KEY) == key:
        say.note(f"Using local image {tag}")
        return found(info, "local")
    reg = registry_images.resolve(registry)
    if reg:   # used only when its labels match the capture (image/registry.py)
        expected = env.labels()
        with progress.LazyStep(say) as pulling:       # its first line: "Pulling REF"
            pulled, extras["registry"] = registry_images.pull_verified(engine, reg, tag, expected, pulling)
            outcome = extras["registry"]
            pulling.close(ok=outcome.get("outcome") in ("pulled", "absent"), note=_pull_note(outcome))
        if pulled is not None:
            return found(pulled, "pulled")
    lock_path = str(env.translation.lock_path if env.translation is not None else capture.lock_path)
    if directrefs.check(env.lock, lock_path):       # refused unless allowed: nothing pulled or fetched yet
        why = wheelhouse_builder.builder_reason(env.python_from_source)
        if why:
            wheelhouse_builder.refuse_dockerfile(env.lock, PipSettings(), why, lock_path)
    with progress.LazyStep(say) as pulling_base:      # a step only when the base must be pulled
        base_info = ensure_base(engine, base, pulling_base)
    spec = env.spec(base_digest(base_info), pip)
    why_not = wheelhouse_builder.unsupported(spec)
    if why_not is not None:       # before a build log is opened
        wheelhouse_builder.refuse_dockerfile(spec.lock, spec.pip, why_not, lock_path)
    logs = config.cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"build-{key[:16]}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    if unverified:
        say.note("Installing without hash verification (no hash in the lock): " + ", ".join(unverified))
    with open(log_path, "w", encoding="utf-8") as log:
        say.attach(log)
        try:
            return _build(capture, engine, spec, base_info, tag, key, why_not, say, log, log_path,
                          runtime_version, nocache, extras)
        finally:
            say.detach()


def _build(capture: Capture, engine: ContainerEngine, spec: df.BuildSpec, base_info: Dict[str, Any],
           tag: str, key: str, why_not: Optional[str], say: progress.BuildLog, log: Any, log_path: Path,
           runtime_version: str, nocache: bool, extras: Dict[str, Any]) -> ImageInfo:
    """Build ``tag`` with the wheelhouse builder, else (``why_not``) the Dockerfile builder;
    ``say`` writes into the open build log ``log``."""
    base, python_version = spec.base_image, str(capture.get("python.version"))
    if why_not is None:
        say.note(f"Building {tag} from the wheelhouse (base {base}, Python {python_version})")
        say.note(f"build log: {log_path}")
        try:
            built = wheelhouse_builder.build_image(capture, engine, spec, base_info, tag, say,
                                                   runtime_version, nocache=nocache)
        except wheelhouse_builder.NotFromWheelhouse as e:
            why_not = str(e)
        except BuildFailed as e:
            raise _failure_message(tag, log_path, say.lines, e) from None
        else:
            final = engine.inspect_image(tag) or {"Id": built.image_id}
            return ImageInfo(tag, key, str(final.get("Id", built.image_id)), "built", base,
                             spec.labels.get(LABEL + "base-digest", ""),
                             image_labels(final) or dict(spec.labels), log_path,
                             built.wheelhouse.built, builder="wheelhouse",
                             wheelhouse=built.wheelhouse.summary(), **extras)
    wheelhouse_builder.refuse_dockerfile(spec.lock, spec.pip, why_not, str(capture.lock_path))
    dockerfile = df.render(spec)
    context = df.build_context(spec, dockerfile)
    say.note(f"Building {tag} with the Dockerfile builder ({why_not}); base {base}, Python {python_version}")
    say.note(f"build log: {log_path}")
    log.write(dockerfile + "\n# ---- build output ----\n")
    steps = progress.DockerSteps(say)     # each Dockerfile step one step on the screen
    try:
        image_id = engine.build(context, tag, labels=None, on_line=steps, nocache=nocache)
    except BuildFailed as e:
        steps.close(ok=False)
        raise _failure_message(tag, log_path, say.lines, e) from None
    steps.close()
    sdists = sorted({m.group(1) for line in say.lines
                     for m in [re.search(r"Building wheel for (\S+)", line)] if m})
    final = engine.inspect_image(tag) or {"Id": image_id}
    return ImageInfo(tag, key, str(final.get("Id", image_id)), "built", base,
                     spec.labels.get(LABEL + "base-digest", ""), image_labels(final) or dict(spec.labels),
                     log_path, sdists, builder="dockerfile", **extras)


def _pull_note(outcome: Dict[str, Any]) -> str:
    """How a registry pull ended, on its step's line."""
    what = outcome.get("outcome")
    if what == "pulled":
        return "labels match the capture"
    if what == "absent":
        return "not in the registry: building it"
    return f"{outcome.get('reason') or what}: building instead"


def summarize(info: ImageInfo) -> Dict[str, Any]:
    return {"tag": info.tag, "key": info.key, "id": info.image_id, "source": info.source,
            "base": info.base_image, "base_digest": info.base_digest,
            "log": str(info.log_path) if info.log_path else None,
            "built_from_source": info.built_from_source, "seconds": info.seconds,
            "unverified": info.unverified, "translation": info.translation,
            "builder": info.builder, "wheelhouse": info.wheelhouse,
            "pulled_from": info.pulled_from, "registry": info.registry}
