"""packages/binaryonly.py: host resolutions never build an sdist (no setup.py runs on the host)."""
import subprocess
import sys
import zipfile

import pytest
from packaging.requirements import Requirement

from envrepro.packages import binaryonly as bo

PIP_FAILURE = """\
WARNING: Location 'file:///x/' is ignored
ERROR: Could not find a version that satisfies the requirement termcolor~=1.1.0 (from tensorflow-cpu) (from versions: 2.0.0, 2.0.1)
ERROR: No matching distribution found for termcolor~=1.1.0
"""


def test_unsatisfied_requirements_are_parsed_from_pip_output():
    assert [str(r) for r in bo.unsatisfied(PIP_FAILURE)] == ["termcolor~=1.1.0"]
    assert bo.unsatisfied("ERROR: Could not find a version that satisfies the requirement ?!bad") == []


# The same sdist-only requirement when a constraint pins it too (a lock re-resolved under the
# captured pins: the GPU lock of tensorflow-cpu 2.4.1): pip reports a conflict, not "no version".
PIP_CONFLICT = """\
  ERROR: Cannot install -r requirements.in (line 5) because these package versions have conflicting dependencies.
pip._vendor.resolvelib.resolvers.ResolutionImpossible: [RequirementInformation(requirement=SpecifierRequirement('termcolor~=1.1.0'), parent=LinkCandidate('https://files.pythonhosted.org/packages/ac/9b/tensorflow-2.4.1-cp38-cp38-manylinux2010_x86_64.whl (from https://pypi.org/simple/tensorflow/)'))]
"""


def test_a_pinned_sdist_only_requirement_is_read_from_the_conflict():
    assert bo.unsatisfied(PIP_CONFLICT) == []                                  # no pin: a real conflict
    assert [str(r) for r in bo.unsatisfied(PIP_CONFLICT, {"termcolor": "1.1.0"})] == ["termcolor~=1.1.0"]
    assert bo.unsatisfied(PIP_CONFLICT, {"termcolor": "2.0.0"}) == []         # the pin doesn't fit: real
    assert bo.constraint_pins("numpy==1.19.5\nTermcolor==1.1.0  # via x\n# c\n-c other.txt\n") == {
        "numpy": "1.19.5", "termcolor": "1.1.0"}


def test_resolve_stands_in_for_a_pinned_sdist_only_requirement(tmp_path):
    def attempt(extra):
        if "--find-links" not in extra:
            return False, PIP_CONFLICT
        return True, "ok"

    ok, out, stubs = bo.resolve(attempt, lambda name: ["2.0.0", "1.1.0", "1.1.1"], tmp_path / "s",
                                pins={"termcolor": "1.1.0"})
    assert ok and stubs == {"termcolor": "1.1.0"}            # the pin, not the highest ~=1.1.0
    assert (tmp_path / "s" / "termcolor-1.1.0-py2.py3-none-any.whl").is_file()


def test_available_versions_and_the_best_one():
    out = "WARNING: pip index is experimental\ntermcolor (3.3.0)\nAvailable versions: 3.3.0, 2.0.0, 1.1.0, 1.0.1\n"
    assert bo.parse_available(out) == ["3.3.0", "2.0.0", "1.1.0", "1.0.1"]
    assert bo.best_version(Requirement("termcolor~=1.1.0"), bo.parse_available(out)) == "1.1.0"
    assert bo.best_version(Requirement("termcolor<1.1"), ["3.3.0", "1.0.1", "junk"]) == "1.0.1"
    assert bo.best_version(Requirement("termcolor>9"), ["3.3.0"]) is None


