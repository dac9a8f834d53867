"""runtime/distributions.py: distribution scanning on fake site-packages trees (dist-info, egg-info,
editable installs) and file -> distribution mapping, without importlib.metadata."""
import json
from pathlib import Path

import pytest

from envrepro.runtime import distributions
from envrepro.runtime.facts import canonical_name


def write(path, text=""):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def dist_info(site, folder, name, version, requires=(), record=(), top_level=None,
              installer="pip", direct_url=None, body="", requested=True):
    meta = site / folder
    headers = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
               "Summary: a test distribution"]
    headers += [f"Requires-Dist: {r}" for r in requires]
    write(meta / "METADATA", "\n".join(headers) + "\n\n" + body)
    rec = list(record) + [f"{folder}/METADATA,,", f"{folder}/RECORD,,"]
    write(meta / "RECORD", "\n".join(f"{r},sha256=abc,1" if "," not in r else r for r in rec) + "\n")
    if installer:
        write(meta / "INSTALLER", installer + "\n")
    if top_level is not None:
        write(meta / "top_level.txt", "\n".join(top_level) + "\n")
    if direct_url is not None:
        write(meta / "direct_url.json", json.dumps(direct_url))
    if requested:
        write(meta / "REQUESTED")
    return meta


@pytest.fixture
def tree(tmp_path):
    """Two site folders and an editable project, the way pip leaves them."""
    site = tmp_path / "site-packages"
    site2 = tmp_path / "other" / "site-packages"
    proj = tmp_path / "proj"
    # A wheel without top_level.txt (hatchling): import names come from RECORD.
    write(site / "foo_bar" / "__init__.py")
    write(site / "foo_bar" / "core.py")
    write(site / "foo_helpers.py")
    dist_info(site, "Foo_Bar-1.2.3.dist-info", "Foo_Bar", "1.2.3",
              requires=["numpy>=1.19", 'six; extra == "compat"'],
              record=["foo_bar/__init__.py", "foo_bar/core.py", "foo_helpers.py",
                      "foo_bar/__pycache__/core.cpython-311.pyc", "../../bin/foo"],
              body="Requires-Dist: not-a-header\nlong description\n")
    # Namespace package shared by two distributions: only RECORD can tell them apart.
    write(site / "google" / "alpha" / "__init__.py")
    write(site / "google" / "beta" / "__init__.py")
    dist_info(site, "google_alpha-1.0.dist-info", "google-alpha", "1.0",
              record=["google/alpha/__init__.py"], top_level=["google"])
    dist_info(site, "google_beta-2.0.dist-info", "google-beta", "2.0",
              record=["google/beta/__init__.py"], top_level=["google"])
    # VCS install.
    write(site / "vcspkg" / "__init__.py")
    dist_info(site, "vcspkg-0.1.dist-info", "vcspkg", "0.1", record=["vcspkg/__init__.py"],
              top_level=["vcspkg"],
              direct_url={"url": "https://github.com/o/vcspkg.git",
                          "vcs_info": {"vcs": "git", "commit_id": "deadbeef"}})
    # PEP 660 editable install of ./proj (package proj_pkg), its files outside site-packages.
    write(proj / "proj_pkg" / "__init__.py")
    write(proj / "proj_pkg" / "layers.py")
    write(proj / "train.py")
    dist_info(site, "proj_pkg-0.0.1.dist-info", "proj-pkg", "0.0.1",
              record=["__editable__.proj_pkg-0.0.1.pth"], top_level=["proj_pkg"],
              direct_url={"url": proj.as_uri(), "dir_info": {"editable": True}})
    # Legacy egg-info (setup.py install) with requires.txt sections and installed-files.txt.
    write(site / "termcolor.py")
    egg = site / "termcolor-1.1.0-py3.8.egg-info"
    write(egg / "PKG-INFO", "Metadata-Version: 1.1\nName: termcolor\nVersion: 1.1.0\n"
                            "Description: multi\n        line\n\nbody\n")
    write(egg / "requires.txt", "wrapt>=1.0\n\n[dev]\npytest\n\n[:python_version < \"3.8\"]\n"
                                "importlib-metadata\n\n[fast:sys_platform == \"linux\"]\nuvloop\n")
    write(egg / "installed-files.txt", "../termcolor.py\nPKG-INFO\n")
    write(egg / "top_level.txt", "termcolor\n")
    # A second site folder with another Foo_Bar: the first on the path wins, like pip.
    dist_info(site2, "foo_bar-9.9.dist-info", "foo-bar", "9.9", record=[])
    dist_info(site2, "late-1.0.dist-info", "late", "1.0", record=["late.py"])
    write(site2 / "late.py")
    # A folder with metadata but no METADATA file is ignored.
    write(site2 / "broken-1.0.dist-info" / "RECORD", "")
    return {"site": site, "site2": site2, "proj": proj,
            "path": [str(site), str(site2), str(tmp_path / "missing"), str(proj)]}


