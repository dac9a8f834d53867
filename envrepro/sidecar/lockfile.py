"""The ``requirements.lock`` format: pip-compile's layout, read and written in one place.

A capture's lock is laid out as ``pip-compile --generate-hashes`` would write it (sorted by
canonical name, ``--hash`` continuation lines, ``# via`` annotations, a trailing commented
"unsafe" section), so the parser reads ours and any pip-compile output alike. The capture side
writes locks with it and the image build reads them with it (image key, heavy/rest layers,
platform translation): one parser, so both sides agree on what a lock says. See docs/format.md.

Standard library only: the save hook reaches this module inside training jobs.
"""
from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from envrepro.sidecar.layout import REQUIREMENTS_IN

# Distributions whose closure is the heavy (first, shared) layer of an environment image: every
# TensorFlow flavour, and Keras.
HEAVY_ROOTS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel",
               "tensorflow-macos", "tensorflow-aarch64", "tensorflow-cpu-aws", "intel-tensorflow",
               "tf-nightly", "tf-nightly-cpu", "tf-nightly-gpu", "tf-keras", "keras")
# TensorFlow's usual dependencies: the heavy closure of a lock that has no "# via" lines to follow
# (a pip-freeze style lock).
HEAVY_KNOWN_DEPS = frozenset({
    "absl-py", "astunparse", "flatbuffers", "gast", "google-pasta", "grpcio", "h5py", "keras",
    "keras-preprocessing", "libclang", "ml-dtypes", "numpy", "opt-einsum", "packaging", "protobuf",
    "six", "tensorboard", "tensorboard-data-server", "tensorboard-plugin-wit",
    "tensorflow-estimator", "tensorflow-io-gcs-filesystem", "termcolor", "typing-extensions",
    "wrapt", "optree", "rich", "namex",
})
# Pinned in a trailing, commented section, as pip-compile does for "unsafe" packages.
UNSAFE = frozenset({"setuptools", "wheel", "distribute"})

MESSAGE_UNSAFE = "# The following packages are considered to be unsafe in a requirements file:"
FROM_IN = "-r " + REQUIREMENTS_IN

_NAME_RE = re.compile(r"[-_.]+")


def canonical_name(name: str) -> str:
    """PEP 503 normalised name (same as packaging.utils.canonicalize_name)."""
    return _NAME_RE.sub("-", name).lower()


def is_http_url(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in ("http", "https")


@dataclass(frozen=True)
class LockEntry:
    """One requirement of a lock. Unpacks as ``name, version, hashes, url``."""

    name: str                       # canonical name
    version: Optional[str]          # None for a VCS URL (or a URL without a version in it)
    hashes: Tuple[str, ...]         # "sha256:..." strings
    url: Optional[str]              # direct reference (``name @ url``), else None
    via: Tuple[str, ...] = ()       # parents from the "# via" annotation ("-r requirements.in" too)
    unsafe: bool = False            # from the commented "unsafe" section
    spec: str = ""                  # the requirement as written (extras, marker), no hash/comment

    @property
    def requirement(self) -> str:
        """What pip is given: the line as written, else rebuilt from the fields."""
        if self.spec:
            return self.spec
        if self.url:
            return f"{self.name} @ {self.url}"
        return f"{self.name}=={self.version}" if self.version else self.name

    @property
    def parents(self) -> List[str]:
        """Canonical names of the distributions that need this one (``-r``/``-c`` dropped)."""
        return [canonical_name(v.split()[0]) for v in self.via
                if v.strip() and not v.strip().startswith("-")]

    def _tuple(self) -> Tuple[str, Optional[str], Tuple[str, ...], Optional[str]]:
        return (self.name, self.version, self.hashes, self.url)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._tuple())

    def __getitem__(self, index: int) -> Any:
        return self._tuple()[index]

    def __len__(self) -> int:
        return 4


