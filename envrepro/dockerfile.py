"""Render environment Dockerfiles and their build contexts. Pure: strings and bytes, no Docker.

The Dockerfile comes from the template ``images/env.Dockerfile`` (package ``envrepro.images``),
filled with ``string.Template`` (``${NAME}`` is ours, ``$$NAME`` is Docker's own variable).
The lock is split in two files, TensorFlow's dependency closure (``heavy.lock``) installed first
and everything else (``rest.lock``) after, so environments that differ only outside that closure
share the expensive cached layer. The context is an in-memory tar whose owners, modes and times
are normalised, so identical inputs give identical bytes and the engine's cache hits.
"""
from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

VENV = "/opt/envrepro/venv"
BUILD_DIR = "/etc/envrepro-build"
# Local wheels are locked as ``name @ file:///envrepro/capture/wheels/<file>`` (the capture's
# mount point at run time); the builder stage puts them at the same path.
WHEELS_DIR = "/envrepro/capture/wheels"
USER_UID = 10001
# Distributions whose closure is the heavy layer (PEP 503-normalised names).
TF_ROOTS = frozenset({
    "tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos",
    "tensorflow-aarch64", "tensorflow-cpu-aws", "intel-tensorflow", "tf-nightly", "tf-nightly-cpu",
    "tf-nightly-gpu", "tf-keras", "keras",
})
# Used only when the lock has no ``# via`` lines to follow (e.g. a pip-freeze style lock).
TF_KNOWN_DEPS = frozenset({
    "absl-py", "astunparse", "flatbuffers", "gast", "google-pasta", "grpcio", "h5py", "keras",
    "keras-preprocessing", "libclang", "ml-dtypes", "numpy", "opt-einsum", "packaging", "protobuf",
    "six", "tensorboard", "tensorboard-data-server", "tensorboard-plugin-wit", "tensorflow-estimator",
    "tensorflow-io-gcs-filesystem", "termcolor", "typing-extensions", "wrapt", "optree", "rich",
    "namex",
})
_INDEX_OPTS = ("--index-url", "-i", "--extra-index-url", "--find-links", "-f", "--trusted-host")
_LONG = {"-i": "--index-url", "-f": "--find-links"}
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(===|==|@)\s*([^\s;\\]+)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def is_http_url(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


# -- the lock ----------------------------------------------------------------------------------
@dataclass
class LockEntry:
    """One pinned distribution: its requirement line, hashes and who needs it (``# via``)."""

    name: str
    spec: str                   # e.g. "termcolor==1.1.0" or "pkg @ file:///x.whl" (marker kept)
    hashes: List[str] = field(default_factory=list)
    via: List[str] = field(default_factory=list)

    def render(self) -> str:
        if not self.hashes:
            return self.spec + "\n"
        lines = [self.spec] + [f"    --hash={h}" for h in sorted(set(self.hashes))]
        return " \\\n".join(lines) + "\n"


@dataclass
class Lock:
    entries: List[LockEntry]
    options: List[str]          # option lines kept for pip (http(s) indexes, --only-binary, ...)

    @property
    def has_hashes(self) -> bool:
        return any(e.hashes for e in self.entries)

    def render(self, names: Optional[Set[str]] = None) -> str:
        """Canonical text: options, then entries sorted by name, no comments."""
        chosen = [e for e in self.entries if names is None or e.name in names]
        if not chosen:
            return ""
        return "".join(o + "\n" for o in self.options) + "".join(
            e.render() for e in sorted(chosen, key=lambda e: e.name))


def _logical_lines(text: str) -> List[str]:
    out: List[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.lstrip().startswith("#"):
            if buf:
                out.append(buf)
                buf = ""
            out.append(line)
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append(buf + line)
        buf = ""
    if buf:
        out.append(buf)
    return out


def parse_lock(text: str) -> Lock:
    """Read a pip-tools lock: pins, their ``--hash`` lines and the ``# via`` graph."""
    entries: List[LockEntry] = []
    options: List[str] = []
    current: Optional[LockEntry] = None
    in_via = False
    for line in _logical_lines(text):
        s = line.strip()
        if not s:
            in_via = False
            continue
        if s.startswith("#"):
            body = s[1:].strip()
            if current is not None and body.startswith("via"):
                rest = body[3:].strip()
                current.via += [normalize(v.strip()) for v in rest.split(",") if v.strip() and not v.strip().startswith("-")]
                in_via = not rest
            elif current is not None and in_via and line.startswith(("    #", "\t#")) and body:
                if not body.startswith("-"):
                    current.via.append(normalize(body.split()[0]))
            else:
                in_via = False
            continue
        in_via = False
        if s.startswith("-"):
            opt = s.split()[0].split("=")[0]
            if opt in _INDEX_OPTS:
                value = s[len(opt):].strip(" =")
                if opt == "--trusted-host" or is_http_url(value):
                    options.append(f"{_LONG.get(opt, opt)} {value}")
            elif not opt.startswith(("-e", "--editable", "-r", "-c", "--requirement", "--constraint")):
                options.append(s)
            current = None
            continue
        parts = s.split(" --hash")
        head = parts[0].strip()
        hashes = [p.strip().lstrip("=").strip() for p in parts[1:]]
        m = _REQ.match(head)
        name = normalize(m.group(1)) if m else normalize(re.split(r"[\s=<>!~;@\[]", head, 1)[0])
        current = LockEntry(name=name, spec=head, hashes=hashes)
        entries.append(current)
    return Lock(entries=entries, options=options)


def tf_closure(lock: Lock, roots: Iterable[str] = TF_ROOTS) -> Set[str]:
    """Names of TensorFlow (any flavour in ``roots``) and everything it needs, per ``# via``."""
    present = {e.name for e in lock.entries}
    seeds = {normalize(r) for r in roots} & present
    if not seeds:
        return set()
    if not any(e.via for e in lock.entries):
        return seeds | (set(TF_KNOWN_DEPS) & present)
    children: Dict[str, Set[str]] = {}
    for e in lock.entries:
        for parent in e.via:
            children.setdefault(parent, set()).add(e.name)
    seen = set(seeds)
    todo = list(seeds)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen & present


def split_lock(text: str, roots: Iterable[str] = TF_ROOTS) -> Tuple[str, str]:
    """(heavy.lock, rest.lock) as canonical texts; heavy is "" when the lock has no TensorFlow."""
    lock = parse_lock(text)
    heavy = tf_closure(lock, roots)
    rest = {e.name for e in lock.entries} - heavy
    return lock.render(heavy), lock.render(rest)


def canonical_lock(text: str) -> str:
    """The lock without comments or ordering noise: what the image key hashes."""
    return parse_lock(text).render()


# -- pip configuration for the builder stage ---------------------------------------------------
@dataclass(frozen=True)
class PipSettings:
    """The host's pip settings that make sense inside a build: http(s) URLs only."""

    index_url: Optional[str] = None
    extra_index_urls: Tuple[str, ...] = ()
    trusted_hosts: Tuple[str, ...] = ()
    find_links: Tuple[str, ...] = ()
    cert: Optional[str] = None      # path on the host; its bytes go into the builder stage only
    timeout: int = 60
    retries: int = 5


def render_pip_conf(pip: PipSettings, has_cert: bool) -> str:
    lines = ["[global]"]

    def many(key: str, values: Sequence[str]) -> None:
        if values:
            lines.append(f"{key} =")
            lines.extend(f"    {v}" for v in values)

    if pip.index_url:
        lines.append(f"index-url = {pip.index_url}")
    many("extra-index-url", pip.extra_index_urls)
    many("trusted-host", pip.trusted_hosts)
    many("find-links", pip.find_links)
    if has_cert:
        lines.append(f"cert = {BUILD_DIR}/ca.crt")
    lines += [f"timeout = {pip.timeout}", f"retries = {pip.retries}"]
    return "\n".join(lines) + "\n"


# -- the Dockerfile ----------------------------------------------------------------------------
@dataclass
class BuildSpec:
    """Everything one environment image is built from."""

    base_image: str
    python_version: str
    lock_text: str
    labels: Dict[str, str] = field(default_factory=dict)
    pip: PipSettings = field(default_factory=PipSettings)
    ca_bundle: bytes = b""
    wheels: Dict[str, bytes] = field(default_factory=dict)   # file name -> bytes (capture wheels/)
    python_from_source: bool = False    # base has no Python (CUDA bases): build it in a stage


def package_text(package: str, name: str) -> str:
    """A data file shipped in ``package`` (importlib.resources; Python 3.8 has no ``files``)."""
    import importlib

    try:
        from importlib import resources

        return (resources.files(package) / name).read_text(encoding="utf-8")
    except (ImportError, AttributeError, FileNotFoundError, TypeError, NotADirectoryError):
        pass
    try:
        mod = importlib.import_module(package)
        return (Path(mod.__file__).parent / name).read_text(encoding="utf-8")  # type: ignore[arg-type]
    except (ImportError, OSError, TypeError):
        folder = "images" if package == "envrepro.images" else package.replace(".", "/")
        return (Path(__file__).resolve().parent.parent / folder / name).read_text(encoding="utf-8")


def template_text(name: str = "env.Dockerfile") -> str:
    """A template from package ``envrepro.images`` (pyproject maps it to the ``images/`` folder)."""
    return package_text("envrepro.images", name)


def _label_lines(labels: Dict[str, str]) -> str:
    if not labels:
        return ""
    items = [f"{k}={json.dumps(str(v), ensure_ascii=False).replace('$', chr(92) + '$')}" for k, v in sorted(labels.items())]
    return "LABEL " + " \\\n      ".join(items)


def _install_step(fname: str, require_hashes: bool, find_links: bool) -> str:
    flags = "--no-deps --no-cache-dir" + (" --require-hashes" if require_hashes else "")
    if find_links:
        flags += f" --find-links {WHEELS_DIR}"
    return (f"COPY {fname} {BUILD_DIR}/{fname}\n"
            f"RUN {VENV}/bin/python -m pip install {flags} -r {BUILD_DIR}/{fname}")


def render(spec: BuildSpec) -> str:
    """The Dockerfile text for ``spec`` (what ``envrepro dockerfile`` prints)."""
    lock = parse_lock(spec.lock_text)
    heavy, rest = split_lock(spec.lock_text)
    steps: List[str] = []
    if heavy:
        steps.append("# TensorFlow and its dependency closure first: this layer is shared by every\n"
                     "# environment whose lock differs only outside it.\n"
                     + _install_step("heavy.lock", lock.has_hashes, False))
    if spec.wheels:
        steps.append(f"COPY wheels/ {WHEELS_DIR}/")
    if rest:
        steps.append(_install_step("rest.lock", lock.has_hashes, bool(spec.wheels)))
    xy = ".".join(spec.python_version.split(".")[:2])
    python_stage, python_base = "", spec.base_image
    if spec.python_from_source:
        python_stage = Template(template_text("python-from-source.Dockerfile")).substitute(
            CUDA_BASE=spec.base_image, PYTHON_VERSION=spec.python_version, PYTHON_XY=xy)
        python_base = "envrepro-python"
    text = Template(template_text()).substitute(
        PYTHON_VERSION=spec.python_version, PYTHON_STAGE=python_stage,
        PYTHON_BASE=python_base, INSTALL_STEPS="\n".join(steps), LABELS=_label_lines(spec.labels))
    return re.sub(r"\n{3,}", "\n\n", text)


# -- the build context -------------------------------------------------------------------------
def _add(tar: tarfile.TarFile, name: str, data: Optional[bytes], mode: int = 0o644) -> None:
    ti = tarfile.TarInfo(name)
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.mtime = 0
    if data is None:
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(ti)
        return
    ti.size, ti.mode = len(data), mode
    tar.addfile(ti, io.BytesIO(data))


def build_context(spec: BuildSpec, dockerfile: Optional[str] = None) -> bytes:
    """The build context as tar bytes: same spec, same bytes (so the layer cache hits)."""
    heavy, rest = split_lock(spec.lock_text)
    files: Dict[str, Optional[bytes]] = {
        "Dockerfile": (dockerfile if dockerfile is not None else render(spec)).encode(),
        "build": None,
        "build/pip.conf": render_pip_conf(spec.pip, bool(spec.ca_bundle)).encode(),
        "build/ca.crt": spec.ca_bundle,
    }
    if heavy:
        files["heavy.lock"] = heavy.encode()
    if rest:
        files["rest.lock"] = rest.encode()
    if spec.wheels:
        files["wheels"] = None
        for fname, data in spec.wheels.items():
            files["wheels/" + Path(fname).name] = data
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(files):
            _add(tar, name, files[name])
    return buf.getvalue()