def test_scan_reads_metadata_headers_only(tree):
    dists = distributions.scan_distributions(tree["path"])
    foo = dists.get("foo-bar")
    assert foo["name"] == "Foo_Bar" and foo["version"] == "1.2.3"
    assert foo["requires"] == ["numpy>=1.19", 'six; extra == "compat"']  # not the body's line
    assert foo["installer"] == "pip" and foo["requested"] is True
    assert foo["location"] == str(tree["site"])
    assert foo["metadata_dir"] == str(tree["site"] / "Foo_Bar-1.2.3.dist-info")
    assert foo["top_level"] == ["foo_bar", "foo_helpers"]  # derived from RECORD
    assert foo["editable"] is False and foo["direct_url"] is None


def test_first_occurrence_wins_and_sorted_public_form(tree):
    dists = distributions.scan_distributions(tree["path"])
    pub = dists.public()
    names = [d["name"] for d in pub]
    assert names == sorted(names, key=canonical_name)
    assert names.count("Foo_Bar") == 1 and "foo-bar" not in names
    assert dists.get("Foo-Bar")["version"] == "1.2.3"
    assert "late" in names and "broken" not in names
    for d in pub:
        assert not any(k.startswith("_") for k in d)
        assert set(d) >= {"name", "version", "requires", "location", "installer", "direct_url",
                          "editable", "top_level", "metadata_dir"}
    json.dumps(pub)


def test_editable_and_vcs_direct_url(tree):
    dists = distributions.scan_distributions(tree["path"])
    ed = dists.get("proj-pkg")
    assert ed["editable"] is True
    assert ed["direct_url"]["dir_info"] == {"editable": True}
    vcs = dists.get("vcspkg")
    assert vcs["editable"] is False and vcs["direct_url"]["vcs_info"]["commit_id"] == "deadbeef"


def test_egg_info(tree):
    dists = distributions.scan_distributions(tree["path"])
    egg = dists.get("termcolor")
    assert egg["version"] == "1.1.0" and egg["top_level"] == ["termcolor"]
    assert egg["installer"] is None and egg["editable"] is False
    assert egg["requires"] == ["wrapt>=1.0", 'pytest; extra == "dev"',
                               'importlib-metadata; python_version < "3.8"',
                               'uvloop; extra == "fast" and (sys_platform == "linux")']


def test_file_to_distribution(tree):
    site, proj = tree["site"], tree["proj"]
    dists = distributions.scan_distributions(tree["path"])
    name = lambda p: (dists.for_file(str(p)) or {}).get("name")  # noqa: E731
    assert name(site / "foo_bar" / "core.py") == "Foo_Bar"
    assert name(site / "foo_bar" / "__pycache__" / "core.cpython-311.pyc") is None
    assert name(site / "foo_helpers.py") == "Foo_Bar"
    assert name(site / "google" / "alpha" / "__init__.py") == "google-alpha"
    assert name(site / "google" / "beta" / "__init__.py") == "google-beta"
    assert name(site / "termcolor.py") == "termcolor"
    assert name(site / "vcspkg" / "__init__.py") == "vcspkg"
    assert name(proj / "proj_pkg" / "layers.py") == "proj-pkg"
    assert name(proj / "train.py") is None  # next to the package, not part of it
    assert name(tree["site2"] / "late.py") == "late"
    assert name(site / "unknown.py") is None
    assert distributions.distribution_for_file(str(site / "foo_bar" / "core.py"), dists) == "Foo_Bar"


def test_develop_mode_egg_info_is_editable(tmp_path):
    proj = tmp_path / "devproj"
    write(proj / "devpkg" / "__init__.py")
    write(proj / "devpkg.egg-info" / "PKG-INFO", "Metadata-Version: 2.1\nName: devpkg\nVersion: 0.3\n")
    write(proj / "devpkg.egg-info" / "top_level.txt", "devpkg\n")
    dists = distributions.scan_distributions([str(proj)])
    dev = dists.get("devpkg")
    assert dev["editable"] is True
    assert dists.for_file(str(proj / "devpkg" / "__init__.py"))["name"] == "devpkg"


def test_scan_of_this_interpreter_is_fast_and_finds_pytest():
    import time

    t = time.perf_counter()
    dists = distributions.scan_distributions()
    elapsed = time.perf_counter() - t
    assert dists.get("pytest") is not None
    assert elapsed < 0.5
    assert dists.for_file(pytest.__file__)["name"].lower() == "pytest"
