"""Fill the wheelhouse for a lock on the host, where the user's pip configuration (index,
proxy, CA bundle, credentials) already works, several downloads at a time.

Each missing pin is fetched with ``pip download --no-deps --only-binary :all:`` for the image's
platform (``Target.pip_args``), with ``--require-hashes`` when the lock hashes it: pip picks the
file exactly as pip inside the container would, checks it against the lock, and nothing is built
or run on the host (binary only). The files are then moved into the store, whose key is their
sha256, checked again against the lock entry.

Pins are split into a few ``pip download`` processes run in parallel: the large distributions
(TensorFlow and the like) each get their own, the others share the rest. A pin without any wheel
for the target (an sdist-only release: TF 2.4.1's termcolor and wrapt) is named in pip's error;
it is taken out of its batch, which is run again, and handed back as "source only"
(``envrepro.packages.wheelhouse.sdists`` builds it in a container).
"""
from __future__ import annotations

import concurrent.futures
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from envrepro import progress
from envrepro.packages.pipcmd import packaging_module, redact, run_pip as _run
from envrepro.errors import BuildFailed
from envrepro.sidecar.lockfile import LockEntry, canonical_name
from envrepro.packages.wheelhouse.store import StoreError, WheelStore, digests
from envrepro.packages.wheelhouse.target import Target

Say = Callable[[str], None]
Runner = Callable[[List[str]], Tuple[int, str]]      # argv -> (exit code, combined output)
OnFile = Callable[[str], None]
JOBS = 4
# Distributions large enough to deserve a download of their own.
LARGE = re.compile(r"^(tensorflow.*|tf-nightly.*|tensorboard|jax|jaxlib|torch|grpcio|h5py|numpy|scipy|"
                   r"pandas|nvidia-.*|keras|tf-keras|libclang|ml-dtypes|opencv.*)$")
# pip starting on a file (or, "Saved", done with it); ".metadata" downloads are not the file.
_FILE_EVENT = re.compile(r"^(Processing|Downloading|File was already downloaded|Saved)\s+(\S+)(.*)$")
_NO_WHEEL = re.compile(r"(?:Could not find a version that satisfies the requirement|"
                       r"No matching distribution found for) ([A-Za-z0-9._-]+)")


@dataclass
class Fetched:
    """Where each pin's file is (canonical name -> stored path), and the pins that have no wheel."""

    files: Dict[str, Path] = field(default_factory=dict)
    source_only: List[LockEntry] = field(default_factory=list)
    downloaded: int = 0          # files that came from the index in this call


def applies(entry: LockEntry, target: Target) -> bool:
    """Whether the entry's environment marker holds in the image (evaluated for the target,
    not for this host: ``python_version < "3.9"`` holds for a 3.8 image on a 3.11 host)."""
    m = re.search(r";(.*)$", entry.spec or "")
    if not m:
        return True
    markers = packaging_module("markers")
    env = {"python_version": target.xy, "python_full_version": target.python,
           "implementation_name": target.implementation.lower(),
           "platform_python_implementation": target.implementation, "sys_platform": "linux",
           "platform_system": "Linux", "os_name": "posix", "platform_machine": target.machine,
           "implementation_version": target.python}
    try:
        return bool(markers.Marker(m.group(1).strip()).evaluate(env))
    except Exception:       # an unparseable marker: fetch it; pip in the image decides
        return True


def requirement_line(entry: LockEntry) -> str:
    return f"{entry.name}=={entry.version}" + "".join(f" --hash={h}" for h in entry.hashes)


