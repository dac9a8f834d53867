"""Captures made on macOS or Windows, translated for Linux (envrepro.packages.platforms), without network:
the fixture capture tests/fixtures/macos-capture/, the mapping table, a fake resolver and a fake
index. The real re-resolution is tests/integration/test_platforms_pypi.py (marked network)."""
import hashlib
import shutil
from pathlib import Path

import pytest

from envrepro.image import ensure as images, spec
from envrepro.sandbox import report as reports
from envrepro.sidecar import lockfile
from envrepro.sidecar import manifest
from envrepro.packages import indexhashes
from envrepro.packages import platforms
from envrepro.packages.pipconfig import PipSettings
from envrepro.errors import EXIT_BUILD_FAILED, PlatformError
from envrepro.packages.compile import ResolutionFailed

try:
    from .fakes import FakeEngine, context_files, image
except ImportError:
    from fakes import FakeEngine, context_files, image

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "macos-capture" / "model.keras.envrepro"
H = lambda c: "sha256:" + c * 64  # noqa: E731

# What pip-compile prints for the fixture's requirements on Linux (no hashes, --no-header).
LINUX_RESOLUTION = """h5py==3.9.0
    # via
    #   -c constraints.txt
    #   tensorflow-cpu
keras==2.13.1
    # via
    #   -c constraints.txt
    #   tensorflow-cpu
numpy==1.24.3
    # via
    #   -c constraints.txt
    #   h5py
    #   tensorflow-cpu
six==1.16.0
    # via
    #   -c constraints.txt
    #   -r requirements.in
    #   tensorflow-cpu
tensorflow-cpu==2.13.0
    # via -r requirements.in
tensorflow-io-gcs-filesystem==0.34.0
    # via tensorflow-cpu
typing-extensions==4.5.0
    # via
    #   -c constraints.txt
    #   tensorflow-cpu
wrapt==1.15.0
    # via
    #   -c constraints.txt
    #   tensorflow-cpu

# The following packages are considered to be unsafe in a requirements file:
# setuptools
"""


@pytest.fixture
def mac(tmp_path):
    """A copy of the fixture capture (the test proves the translation never writes into it)."""
    root = tmp_path / "model.keras.envrepro"
    shutil.copytree(FIXTURE, root)
    return manifest.read(root, verify=False)


class FakeIndex:
    """lookup_index stand-in: every pin has a Linux wheel and one hash, except those listed."""

    def __init__(self, no_linux=(), missing=(), offline=False):
        self.no_linux, self.missing, self.offline = set(no_linux), set(missing), offline
        self.asked = []

    def __call__(self, pins, facts):
        assert facts["sys_platform"] == "linux" and facts["version"].startswith("3.11")
        self.asked.append(dict(pins))
        if self.offline:
            return None, "offline"
        out = {}
        for name, version in pins.items():
            if name in self.missing:
                out[name] = indexhashes.IndexInfo(set(), error="not on the index")
            elif name in self.no_linux:
                out[name] = indexhashes.IndexInfo({H("e")}, found=True)     # macOS/Windows wheels only
            else:
                digest = hashlib.sha256(f"{name}=={version}".encode()).hexdigest()
                out[name] = indexhashes.IndexInfo({"sha256:" + digest}, found=True, wheel_ok=True)
        return out, "fake index"


class FakeResolver:
    def __init__(self, output=LINUX_RESOLUTION, error=None):
        self.output, self.error, self.calls = output, error, []

    def __call__(self, requirements, constraints, xy):
        self.calls.append((requirements, constraints, xy))
        if self.error:
            raise self.error
        return self.output


def translate(cap, tmp_path, resolver=None, index=None, **kw):
    return platforms.translate(cap, tmp_path / "cache" / "envrepro", resolver=resolver or FakeResolver(),
                               lookup=index or FakeIndex(), machine="x86_64", **kw)


