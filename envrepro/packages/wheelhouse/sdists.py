"""Source-only pins (a release with no wheel for the image, e.g. TF 2.4.1's ``termcolor`` and
``wrapt``) built into wheels once per target, in a throwaway container, and cached.

1. The sdist is found on the host's index (pip's own finder, through pip-tools, on the user's pip
   configuration) and downloaded by the host, checked against the lock's sha256, as soon as the
   fetch finds the pin has no wheel (while the other downloads go on). Nothing of it is run on
   the host: ``pip download`` of an sdist would run its ``setup.py`` to read metadata.
2. All of a build's sdists are built by ``pip wheel --no-deps --no-build-isolation --no-index`` in
   one container of the base image: no network, read-only root, an unprivileged user, no host file
   but the sdists and the build tools (setuptools, wheel and the sdists' declared build
   requirements, fetched as wheels for the target by the host) mounted read-only, and an empty
   output folder.
3. The wheel goes into the store; a record ``built/<base>/<sdist sha256>.json`` says which one, so
   the next build of any lock pinning that sdist on that base finds it at once.

The lock pins the sdist's hash, not the built wheel's: the install lock given to the image build
carries the built wheel's sha256 instead (``envrepro.packages.wheelhouse.prepare``), so pip still installs with
``--require-hashes``.
"""
from __future__ import annotations

import concurrent.futures
import io
import os
import re
import shutil
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from envrepro import progress
from envrepro.engine.base import ContainerEngine, Mount
from envrepro.errors import BuildFailed
from envrepro.sidecar.lockfile import LockEntry
from envrepro.packages.pipcmd import redact, run_pip
from envrepro.packages.wheelhouse.fetch import Runner
from envrepro.fsutil import sha256_file
from envrepro.packages.wheelhouse.store import StoreError, WheelStore, digests, safe_filename
from envrepro.packages.wheelhouse.target import Target

Say = Callable[[str], None]
BUILD_TIMEOUT = 1200
BUILD_TOOLS = ("setuptools", "wheel")
_TOOLS = "python3 -m pip install -q --no-index --find-links /mnt/tools --target /tmp/tools {tools}"
_WHEEL = ('mkdir /mnt/out/{name} && PYTHONPATH=/tmp/tools python3 -m pip wheel --no-deps '
          '--no-build-isolation --no-index --no-cache-dir -w /mnt/out/{name} "/mnt/src/{sdist}"')


def record_parts(target: Target, key: str) -> List[str]:
    """Where the record of an sdist built for ``target`` is (``key``: the sdist's sha256, or
    name-version for a pin without hashes). Keyed by target, not by base image id, so a wheelhouse
    carried in a bundle is found on another machine with its own copy of the base."""
    return ["built", target.ident(), key + ".json"]