def _annotation(required_by: Iterable[str]) -> str:
    """pip-compile's "split" annotation style."""
    items = sorted(set(required_by))
    if len(items) == 1:
        return "# via " + items[0]
    return "\n    ".join(["# via"] + ["#   " + item for item in items])


def format_entry(spec: str, hashes: Iterable[str], via: Iterable[str]) -> str:
    line = spec
    for h in sorted(set(hashes)):
        line += f" \\\n    --hash={h}"
    via = list(via)
    if via:
        line += "\n    " + _annotation(via)
    return line


def render_lock_text(entries: Iterable[LockEntry], header: Sequence[str] = ()) -> str:
    """A lock file in pip-compile's layout (sorted, ``--hash`` lines, ``# via`` annotations) from
    parsed entries, e.g. a lock translated for Linux; ``header``: comment lines, ``#`` added."""
    lines = [("# " + h).rstrip() for h in header]
    for e in sorted(entries, key=lambda e: e.name):
        if not e.unsafe:
            lines.append(format_entry(e.requirement, e.hashes, e.via))
    return "\n".join(lines) + "\n"


_WHEEL_VERSION_RE = re.compile(r"^[^-]+-([^-]+)-")
_UNSAFE_PIN_RE = re.compile(r"^#\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(\S+)\s*$")


def version_from_url(url: str) -> Optional[str]:
    path = urllib.parse.urlsplit(url).path
    filename = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    if filename.endswith(".whl"):
        m = _WHEEL_VERSION_RE.match(filename)
        if m:
            return m.group(1)
    return None


def _logical_lines(text: str) -> Iterator[Tuple[str, str]]:
    """(kind, line): "req" for a requirement or option line with its ``\\`` continuations
    joined, "comment" for a comment line (kept as written, indentation included)."""
    logical = ""
    for physical in text.splitlines():
        stripped = physical.strip()
        if logical:                       # continuation of a requirement line
            logical += " " + stripped
        elif not stripped:
            yield "blank", ""
            continue
        elif stripped.startswith("#"):
            yield "comment", physical.rstrip()
            continue
        else:
            logical = stripped
        if logical.endswith("\\"):
            logical = logical[:-1].rstrip()
            continue
        yield "req", logical
        logical = ""
    if logical:
        yield "req", logical


def _split_requirement_line(line: str) -> Tuple[str, List[str], str]:
    """(spec, hashes, inline comment) of one logical requirement line.

    ``--hash=x`` and ``--hash x`` both count; a ``#`` starting a token ends the requirement
    (pip's own comment rule: URL fragments like ``#egg=`` are inside a token).
    """
    tokens = line.split()
    spec: List[str] = []
    hashes: List[str] = []
    comment = ""
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("#"):
            comment = " ".join(tokens[i:])
            break
        if tok == "--hash" and i + 1 < len(tokens):
            hashes.append(tokens[i + 1])
            i += 2
            continue
        if tok.startswith("--hash="):
            hashes.append(tok.split("=", 1)[1])
        else:
            spec.append(tok)
        i += 1
    return " ".join(spec), hashes, comment