# -- detection ----------------------------------------------------------------------------------
@pytest.mark.parametrize("data,foreign", [
    ({"python": {"sys_platform": "darwin"}}, True),
    ({"python": {"sys_platform": "win32"}}, True),
    ({"python": {"sys_platform": "linux"}}, False),
    ({"python": {}, "lock": {"platform": "darwin_arm64"}}, True),
    ({"python": {}, "lock": {"platform": "win32_AMD64"}}, True),
    ({"python": {"version": "3.8.18"}}, False),
])
def test_detects_captures_made_on_macos_or_windows(tmp_path, data, foreign):
    assert platforms.is_foreign(manifest.Capture(tmp_path, data)) is foreign


def test_fixture_is_a_macos_capture(mac):
    assert platforms.capture_platform(mac) == "darwin" and platforms.is_foreign(mac)
    assert platforms.linux_target(mac, "x86_64") == {"version": "3.11.7", "sys_platform": "linux",
                                                     "machine": "x86_64", "implementation": "CPython"}


# -- the mapping table --------------------------------------------------------------------------
def test_mapping_table_on_the_macos_fixture(mac):
    entries = lockfile.parse_lock(mac.lock_path.read_text())
    plan = platforms.make_plan(entries, "darwin", lambda v: "tensorflow-cpu", lambda n, v: True,
                               indexhashes.linux_target_tags(platforms.linux_target(mac, "x86_64")))
    assert plan.requirements == ["six==1.16.0", "tensorflow-cpu==2.13.0"]  # six: mypkg needs it
    assert "tensorflow-macos==2.13.0" not in plan.constraints
    assert not {c for c in plan.constraints if c.startswith(("tensorflow-metal", "appnope"))}
    assert {"numpy==1.24.3", "h5py==3.9.0", "wrapt==1.15.0", "six==1.16.0"} <= set(plan.constraints)
    assert [e.name for e in plan.keep] == ["mypkg"]          # a pure-Python local wheel: kept as is
    assert [c.text() for c in plan.changes] == [
        "appnope 0.1.3 dropped (macOS only)",
        "tensorflow-macos 2.13.0 -> tensorflow-cpu 2.13.0 (Linux build of the macOS TensorFlow)",
        "tensorflow-metal 1.0.1 dropped (Apple GPU plugin (Metal), no Linux build)"]
    assert plan.unavailable == []


@pytest.mark.parametrize("name,why", [
    ("tensorflow-metal", "Apple GPU plugin"), ("pywin32", "Windows only"), ("pywin32-ctypes", "Windows only"),
    ("pyobjc-framework-cocoa", "macOS only"), ("appnope", "macOS only"), ("numpy", None), ("colorama", None)])
def test_dropped_table(name, why):
    got = platforms.dropped_reason(name)
    assert (got is None) if why is None else why in got


def _win_lock():
    return [lockfile.LockEntry("tensorflow", "2.15.0", (H("1"),), None, ("-r requirements.in",)),
            lockfile.LockEntry("tensorflow-intel", "2.15.0", (H("2"),), None, ("tensorflow",)),
            lockfile.LockEntry("pywin32", "306", (H("3"),), None, ("-r requirements.in",)),
            lockfile.LockEntry("click", "8.1.7", (H("4"),), None, ("-r requirements.in",)),
            lockfile.LockEntry("colorama", "0.4.6", (H("5"),), None, ("click",)),
            lockfile.LockEntry("tensorflow-io-gcs-filesystem", "0.31.0", (H("6"),), None, ("tensorflow-intel",))]


def test_windows_lock_keeps_tensorflow_and_drops_its_windows_build():
    plan = platforms.make_plan(_win_lock(), "win32", lambda v: "tensorflow-cpu", lambda n, v: True)
    assert plan.requirements == ["click==8.1.7", "tensorflow==2.15.0"]
    assert "colorama==0.4.6" in plan.constraints          # only if Linux needs it: it won't
    texts = [c.text() for c in plan.changes]
    assert "tensorflow-intel 2.15.0 dropped (Windows build of tensorflow 2.15.0, which the lock pins for Linux)" in texts
    assert "pywin32 306 dropped (Windows only)" in texts


