"""Source-only pins (a release with no wheel for the image, e.g. TF 2.4.1's ``termcolor`` and
``wrapt``) built into wheels once per target and toolset, each in a throwaway container of its
own, and cached.

1. The sdist is found on the host's index (pip's own finder, through pip-tools, on the user's pip
   configuration) and downloaded by the host, checked against the lock's sha256, as soon as the
   fetch finds the pin has no wheel (while the other downloads go on). Nothing of it is run on
   the host: ``pip download`` of an sdist would run its ``setup.py`` to read metadata.
2. Each sdist is built by ``pip wheel --no-deps --no-build-isolation --no-index`` in a container
   of the base image of its own, one after the other: no network, read-only root, an
   unprivileged user, no capability, no-new-privileges, memory, pids and wall-clock limits
   (``SDIST_LIMITS``; ``ENVREPRO_SDIST_MEMORY``, ``_PIDS``, ``_TIMEOUT``), a fresh /tmp, and no
   host file but that sdist and its build tools (setuptools, wheel and its declared build
   requirements, fetched as wheels for the target by the host), both read-only, and an empty
   output folder of its own. A hostile sdist can spoil no tool and no other pin's wheel: only
   its own, whose source the lock's hash chose. Its output goes line by line into the build log
   (at most ``LOG_LINES`` lines); only its last ``OUTPUT_LIMIT`` characters stay in memory.
3. The output is checked first: exactly one file, a wheel named for the pin that the image's pip
   takes. Then the wheel goes into the store and a record
   ``built/<target>/<sdist sha256>-<toolset>.json`` says which one; ``<toolset>`` is the sha256 of
   the build tools' file names and hashes (``toolset_digest``), so a build with other tools never
   reuses it. The toolset each set of build requirements got last is kept beside it
   (``toolsets/<target>/<requirements>.json``): the next build of any lock pinning that sdist on
   that target finds the wheel at once, without fetching anything, until the tools fetched for a
   new build differ. A wheel carried in a bundle (``portable.import_dir``) is recorded only for
   the capture it came with (``imported/<scope>/built/<target>/<sdist sha256>.json``,
   ``portable.scope_of``) and is taken only for a build of that capture: a bundle can't declare
   a file "the build of" a public sdist hash for every later capture on this machine. Records
   without a toolset in the shared ``built/`` (older builds, all sdists in one container, or
   imports of older versions) are not trusted.

The lock pins the sdist's hash, not the built wheel's: the install lock given to the image build
carries the built wheel's sha256 instead (``envrepro.packages.wheelhouse.prepare``), so pip still installs with
``--require-hashes``.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import io
import os
import re
import shlex
import shutil
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from envrepro import progress
from envrepro.engine.base import ContainerEngine, Limits, Mount, TimedOut
from envrepro.errors import BuildFailed
from envrepro.sidecar.lockfile import LockEntry, canonical_name
from envrepro.packages.pipcmd import redact, run_pip
from envrepro.packages.wheelhouse.fetch import Runner, dist_name, dist_version, same_version
from envrepro.fsutil import sha256_file
from envrepro.packages.wheelhouse.store import (StoreError, WheelStore, digests, is_sha256, link_or_copy,
                                                safe_filename)
from envrepro.packages.wheelhouse.target import Target

Say = Callable[[str], None]
BUILD_TOOLS = ("setuptools", "wheel")
# One sdist's container: what pip wheel needs of a C extension's build, and then some; the
# environment variables ENVREPRO_SDIST_MEMORY, ENVREPRO_SDIST_PIDS, ENVREPRO_SDIST_TIMEOUT override.
SDIST_LIMITS = Limits(memory="4g", pids=512, seconds=1200.0)
SDIST_TMPFS = {"/tmp": "rw,exec,size=2g"}     # fresh for each sdist; a build may run its scripts there
OUTPUT_LIMIT = 64 * 1024    # characters of each of a build's streams kept in memory (for its error)
LOG_LINES = 20000           # lines of a build's output written to the build log, at most
MAX_LINE = 8192             # characters of one logged line (a longer one is cut into pieces)
BUILD_ENV = {"HOME": "/tmp", "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
             "PIP_CONFIG_FILE": "/dev/null"}
_TOOLS = "python3 -m pip install -q --no-index --find-links /mnt/tools --target /tmp/tools {tools}"
_WHEEL = ("PYTHONPATH=/tmp/tools python3 -m pip wheel --no-deps --no-build-isolation --no-index "
          "--no-cache-dir -w /mnt/out {sdist}")


def record_parts(target: Target, key: str, tools: Optional[str] = None) -> List[str]:
    """Where the record of an sdist built here for ``target`` is (``key``: the sdist's sha256, or
    name-version for a pin without hashes; ``tools``: the digest of the toolset it was built with,
    ``toolset_digest``; None: the record of an older version, read by nothing now). Keyed by
    target, not by base image id, so the same base pulled again finds it."""
    return ["built", target.ident(), f"{key}-{tools}.json" if tools else key + ".json"]


def imported_parts(scope: str, target: Target, key: str) -> List[str]:
    """Where the record of a wheel carried in a bundle for one capture is (``scope``:
    ``portable.scope_of`` that capture; ``key``: the sdist's sha256 the lock pins)."""
    return ["imported", scope, "built", target.ident(), key + ".json"]


def toolset_digest(files: Mapping[str, str]) -> str:
    """The sha256 of a toolset: the file names of the build tools with their sha256s."""
    return hashlib.sha256("".join(f"{name} {sha}\n" for name, sha in sorted(files.items())).encode()).hexdigest()


def toolset_parts(target: Target, requires: Sequence[str]) -> List[str]:
    """Where the toolset last fetched for a set of build requirements on ``target`` is recorded."""
    ident = hashlib.sha256("\n".join(sorted(requires)).encode()).hexdigest()[:32]
    return ["toolsets", target.ident(), ident + ".json"]


def current_toolsets(store: WheelStore, target: Target) -> List[str]:
    """The digests of the toolsets this store fetched last for ``target``, one per set of build
    requirements it has built with."""
    try:
        names = sorted(p.name for p in (store.root / "toolsets" / target.ident()).iterdir())
    except OSError:
        return []
    found: List[str] = []
    for name in names:
        rec = store.read_record("toolsets", target.ident(), name) if name.endswith(".json") else None
        digest = rec.get("digest") if rec else None
        if isinstance(digest, str) and is_sha256(digest) and digest not in found:
            found.append(digest)
    return found


def _keys(entry: LockEntry) -> List[str]:
    return digests(entry.hashes) or [f"{entry.name}-{entry.version}"]


def _recorded(store: WheelStore, places: List[List[str]]) -> Optional[Path]:
    """The stored wheel the first record found at one of ``places`` names; None."""
    for parts in places:
        rec = store.read_record(*parts)
        if rec and isinstance(rec.get("sha256"), str):
            found = store.get(rec["sha256"])
            if found is not None:
                return found
    return None


def built_wheel(store: WheelStore, target: Target, entry: LockEntry, scope: Optional[str] = None) -> Optional[Path]:
    """The wheel built here before from this entry's sdist for this target with a toolset this
    store still uses (``current_toolsets``); else, for a build of the capture ``scope`` names
    (``portable.scope_of``), the wheel its bundle carried for it; None."""
    keys = _keys(entry)
    for tools in current_toolsets(store, target):
        found = _recorded(store, [record_parts(target, key, tools) for key in keys])
        if found is not None:
            return found
    if scope is None:
        return None
    return _recorded(store, [imported_parts(scope, target, key) for key in digests(entry.hashes)])


def check_output(out: Path, entry: LockEntry, target: Target) -> Optional[str]:
    """What is wrong with a build's output folder (None: exactly one regular file, a wheel of this
    pin's name and version that the image's pip takes)."""
    found = sorted(out.iterdir()) if out.is_dir() else []
    names = ", ".join(p.name[:80] for p in found[:5]) or "nothing"
    if len(found) != 1:
        return f"{len(found)} files instead of one wheel ({names})"
    wheel = found[0]
    if wheel.is_symlink() or not wheel.is_file() or not wheel.name.endswith(".whl") or not safe_filename(wheel.name):
        return f"{names}, not a wheel file"
    if dist_name(wheel.name) != canonical_name(entry.name) or not same_version(dist_version(wheel.name), entry.version or ""):
        return f"a wheel of another distribution: {wheel.name}"
    if not target.accepts(wheel.name):
        return f"{wheel.name}, a wheel the image's pip would not install"
    return None


class _LogLines:
    """``on_output`` of a build: its output line by line into the build log, at most LOG_LINES
    lines of at most MAX_LINE characters; a partial line waits for the rest of its stream."""

    def __init__(self, say: Say):
        self.say, self.count = say, 0
        self.pending: Dict[str, str] = {}

    def _log(self, line: str) -> None:
        for i in range(0, max(len(line), 1), MAX_LINE):
            self.count += 1
            if self.count <= LOG_LINES:
                progress.log(self.say, line[i:i + MAX_LINE])

    def __call__(self, stream: str, text: str) -> None:
        *lines, rest = (self.pending.get(stream, "") + text).split("\n")
        for line in lines:
            self._log(line)
        while len(rest) > MAX_LINE:
            self._log(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self.pending[stream] = rest

    def close(self) -> None:
        for stream in sorted(self.pending):
            if self.pending[stream]:
                self._log(self.pending[stream])
        self.pending = {}
        if self.count > LOG_LINES:
            progress.log(self.say, f"envrepro: {self.count - LOG_LINES} more lines of this build not logged")


# -- find and download the sdist (host, no code run) --------------------------------------------
def download_sdist(entry: LockEntry, dest: Path, pip_settings: Mapping[str, Any]) -> Path:
    """The entry's sdist downloaded into ``dest`` (the file whose sha256 the lock pins)."""
    from envrepro.packages import indexhashes

    warnings: List[str] = []
    try:
        repo, urls, _conn = indexhashes._make_repository(pip_settings, warnings)
        if urls:
            indexhashes._use_only(repo, urls, warnings)
        from pip._internal.req.constructors import install_req_from_line

        with repo.allow_all_wheels():
            candidates = list(repo._get_matching_candidates(install_req_from_line(f"{entry.name}=={entry.version}")))
    except BuildFailed:
        raise
    except Exception as e:
        raise BuildFailed(f"could not look up the sdist of {entry.name}=={entry.version} on the index: "
                          f"{redact(str(e))[:200]}", None, "check the host's pip index settings") from None
    wanted = set(digests(entry.hashes))
    links = [c.link for c in candidates if not c.link.is_wheel and safe_filename(c.link.filename)]
    if wanted:
        links = [lk for lk in links if (indexhashes._link_sha256(lk) or "") in wanted] or links
    if not links:
        raise BuildFailed(f"{entry.name}=={entry.version} has neither a wheel for the image nor an sdist "
                          "on the index", None, "check the pin, or the index the host's pip uses")
    last = ""
    for link in links:
        target = dest / link.filename
        try:
            with repo.session.get(link.url.split("#", 1)[0], stream=True, timeout=120) as r:
                r.raise_for_status()
                with open(target, "wb") as f:
                    for chunk in r.iter_content(1 << 20):
                        f.write(chunk)
        except Exception as e:
            last = redact(str(e))[:200]
            continue
        got = sha256_file(target)
        if not wanted or got in wanted:
            return target
        last = (f"{link.filename} has sha256 {got}, but the lock pins "
                + " or ".join(sorted(wanted)) + " (hash mismatch)")
        target.unlink()
    raise BuildFailed(f"could not download the sdist of {entry.name}=={entry.version}: {last}", None,
                      "check the index and the lock's hashes")


def build_requires(sdist: Path) -> List[str]:
    """The sdist's declared build requirements (pyproject.toml ``[build-system] requires``),
    read as data from the archive, never run; setuptools and wheel when it declares none."""
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:  # Python < 3.11 hosts: setuptools only
        return list(BUILD_TOOLS)
    try:
        with tarfile.open(sdist) as tar:
            member = next((m for m in tar.getmembers()
                           if m.isfile() and m.name.count("/") == 1 and m.name.endswith("/pyproject.toml")
                           and m.size < 1 << 20), None)
            if member is None:
                return list(BUILD_TOOLS)
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
        requires = tomllib.load(io.BytesIO(data)).get("build-system", {}).get("requires")
    except Exception:
        return list(BUILD_TOOLS)
    reqs = [str(r) for r in requires] if isinstance(requires, list) else []
    return sorted(set(reqs) | {"wheel"}) if reqs else list(BUILD_TOOLS)


def fetch_tools(requires: List[str], target: Target, dest: Path, run: Runner = run_pip) -> None:
    """The build requirements as wheels for the target (with their dependencies), into ``dest``."""
    argv = [sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "--no-cache-dir",
            "--progress-bar", "off", "--dest", str(dest), *target.pip_args(), *requires]
    code, out = run(argv)
    if code != 0:
        last = redact(out).strip().splitlines()[-1][:200] if out.strip() else f"pip exited {code}"
        raise BuildFailed(f"could not fetch the build tools {', '.join(requires)} for Python {target.xy}: "
                          f"{last}", None, "check the host's pip index settings")


# -- build in a container -------------------------------------------------------------------
class SdistBuilds:
    """The source-only pins of one build: each sdist is downloaded (host, checked against the
    lock) as soon as the pin is known to have no wheel (``start``, from the fetch's threads), with
    setuptools and wheel for the target; then each is built in a container of its own (``build``).
    ``close`` removes the working folder."""

    def __init__(self, store: WheelStore, pip_settings: Mapping[str, Any], target: Target, run: Runner = run_pip):
        self.store, self.pip_settings, self.target, self.run = store, pip_settings, target, run
        self.tmp = store.tmp_dir()
        self.src, self.tools = self.tmp / "src", self.tmp / "tools"
        for d in (self.src, self.tools):
            d.mkdir()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)
        self._jobs: Dict[str, "concurrent.futures.Future[Path]"] = {}
        self._tools: "Optional[concurrent.futures.Future[None]]" = None
        self._lock = threading.Lock()

    def start(self, entry: LockEntry) -> None:
        with self._lock:
            if self._tools is None:    # what nearly every sdist needs, fetched meanwhile
                self._tools = self._pool.submit(fetch_tools, list(BUILD_TOOLS), self.target, self.tools, self.run)
            if entry.name not in self._jobs:
                self._jobs[entry.name] = self._pool.submit(download_sdist, entry, self.src, self.pip_settings)

    def add_sdist(self, entry: LockEntry, sdist: Path) -> None:
        """An sdist the host downloaded and checked itself (a direct reference,
        ``packages.directrefs``): ``build`` builds it like the others, never looking it up on
        the index. ``entry``: its pin (``name==version`` with the sdist's sha256)."""
        local = self.src / f"{entry.name}-direct"
        local.mkdir(exist_ok=True)
        local = local / sdist.name
        if not local.exists():
            link_or_copy(sdist, local)
        done: "concurrent.futures.Future[Path]" = concurrent.futures.Future()
        done.set_result(local)
        with self._lock:
            self._jobs[entry.name] = done

    def build(self, engine: ContainerEngine, base: str, target: Target, entries: List[LockEntry],
              say: Say, run: Runner = run_pip) -> Dict[str, Path]:
        """Build each entry's sdist into a wheel for ``base``, one container each; name -> stored wheel."""
        if not entries:
            return {}
        names = ", ".join(e.name for e in entries)
        with progress.step(say, f"Building from source: {names}", total=len(entries), unit="wheels") as shown:
            for e in entries:
                self.start(e)
            shown.update(detail="downloading the sdists and the build tools")
            sdists = {e.name: self._jobs[e.name].result() for e in entries}
            assert self._tools is not None
            self._tools.result()
            limits = SDIST_LIMITS.from_env("ENVREPRO_SDIST")
            built: Dict[str, Path] = {}
            for n, e in enumerate(sorted(entries, key=lambda e: e.name)):
                built[e.name] = self._build_one(engine, base, target, e, sdists[e.name], self.tmp / f"build-{n}",
                                                say, run, shown, limits)
                shown.update(completed=len(built))
        return built

    def _toolset(self, sdist: Path, target: Target, folder: Path, run: Runner, shown: progress.Step) -> Dict[str, str]:
        """The sdist's build tools in ``folder`` (setuptools and wheel, plus the build backends it
        declares, fetched now), recorded as the toolset its requirements get on this target;
        file name -> sha256."""
        for f in sorted(self.tools.iterdir()):
            link_or_copy(f, folder / f.name)
        requires = build_requires(sdist)
        extra = [r for r in requires if r not in BUILD_TOOLS]
        if extra:                      # declared build backends (flit_core, hatchling...)
            shown.update(detail="fetching its build backends: " + ", ".join(extra))
            fetch_tools(extra, target, folder, run)
        files = {f.name: sha256_file(f) for f in sorted(folder.iterdir())}
        self.store.write_record({"requires": requires, "files": files, "digest": toolset_digest(files)},
                                *toolset_parts(target, requires))
        return files

    def _build_one(self, engine: ContainerEngine, base: str, target: Target, e: LockEntry, sdist: Path,
                   work: Path, say: Say, run: Runner, shown: progress.Step, limits: Limits) -> Path:
        """One sdist built in a container of its own: its wheel, checked and stored, and recorded
        under the sdist's hash and its toolset's."""
        pin = f"{e.name}=={e.version}"
        src, tools, out = work / "src", work / "tools", work / "out"
        for d in (src, tools, out):
            d.mkdir(parents=True)
        link_or_copy(sdist, src / sdist.name)
        shown.update(detail=f"{e.name}: its build tools")
        files = self._toolset(sdist, target, tools, run, shown)
        digest = toolset_digest(files)
        keys = _keys(e)
        have = _recorded(self.store, [record_parts(target, key, digest) for key in keys])
        if have is not None:           # built with these very tools before
            return have
        os.chmod(out, 0o777)           # the build's user (nobody) writes there, nowhere else
        for d in (work, src, tools):
            os.chmod(d, 0o755)
        for f in [src / sdist.name, *tools.iterdir()]:
            os.chmod(f, 0o644)
        names = " ".join(sorted({re.split(r"[<>=!~;\[ ]", r, 1)[0] for r in build_requires(sdist)}))
        script = "set -e; " + _TOOLS.format(tools=names) + " && " + _WHEEL.format(
            sdist=shlex.quote("/mnt/src/" + sdist.name))
        progress.log(say, f"Building {pin} from source in a container of {base} of its own (no network, no host "
                     "files but the sdist, its build tools read-only and an empty output folder; no capability, "
                     f"at most {limits.memory} of memory, {limits.pids} processes, {limits.seconds:g} s)")
        shown.update(detail=f"{e.name} in a container of {base}, no network")
        log = _LogLines(say)
        try:
            code, stdout, stderr = engine.run(
                base, ["sh", "-c", script],
                mounts=[Mount(str(src), "/mnt/src"), Mount(str(tools), "/mnt/tools"),
                        Mount(str(out), "/mnt/out", read_only=False)],
                environment=dict(BUILD_ENV), user="65534:65534", network_disabled=True, read_only=True,
                tmpfs=dict(SDIST_TMPFS), cap_drop=("ALL",), cap_add=(), security_opt=("no-new-privileges",),
                mem_limit=limits.memory, pids_limit=limits.pids, stream=True, on_output=log,
                timeout=limits.seconds, output_limit=OUTPUT_LIMIT)
        except TimedOut as t:
            raise BuildFailed(f"building {pin} from source was still running after {t.seconds:g} s and was "
                              "stopped", None, "allow more with ENVREPRO_SDIST_TIMEOUT=SECONDS") from None
        finally:
            log.close()
        fix = ("it may need a compiler or headers the base image lacks: use a base image that has them "
               "(--base-image), or ENVREPRO_BUILDER=dockerfile")
        if code != 0:
            tail = "\n".join("  | " + line[:300] for line in (stdout + stderr).strip().splitlines()[-12:])
            if code == 137:
                fix = (f"it was killed: out of memory? (the limit is {limits.memory}: allow more with "
                       "ENVREPRO_SDIST_MEMORY)")
            raise BuildFailed(f"building {pin} from source failed (exit {code}):\n{tail}", None, fix)
        problem = check_output(out, e, target)
        if problem is not None:
            raise BuildFailed(f"building {pin} from source left {problem}", None, fix)
        (wheel,) = list(out.iterdir())
        try:
            stored = self.store.add(wheel)
        except StoreError as err:
            raise BuildFailed(f"the wheel built from {e.name} has an unexpected name: {err}") from None
        doc: Dict[str, Any] = {"wheel": stored.name, "sha256": stored.parent.name, "sdist": sdist.name,
                               "sdist_sha256": sha256_file(sdist), "base": base, "target": target.ident(),
                               "tools": files, "tools_sha256": digest}
        for key in keys:
            self.store.write_record(doc, *record_parts(target, key, digest))
        return stored

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
