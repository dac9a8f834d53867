"""The capture's ``requirements.lock`` checked on read, with ``packaging`` (not by hand).

The lock of a capture is untrusted input like its manifest (docs/threat-model.md). It may hold
only what envrepro's lock writer (``packages/lockwriter.py``, ``packages/localwheels.py``) writes:

- ``name==version`` (canonical name, PEP 440 version, an optional environment marker), with
  ``--hash=sha256:<64 hex>`` options;
- ``name @ file:///envrepro/capture/wheels/<file>.whl`` (a local wheel the capture carries);
- ``name @ https://...`` (an archive URL, as pip recorded it) and ``name @ git+https://...``
  (``vcs+proto``: git, hg, svn, bzr over https, http, ssh, git: a VCS checkout);
- comments, ``# via`` annotations and the commented "unsafe" pins (``# setuptools==x``).

Any option line (``--index-url``, ``--trusted-host``, ``-e``, ``-r``...), any other URL or path,
extras, or a name that is not canonical is refused: one InvalidCapture line (exit 2). The
stdlib-only ``sidecar.lockfile`` stays the parser everyone uses; this module only vets the text
before anyone does.
"""
from __future__ import annotations

import re
import urllib.parse
from typing import Optional

from packaging.markers import InvalidMarker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier
from packaging.utils import canonicalize_name

from envrepro.errors import InvalidCapture
from envrepro.sidecar import lockfile
from envrepro.sidecar.layout import WHEELS_MOUNT
from envrepro.sidecar.schema import FIX, _pep440, is_name, shown

HASH_RE = re.compile(r"\Asha256:[0-9a-f]{64}\Z")
WHEEL_FILE_RE = re.compile(r"\A[A-Za-z0-9_.+!%-]+\.whl\Z")
# Archive URLs as pip recorded them (direct_url.json), VCS checkouts as ``vcs+proto://``.
URL_SCHEMES = ("https", "http") + tuple(f"{vcs}+{proto}" for vcs in ("git", "hg", "svn", "bzr")
                                       for proto in ("https", "http", "ssh", "git"))
MAX_LOCK_CHARS = 8 * 1024 * 1024


def _url_ok(url: str) -> Optional[str]:
    """None when envrepro could have written this direct reference, else why not."""
    parts = urllib.parse.urlsplit(url)
    if any(c.isspace() or c in "\"'`$;\\<>|" for c in url):
        return "a URL with shell characters"
    if parts.scheme == "file":
        prefix = f"file://{WHEELS_MOUNT}/"
        name = url[len(prefix):] if url.startswith(prefix) else ""
        if not WHEEL_FILE_RE.match(name) or ".." in name or parts.query or parts.fragment:
            return f"a file URL outside the capture's wheels ({prefix}<file>.whl)"
        return None
    if parts.scheme not in URL_SCHEMES or not parts.netloc:
        return f"a {parts.scheme or 'schemeless'} URL (envrepro writes http(s) archives and VCS URLs)"
    return None


def check_requirement(spec: str) -> Optional[str]:
    """None for a requirement envrepro writes, else why it is refused."""
    try:
        req = Requirement(spec)
    except (InvalidRequirement, InvalidMarker, InvalidSpecifier) as e:
        return f"not a requirement ({str(e).splitlines()[0][:80] if str(e) else type(e).__name__})"
    if not is_name(req.name):
        return f"name {shown(req.name)} is not canonical (expected {canonicalize_name(req.name)!r})"
    if req.extras:
        return "extras are not written by envrepro"
    if req.url is not None:
        return _url_ok(req.url)
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator != "==" or not _pep440(specs[0].version) \
            or "*" in specs[0].version:
        return "expected name==version"
    return None


def _requirement_lines(text: str) -> "list[tuple[int, str]]":
    """(first physical line number, logical line) of each requirement or option line, joined
    over ``\\`` continuations the way ``lockfile`` joins them."""
    out = []
    start, logical = 0, ""
    for number, physical in enumerate(text.splitlines(), 1):
        stripped = physical.strip()
        if logical:
            logical += " " + stripped
        elif not stripped or stripped.startswith("#"):
            continue
        else:
            start, logical = number, stripped
        if logical.endswith("\\"):
            logical = logical[:-1].rstrip()
            continue
        out.append((start, logical))
        logical = ""
    if logical:
        out.append((start, logical))
    return out


def check_lock(text: str, path: str) -> lockfile.Lock:
    """The lock parsed; raises InvalidCapture (one line) unless every line of it is one envrepro
    writes."""
    def bad(line_no: int, why: str) -> None:
        raise InvalidCapture(f"lock line {line_no} refused: {why}", path, FIX)

    if len(text) > MAX_LOCK_CHARS:
        bad(0, "the lock is too large")
    if "\x00" in text:
        bad(0, "the lock holds a NUL byte")
    for line_no, logical in _requirement_lines(text):
        if logical.startswith("-"):
            bad(line_no, f"option {shown(logical.split()[0][:40])} (envrepro's locks carry no pip options)")
        spec, hashes, _comment = lockfile._split_requirement_line(logical)
        for h in hashes:
            if not HASH_RE.match(h):
                bad(line_no, f"hash {shown(h)} is not sha256:<64 hex digits>")
        if any(tok.startswith("-") for tok in spec.split()):
            bad(line_no, "an option inside a requirement line")
        why = check_requirement(spec)
        if why:
            bad(line_no, why)
    lock = lockfile.Lock.parse(text)
    for entry in lock.tools:
        if not (entry.name in lockfile.UNSAFE and _pep440(entry.version)):
            bad(0, f"commented pin {shown(entry.spec)} is not setuptools/wheel/distribute==version")
    return lock