def test_soft_pin_without_a_linux_wheel_is_left_to_the_resolver():
    plan = platforms.make_plan(_win_lock(), "win32", lambda v: "tensorflow", lambda n, v: False)
    assert not [c for c in plan.constraints if c.startswith("tensorflow-io-gcs-filesystem")]
    kept = platforms.make_plan(_win_lock(), "win32", lambda v: "tensorflow", lambda n, v: True)
    assert "tensorflow-io-gcs-filesystem==0.31.0" in kept.constraints


def test_diff_lists_every_difference():
    captured = _win_lock()
    translated = [lockfile.LockEntry("tensorflow", "2.15.0", (), None), lockfile.LockEntry("click", "8.1.7", (), None),
                  lockfile.LockEntry("tensorflow-io-gcs-filesystem", "0.37.1", (), None),
                  lockfile.LockEntry("ml-dtypes", "0.2.0", (), None)]
    planned = [platforms.Change("dropped", "pywin32", "306", reason="Windows only"),
               platforms.Change("dropped", "tensorflow-intel", "2.15.0")]
    texts = [c.text() for c in platforms.diff(captured, translated, planned)]
    assert texts == ["colorama 0.4.6 dropped (not needed on Linux)", "pywin32 306 dropped (Windows only)",
                     "tensorflow-intel 2.15.0 dropped", "tensorflow-io-gcs-filesystem 0.31.0 -> 0.37.1",
                     "ml-dtypes 0.2.0 added (needed on Linux)"]


# -- translate ----------------------------------------------------------------------------------
def test_translate_the_macos_fixture(mac, tmp_path):
    before = {p.name: p.read_bytes() for p in mac.root.iterdir()}
    resolver, index = FakeResolver(), FakeIndex()
    t = translate(mac, tmp_path, resolver, index)
    reqs, cons, xy = resolver.calls[0]
    assert xy == "3.11" and reqs.startswith("-c constraints.txt\n") and "tensorflow-cpu==2.13.0" in reqs
    assert "setuptools==68.0.0" in cons.splitlines()    # the commented unsafe pin: a constraint only
    assert index.asked[0] == {"tensorflow-cpu": "2.13.0", "tensorflow": "2.13.0"}
    texts = [c.text() for c in t.changes]
    assert texts == [
        "tensorflow-macos 2.13.0 -> tensorflow-cpu 2.13.0 (Linux build of the macOS TensorFlow)",
        "appnope 0.1.3 dropped (macOS only)",
        "tensorflow-metal 1.0.1 dropped (Apple GPU plugin (Metal), no Linux build)",
        "tensorflow-io-gcs-filesystem 0.34.0 added (needed on Linux)"]
    assert t.summary().startswith("translated for Linux: tensorflow-macos 2.13.0 -> tensorflow-cpu 2.13.0")
    entries = {e.name: e for e in lockfile.parse_lock(t.lock_text)}
    assert set(entries) == {"h5py", "keras", "mypkg", "numpy", "six", "tensorflow-cpu",
                            "tensorflow-io-gcs-filesystem", "typing-extensions", "wrapt"}
    assert all(e.hashes for e in entries.values()) and lockfile.has_hashes(t.lock_text)
    assert entries["mypkg"].url == "file:///envrepro/capture/wheels/mypkg-0.1-py3-none-any.whl"
    assert entries["mypkg"].hashes == (H("4"),)              # the capture's own wheel hash
    heavy, rest = lockfile.split_closure(t.lock_text)               # the via graph survives: two layers
    assert "tensorflow-cpu" in {e.name for e in heavy} and {e.name for e in rest} == {"mypkg"}
    # written to the host cache, keyed by the captured lock; the capture is untouched
    sha = hashlib.sha256(mac.lock_path.read_bytes()).hexdigest()
    assert t.lock_path == tmp_path / "cache" / "envrepro" / "translated" / sha / "cpu" / "requirements.lock"
    assert t.lock_path.read_text() == t.lock_text
    assert {p.name: p.read_bytes() for p in mac.root.iterdir()} == before
    # second time: from the cache, no resolver, no index
    again = translate(mac, tmp_path, FakeResolver(error=AssertionError("resolved twice")),
                      FakeIndex(offline=True))
    assert again.lock_text == t.lock_text and [c.text() for c in again.changes] == texts
    assert t.to_dict()["from"] == "macOS" and len(t.to_dict()["changes"]) == 4


