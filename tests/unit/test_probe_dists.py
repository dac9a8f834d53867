"""The runtime probe without TensorFlow: distribution scanning on fake site-packages trees,
file -> distribution mapping, JSON-safety, format detection, script errors, Python 3.6 syntax."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from envrepro.runtime import probe

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "envrepro" / "runtime" / "probe.py"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support import pyenv_python  # noqa: E402

PY36 = pyenv_python("3.6") or "/nonexistent/python3.6"
CI = os.environ.get("CI", "").lower() == "true"


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


def test_module_does_not_import_tensorflow_or_numpy():
    code = ("import sys; sys.path.insert(0, %r); import envrepro.runtime.probe; "
            "bad = [m for m in ('tensorflow', 'keras', 'numpy', 'h5py') if m in sys.modules]; "
            "assert not bad, bad" % str(REPO))
    subprocess.run([sys.executable, "-c", code], check=True)


def test_scan_reads_metadata_headers_only(tree):
    dists = probe.scan_distributions(tree["path"])
    foo = dists.get("foo-bar")
    assert foo["name"] == "Foo_Bar" and foo["version"] == "1.2.3"
    assert foo["requires"] == ["numpy>=1.19", 'six; extra == "compat"']  # not the body's line
    assert foo["installer"] == "pip" and foo["requested"] is True
    assert foo["location"] == str(tree["site"])
    assert foo["metadata_dir"] == str(tree["site"] / "Foo_Bar-1.2.3.dist-info")
    assert foo["top_level"] == ["foo_bar", "foo_helpers"]  # derived from RECORD
    assert foo["editable"] is False and foo["direct_url"] is None


def test_first_occurrence_wins_and_sorted_public_form(tree):
    dists = probe.scan_distributions(tree["path"])
    pub = dists.public()
    names = [d["name"] for d in pub]
    assert names == sorted(names, key=probe.canonical_name)
    assert names.count("Foo_Bar") == 1 and "foo-bar" not in names
    assert dists.get("Foo-Bar")["version"] == "1.2.3"
    assert "late" in names and "broken" not in names
    for d in pub:
        assert not any(k.startswith("_") for k in d)
        assert set(d) >= {"name", "version", "requires", "location", "installer", "direct_url",
                          "editable", "top_level", "metadata_dir"}
    json.dumps(pub)


def test_editable_and_vcs_direct_url(tree):
    dists = probe.scan_distributions(tree["path"])
    ed = dists.get("proj-pkg")
    assert ed["editable"] is True
    assert ed["direct_url"]["dir_info"] == {"editable": True}
    vcs = dists.get("vcspkg")
    assert vcs["editable"] is False and vcs["direct_url"]["vcs_info"]["commit_id"] == "deadbeef"


def test_egg_info(tree):
    dists = probe.scan_distributions(tree["path"])
    egg = dists.get("termcolor")
    assert egg["version"] == "1.1.0" and egg["top_level"] == ["termcolor"]
    assert egg["installer"] is None and egg["editable"] is False
    assert egg["requires"] == ["wrapt>=1.0", 'pytest; extra == "dev"',
                               'importlib-metadata; python_version < "3.8"',
                               'uvloop; extra == "fast" and (sys_platform == "linux")']


def test_file_to_distribution(tree):
    site, proj = tree["site"], tree["proj"]
    dists = probe.scan_distributions(tree["path"])
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
    assert probe.distribution_for_file(str(site / "foo_bar" / "core.py"), dists) == "Foo_Bar"


def test_develop_mode_egg_info_is_editable(tmp_path):
    proj = tmp_path / "devproj"
    write(proj / "devpkg" / "__init__.py")
    write(proj / "devpkg.egg-info" / "PKG-INFO", "Metadata-Version: 2.1\nName: devpkg\nVersion: 0.3\n")
    write(proj / "devpkg.egg-info" / "top_level.txt", "devpkg\n")
    dists = probe.scan_distributions([str(proj)])
    dev = dists.get("devpkg")
    assert dev["editable"] is True
    assert dists.for_file(str(proj / "devpkg" / "__init__.py"))["name"] == "devpkg"


def test_scan_of_this_interpreter_is_fast_and_finds_pytest():
    import time

    t = time.perf_counter()
    dists = probe.scan_distributions()
    elapsed = time.perf_counter() - t
    assert dists.get("pytest") is not None
    assert elapsed < 0.5
    assert dists.for_file(pytest.__file__)["name"].lower() == "pytest"


def test_json_safe():
    np = pytest.importorskip("numpy")

    class Sched(object):
        def get_config(self):
            return {"rate": np.float32(0.5), "steps": np.int64(10)}

    def fn():
        pass

    out = probe.json_safe({
        "a": np.float32(0.9), "b": np.int64(3), "c": np.bool_(True), "d": float("nan"),
        "e": (1, 2), "f": {3, 1}, "g": b"x", "h": Sched(), "i": fn, "j": np.arange(3),
        "k": np.zeros((50, 50)), 5: None, "l": object,
    })
    assert out["a"] == 0.9 and out["b"] == 3 and out["c"] is True and out["d"] == "nan"
    assert out["e"] == [1, 2] and out["f"] == [1, 3] and out["g"] == "x"
    assert out["h"]["class_name"] == "Sched" and out["h"]["config"] == {"rate": 0.5, "steps": 10}
    assert out["i"].endswith("test_json_safe.<locals>.fn")
    assert out["j"] == [0, 1, 2] and out["k"].startswith("<array shape=[50, 50]")
    assert out["5"] is None and out["l"] == "builtins.object"
    json.dumps(out, allow_nan=False)


def test_detect_format(tmp_path):
    h5 = tmp_path / "weird.model"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 16)
    zf = tmp_path / "m.bin"
    zf.write_bytes(b"PK\x03\x04rest")
    sm = tmp_path / "sm"
    write(sm / "saved_model.pb", "x")
    lfs = tmp_path / "m.h5"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\n")
    assert probe.detect_format(str(h5)) == "h5"
    assert probe.detect_format(str(zf)) == "keras"
    assert probe.detect_format(str(sm)) == "savedmodel"
    assert probe.detect_format(str(tmp_path)) is None
    assert probe.detect_format(str(lfs)) is None  # a pointer, not a model
    assert probe.detect_format(str(tmp_path / "future.keras")) == "keras"


def test_load_sample(tmp_path):
    np = pytest.importorskip("numpy")
    np.save(tmp_path / "one.npy", np.ones((2, 3)))
    np.savez(tmp_path / "list.npz", np.ones(2), np.zeros(3))
    np.savez(tmp_path / "dict.npz", a=np.ones(2), b=np.zeros(3))
    assert probe.load_sample(str(tmp_path / "one.npy")).shape == (2, 3)
    lst = probe.load_sample(str(tmp_path / "list.npz"))
    assert isinstance(lst, list) and [a.shape for a in lst] == [(2,), (3,)]
    dct = probe.load_sample(str(tmp_path / "dict.npz"))
    assert sorted(dct) == ["a", "b"]


def test_python_facts():
    facts = probe.python_facts()
    assert facts["version"] == "%d.%d.%d" % sys.version_info[:3]
    assert facts["executable"] == sys.executable and facts["prefix"] == sys.prefix
    if sys.platform.startswith("linux"):
        assert facts["libc"] is None or facts["libc"].startswith(("glibc ", "musl"))


def _script(*args, env=None):
    full = dict(os.environ)
    full.pop("ENVREPRO_DEBUG", None)
    full.update(env or {})
    return subprocess.run([sys.executable, str(PROBE)] + [str(a) for a in args],
                          capture_output=True, text=True, env=full, timeout=120)


def test_script_missing_model_is_one_line_exit_2(tmp_path):
    proc = _script("--model", tmp_path / "nope.h5", "--out", tmp_path / "out")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("envrepro-probe: error: no model at ")
    assert "(" in lines[0] and lines[0].endswith(")")


def test_script_bad_module_and_debug_traceback(tmp_path):
    model = write(tmp_path / "m.h5", "")
    proc = _script("--model", model, "--out", tmp_path / "out", "--module", "no_such_mod_xyz")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "cannot import module no_such_mod_xyz" in proc.stderr and "--code-path" in proc.stderr
    proc = _script("--model", model, "--out", tmp_path / "out", "--module", "no_such_mod_xyz",
                   env={"ENVREPRO_DEBUG": "1"})
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_script_no_load_writes_environment_facts(tmp_path):
    """--no-load never imports a Keras model: facts of the environment only."""
    model = write(tmp_path / "m.keras", "")
    out = tmp_path / "out"
    proc = _script("--model", model, "--out", out, "--no-load")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "facts.json")
    facts = json.loads((out / "facts.json").read_text())
    assert facts["probe_version"] == 1
    assert facts["model"]["loaded_by_probe"] is False and facts["reference"] is None
    assert facts["reference_skipped"]
    assert any(d["name"].lower() == "pytest" for d in facts["distributions"])


def test_script_does_not_let_runtime_folder_shadow_user_modules(tmp_path):
    """Run as a script, the runtime folder is sys.path[0]; it must not stay there."""
    model = write(tmp_path / "m.keras", "")
    code = tmp_path / "code"
    write(code / "loader.py", "WHO = 'user'\n")
    out = tmp_path / "out"
    proc = _script("--model", model, "--out", out, "--no-load", "--module", "loader",
                   "--code-path", code)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads((out / "facts.json").read_text())
    mods = {m["module"]: m for m in facts["modules"]}
    assert mods["loader"]["file"] == str(code / "loader.py")
    assert mods["loader"]["root"] == str(code / "loader.py")
    assert mods["loader"]["source_root"] == str(code) and mods["loader"]["distribution"] is None


@pytest.mark.parametrize("python", [PY36, sys.executable])
def test_probe_compiles_under_old_and_new_python(python, tmp_path):
    if not os.path.exists(python):
        if CI:
            pytest.fail("CI=true and %s is missing" % python)
        pytest.skip("%s not installed" % python)
    subprocess.run([python, "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], "
                    "cfile=sys.argv[2], doraise=True)", str(PROBE), str(tmp_path / "p.pyc")],
                   check=True)


def test_probe_runs_without_tensorflow_under_python36(tmp_path):
    """The environment half of the probe works on the oldest supported Python."""
    if not os.path.exists(PY36):
        if CI:
            pytest.fail("CI=true and %s is missing" % PY36)
        pytest.skip("Python 3.6 not installed")
    model = write(tmp_path / "m.h5", "")
    proc = subprocess.run([PY36, str(PROBE), "--model", str(model), "--out", str(tmp_path / "o"),
                           "--no-load"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads((tmp_path / "o" / "facts.json").read_text())
    assert facts["python"]["version"].startswith("3.6.")
