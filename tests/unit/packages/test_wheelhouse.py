"""The host wheelhouse (envrepro.packages.wheelhouse): the store, fetching with pip for the image's
platform, sdist-only pins, the install plan, and the folder a bundle carries. pip and Docker are
faked: ``pip download`` by a runner that writes the files a test chose, the engine by FakeEngine."""
import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from envrepro.errors import BuildFailed, InvalidCapture
from envrepro.sidecar import lockfile
from envrepro.sidecar.manifest import Capture
from envrepro.packages import installplan
from envrepro.packages.wheelhouse import fetch, prepare as plan, portable, sdists
from envrepro.packages.wheelhouse.store import StoreError, WheelStore, safe_filename
from envrepro.packages.wheelhouse.target import Target, parse_probe

try:
    from .fakes import FakeEngine, image
except ImportError:
    from fakes import FakeEngine, image

TARGET = Target(python="3.8.18", glibc=(2, 36))
FILES = {  # what the fake index serves: file name -> bytes
    "six-1.16.0-py2.py3-none-any.whl": b"six wheel",
    "numpy-1.19.5-cp38-cp38-manylinux2010_x86_64.whl": b"numpy wheel",
    "tensorflow_cpu-2.4.1-cp38-cp38-manylinux2010_x86_64.whl": b"tf wheel",
    "setuptools-56.0.0-py3-none-any.whl": b"setuptools wheel",
    "termcolor-1.1.0.tar.gz": b"termcolor sdist",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(filename: str) -> str:
    name, version = fetch.dist_name(filename), re.split(r"-", filename)[1].replace(".tar.gz", "")
    return f"{name}=={version} \\\n    --hash=sha256:{sha(FILES[filename])}\n"


LOCK = (entry("numpy-1.19.5-cp38-cp38-manylinux2010_x86_64.whl") + entry("six-1.16.0-py2.py3-none-any.whl")
        + entry("tensorflow_cpu-2.4.1-cp38-cp38-manylinux2010_x86_64.whl").replace(
            "\n", "\n    # via -r requirements.in\n", 1).replace("\\\n    # via -r requirements.in\n", "\\\n")
        + "termcolor==1.1.0 \\\n    --hash=sha256:" + sha(FILES["termcolor-1.1.0.tar.gz"]) + "\n"
        + "\n# The following packages are considered to be unsafe in a requirements file:\n# setuptools==56.0.0\n")


class FakePip:
    """``pip download``: writes each requested pin's wheel into --dest; a pin with only an sdist
    fails the way pip does; records every argv."""

    def __init__(self, files=None, fail=None):
        self.files = dict(FILES if files is None else files)
        self.seen = []
        self.fail = fail

    @property
    def calls(self):
        return [argv for argv, _ in self.seen]

    @property
    def reqs(self):
        return [req for _, req in self.seen]

    def __call__(self, argv):
        # one append per call: batches run in threads, so two lists could pair up wrongly
        self.seen.append((argv, Path(argv[argv.index("-r") + 1]).read_text() if "-r" in argv else ""))
        if self.fail:
            return 1, self.fail
        dest = Path(argv[argv.index("--dest") + 1])
        if "-r" not in argv:            # build tools for an sdist build
            for req in argv[argv.index("--abi") + 2:]:
                (dest / f"{req}-1.0-py3-none-any.whl").write_bytes(req.encode())
            return 0, ""
        pins = [line.split()[0] for line in Path(argv[argv.index("-r") + 1]).read_text().splitlines()]
        for pin in pins:
            name, version = pin.split("==")
            wheels = [f for f in self.files if f.endswith(".whl") and fetch.dist_name(f) == name and f"-{version}-" in f]
            if not wheels:
                return 1, f"ERROR: Could not find a version that satisfies the requirement {pin} (from versions: none)"
        for pin in pins:
            name, version = pin.split("==")
            for f in self.files:
                if f.endswith(".whl") and fetch.dist_name(f) == name:
                    (dest / f).write_bytes(self.files[f])
        return 0, ""


@pytest.fixture
def store(tmp_path):
    return WheelStore(tmp_path / "wheels")


def test_the_store_keeps_files_by_sha256_and_refuses_what_the_lock_does_not_pin(store, tmp_path):
    f = tmp_path / "six-1.16.0-py2.py3-none-any.whl"
    f.write_bytes(b"six wheel")
    with pytest.raises(StoreError, match="which the lock does not pin"):
        store.add(f, {"0" * 64})
    assert store.get(sha(b"six wheel")) is None
    stored = store.add(f, {sha(b"six wheel")})
    assert stored.read_bytes() == b"six wheel" and stored.parent.name == sha(b"six wheel")
    assert store.find(["sha256:" + "1" * 64, "sha256:" + sha(b"six wheel")]) == stored
    assert store.add(f) == stored                       # adding it again is a no-op
    assert not safe_filename("../x.whl") and not safe_filename("a/b.whl") and not safe_filename("x.sh")
    with pytest.raises(StoreError):
        store.add(f, None, "../evil.whl")


def test_large_distributions_download_alone_and_hashed_pins_never_share_with_hashless():
    entries = lockfile.parse_lock(LOCK, include_unsafe=True)
    groups = fetch.batches(entries, jobs=4)
    assert ["tensorflow-cpu"] in [[e.name for e in g] for g in groups]
    assert ["numpy"] in [[e.name for e in g] for g in groups]
    for g in groups:
        assert len({bool(e.hashes) for e in g}) == 1


def test_markers_are_evaluated_for_the_image_not_for_this_host():
    old = lockfile.parse_lock('backports-zoneinfo==0.2.1 ; python_version < "3.9"\n')[0]
    mac = lockfile.parse_lock('appnope==0.1.3 ; sys_platform == "darwin"\n')[0]
    assert fetch.applies(old, TARGET) and not fetch.applies(mac, TARGET)
    assert not fetch.applies(old, Target(python="3.11.7"))


def test_fetch_downloads_for_the_target_platform_verifies_and_hands_back_sdist_only_pins(store):
    pip = FakePip()
    entries = plan.entries_for(LOCK, TARGET)
    got = fetch.fetch(entries, TARGET, store, lambda line: None, run=pip)
    assert sorted(got.files) == ["numpy", "setuptools", "six", "tensorflow-cpu"]
    assert [e.name for e in got.source_only] == ["termcolor"]
    for argv in pip.calls:
        assert "--only-binary" in argv and ":all:" in argv and "--no-deps" in argv
        assert argv[argv.index("--python-version") + 1] == "3.8.18" and argv[argv.index("--abi") + 1] == "cp38"
        assert "manylinux_2_36_x86_64" in argv and "manylinux2014_x86_64" in argv
    assert all("--require-hashes" in a for a, req in pip.seen if "setuptools" not in req)
    assert not any("--require-hashes" in a for a, req in pip.seen if "setuptools" in req)
    again = FakePip()
    assert fetch.fetch(entries, TARGET, store, lambda line: None, run=again).downloaded == 0
    assert [req for req in again.reqs if "termcolor" not in req] == []


def test_a_file_the_lock_does_not_pin_is_refused_and_pip_failures_are_one_paragraph(store):
    evil = dict(FILES, **{"six-1.16.0-py2.py3-none-any.whl": b"not the pinned six"})
    entries = [e for e in plan.entries_for(LOCK, TARGET) if e.name == "six"]
    with pytest.raises(BuildFailed, match="does not pin"):
        fetch.fetch(entries, TARGET, store, lambda line: None, run=FakePip(evil))
    assert store.find(entries[0].hashes) is None
    failing = FakePip(fail="ERROR: HTTP error 401 while getting https://user:s3cret@index.example/six.whl")
    with pytest.raises(BuildFailed) as e:
        fetch.fetch(entries, TARGET, store, lambda line: None, run=failing)
    assert "s3cret" not in str(e.value) and "401" in str(e.value)


def test_the_install_plan_pins_the_built_wheel_of_an_sdist_by_its_own_hash(store, tmp_path):
    built = tmp_path / "termcolor-1.1.0-py3-none-any.whl"
    built.write_bytes(b"built termcolor")
    stored = store.add(built)
    p = installplan.install_plan(LOCK, {"termcolor": stored.parent.name})
    assert f"--hash=sha256:{sha(b'built termcolor')}" in p.heavy + p.rest
    assert sha(FILES["termcolor-1.1.0.tar.gz"]) not in p.heavy + p.rest and p.require_hashes
    assert "tensorflow-cpu==2.4.1" in p.heavy and p.tools == "setuptools==56.0.0\n"


def test_vcs_references_are_refused_and_capture_wheels_are_mounted():
    from envrepro.packages.directrefs import DirectReferenceRefused

    with pytest.raises(DirectReferenceRefused, match="VCS checkout"):
        plan.entries_for("mylib @ git+https://example.com/mylib.git@abc\n", TARGET)
    local = "mylib @ file:///envrepro/capture/wheels/mylib-1.0-py3-none-any.whl\nsix==1.16.0\n"
    assert [e.name for e in plan.entries_for(local, TARGET)] == ["six"]


def _download(entry, dest, settings):
    """``sdists.download_sdist`` stand-in: the pin's sdist, as the index serves it."""
    f = dest / f"{entry.name}-{entry.version}.tar.gz"
    f.write_bytes(FILES.get(f.name, f"{entry.name} sdist".encode()))
    return f


def builder(engine, wheels=None):
    """``engine.run`` for sdist builds: records the call (and what its mounts held), and leaves in
    /mnt/out what ``wheels`` says for the sdist mounted (default: its wheel, py3-none-any)."""
    def build_run(image_, command=None, **kw):
        mounts = {m.target: m for m in kw["mounts"]}
        held = {t: sorted(p.name for p in Path(m.source).iterdir()) for t, m in mounts.items()}
        engine.runs.append(dict(kw, image=image_, command=command, held=held))
        (sdist,) = held["/mnt/src"]
        name, version = sdist[: -len(".tar.gz")].rsplit("-", 1)
        made = (wheels or {}).get(name, {f"{name}-{version}-py3-none-any.whl": f"built {name}".encode()})
        for fname, data in made.items():
            Path(mounts["/mnt/out"].source, fname).write_bytes(data)
        if kw.get("on_output"):
            kw["on_output"]("stdout", f"Successfully built {name}\npartial line")
        return 0, f"Successfully built {name}\n", ""
    return build_run


def test_sdist_only_pins_are_built_in_a_hardened_container_without_network_once(store, monkeypatch):
    monkeypatch.setattr(sdists, "download_sdist", _download)
    engine = FakeEngine([image("python:3.8-slim")])
    monkeypatch.setattr(engine, "run", builder(engine))
    lines = []
    wh = plan.prepare(LOCK, TARGET, engine, "python:3.8-slim", store, {}, lines.append, run=FakePip())
    assert wh.built == ["termcolor"] and wh.files["termcolor"].read_bytes() == b"built termcolor"
    (run,) = engine.runs
    assert run["network_disabled"] is True and run["read_only"] is True and run["user"] == "65534:65534"
    assert {m.target: m.read_only for m in run["mounts"]} == {"/mnt/src": True, "/mnt/tools": True, "/mnt/out": False}
    assert run["held"] == {"/mnt/src": ["termcolor-1.1.0.tar.gz"], "/mnt/out": [],
                           "/mnt/tools": ["setuptools-1.0-py3-none-any.whl", "wheel-1.0-py3-none-any.whl"]}
    # no capability, no new privileges, memory, pids and wall-clock limits, bounded output
    assert list(run["cap_drop"]) == ["ALL"] and list(run.get("cap_add", ())) == []
    assert list(run["security_opt"]) == ["no-new-privileges"]
    assert (run["mem_limit"], run["pids_limit"], run["timeout"]) == ("4g", 512, 1200.0)
    assert run["output_limit"] == sdists.OUTPUT_LIMIT and run["stream"] is True
    assert run["tmpfs"] == {"/tmp": "rw,exec,size=2g"}
    script = run["command"][-1]
    assert "--no-build-isolation" in script and "--no-index" in script
    assert "--find-links /mnt/tools --target /tmp/tools setuptools wheel" in script
    assert script.endswith("-w /mnt/out /mnt/src/termcolor-1.1.0.tar.gz")
    assert not any("PIP_CERT" in k or "INDEX" in k for k in (run["environment"] or {}))
    assert "Successfully built termcolor" in lines and "partial line" in lines     # into the build log
    again = plan.prepare(LOCK, TARGET, engine, "python:3.8-slim", store, {}, lambda line: None, run=FakePip())
    assert len(engine.runs) == 1 and again.built == ["termcolor"] and again.downloaded == 0


def test_each_sdist_is_built_alone_in_a_container_of_its_own(store, monkeypatch):
    """A hostile sdist built first can't reach the tools or the wheel of the next: each build has
    its own container (so its own /tmp), its own sdist, tools and output folder."""
    monkeypatch.setattr(sdists, "download_sdist", _download)
    lock = LOCK + "wrapt==1.12.1\n"
    engine = FakeEngine([image("python:3.8-slim")])
    monkeypatch.setattr(engine, "run", builder(engine))
    wh = plan.prepare(lock, TARGET, engine, "python:3.8-slim", store, {}, lambda line: None, run=FakePip())
    assert wh.built == ["termcolor", "wrapt"]
    first, second = engine.runs
    assert first["held"]["/mnt/src"] == ["termcolor-1.1.0.tar.gz"] and second["held"]["/mnt/src"] == ["wrapt-1.12.1.tar.gz"]
    assert second["held"]["/mnt/out"] == []                      # termcolor's wheel is not there
    sources = [{m.target: m.source for m in r["mounts"]} for r in (first, second)]
    assert all(sources[0][t] != sources[1][t] for t in ("/mnt/src", "/mnt/tools", "/mnt/out"))
    for r in (first, second):
        assert r["tmpfs"] == {"/tmp": "rw,exec,size=2g"} and list(r["cap_drop"]) == ["ALL"]
        assert {m.target: m.read_only for m in r["mounts"]} == {"/mnt/src": True, "/mnt/tools": True, "/mnt/out": False}
    assert wh.files["wrapt"].read_bytes() == b"built wrapt"


class ToolsPip(FakePip):
    """FakePip whose build tools are another release (other bytes) of the same names."""

    def __init__(self, release):
        super().__init__()
        self.release = release

    def __call__(self, argv):
        code, out = super().__call__(argv)
        if "-r" not in argv:
            dest = Path(argv[argv.index("--dest") + 1])
            for f in dest.iterdir():
                f.write_bytes(f.read_bytes() + self.release)
        return code, out


def test_the_record_of_a_built_wheel_is_keyed_by_the_sdist_and_the_tools_it_was_built_with(store, monkeypatch):
    monkeypatch.setattr(sdists, "download_sdist", _download)
    engine = FakeEngine([image("python:3.8-slim")])
    monkeypatch.setattr(engine, "run", builder(engine))
    plan.prepare(LOCK, TARGET, engine, "python:3.8-slim", store, {}, lambda line: None, run=FakePip())
    tools = {"setuptools-1.0-py3-none-any.whl": sha(b"setuptools"), "wheel-1.0-py3-none-any.whl": sha(b"wheel")}
    digest = sdists.toolset_digest(tools)
    sdist_sha = sha(FILES["termcolor-1.1.0.tar.gz"])
    assert sdists.record_parts(TARGET, sdist_sha, digest)[-1] == f"{sdist_sha}-{digest}.json"
    rec = store.read_record(*sdists.record_parts(TARGET, sdist_sha, digest))
    assert rec["tools"] == tools and rec["tools_sha256"] == digest and rec["sdist_sha256"] == sdist_sha
    assert store.read_record(*sdists.record_parts(TARGET, sdist_sha)) is None     # no record without tools
    assert sdists.current_toolsets(store, TARGET) == [digest]
    # the same sdist, other tools: built again, recorded apart; the first record stays as it was
    plan.prepare(LOCK, TARGET, engine, "python:3.8-slim", store, {}, lambda line: None, run=FakePip())
    assert len(engine.runs) == 1                                 # found with the toolset in use
    monkeypatch.setattr(sdists, "built_wheel", lambda *a: None)  # as if looked up before the tools changed
    plan.prepare(LOCK, TARGET, engine, "python:3.8-slim", store, {}, lambda line: None, run=ToolsPip(b" 2.0"))
    assert len(engine.runs) == 2
    other = sdists.toolset_digest({n: sha(n.split("-")[0].encode() + b" 2.0") for n in tools})
    assert store.read_record(*sdists.record_parts(TARGET, sdist_sha, other))["tools_sha256"] == other
    assert store.read_record(*sdists.record_parts(TARGET, sdist_sha, digest)) == rec
    assert sdists.current_toolsets(store, TARGET) == [other]
    # the same tools once more: that record is reused, no third container
    plan.prepare(LOCK, TARGET, engine, "python:3.8-slim", store, {}, lambda line: None, run=ToolsPip(b" 2.0"))
    assert len(engine.runs) == 2


def test_a_record_without_tools_in_the_shared_folder_is_never_trusted_an_import_only_for_its_capture(store, tmp_path):
    entry = next(e for e in plan.entries_for(LOCK, TARGET) if e.name == "termcolor")
    f = tmp_path / "termcolor-1.1.0-py3-none-any.whl"
    f.write_bytes(b"trojaned termcolor")
    stored = store.add(f)
    old = sdists.record_parts(TARGET, sha(FILES["termcolor-1.1.0.tar.gz"]))
    store.write_record({"wheel": stored.name, "sha256": stored.parent.name}, *old)
    assert sdists.built_wheel(store, TARGET, entry) is None
    # what an import of an older envrepro wrote, shared by every capture: not trusted either
    store.write_record({"wheel": stored.name, "sha256": stored.parent.name, "imported": True}, *old)
    assert sdists.built_wheel(store, TARGET, entry) is None
    assert sdists.built_wheel(store, TARGET, entry, "a" * 32) is None
    mine = sdists.imported_parts("a" * 32, TARGET, sha(FILES["termcolor-1.1.0.tar.gz"]))
    store.write_record({"wheel": stored.name, "sha256": stored.parent.name, "imported": True}, *mine)
    assert sdists.built_wheel(store, TARGET, entry, "a" * 32) == stored
    assert sdists.built_wheel(store, TARGET, entry, "b" * 32) is None and sdists.built_wheel(store, TARGET, entry) is None


@pytest.mark.parametrize("made, said", [
    ({}, "0 files instead of one wheel"),
    ({"termcolor-1.1.0-py3-none-any.whl": b"a", "six-1.16.0-py2.py3-none-any.whl": b"b"}, "2 files instead of one"),
    ({"six-1.16.0-py2.py3-none-any.whl": b"evil six"}, "a wheel of another distribution"),
    ({"termcolor-9.9-py3-none-any.whl": b"x"}, "a wheel of another distribution"),
    ({"termcolor-1.1.0-cp38-cp38-macosx_11_0_arm64.whl": b"x"}, "the image's pip would not install"),
    ({"termcolor-1.1.0.tar.gz": b"x"}, "not a wheel file"),
])
def test_a_build_is_recorded_only_when_it_left_exactly_its_own_wheel(store, monkeypatch, made, said):
    monkeypatch.setattr(sdists, "download_sdist", _download)
    engine = FakeEngine([image("python:3.8-slim")])
    monkeypatch.setattr(engine, "run", builder(engine, {"termcolor": made}))
    with pytest.raises(BuildFailed, match=said):
        plan.prepare(LOCK, TARGET, engine, "python:3.8-slim", store, {}, lambda line: None, run=FakePip())
    assert not (store.root / "built").exists() and all(store.get(sha(d)) is None for d in made.values())


def test_build_limits_come_from_the_environment_and_a_timeout_is_one_error(store, monkeypatch):
    from envrepro.engine.base import TimedOut
    from envrepro.errors import EnvreproError

    monkeypatch.setattr(sdists, "download_sdist", _download)
    monkeypatch.setenv("ENVREPRO_SDIST_MEMORY", "6g")
    monkeypatch.setenv("ENVREPRO_SDIST_PIDS", "64")
    monkeypatch.setenv("ENVREPRO_SDIST_TIMEOUT", "30")
    engine = FakeEngine([image("python:3.8-slim")])

    def too_slow(image_, command=None, **kw):
        engine.runs.append(kw)
        raise TimedOut("a container of python:3.8-slim was still running after 30 s", 30.0)
    monkeypatch.setattr(engine, "run", too_slow)
    with pytest.raises(BuildFailed, match="still running after 30 s") as e:
        plan.prepare(LOCK, TARGET, engine, "python:3.8-slim", store, {}, lambda line: None, run=FakePip())
    assert "ENVREPRO_SDIST_TIMEOUT" in e.value.fix
    assert (engine.runs[0]["mem_limit"], engine.runs[0]["pids_limit"], engine.runs[0]["timeout"]) == ("6g", 64, 30.0)
    monkeypatch.setenv("ENVREPRO_SDIST_PIDS", "lots")
    with pytest.raises(EnvreproError, match="ENVREPRO_SDIST_PIDS"):
        plan.prepare(LOCK, TARGET, engine, "python:3.8-slim", store, {}, lambda line: None, run=FakePip())


def test_a_build_that_prints_without_end_is_logged_in_bounded_lines(monkeypatch):
    monkeypatch.setattr(sdists, "LOG_LINES", 5)
    lines = []
    log = sdists._LogLines(lines.append)
    log("stdout", "x" * (3 * sdists.MAX_LINE + 10))        # no newline: still cut into pieces
    assert [len(line) for line in lines] == [sdists.MAX_LINE] * 3
    log("stderr", "a\nb\nc\nd\n")
    log.close()
    # 3 pieces, a, b logged; c, d and the 10 characters left after the pieces are not
    assert len(lines) == 6 and lines[3:5] == ["a", "b"] and lines[-1] == "envrepro: 3 more lines of this build not logged"


def test_the_base_image_says_which_wheels_fit():
    t = parse_probe('{"version": "3.6.15", "machine": "x86_64", "implementation": "CPython", '
                    '"abiflags": "m", "libc": "glibc 2.28"}', "python:3.6-slim")
    assert t.abi == "cp36m" and t.platforms()[0] == "manylinux_2_28_x86_64" and "manylinux1_x86_64" in t.platforms()
    with pytest.raises(BuildFailed, match="no glibc"):
        parse_probe('{"version": "3.8.1", "machine": "x86_64", "implementation": "CPython", "libc": ""}', "alpine")
    with pytest.raises(BuildFailed, match="could not read the platform"):
        parse_probe("Traceback ...", "weird:latest")


def _stocked(store, tmp_path):
    """A store holding LOCK's files, termcolor built from its sdist, as after a real build."""
    entries = plan.entries_for(LOCK, TARGET)
    fetch.fetch(entries, TARGET, store, lambda line: None, run=FakePip())
    built = tmp_path / "termcolor-1.1.0-py3-none-any.whl"
    built.write_bytes(b"built termcolor")
    stored = store.add(built)
    tools = {"setuptools-1.0-py3-none-any.whl": sha(b"setuptools"), "wheel-1.0-py3-none-any.whl": sha(b"wheel")}
    digest = sdists.toolset_digest(tools)
    store.write_record({"files": tools, "digest": digest}, *sdists.toolset_parts(TARGET, sdists.BUILD_TOOLS))
    store.write_record({"wheel": stored.name, "sha256": stored.parent.name, "tools": tools},
                       *sdists.record_parts(TARGET, sha(FILES["termcolor-1.1.0.tar.gz"]), digest))
    return plan.prepare(LOCK, TARGET, FakeEngine(), "python:3.8-slim", store, {}, lambda line: None, run=FakePip())


def _capture(tmp_path):
    root = tmp_path / "m.envrepro"
    root.mkdir()
    (root / "requirements.lock").write_text(LOCK)
    return Capture(root=root, data={"python": {"version": "3.8.18"}})


def _export(wh, dest):
    dest.mkdir()
    for p in set(wh.files.values()):
        (dest / p.name).write_bytes(p.read_bytes())
    built = [{"name": "termcolor", "version": "1.1.0", "wheel": wh.files["termcolor"].name,
              "sha256": wh.files["termcolor"].parent.name, "sdist_sha256": [sha(FILES["termcolor-1.1.0.tar.gz"])]}]
    (dest / portable.INDEX).write_text(json.dumps({
        "format": 1, "target": {"python": "3.8.18", "machine": "x86_64", "implementation": "CPython",
                                "abiflags": "", "glibc": [2, 36]},
        "files": {p.name: p.parent.name for p in wh.files.values()}, "built": built}))


def test_a_carried_wheelhouse_is_imported_only_when_the_lock_accounts_for_every_file(tmp_path, monkeypatch):
    wh = _stocked(WheelStore(tmp_path / "here"), tmp_path)
    carried = tmp_path / "carried"
    _export(wh, carried)
    other = WheelStore(tmp_path / "there")
    cap = _capture(tmp_path)
    assert portable.import_dir(carried, cap, lambda line: None, other) == 5
    offline = plan.prepare(LOCK, TARGET, FakeEngine(), "python:3.8-slim", other, {}, lambda line: None,
                           run=FakePip(fail="network is unreachable"), scope=portable.scope_of(cap))
    assert offline.downloaded == 0 and offline.built == ["termcolor"]
    # tampered: a byte changed in a wheel
    six = carried / "six-1.16.0-py2.py3-none-any.whl"
    six.write_bytes(b"six wheeL")
    with pytest.raises(InvalidCapture, match="not the .* its index says"):
        portable.import_dir(carried, cap, lambda line: None, WheelStore(tmp_path / "t1"))
    # a file the lock doesn't pin, declared with its true hash
    six.write_bytes(b"evil six")
    doc = json.loads((carried / portable.INDEX).read_text())
    doc["files"][six.name] = sha(b"evil six")
    (carried / portable.INDEX).write_text(json.dumps(doc))
    with pytest.raises(InvalidCapture, match="does not pin"):
        portable.import_dir(carried, cap, lambda line: None, WheelStore(tmp_path / "t2"))
    # a link in place of a file, and a name with a path
    six.unlink()
    os.symlink("/etc/passwd", six)
    with pytest.raises(InvalidCapture, match="not a regular distribution file"):
        portable.import_dir(carried, cap, lambda line: None, WheelStore(tmp_path / "t3"))
    doc["files"] = {"../../x.whl": "0" * 64}
    (carried / portable.INDEX).write_text(json.dumps(doc))
    with pytest.raises(InvalidCapture, match="not a regular distribution file"):
        portable.import_dir(carried, cap, lambda line: None, WheelStore(tmp_path / "t4"))
    (carried / portable.INDEX).write_text("[1, 2")
    with pytest.raises(InvalidCapture, match="no readable index.json"):
        portable.import_dir(carried, cap, lambda line: None, WheelStore(tmp_path / "t5"))


def test_a_wheel_a_bundle_carried_as_the_build_of_a_public_sdist_serves_only_its_own_capture(tmp_path, monkeypatch):
    """The poisoning: a bundle declares its own file "the build of" termcolor's sdist hash (public
    on the index). Its capture builds with it; another capture pinning the same sdist on this
    machine never takes it and builds the sdist itself."""
    wh = _stocked(WheelStore(tmp_path / "here"), tmp_path)
    carried = tmp_path / "carried"
    _export(wh, carried)
    trojan = carried / wh.files["termcolor"].name          # the bundle's own "build" of termcolor
    trojan.write_bytes(b"trojaned termcolor")
    doc = json.loads((carried / portable.INDEX).read_text())
    doc["files"][trojan.name] = doc["built"][0]["sha256"] = sha(b"trojaned termcolor")
    (carried / portable.INDEX).write_text(json.dumps(doc))
    store = WheelStore(tmp_path / "there")
    bundled = _capture(tmp_path)
    portable.import_dir(carried, bundled, lambda line: None, store)
    mine = tmp_path / "mine"
    mine.mkdir()
    own = _capture(mine)                      # the user's own capture, the same lock
    assert portable.scope_of(own) != portable.scope_of(bundled)
    entry = next(e for e in plan.entries_for(LOCK, TARGET) if e.name == "termcolor")
    assert sdists.built_wheel(store, TARGET, entry, portable.scope_of(bundled)).read_bytes() == b"trojaned termcolor"
    assert sdists.built_wheel(store, TARGET, entry, portable.scope_of(own)) is None
    assert sdists.built_wheel(store, TARGET, entry) is None
    assert not (store.root / "built").exists()          # nothing written where every build looks
    monkeypatch.setattr(sdists, "download_sdist", _download)
    engine = FakeEngine([image("python:3.8-slim")])
    monkeypatch.setattr(engine, "run", builder(engine))
    again = plan.prepare(LOCK, TARGET, engine, "python:3.8-slim", store, {}, lambda line: None,
                         run=FakePip(), scope=portable.scope_of(own))
    assert again.built == ["termcolor"] and len(engine.runs) == 1     # built here, in its own sandbox
    assert again.files["termcolor"].read_bytes() == b"built termcolor"


def test_a_stored_file_of_the_same_release_for_another_python_is_not_taken(store, tmp_path):
    """A lock pins every file of a release: the store may hold the cp311 wheel another build
    fetched. A cp38 image must get its own file, fetched now, not that one."""
    other = "numpy-1.19.5-cp311-cp311-manylinux_2_17_x86_64.whl"
    f = tmp_path / other
    f.write_bytes(b"numpy for 3.11")
    lock = ("numpy==1.19.5 \\\n    --hash=sha256:" + sha(b"numpy for 3.11")
            + " \\\n    --hash=sha256:" + sha(FILES["numpy-1.19.5-cp38-cp38-manylinux2010_x86_64.whl"]) + "\n")
    entries = plan.entries_for(lock, TARGET)
    store.add(f, {sha(b"numpy for 3.11")})
    assert store.find(entries[0].hashes) is not None and store.find(entries[0].hashes, TARGET.accepts) is None
    got = fetch.fetch(entries, TARGET, store, lambda line: None, run=FakePip())
    assert got.downloaded == 1 and got.files["numpy"].name == "numpy-1.19.5-cp38-cp38-manylinux2010_x86_64.whl"
    assert TARGET.accepts("six-1.16.0-py2.py3-none-any.whl") and not TARGET.accepts("x-1.0-cp38-cp38-macosx_11_0_arm64.whl")