def test_tensorflow_cpu_missing_for_that_version_falls_back_to_tensorflow(mac, tmp_path):
    out = LINUX_RESOLUTION.replace("tensorflow-cpu", "tensorflow")
    resolver = FakeResolver(out)
    t = translate(mac, tmp_path, resolver, FakeIndex(no_linux={"tensorflow-cpu"}))
    assert "tensorflow==2.13.0" in resolver.calls[0][0]
    assert t.changes[0].text().startswith("tensorflow-macos 2.13.0 -> tensorflow 2.13.0")


def test_gpu_translation_picks_tensorflow_and_has_its_own_cache(mac, tmp_path):
    resolver = FakeResolver(LINUX_RESOLUTION.replace("tensorflow-cpu", "tensorflow"))
    t = translate(mac, tmp_path, resolver, gpu=True)
    assert "tensorflow==2.13.0" in resolver.calls[0][0] and t.lock_path.parent.name == "gpu"


def test_offline_lookup_maps_to_tensorflow(mac, tmp_path):
    resolver = FakeResolver(LINUX_RESOLUTION.replace("tensorflow-cpu", "tensorflow"))
    t = translate(mac, tmp_path, resolver, FakeIndex(offline=True))
    assert "tensorflow==2.13.0" in resolver.calls[0][0]
    assert not lockfile.has_hashes(t.lock_text) and any("no hashes" in n for n in t.notes)


def test_no_linux_tensorflow_stops_before_resolving(mac, tmp_path):
    resolver = FakeResolver()
    with pytest.raises(PlatformError) as e:
        translate(mac, tmp_path, resolver, FakeIndex(no_linux={"tensorflow-cpu", "tensorflow"}))
    assert resolver.calls == [] and e.value.exit_code == EXIT_BUILD_FAILED
    assert "tensorflow-macos 2.13.0" in str(e.value) and "macOS capture can't be built for Linux" in str(e.value)


def test_macos_only_local_wheel_is_named(mac, tmp_path):
    text = mac.lock_path.read_text().replace("mypkg-0.1-py3-none-any.whl", "mypkg-0.1-cp311-cp311-macosx_11_0_arm64.whl")
    mac.lock_path.write_text(text)
    with pytest.raises(PlatformError) as e:
        translate(mac, tmp_path)
    assert "mypkg-0.1-cp311-cp311-macosx_11_0_arm64.whl) is built for macOS" in str(e.value)


def test_failed_resolution_names_every_pin_without_a_linux_build(mac, tmp_path):
    fail = ResolutionFailed("pip-compile could not resolve", "No matching distribution found for h5py==3.9.0",
                            ["h5py", "Wrapt"])
    index = FakeIndex(no_linux={"h5py", "keras"}, missing={"wrapt", "numpy"})
    with pytest.raises(PlatformError) as e:
        translate(mac, tmp_path, FakeResolver(error=fail), index)
    msg = str(e.value)
    assert "h5py 3.9.0: neither a Linux wheel nor an sdist" in msg
    assert "wrapt 1.15.0: not on the package index" in msg
    # constraints the resolver did not name are not blamed; top-level pins are always checked
    assert "keras 2.13.1" not in msg and "numpy 1.24.3" not in msg
    assert set(index.asked[-1]) == {"h5py", "wrapt", "six", "tensorflow-cpu"}
    assert not (tmp_path / "cache" / "envrepro" / "translated").exists()