def parse_lock(text: str, include_unsafe: bool = False) -> List[LockEntry]:
    """Entries of a lock (ours, or any pip-compile output): name, version, hashes, url, via.

    ``include_unsafe`` also returns the commented pins of the trailing "unsafe" section
    (``# setuptools==x``) with ``unsafe=True``. Option lines (``--index-url``...) are not
    entries (see :func:`lock_options`); ``-e URL#egg=name`` is read as ``name @ URL``.
    """
    entries: List[LockEntry] = []
    pending: Optional[Dict[str, Any]] = None
    via_open = False        # after a bare "# via", "#   x" lines add parents
    in_unsafe = False

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            entries.append(LockEntry(pending["name"], pending["version"],
                                     tuple(pending["hashes"]), pending["url"],
                                     tuple(pending["via"]), pending["unsafe"], pending["spec"]))
            pending = None

    for kind, physical in _logical_lines(text):
        if kind == "blank":
            via_open = False
            continue
        if kind == "comment":
            stripped = physical.strip()
            body = stripped[1:].strip()
            if pending is not None and physical[:1].isspace():
                if body == "via":
                    via_open = True
                    continue
                if body.startswith("via "):
                    pending["via"].extend(s.strip() for s in body[4:].split(",") if s.strip())
                    via_open = False
                    continue
                if via_open and stripped.startswith("#   "):
                    pending["via"].append(body)
                    continue
            via_open = False
            if stripped == MESSAGE_UNSAFE or stripped.startswith("# WARNING: The following "
                                                                 "packages were not pinned"):
                flush()
                in_unsafe = True
                continue
            m = _UNSAFE_PIN_RE.match(stripped)
            if in_unsafe and m and include_unsafe:
                flush()
                pending = {"name": canonical_name(m.group(1)), "version": m.group(2),
                           "hashes": [], "url": None, "via": [], "unsafe": True,
                           "spec": f"{m.group(1)}=={m.group(2)}"}
            continue
        line = physical
        via_open = False
        if line.startswith(("-e ", "--editable ", "--editable=")):
            editable_url = re.split(r"[ =]", line, 1)[1].strip().split()[0]
            egg = re.search(r"[#&]egg=([^&]+)", editable_url)
            line = f"{egg.group(1) if egg else editable_url} @ {editable_url}"
        elif line.startswith("-"):        # options (--index-url ...): not requirements
            flush()
            continue
        flush()
        spec, hashes, comment = _split_requirement_line(line)
        req = spec.split(" ;", 1)[0].split(";", 1)[0].strip()
        url: Optional[str] = None
        version: Optional[str] = None
        if " @ " in req:
            name, url = (s.strip() for s in req.split(" @ ", 1))
            version = version_from_url(url)
        elif "==" in req:
            name, version = (s.strip() for s in req.split("==", 1))
            version = version.lstrip("=").strip()
        else:
            name = req
        name = name.split("[", 1)[0].strip()
        via = [v.strip() for v in comment.lstrip("#").strip()[4:].split(",") if v.strip()] \
            if re.match(r"^#\s*via\s", comment) else []
        pending = {"name": canonical_name(name), "version": version, "hashes": hashes,
                   "url": url, "via": via, "unsafe": False, "spec": spec}
    flush()
    return entries


_INDEX_OPTS = ("--index-url", "-i", "--extra-index-url", "--find-links", "-f", "--trusted-host")
_LONG_OPTS = {"-i": "--index-url", "-f": "--find-links"}


def lock_options(text: str) -> List[str]:
    """The pip options a lock carries that still make sense inside an image build, in order:
    http(s) index and find-links URLs, trusted hosts and the others (``--only-binary``...);
    local paths, ``-r``/``-c`` and editables are dropped."""
    options: List[str] = []
    for kind, line in _logical_lines(text):
        if kind != "req" or not line.startswith("-"):
            continue
        opt = line.split()[0].split("=")[0]
        if opt in _INDEX_OPTS:
            value = line[len(opt):].strip(" =")
            if opt == "--trusted-host" or is_http_url(value):
                options.append(f"{_LONG_OPTS.get(opt, opt)} {value}")
        elif not opt.startswith(("-e", "--editable", "-r", "-c", "--requirement",
                                 "--constraint", "--hash")):
            options.append(line)
    return options


def render_entries(entries: Iterable[LockEntry], options: Sequence[str] = ()) -> str:
    """Canonical text of some entries: the options, then one requirement per entry sorted by
    name with its sorted hashes, no comments ("" for no entries).

    Byte-stable on purpose: the image key hashes it, and the heavy/rest files of a build
    context are rendered by it, so an unchanged TensorFlow closure keeps its cached layer.
    """
    chosen = sorted(entries, key=lambda e: e.name)
    if not chosen:
        return ""
    out = [o + "\n" for o in options]
    for e in chosen:
        out.append(" \\\n".join([e.requirement] + [f"    --hash={h}"
                                                     for h in sorted(set(e.hashes))]) + "\n")
    return "".join(out)


