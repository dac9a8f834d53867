"""A lock's direct references (``name @ https://...``): refused unless the user allows them, and
then only an https archive pinned by sha256, which this host downloads itself and the wheelhouse
builder installs like any other pin (docs/threat-model.md, "Direct references").

A direct reference is a URL the capture chose. Left to pip in a Dockerfile build it would be
fetched from a builder stage holding the host's pip configuration (index credentials) and CA
bundle, with a network, and its build backend would run there as root. So:

1. ``check``: a lock with direct references (the capture's own wheels,
   ``file:///envrepro/capture/wheels/...``, aside) is refused before anything is fetched or
   built, exit 2, one line naming the lock line, unless ``--allow-direct-references``
   (``ENVREPRO_ALLOW_DIRECT_REFERENCES=1``) allows them.
2. Even then only ``https://`` URLs of a wheel or an sdist (``.whl``, ``.tar.gz``, ``.zip``) of
   the pin's own name, pinned by sha256 (``#sha256=`` or ``--hash=sha256:``), are taken
   (``parse``): a VCS checkout can't be hash-checked, ``http://`` is plaintext, ``file://`` names
   a path on the capturing machine, a URL with credentials in it is not used.
3. ``fetch``: the host downloads it with urllib (not pip: no index, no netrc, no credential is
   sent), verifying TLS with the host's CA bundle (pip's ``cert``), following redirects to
   https only (at most ``MAX_REDIRECTS``), reading at most ``ENVREPRO_DIRECT_REFERENCE_MAX_MB``;
   the file enters the wheelhouse only when its sha256 is the pinned one. A wheel must fit the
   image; an sdist is built by ``wheelhouse.sdists`` in a container of its own with no network.
4. ``pinned_lock``: in the install plan the reference is ``name==version --hash=sha256:...``,
   installed from the wheelhouse with ``--require-hashes`` (an sdist's built wheel's hash in its
   place, ``installplan``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from envrepro import progress
from envrepro.errors import BuildFailed, EnvreproError
from envrepro.packages.pipcmd import packaging_module, redact
from envrepro.packages.wheelhouse.fetch import dist_name, dist_version
from envrepro.packages.wheelhouse.store import WheelStore, digests, is_sha256, safe_filename
from envrepro.sidecar.layout import WHEELS_MOUNT
from envrepro.sidecar.lockfile import Lock, LockEntry, as_lock, canonical_name

ENV = "ENVREPRO_ALLOW_DIRECT_REFERENCES"
FLAG = "--allow-direct-references"
LOCAL_WHEEL_PREFIX = "file://" + WHEELS_MOUNT + "/"     # the capture's own wheels: not direct references
ARCHIVES = (".whl", ".tar.gz", ".zip")
MAX_MB_ENV = "ENVREPRO_DIRECT_REFERENCE_MAX_MB"
MAX_MB = 2048               # one direct reference's download, at most (a large wheel fits)
MAX_REDIRECTS = 5
TIMEOUT = 60.0              # seconds one read of the download may wait
_SHOWN = 120                # characters of a URL shown in a message
Say = Callable[[str], None]


class DirectReferenceRefused(EnvreproError):
    """A lock's direct reference that is not built (exit 2): not allowed, or of a kind that is
    never built (VCS, http, file, unhashed...)."""


@dataclass(frozen=True)
class DirectRef:
    """An accepted direct reference: an https archive pinned by sha256."""

    entry: LockEntry            # as the lock has it
    url: str                    # what is downloaded: the URL without its fragment
    filename: str
    version: str                # read from the file name
    sha256: Tuple[str, ...]     # the digests the file may have

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def wheel(self) -> bool:
        return self.filename.endswith(".whl")

    def pinned(self) -> LockEntry:
        """The entry as the wheelhouse installs it: ``name==version`` with its sha256, marker kept."""
        m = re.match(r"^\s*([^@;]+?)\s*@\s*\S+\s*(;.*)?$", self.entry.spec or "")
        head = m.group(1) if m else self.entry.name
        marker = f" {m.group(2)}" if m and m.group(2) else ""
        return dataclasses.replace(self.entry, version=self.version, url=None,
                                   hashes=tuple("sha256:" + h for h in self.sha256),
                                   spec=f"{head}=={self.version}{marker}")


def allowed() -> bool:
    """Whether direct references are built: ``--allow-direct-references`` (which sets
    ENVREPRO_ALLOW_DIRECT_REFERENCES=1) or that variable set by the user."""
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


def direct_references(lock: "Union[str, Lock]") -> List[LockEntry]:
    """The lock's ``name @ URL`` entries, the capture's own local wheels left out."""
    return [e for e in as_lock(lock).every if e.url and not e.url.startswith(LOCAL_WHEEL_PREFIX)]


def shown_url(url: str) -> str:
    """A URL as a message shows it: without credentials, cut to a readable length."""
    text = redact(url)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def where(lock: "Union[str, Lock]", entry: LockEntry) -> str:
    """``lock line N: name @ URL`` (the line number when the lock's text has it)."""
    url = entry.url or ""
    number = next((i for i, line in enumerate(as_lock(lock).text.splitlines(), 1) if url and url in line), 0)
    return (f"lock line {number}: " if number else "lock: ") + f"{entry.name} @ {shown_url(url)}"


def check(lock: "Union[str, Lock]", path: Optional[str] = None) -> List[DirectRef]:
    """The lock's direct references, each checked (``parse``); DirectReferenceRefused (one line,
    exit 2) when there are some and they are not allowed (``allowed``), or one is of a kind never
    built. Nothing is fetched."""
    lock = as_lock(lock)
    refs = direct_references(lock)
    if not refs:
        return []
    if not allowed():
        first = refs[0]
        others = [e.name for e in refs[1:]]
        more = (f" (and {len(others)} more: {', '.join(others[:4])}{', ...' if len(others) > 4 else ''})"
                if others else "")
        raise DirectReferenceRefused(
            f"{where(lock, first)} is a direct reference{more}: refused by default, as envrepro would "
            "download it from a URL the capture chose and run its build backend", path,
            f"pass {FLAG} or set {ENV}=1 to build https archives pinned by sha256, fetched by this host "
            f"and built with no network; or pin {first.name}==VERSION from your index and capture again")
    return [parse(e, lock, path) for e in refs]


def parse(entry: LockEntry, lock: "Union[str, Lock, None]" = None, path: Optional[str] = None) -> DirectRef:
    """``entry`` as an accepted direct reference, else DirectReferenceRefused saying why it is
    never built (even with --allow-direct-references)."""
    url = entry.url or ""
    shown = where(lock, entry) if lock is not None else f"{entry.name} @ {shown_url(url)}"

    def refuse(why: str) -> DirectReferenceRefused:
        return DirectReferenceRefused(f"{shown}: {why}, refused even with {FLAG}", path,
                                      "envrepro builds only https:// wheels and sdists pinned by sha256: "
                                      "publish it on your index or an https server, pin it with "
                                      "--hash=sha256:..., and capture again")

    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if "+" in scheme or scheme in ("git", "hg", "svn", "bzr"):
        raise refuse(f"a VCS checkout ({scheme}) can't be hash-checked")
    if scheme == "http":
        raise refuse("plaintext http: anyone on the way can change the file")
    if scheme == "file":
        raise refuse("a file:// URL names a path on the host, not a file the capture carries")
    if scheme != "https" or not parts.hostname:
        raise refuse(f"a {scheme or 'schemeless'} URL: only https archives are downloaded")
    if "@" in parts.netloc:
        raise refuse("the URL carries credentials, which envrepro never sends for a direct reference")
    filename = urllib.parse.unquote(parts.path.rsplit("/", 1)[-1])
    if not filename.endswith(ARCHIVES) or not safe_filename(filename):
        raise refuse("not a wheel or sdist archive (.whl, .tar.gz or .zip)")
    if dist_name(filename) != canonical_name(entry.name):
        raise refuse(f"{filename[:80]} is not a distribution of {entry.name}")
    version = dist_version(filename)
    if not _pep440(version) or (filename.endswith(".whl") and len(filename[:-4].split("-")) not in (5, 6)):
        raise refuse(f"the file name {filename[:80]} has no valid version")
    fragment = urllib.parse.parse_qs(parts.fragment).get("sha256", [])
    frag = [h.lower() for h in fragment if is_sha256(h.lower())]
    pinned = digests(entry.hashes)
    if fragment and not frag:
        raise refuse("its #sha256= fragment is not 64 hex digits")
    if frag and pinned and not set(frag) & set(pinned):
        raise refuse("its #sha256= fragment and its --hash=sha256: options disagree")
    sha = tuple(sorted(set(pinned) & set(frag))) if frag and pinned else tuple(sorted(set(pinned or frag)))
    if not sha:
        raise refuse("no sha256 (#sha256= or --hash=sha256:), so the download can't be checked")
    return DirectRef(entry, urllib.parse.urlunsplit(parts._replace(fragment="")), filename, version, sha)


def _pep440(version: str) -> bool:
    try:
        packaging_module("version").Version(version)
    except Exception:
        return False
    return bool(version)


def by_name(lock: "Union[str, Lock]") -> Dict[str, DirectRef]:
    """The lock's accepted direct references by name (DirectReferenceRefused for another kind)."""
    lock = as_lock(lock)
    return {e.name: parse(e, lock) for e in direct_references(lock)}


def pinned_lock(lock: "Union[str, Lock]") -> Lock:
    """The lock with each direct reference as the wheelhouse installs it (``DirectRef.pinned``);
    its ``text`` stays the original's. The lock itself when it has none."""
    lock = as_lock(lock)
    refs = by_name(lock)
    if not refs:
        return lock
    return dataclasses.replace(lock, entries=tuple(refs[e.name].pinned() if e.name in refs and e.url else e
                                                   for e in lock.entries))


# -- the download (host, urllib) ----------------------------------------------------------------
class _NotHttps(Exception):
    """A redirect to a URL that is not https."""


def max_bytes() -> int:
    """The size one direct reference's download may have (``ENVREPRO_DIRECT_REFERENCE_MAX_MB``)."""
    raw = os.environ.get(MAX_MB_ENV, "").strip()
    if not raw:
        return MAX_MB << 20
    try:
        mb = int(raw)
    except ValueError:
        mb = 0
    if mb <= 0:
        raise EnvreproError(f"{MAX_MB_ENV}={raw[:40]!r} is not a positive number of megabytes", None,
                            f"set it to e.g. {MAX_MB}, or unset it")
    return mb << 20


def opener(cert: Optional[str] = None) -> Any:
    """A urllib opener: TLS verified with ``cert`` (a CA bundle file or folder; None: the
    system's), redirects followed to https only, no credential or cookie handler."""
    import ssl
    import urllib.request

    class HttpsRedirects(urllib.request.HTTPRedirectHandler):
        max_redirections = MAX_REDIRECTS

        def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
            if urllib.parse.urlsplit(newurl).scheme.lower() != "https":
                raise _NotHttps(newurl)
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    ctx = ssl.create_default_context(cafile=cert if cert and os.path.isfile(cert) else None,
                                     capath=cert if cert and os.path.isdir(cert) else None)
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), HttpsRedirects())