def batches(entries: Sequence[LockEntry], jobs: int = JOBS) -> List[List[LockEntry]]:
    """Large distributions alone, the others spread over the remaining workers; hashed and
    hashless pins never share a batch (``--require-hashes`` is all or nothing)."""
    out: List[List[LockEntry]] = []
    small: Dict[bool, List[LockEntry]] = {True: [], False: []}
    for e in entries:
        if LARGE.match(e.name):
            out.append([e])
        else:
            small[bool(e.hashes)].append(e)
    for group in small.values():
        if not group:
            continue
        n = max(1, min(len(group), jobs - 1 if out else jobs, (len(group) + 3) // 4))
        out.extend([group[i::n] for i in range(n)])
    return out



def _streams(run: Runner) -> bool:
    """Whether ``run`` takes ``on_line`` (pip itself; test fakes may say so with ``streams``)."""
    return run is _run or bool(getattr(run, "streams", False))


class _Files:
    """Which of a batch's pins pip is done with, read from its output: pip starting on a file
    means the one before is done, ``Saved`` that this one is; the batch's end, that all are."""

    def __init__(self, batch: Sequence[LockEntry], on_file: Optional[OnFile], on_start: Optional[OnFile]):
        self.names = {e.name for e in batch}
        self.done: set = set()
        self.current = ""
        self.on_file, self.on_start = on_file, on_start

    def line(self, line: str) -> None:
        m = _FILE_EVENT.match(line.strip())
        if not m or m.group(2).endswith(".metadata"):
            return
        filename = m.group(2).rstrip("/").rsplit("/", 1)[-1]
        name = dist_name(filename)
        if name not in self.names:
            return
        if m.group(1) == "Saved":
            self.finished([name])
            return
        if self.current and self.current != name:
            self.finished([self.current])
        self.current = name
        if self.on_start is not None and name not in self.done:
            self.on_start(filename + m.group(3).split(" (from ")[0].rstrip())

    def finished(self, names: Sequence[str]) -> None:
        for name in names:
            if name in self.names and name not in self.done:
                self.done.add(name)
                if self.on_file is not None:
                    self.on_file(name)


def _download(batch: List[LockEntry], target: Target, dest: Path, run: Runner, index: Sequence[str] = (),
              on_no_wheel: Optional[Callable[[LockEntry], None]] = None, say: Optional[Say] = None,
              on_file: Optional[OnFile] = None, on_start: Optional[OnFile] = None) -> Tuple[List[LockEntry], str]:
    """Download one batch into ``dest``; (pins without a wheel, "" or the failure text). pip's
    lines go to ``say``'s log as they come when ``run`` streams; ``on_file`` is called with each
    pin's name once its file is there, ``on_start`` with the file pip starts on."""
    todo = list(batch)
    no_wheel: List[LockEntry] = []
    files = _Files(batch, on_file, on_start)

    def on_line(line: str) -> None:
        if say is not None:
            progress.log(say, redact(line))
        files.line(line)

    while todo:
        req = dest / f"req-{todo[0].name}.txt"
        req.write_text("".join(requirement_line(e) + "\n" for e in todo), encoding="utf-8")
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                "--no-cache-dir", "--progress-bar", "off", "--dest", str(dest), *target.pip_args(),
                *index, "-r", str(req)]
        if all(e.hashes for e in todo):
            argv.append("--require-hashes")
        code, out = run(argv, on_line=on_line) if _streams(run) else run(argv)  # type: ignore[call-arg]
        if code == 0:
            files.finished([e.name for e in todo])
            return no_wheel, ""
        names = {canonical_name(n) for n in _NO_WHEEL.findall(out)}
        missing = [e for e in todo if e.name in names]
        if not missing:
            return no_wheel, redact(out)
        no_wheel += missing
        for e in missing:
            if on_no_wheel is not None:
                on_no_wheel(e)          # its sdist can be fetched while this batch goes on
        todo = [e for e in todo if e not in missing]
    return no_wheel, ""


def dist_name(filename: str) -> str:
    """The canonical distribution name of a wheel or sdist file name."""
    if filename.endswith(".whl"):
        return canonical_name(filename.split("-")[0])
    stem = re.sub(r"\.(tar\.gz|tar\.bz2|tgz|zip)$", "", filename)
    return canonical_name(stem.rsplit("-", 1)[0])


def dist_version(filename: str) -> str:
    """The version in a wheel or sdist file name ("" when it has none)."""
    if filename.endswith(".whl"):
        parts = filename.split("-")
        return parts[1] if len(parts) >= 5 else ""
    stem = re.sub(r"\.(tar\.gz|tar\.bz2|tgz|zip)$", "", filename)
    return stem.rsplit("-", 1)[1] if "-" in stem else ""


def same_version(a: str, b: str) -> bool:
    """``a`` and ``b`` name one release (PEP 440 normalised: ``1.0`` is ``1.0.0``)."""
    version = packaging_module("version")
    try:
        return bool(a) and version.Version(a) == version.Version(b)
    except version.InvalidVersion:
        return a == b


def unhashed_parts(target: Target, e: LockEntry, scope: Optional[str] = None) -> List[str]:
    """Where the file of a pin without hash is recorded: ``unhashed/<target>/NAME-VERSION.json``
    when this host fetched it from its index; under ``imported/<scope>/`` when a bundle carried
    it for one capture (``portable.scope_of``), taken for that capture's builds only."""
    parts = ["unhashed", target.ident(), f"{e.name}-{e.version}.json"]
    return ["imported", scope, *parts] if scope else parts


def stored_unhashed(store: WheelStore, target: Target, e: LockEntry, scope: Optional[str] = None) -> Optional[Path]:
    """A pin the lock has no hash for, fetched before for this target (by name and version), or
    carried for the capture ``scope`` names."""
    for parts in ([unhashed_parts(target, e)] + ([unhashed_parts(target, e, scope)] if scope else [])):
        rec = store.read_record(*parts)
        found = store.get(str(rec.get("sha256", ""))) if rec else None
        if found is not None:
            return found
    return None


def fetch(entries: Sequence[LockEntry], target: Target, store: WheelStore, say: Say,
          run: Runner = _run, jobs: int = JOBS, pip: Any = None,
          on_no_wheel: Optional[Callable[[LockEntry], None]] = None,
          on_file: Optional[OnFile] = None, on_start: Optional[OnFile] = None) -> Fetched:
    """Every entry's file in the store (already there, or downloaded now), and the pins that
    have no wheel for ``target``. BuildFailed (exit 4) naming the pins when pip fails otherwise.
    ``pip``: the build's ``PipSettings`` (index URLs, trusted hosts, CA), passed to ``pip
    download`` on top of the host's own pip configuration, which it reads as always;
    ``on_no_wheel``: called (from a worker thread) for each pin found to have no wheel;
    ``on_file``: with each pin's name once its file is in hand (from worker threads too),
    ``on_start``: with the name of each file pip starts on (when pip's output is streamed)."""
    result = Fetched()
    todo: List[LockEntry] = []
    for e in entries:
        found = store.find(e.hashes, target.accepts) if e.hashes else stored_unhashed(store, target, e)
        if found is not None:
            result.files[e.name] = found
            if on_file is not None:
                on_file(e.name)
        else:
            todo.append(e)
    if not todo:
        return result
    from envrepro.packages.compile import index_args

    index = index_args(pip) if pip is not None else []
    where = [redact(u) for u in (getattr(pip, "index_url", None), *(getattr(pip, "extra_index_urls", ()) or ())) if u]
    progress.log(say, f"Fetching {len(todo)} distribution(s) into the wheelhouse ({target.ident()}) from "
                 + (", ".join(where) if where else "the indexes of the host's pip configuration") + ": "
                 + ", ".join(f"{e.name}=={e.version}" for e in todo[:8]) + (" ..." if len(todo) > 8 else ""))
    tmp = store.tmp_dir()
    try:
        groups = batches(todo, jobs)
        folders = [tmp / f"b{i}" for i in range(len(groups))]
        for f in folders:
            f.mkdir()
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(jobs, len(groups)))) as pool:
            outcomes = list(pool.map(lambda gf: _download(gf[0], target, gf[1], run, index, on_no_wheel, say,
                                                          on_file, on_start), zip(groups, folders)))
        failures = [text for _, text in outcomes if text]
        if failures:
            for line in ([] if _streams(run) else failures[0].strip().splitlines()[-40:]):
                progress.log(say, line)             # into the build log (streamed ones are there)
            tail = "\n".join("  | " + line for line in failures[0].strip().splitlines()[-12:])
            raise BuildFailed(f"fetching wheels for {target.ident()} failed:\n{tail}", None,
                              "check the host's pip index settings (pip config list) and that the "
                              "pins exist for Linux and Python " + target.xy)
        result.source_only = [e for nw, _ in outcomes for e in nw]
        by_name = {e.name: e for e in todo}
        for folder in folders:
            for f in sorted(folder.iterdir()):
                if f.name.startswith("req-"):
                    continue
                entry = by_name.get(dist_name(f.name))
                if entry is None:
                    continue
                try:
                    result.files[entry.name] = store.add(f, digests(entry.hashes) if entry.hashes else None)
                except StoreError as e:
                    raise BuildFailed(f"the index served a file the lock does not pin: {e}", None,
                                      "check the index (a mirror serving other files?) or capture again") from None
                result.downloaded += 1
                if not entry.hashes:
                    store.write_record({"sha256": result.files[entry.name].parent.name},
                                       *unhashed_parts(target, entry))
        lost = [e.name for e in todo if e.name not in result.files and e not in result.source_only]
        if lost:
            raise BuildFailed("pip download reported success but left no file for: " + ", ".join(lost),
                              None, "run the command again with --debug and report it")
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return result