def test_stub_wheel_is_installable_metadata_only(tmp_path):
    """pip accepts the stand-in offline with --only-binary, and it holds no code and no deps."""
    whl = bo.stub_wheel(tmp_path / "stubs", "Wrapt", "1.12.1")
    names = zipfile.ZipFile(whl).namelist()
    assert sorted(names) == ["Wrapt-1.12.1.dist-info/METADATA", "Wrapt-1.12.1.dist-info/RECORD",
                             "Wrapt-1.12.1.dist-info/WHEEL"]
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index",
                           "--only-binary", ":all:", "--find-links", str(tmp_path / "stubs"),
                           "--target", str(tmp_path / "t"), "wrapt==1.12.1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Would install Wrapt-1.12.1" in proc.stdout or "Would install wrapt-1.12.1" in proc.stdout.lower()


def test_resolve_retries_with_stand_ins_and_always_only_binary(tmp_path):
    seen = []

    def attempt(extra):
        seen.append(list(extra))
        if "--find-links" not in extra:
            return False, PIP_FAILURE
        assert (tmp_path / "s" / "termcolor-1.1.0-py2.py3-none-any.whl").is_file()
        return True, "ok"

    ok, out, stubs = bo.resolve(attempt, lambda name: ["2.0.0", "1.1.0"], tmp_path / "s")
    assert ok and stubs == {"termcolor": "1.1.0"}
    assert all(e[:2] == ["--only-binary", ":all:"] for e in seen) and len(seen) == 2
    assert "termcolor==1.1.0" in bo.stubs_note(stubs) and "setup.py" in bo.stubs_note(stubs)


def test_resolve_gives_up_when_no_stand_in_helps(tmp_path):
    calls = []

    def attempt(extra):
        calls.append(extra)
        return False, PIP_FAILURE

    ok, out, stubs = bo.resolve(attempt, lambda name: ["2.0.0"], tmp_path / "s")   # no 1.1.x anywhere
    assert not ok and stubs == {} and len(calls) == 1 and "termcolor" in out


def _evil_sdist(folder, marker):
    """An sdist whose setup.py writes ``marker``: building it on the host is the attack."""
    import tarfile
    import io

    folder.mkdir(parents=True, exist_ok=True)
    setup = (f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')\n"
             "from setuptools import setup\nsetup(name='evilpkg', version='1.0')\n")
    with tarfile.open(folder / "evilpkg-1.0.tar.gz", "w:gz") as tar:
        for name, text in (("evilpkg-1.0/setup.py", setup),
                           ("evilpkg-1.0/PKG-INFO", "Metadata-Version: 1.0\nName: evilpkg\nVersion: 1.0\n")):
            data = text.encode()
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))


def test_an_sdist_in_a_resolution_never_runs_on_the_host(tmp_path, monkeypatch):
    """The infer resolution with a hostile sdist on the index: its setup.py never runs, and the
    pin still resolves (through a stand-in), with the note."""
    from envrepro.packages import resolution
    from envrepro.capturing.infer import InferencePlan

    marker = tmp_path / "setup-py-ran"
    _evil_sdist(tmp_path / "links", marker)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "links"))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    # pip's inverted switch: build isolation OFF, so an sdist build needs no index (setuptools is
    # here) and its setup.py would run at once - as it does with a reachable index.
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "false")
    control = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
                              "--report", str(tmp_path / "r.json"), "evilpkg==1.0"],
                             capture_output=True, text=True, timeout=300)
    assert marker.exists(), "control: a plain resolution runs the sdist's setup.py " + control.stderr[-500:]
    marker.unlink()
    p = InferencePlan(tensorflow="0", python=f"{sys.version_info[0]}.{sys.version_info[1]}", keras_flavor="keras3",
                      requirements=["evilpkg==1.0"], constraints=[], env={}, reasons=[])
    warnings = []
    dists, how = resolution._resolve(p, sys.executable, warnings)
    assert not marker.exists(), "an sdist's setup.py ran on the host"
    assert [(d["name"], d["version"], d["requires"]) for d in dists] == [("evilpkg", "1.0", [])]
    assert any("evilpkg==1.0" in w and "setup.py" in w for w in warnings)