def download(ref: DirectRef, dest: Path, cert: Optional[str] = None, open_url: Any = None,
             limit: Optional[int] = None) -> Path:
    """``ref``'s file downloaded into ``dest`` and checked against its sha256; BuildFailed (exit 4)
    naming the reference when the download fails, is too large, is redirected off https or is not
    the file the lock pins. ``open_url``: an opener (``opener``); ``limit``: bytes (``max_bytes``)."""
    import urllib.error
    import urllib.request

    limit = max_bytes() if limit is None else limit
    what = f"the direct reference {ref.name} @ {shown_url(ref.url)}"
    target = dest / ref.filename
    fix = "check the URL and the host's CA bundle (pip config `cert`, PIP_CERT)"
    digest = hashlib.sha256()
    ok = False
    try:
        request = urllib.request.Request(ref.url, headers={"User-Agent": "envrepro (direct reference)"})
        with (open_url or opener(cert)).open(request, timeout=TIMEOUT) as resp:
            final = str(resp.geturl() or ref.url)
            if urllib.parse.urlsplit(final).scheme.lower() != "https":
                raise _NotHttps(final)
            length = str(resp.headers.get("Content-Length") or "")
            if length.isdigit() and int(length) > limit:
                raise BuildFailed(f"{what} is {_size(int(length))}, more than the {_size(limit)} allowed",
                                  None, f"allow more with {MAX_MB_ENV}=MEGABYTES")
            size = 0
            with open(target, "wb") as f:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > limit:
                        raise BuildFailed(f"{what} sent more than the {_size(limit)} allowed", None,
                                          f"allow more with {MAX_MB_ENV}=MEGABYTES")
                    digest.update(chunk)
                    f.write(chunk)
        ok = True
    except _NotHttps as e:
        raise BuildFailed(f"{what} was redirected to {shown_url(str(e))}, which is not https: refused",
                          None, "use the file's final https URL in the lock") from None
    except urllib.error.HTTPError as e:
        raise BuildFailed(f"downloading {what} failed: HTTP {e.code} {redact(str(e.reason))[:80]}", None, fix) from None
    except BuildFailed:
        raise
    except Exception as e:        # URLError, TLS, a reset connection, a timeout...
        reason = getattr(e, "reason", None) or e
        raise BuildFailed(f"downloading {what} failed: {type(e).__name__}: {redact(str(reason))[:160]}",
                          None, fix) from None
    finally:
        if not ok and target.exists():
            target.unlink()
    got = digest.hexdigest()
    if got not in ref.sha256:
        target.unlink()
        raise BuildFailed(f"the direct reference {ref.name}: {ref.filename} from {shown_url(ref.url)} has sha256 "
                          f"{got}, but the lock pins "
                          + " or ".join(ref.sha256) + " (hash mismatch)", None,
                          "the server sends another file than the one captured: check the URL, or capture again")
    return target


def _size(n: int) -> str:
    return f"{n >> 20} MB" if n >= 1 << 20 else f"{n} bytes"


def fetch(refs: List[DirectRef], store: WheelStore, say: Say, cert: Optional[str] = None,
          open_url: Any = None) -> Tuple[Dict[str, Path], int]:
    """Each reference's file in the store (there already, or downloaded now); (name -> stored
    file, how many were downloaded)."""
    files: Dict[str, Path] = {}
    todo: List[DirectRef] = []
    for ref in refs:
        have = next((p for p in (store.get(s) for s in ref.sha256) if p is not None), None)
        if have is not None:
            files[ref.name] = have
        else:
            todo.append(ref)
    if not todo:
        return files, 0
    tmp = store.tmp_dir()
    try:
        with progress.step(say, f"Downloading {len(todo)} direct reference(s)", total=len(todo), unit="files") as s:
            for ref in todo:
                s.update(detail=ref.filename)
                progress.log(say, f"Downloading {ref.name} from {shown_url(ref.url)} (a direct reference, "
                             f"checked against sha256 {ref.sha256[0][:16]}...)")
                files[ref.name] = store.add(download(ref, tmp, cert, open_url), ref.sha256)
                s.advance(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files, len(todo)