def test_failed_resolution_without_a_missing_pin_shows_the_resolver(mac, tmp_path):
    fail = ResolutionFailed("pip-compile could not resolve the lock for Linux:\n  | conflict", "", [])
    with pytest.raises(PlatformError) as e:
        translate(mac, tmp_path, FakeResolver(error=fail))
    assert "conflict" in str(e.value) and "don't resolve together on Linux" in str(e.value)


def test_resolved_pin_without_linux_files_is_refused(mac, tmp_path):
    with pytest.raises(PlatformError, match="keras 2.13.1: neither a Linux wheel nor an sdist"):
        translate(mac, tmp_path, index=FakeIndex(no_linux={"keras"}))


# -- the build uses the translated lock ---------------------------------------------------------
def test_ensure_image_builds_from_the_translated_lock(mac, tmp_path):
    t = translate(mac, tmp_path)                 # made once (the real one resolves with pip-tools)
    engine = FakeEngine([image("python:3.11-slim", digest="python@sha256:" + "0" * 64)])
    lines = []
    info = images.ensure_image(mac, engine, on_progress=lines.append, pip=PipSettings())
    assert info.key == spec.image_key("python:3.11-slim", "3.11.7", t.lock_text)
    assert info.key != spec.image_key("python:3.11-slim", "3.11.7", mac.lock_path.read_text())
    files = context_files(engine.builds[0][0])
    assert b"tensorflow-cpu==2.13.0" in files["heavy.lock"] and b"tensorflow-macos" not in files["heavy.lock"]
    assert b"tensorflow-metal" not in b"".join(files.values())
    labels = engine.inspect_image(info.tag)["Config"]["Labels"]
    assert labels["org.envrepro.translated-from"] == "darwin"
    assert labels["org.envrepro.lock-sha256"] == hashlib.sha256(t.lock_text.encode()).hexdigest()
    assert any(line.startswith("translated for Linux: tensorflow-macos 2.13.0 -> tensorflow-cpu") for line in lines)
    assert info.translation["changes"][0].startswith("tensorflow-macos 2.13.0 -> tensorflow-cpu 2.13.0")
    assert images.summarize(info)["translation"]["from"] == "macOS"
    # the same capture again: same key, the image is found locally
    again = images.ensure_image(mac, engine, on_progress=lambda line: None, pip=PipSettings())
    assert again.source == "local" and again.key == info.key and again.translation == info.translation


def test_load_report_lists_the_translation_and_unverified_entries(mac, tmp_path):
    t = translate(mac, tmp_path)
    img = {"tag": "envrepro-env:abc", "source": "built", "base_image": "python:3.11-slim",
           "translation": t.to_dict(), "unverified": ["fromgit"], "built_from_source": ["termcolor"]}
    report = reports.LoadReport(model="m", capture="c", image=img, loader={"ok": True, "load": {"ok": True}})
    text = reports.render_report(report)
    assert "translated   for Linux from a macOS capture: 4 package(s) differ from the capture" in text
    for change in ("tensorflow-macos 2.13.0 -> tensorflow-cpu 2.13.0", "tensorflow-metal 1.0.1 dropped",
                   "appnope 0.1.3 dropped", "tensorflow-io-gcs-filesystem 0.34.0 added"):
        assert change in text
    assert "unverified   installed without hash check (no hash in the lock): fromgit" in text
    assert "termcolor" in text
    assert report.to_dict()["image"]["translation"]["changes"] == t.to_dict()["changes"]


def test_linux_capture_is_not_translated(tmp_path):
    cap = manifest.Capture(tmp_path, {"python": {"version": "3.8.18", "sys_platform": "linux"}})
    (tmp_path / "requirements.lock").write_text("six==1.16.0\n")
    assert spec.lock_for(cap) == ("six==1.16.0\n", None)