@dataclass(frozen=True)
class Lock:
    """A lock parsed once: its text, its entries (the commented setuptools/wheel pins apart) and
    its pip options. A capture's is parsed when the capture is read (``Capture.lock``), a
    translated one when it is made; from there the lock travels parsed (image key, Dockerfile,
    install plan, wheelhouse, doctor), never as text to parse again."""

    text: str
    entries: Tuple[LockEntry, ...]          # the requirements, in lock order
    tools: Tuple[LockEntry, ...] = ()       # the commented "unsafe" pins (setuptools, wheel)
    options: Tuple[str, ...] = ()           # pip options still valid in an image (lock_options)

    @classmethod
    def parse(cls, text: str) -> "Lock":
        every = parse_lock(text, include_unsafe=True)
        return cls(text, tuple(e for e in every if not e.unsafe), tuple(e for e in every if e.unsafe),
                   tuple(lock_options(text)))

    @property
    def every(self) -> List[LockEntry]:
        """Requirements and commented pins together (``parse_lock(text, include_unsafe=True)``)."""
        return list(self.entries) + list(self.tools)

    @property
    def canonical(self) -> str:
        """Without comments or ordering noise: what the image key hashes."""
        return render_entries(self.entries, self.options)


def as_lock(lock: "Union[str, Lock]") -> Lock:
    """``lock`` as a :class:`Lock`: parsed when it is still text (tests, tools), else as it is."""
    return lock if isinstance(lock, Lock) else Lock.parse(lock)


def canonical_lock(lock: "Union[str, Lock]") -> str:
    """The lock without comments or ordering noise: what the image key hashes."""
    return as_lock(lock).canonical


def _entries(lock_entries: "Union[str, Lock, Sequence[LockEntry]]") -> List[LockEntry]:
    if isinstance(lock_entries, (str, Lock)):
        return list(as_lock(lock_entries).entries)
    return list(lock_entries)


def has_hashes(lock_entries: "Union[str, Lock, Sequence[LockEntry]]") -> bool:
    """True when every requirement of the lock carries a hash (so ``--require-hashes`` works).

    pip's hash checking is all-or-nothing: a lock where only some lines have hashes can't be
    installed in one ``pip install`` call (see ``LockResult.missing_hashes``; the image build
    installs the hashless ones in a separate, unverified step).
    """
    entries = _entries(lock_entries)
    entries = [e for e in entries if not e.unsafe]
    return bool(entries) and all(e.hashes for e in entries)


def split_closure(lock_entries: "Union[str, Lock, Sequence[LockEntry]]",
                  roots: Sequence[str] = HEAVY_ROOTS) -> Tuple[List[LockEntry], List[LockEntry]]:
    """(heavy, rest): the roots present in the lock and everything they pull in (from the
    ``# via`` graph), then the others, each in lock order. For a two-layer image build.

    A lock without any ``# via`` parent (pip-freeze style) puts the roots and TensorFlow's
    usual dependencies (``HEAVY_KNOWN_DEPS``) in the heavy part.
    """
    entries = _entries(lock_entries)
    children: Dict[str, Set[str]] = {}
    for e in entries:
        for parent in e.parents:
            children.setdefault(parent, set()).add(e.name)
    present = {e.name for e in entries}
    heavy: Set[str] = set()
    stack = [canonical_name(r) for r in roots if canonical_name(r) in present]
    if stack and not children:
        heavy = set(stack) | (set(HEAVY_KNOWN_DEPS) & present)
        stack = []
    while stack:
        name = stack.pop()
        if name in heavy:
            continue
        heavy.add(name)
        stack.extend(c for c in children.get(name, ()) if c not in heavy)
    return ([e for e in entries if e.name in heavy], [e for e in entries if e.name not in heavy])