def built_wheel(store: WheelStore, target: Target, entry: LockEntry) -> Optional[Path]:
    """The wheel built before from this entry's sdist for this target, or None."""
    keys = digests(entry.hashes) or [f"{entry.name}-{entry.version}"]
    for key in keys:
        rec = store.read_record(*record_parts(target, key))
        if rec and isinstance(rec.get("sha256"), str):
            found = store.get(rec["sha256"])
            if found is not None:
                return found
    return None


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
    lock) as soon as the pin is known to have no wheel (``start``, from the fetch's threads), then
    one container builds them all (``build``). ``close`` removes the working folder."""

    def __init__(self, store: WheelStore, pip_settings: Mapping[str, Any], target: Target, run: Runner = run_pip):
        self.store, self.pip_settings, self.target, self.run = store, pip_settings, target, run
        self.tmp = store.tmp_dir()
        self.src, self.tools, self.out = self.tmp / "src", self.tmp / "tools", self.tmp / "out"
        for d in (self.src, self.tools, self.out):
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

    def build(self, engine: ContainerEngine, base: str, target: Target, entries: List[LockEntry],
              say: Say, run: Runner = run_pip) -> Dict[str, Path]:
        """Build every entry's sdist into a wheel for ``base`` in one container; name -> stored wheel."""
        if not entries:
            return {}
        names = ", ".join(e.name for e in entries)
        with progress.step(say, f"Building from source: {names}", total=len(entries), unit="wheels") as shown:
            built = self._build(engine, base, target, entries, say, run, shown)
            shown.update(completed=len(built))
        return built

    def _build(self, engine: ContainerEngine, base: str, target: Target, entries: List[LockEntry],
               say: Say, run: Runner, shown: progress.Step) -> Dict[str, Path]:
        for e in entries:
            self.start(e)
        shown.update(detail="downloading the sdists and the build tools")
        sdists = {e.name: self._jobs[e.name].result() for e in entries}
        assert self._tools is not None
        self._tools.result()
        requires = sorted({r for s in sdists.values() for r in build_requires(s)})
        extra = [r for r in requires if r not in BUILD_TOOLS]
        if extra:                      # declared build backends (flit_core, hatchling...)
            shown.update(detail="fetching their build backends: " + ", ".join(extra))
            fetch_tools(extra, target, self.tools, run)
        os.chmod(self.out, 0o777)
        for d in (self.src, self.tools):
            os.chmod(d, 0o755)
        for f in list(self.src.iterdir()) + list(self.tools.iterdir()):
            os.chmod(f, 0o644)
        tools = " ".join(sorted({re.split(r"[<>=!~;\[ ]", r, 1)[0] for r in requires}))
        steps = [_TOOLS.format(tools=tools)] + [_WHEEL.format(name=name, sdist=sdist.name)
                                               for name, sdist in sorted(sdists.items())]
        pins = ", ".join(f"{e.name}=={e.version}" for e in entries)
        progress.log(say, f"Building {pins} from source in a container of {base} "
                     "(no network, no host files but the sdists and their build tools)")
        shown.update(detail=f"in a container of {base}, no network")
        code, stdout, stderr = engine.run(
            base, ["sh", "-c", "set -e; " + " && ".join(steps)],
            mounts=[Mount(str(self.src), "/mnt/src"), Mount(str(self.tools), "/mnt/tools"),
                    Mount(str(self.out), "/mnt/out", read_only=False)],
            environment={"HOME": "/tmp", "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            user="65534:65534", network_disabled=True, read_only=True,
            tmpfs={"/tmp": "rw,exec,size=2g"}, mem_limit="4g", stream=False, timeout=BUILD_TIMEOUT)
        for line in (stdout + stderr).splitlines():
            progress.log(say, line)            # pip's output, into the build log
        built: Dict[str, Path] = {}
        for e in entries:
            folder = self.out / e.name
            wheels = [p for p in folder.iterdir() if p.name.endswith(".whl")] if folder.is_dir() else []
            if code != 0 or len(wheels) != 1:
                tail = "\n".join("  | " + line for line in (stdout + stderr).strip().splitlines()[-12:])
                raise BuildFailed(f"building {pins} from source failed (exit {code}):\n{tail}", None,
                                  "it may need a compiler or headers the base image lacks: use a base "
                                  "image that has them (--base-image), or ENVREPRO_BUILDER=dockerfile")
            try:
                stored = self.store.add(wheels[0])
            except StoreError as err:
                raise BuildFailed(f"the wheel built from {e.name} has an unexpected name: {err}") from None
            doc: Dict[str, Any] = {"wheel": stored.name, "sha256": stored.parent.name,
                                   "sdist": sdists[e.name].name, "sdist_sha256": sha256_file(sdists[e.name]),
                                   "base": base, "target": target.ident()}
            for key in digests(e.hashes) or [f"{e.name}-{e.version}"]:
                self.store.write_record(doc, *record_parts(target, key))
            built[e.name] = stored
        return built

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
