"""Get the environment image a capture needs: find it locally, pull it, or build it.

Images are per environment, not per model: the tag carries a key hashed over (base image, Python
version, canonical lock, runtime version), so "is it built?" is one inspect call and models that
share a lock share an image. Order: local tag -> ``<registry>/envrepro-env:<key>`` when a registry
is configured -> build. The host's pip settings and CA bundle go into the builder stage only.

A capture made on macOS or Windows is built from its lock translated for Linux
(``envrepro.build.platforms``, cached on the host); the key is computed over that translated lock.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from envrepro.build import dockerfile as df
from envrepro.sidecar import layout, lockfile
from envrepro.build import platforms
from envrepro.errors import BuildFailed, EnvreproError
from envrepro.interpreters import python_xy
from envrepro.sidecar.manifest import Capture

# Bump when the image layout the runtime scripts rely on changes (venv path, user, labels,
# template): every environment then gets a new key and is rebuilt.
RUNTIME_VERSION = "2"  # bump when the image layout (images/, dockerfile.py) changes
IMAGE_REPO = "envrepro-env"
LABEL = "org.envrepro."
LOG_TAIL = 30
Progress = Callable[[str], None]


# -- configuration -----------------------------------------------------------------------------
def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "envrepro" / "config.yaml"


def load_config() -> Dict[str, Any]:
    """``~/.config/envrepro/config.yaml`` (honours XDG_CONFIG_HOME); {} when absent."""
    p = config_path()
    if not p.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise EnvreproError(f"config file is unreadable ({str(e).splitlines()[0]})", str(p),
                            "fix or remove it") from None
    return data if isinstance(data, dict) else {}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "envrepro"


def default_base(python_version: str, base_image: Optional[str] = None) -> str:
    """The base image: argument, else ENVREPRO_BASE_IMAGE, else config ``base_image``, else
    ``python:X.Y-slim`` for the captured X.Y. ``{python}``/``{xy}`` in an override are filled in."""
    chosen = base_image or os.environ.get("ENVREPRO_BASE_IMAGE") or load_config().get("base_image")
    if not chosen:
        return f"python:{python_xy(python_version)}-slim"
    return str(chosen).replace("{python}", python_version).replace("{xy}", python_xy(python_version))


def configured_registry(registry: Optional[str] = None) -> Optional[str]:
    value = registry or os.environ.get("ENVREPRO_REGISTRY") or load_config().get("registry")
    return str(value).rstrip("/") if value else None


# -- keys and tags -----------------------------------------------------------------------------
def image_key(base_image: str, python_version: str, lock_text: str,
              runtime_version: str = RUNTIME_VERSION) -> str:
    """32 hex chars of sha256 over what defines the environment (comments in the lock don't)."""
    fields = {"base": base_image, "python": python_version,
              "lock": lockfile.canonical_lock(lock_text), "runtime": runtime_version}
    tools = sorted(f"{e.name}=={e.version}" for e in lockfile.parse_lock(lock_text, include_unsafe=True)
                   if e.unsafe)
    if tools:  # setuptools/wheel pins (commented in the lock) are installed too
        fields["tools"] = tools
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def image_tag(key: str) -> str:
    return f"{IMAGE_REPO}:{key[:16]}"


# -- host pip settings -------------------------------------------------------------------------
_PIP_KEYS = ("index-url", "extra-index-url", "trusted-host", "find-links", "cert")


def parse_pip_config_list(text: str) -> Dict[str, str]:
    """``pip config list`` lines (``global.cert='/x'``, ``:env:.cert='/x'``) -> {key: value}.

    Precedence as pip applies it: environment over ``install`` over ``global``.
    """
    rank = {"global": 0, "install": 1, ":env:": 2}
    best: Dict[str, Tuple[int, str]] = {}
    for line in text.splitlines():
        m = re.match(r"^(:env:|[a-z]+)\.([a-z-]+)=(.*)$", line.strip())
        if not m or m.group(2) not in _PIP_KEYS or m.group(1) not in rank:
            continue
        raw = m.group(3).strip()
        try:  # pip prints repr(value): a multi-line pip.conf value is one line with \n escapes
            value = ast.literal_eval(raw) if raw[:1] in "'\"" else raw
        except (ValueError, SyntaxError):
            value = raw.strip("'\"")
        value = " ".join(str(value).split())
        r = rank[m.group(1)]
        if m.group(2) not in best or r >= best[m.group(2)][0]:
            best[m.group(2)] = (r, value)
    return {k: v for k, (_, v) in best.items()}


def _pip_files() -> List[Path]:
    dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    home = Path(os.path.expanduser("~"))
    files = [Path(d) / "pip" / "pip.conf" for d in dirs] + [Path("/etc/pip.conf"), home / ".pip" / "pip.conf",
             Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf"]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    return files


def pip_values_from_files_and_env() -> Dict[str, str]:
    """The same keys read directly, for hosts where ``pip config list`` can't run."""
    import configparser

    values: Dict[str, str] = {}
    for f in _pip_files():
        cp = configparser.RawConfigParser()
        try:
            cp.read(f)
        except (configparser.Error, OSError):
            continue
        for section in ("global", "install"):
            if cp.has_section(section):
                values.update({k: " ".join(v.split()) for k, v in cp.items(section) if k in _PIP_KEYS})
    for key in _PIP_KEYS:
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env:
            values[key] = env
    return values


def pip_settings_from(values: Dict[str, str]) -> df.PipSettings:
    """Keep what works inside a build: http(s) index and find-links URLs, trusted hosts, cert."""
    def urls(key: str) -> Tuple[str, ...]:
        return tuple(u for u in values.get(key, "").split() if df.is_http_url(u))

    index = urls("index-url")
    cert = values.get("cert") or None
    return df.PipSettings(index_url=index[0] if index else None, extra_index_urls=urls("extra-index-url"),
                          trusted_hosts=tuple(values.get("trusted-host", "").split()),
                          find_links=urls("find-links"), cert=cert)


def host_pip_settings(runner: Optional[Callable[[], str]] = None) -> df.PipSettings:
    """The host's pip settings (``pip config list``; files and PIP_* variables as fallback)."""
    text = None
    try:
        text = runner() if runner else subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        text = None
    values = parse_pip_config_list(text) if text is not None else pip_values_from_files_and_env()
    settings = pip_settings_from(values)
    if not settings.cert:
        for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
            if os.environ.get(var) and os.path.isfile(os.environ[var]):
                return dataclasses.replace(settings, cert=os.environ[var])
    return settings


# -- GPU bases ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuBase:
    image: str
    cuda: str
    cudnn: str
    ubuntu: str


def _minor(v: str) -> Tuple[int, int]:
    m = re.match(r"^(\d+)\.(\d+)", str(v))
    if not m:
        raise EnvreproError(f"not a TensorFlow version: {v!r}", None, "check frameworks.tensorflow")
    return int(m.group(1)), int(m.group(2))


def gpu_bases() -> List[Dict[str, Any]]:
    import yaml

    return list(yaml.safe_load(df.package_text("envrepro.data", "gpu_bases.yaml"))["bases"])


def gpu_base(tf_version: str) -> GpuBase:
    """The CUDA/cuDNN base TensorFlow ``tf_version`` was tested with (envrepro/data/gpu_bases.yaml)."""
    want = _minor(tf_version)
    for row in gpu_bases():
        if _minor(row["tf_min"]) <= want and (row["tf_max"] is None or want <= _minor(row["tf_max"])):
            return GpuBase(row["image"], str(row["cuda"]), str(row["cudnn"]), str(row["ubuntu"]))
    raise EnvreproError(f"no known CUDA base for TensorFlow {tf_version}", None,
                        "pass --base-image with a CUDA image that has Python")


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
    python: str = df.VENV + "/bin/python"    # the environment's interpreter inside the image
    unverified: List[str] = field(default_factory=list)  # installed without a hash check
    translation: Optional[Dict[str, Any]] = None  # macOS/Windows lock translated for Linux

    @property
    def built(self) -> bool:
        return self.source == "built"

    @property
    def pulled(self) -> bool:
        return self.source == "pulled"


def _labels_of(info: Optional[Dict[str, Any]]) -> Dict[str, str]:
    return dict(((info or {}).get("Config") or {}).get("Labels") or {})


def _base_digest(info: Dict[str, Any]) -> str:
    digests = info.get("RepoDigests") or []
    return str(digests[0]) if digests else str(info.get("Id", ""))


def _noise(line: str) -> bool:
    s = line.strip()
    return (not s or s.startswith(("---> ", "Removing intermediate container", "Successfully"))
            or set(s) <= set("━╸─|█ ") or s.startswith("[notice]"))


def _failure_message(tag: str, log: Path, lines: List[str], err: EnvreproError) -> BuildFailed:
    text = "\n".join(lines)
    tail = [line for line in lines if not _noise(line)][-LOG_TAIL:]
    fix = err.fix
    if "THESE PACKAGES DO NOT MATCH THE HASHES" in text:
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


def _wheels(capture: Capture) -> Dict[str, bytes]:
    folder = capture.root / layout.WHEELS_DIR
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.whl"))} if folder.is_dir() else {}


def lock_for(capture: Capture, gpus: bool = False, pip: Optional[df.PipSettings] = None,
             say: Optional[Progress] = None) -> Tuple[str, Optional[platforms.Translation]]:
    """The lock the image is built from: the capture's own, or for a capture made on macOS or
    Windows its translation for Linux (made once, then read from the cache)."""
    if not platforms.is_foreign(capture):
        return capture.lock_path.read_text(encoding="utf-8"), None
    t = platforms.translate(capture, cache_dir(), prefer_cpu=not gpus,
                            pip=pip if pip is not None else host_pip_settings(), say=say)
    return t.lock_text, t


def build_spec(capture: Capture, base_image: str, base_digest: str, key: str, gpus: bool = False,
               pip: Optional[df.PipSettings] = None, runtime_version: str = RUNTIME_VERSION,
               lock_text: Optional[str] = None, translated_from: str = "") -> df.BuildSpec:
    """Everything the Dockerfile and the context are rendered from, for one capture
    (``lock_text``: a translated lock instead of the capture's)."""
    if lock_text is None:
        lock_text = capture.lock_path.read_text(encoding="utf-8")
    python_version = str(capture.get("python.version"))
    pip = pip if pip is not None else host_pip_settings()
    ca = b""
    if pip.cert and os.path.isfile(pip.cert):
        ca = Path(pip.cert).read_bytes()
    labels = {LABEL + "key": key, LABEL + "python": python_version,
              LABEL + "tensorflow": str(capture.get("frameworks.tensorflow") or ""),
              LABEL + "base": base_image, LABEL + "runtime-version": runtime_version,
              LABEL + "lock-sha256": hashlib.sha256(lock_text.encode()).hexdigest()}
    if base_digest:
        labels[LABEL + "base-digest"] = base_digest
    if translated_from:
        labels[LABEL + "translated-from"] = translated_from
    return df.BuildSpec(base_image=base_image, python_version=python_version, lock_text=lock_text,
                        labels=labels, pip=pip, ca_bundle=ca, wheels=_wheels(capture),
                        python_from_source=gpus)


def resolve_base(capture: Capture, base_image: Optional[str] = None, gpus: bool = False) -> str:
    if gpus and not base_image:
        return gpu_base(str(capture.get("frameworks.tensorflow") or "")).image
    return default_base(str(capture.get("python.version")), base_image)


def dockerfile_for(capture: Capture, base_image: Optional[str] = None, gpus: bool = False,
                   runtime_version: str = RUNTIME_VERSION) -> str:
    """The Dockerfile ``ensure_image`` would build (``envrepro dockerfile``); no engine needed."""
    base = resolve_base(capture, base_image, gpus)
    lock_text, t = lock_for(capture, gpus)
    key = image_key(base, str(capture.get("python.version")), lock_text, runtime_version)
    # pip settings only reach build/pip.conf in the context, never the Dockerfile text.
    return df.render(build_spec(capture, base, "", key, gpus, df.PipSettings(), runtime_version,
                                lock_text, t.platform if t else ""))


def _ensure_base(engine: Any, base: str, say: Progress) -> Dict[str, Any]:
    """A base present locally is used as it is (never pulled); a missing one is pulled."""
    info = engine.inspect_image(base)
    if info:
        return info
    say(f"Pulling base image {base}")
    try:
        pulled = engine.pull(base, on_line=say)
    except BuildFailed as e:
        raise BuildFailed(f"base image {base} is not present locally and could not be pulled: {e.what}",
                          None, e.fix or "pull it by hand, or pick another with --base-image / "
                          "ENVREPRO_BASE_IMAGE") from None
    info = engine.inspect_image(base) if pulled else None
    if not info:
        raise BuildFailed(f"base image {base} is neither present locally nor on its registry", None,
                          "pull or build it, or pick another with --base-image / ENVREPRO_BASE_IMAGE")
    return info


def ensure_image(capture: Capture, engine: Any, base_image: Optional[str] = None,
                 registry: Optional[str] = None, gpus: bool = False,
                 on_progress: Optional[Progress] = None, pip: Optional[df.PipSettings] = None,
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


def _ensure(capture: Capture, engine: Any, base_image: Optional[str], registry: Optional[str],
            gpus: bool, say: Progress, pip: Optional[df.PipSettings], runtime_version: str,
            nocache: bool) -> ImageInfo:
    python_version = str(capture.get("python.version"))
    base = resolve_base(capture, base_image, gpus)
    lock_text, translation = lock_for(capture, gpus, pip, say)
    if translation is not None:
        say(translation.summary())
    unverified = df.unverified_names(lock_text)
    key = image_key(base, python_version, lock_text, runtime_version)
    tag = image_tag(key)
    extras: Dict[str, Any] = {"unverified": unverified,
                              "translation": translation.to_dict() if translation else None}

    def found(info: Dict[str, Any], source: str) -> ImageInfo:
        labels = _labels_of(info)
        return ImageInfo(tag, key, str(info.get("Id", "")), source, base,
                         labels.get(LABEL + "base-digest", ""), labels, **extras)

    info = engine.inspect_image(tag)
    if info and _labels_of(info).get(LABEL + "key") == key:
        say(f"Using local image {tag}")
        return found(info, "local")
    reg = configured_registry(registry)
    if reg:
        ref = f"{reg}/{IMAGE_REPO}:{key}"
        say(f"Pulling {ref}")
        try:
            if engine.pull(ref, on_line=say):
                pulled = engine.inspect_image(ref)
                if pulled and _labels_of(pulled).get(LABEL + "key") == key:
                    engine.tag(ref, tag)
                    return found(pulled, "pulled")
                say(f"{ref} is not an envrepro image for this environment (label mismatch); building")
            else:
                say(f"{ref} is not in the registry; building")
        except BuildFailed as e:
            say(f"Could not pull {ref} ({e}); building instead")
    base_info = _ensure_base(engine, base, say)
    spec = build_spec(capture, base, _base_digest(base_info), key, gpus, pip, runtime_version,
                      lock_text, translation.platform if translation else "")
    dockerfile = df.render(spec)
    context = df.build_context(spec, dockerfile)
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"build-{key[:16]}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    lines: List[str] = []
    say(f"Building {tag} (base {base}, Python {python_version}); log: {log_path}")
    if unverified:
        say("Installing without hash verification (no hash in the lock): " + ", ".join(unverified))
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(dockerfile + "\n# ---- build output ----\n")

        def on_line(line: str) -> None:
            lines.append(line)
            log.write(line + "\n")
            log.flush()
            say(line)

        try:
            image_id = engine.build(context, tag, labels=None, on_line=on_line, nocache=nocache)
        except BuildFailed as e:
            raise _failure_message(tag, log_path, lines, e) from None
    sdists = sorted({m.group(1) for line in lines
                     for m in [re.search(r"Building wheel for (\S+)", line)] if m})
    final = engine.inspect_image(tag) or {"Id": image_id}
    return ImageInfo(tag, key, str(final.get("Id", image_id)), "built", base,
                     spec.labels.get(LABEL + "base-digest", ""), _labels_of(final) or dict(spec.labels),
                     log_path, sdists, **extras)


def env_images(engine: Any) -> List[Dict[str, Any]]:
    """Every envrepro environment image on the engine (for ``envrepro images`` / gc)."""
    return list(engine.images(LABEL + "key"))


def summarize(info: ImageInfo) -> Dict[str, Any]:
    return {"tag": info.tag, "key": info.key, "id": info.image_id, "source": info.source,
            "base": info.base_image, "base_digest": info.base_digest,
            "log": str(info.log_path) if info.log_path else None,
            "built_from_source": info.built_from_source, "seconds": info.seconds,
            "unverified": info.unverified, "translation": info.translation}


__all__ = [
    "RUNTIME_VERSION", "image_key", "image_tag", "default_base", "host_pip_settings", "gpu_base",
    "ensure_image", "dockerfile_for", "ImageInfo", "ConsoleProgress", "configured_registry",
]
