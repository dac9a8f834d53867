"""envrepro as it is shipped: the wheel holds every module and data file of the source tree and
nothing else, and the commands work from it alone (an unpacked wheel, a zip on sys.path), with no
source tree to fall back on. A file missing from an install is one line and exit 70.

The wheel is built from a copy of the tree with the venv's own setuptools (no index reached);
scripts/check-dist.sh builds it the PyPA way in CI and runs the end-to-end smoke from it.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from fakes import make_capture

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import LIST_COMMANDS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
_CACHES = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", "*.egg-info", ".pytest_cache", ".venv*", ".cache")
_OUTPUTS = {"build", "dist", "demo-out", "matrix-out"}   # build outputs at the top (no room is called build)


def IGNORED(folder, names):
    skip = set(_CACHES(folder, names))
    if Path(folder) == REPO:
        skip |= _OUTPUTS & set(names)
    return skip


def _shipped_sources():
    """What the wheel must hold, from the source tree: every file under envrepro/ and every
    template under images/ (shipped as envrepro/images/), caches and editor leftovers aside."""
    out = set()
    for top, prefix in (("envrepro", "envrepro"), ("images", "envrepro/images")):
        for p in (REPO / top).rglob("*"):
            rel = p.relative_to(REPO / top)
            if (p.is_file() and "__pycache__" not in rel.parts and not p.name.startswith(".")
                    and not p.name.endswith((".pyc", "~", ".orig", ".rej"))):
                out.add(f"{prefix}/{rel.as_posix()}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp("src") / "envrepro-src"
    shutil.copytree(REPO, src, ignore=IGNORED)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(out.glob("envrepro-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory):
    """The wheel unpacked as pip would put it in site-packages."""
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    return target


def run_from(path, *args, env=None, cwd=None):
    """``envrepro ARGS`` importing envrepro from ``path`` (a folder or a zip) and nothing else of
    envrepro: ``-S`` keeps site's .pth files (the dev venv's editable finder, which would fall
    back to the checkout) out, and only this venv's site-packages is added, for the dependencies."""
    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); sys.path.append(sys.argv.pop(1)); "
            "import envrepro; assert envrepro.__file__.startswith(sys.path[0]), envrepro.__file__; "
            "from envrepro.cli import main; sys.argv[0] = 'envrepro'; main()")
    full = dict(os.environ, COLUMNS="100", **(env or {}))
    full.pop("ENVREPRO_DEBUG", None)
    full.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-S", "-c", code, str(path), sysconfig.get_paths()["purelib"],
                           *map(str, args)], capture_output=True, text=True, env=full,
                          cwd=str(cwd or path.parent), timeout=300)


def test_the_wheel_holds_every_module_and_data_file_and_nothing_else(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = {n for n in zf.namelist() if not n.startswith("envrepro-")}
        meta = [n for n in zf.namelist() if n.startswith("envrepro-")]
    expected = _shipped_sources()
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert not names - expected, f"in the wheel but not in the source tree: {sorted(names - expected)}"
    # every room of the package, the runtime that runs in old interpreters, templates, tables
    for must in ("envrepro/bundling/write.py", "envrepro/packages/wheelhouse/store.py", "envrepro/runtime/loader.py",
                 "envrepro/images/env.Dockerfile", "envrepro/images/fragments/install.Dockerfile",
                 "envrepro/images/wheelhouse-install.sh", "envrepro/data/compat.yaml"):
        assert must in names
    assert not any(n.startswith(("tests/", "docs/", "examples/", "build/")) or "__pycache__" in n for n in names)
    assert any(n.endswith("/entry_points.txt") for n in meta) and any(n.endswith("/LICENSE") for n in meta)


def test_every_folder_of_the_package_is_a_package_of_the_wheel(wheel):
    """A new room (a folder of envrepro/) ships without anyone listing it."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for folder in [p for p in (REPO / "envrepro").rglob("*") if p.is_dir() and p.name != "__pycache__"]:
        rel = folder.relative_to(REPO).as_posix()
        if any(f.is_file() and f.suffix == ".py" for f in folder.iterdir()):
            assert any(n.startswith(rel + "/") for n in names), f"{rel} is not in the wheel"


def test_version_comes_from_the_package_metadata(site):
    out = run_from(site, "--version")
    assert out.returncode == 0, out.stderr
    from importlib.metadata import version

    line = out.stdout.strip()
    assert line.startswith(f"envrepro {version('envrepro')} (runtime ")
    assert "capture format envrepro/v1" in line and f"Python {sys.version.split()[0]}" in line


def _commands(site):
    """Every command and subcommand, as argv prefixes (from the wheel's own click tree)."""
    proc = subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path[:0] = sys.argv[1:3]; del sys.argv[1:3]\n"
                           + LIST_COMMANDS, str(site), sysconfig.get_paths()["purelib"]],
                          capture_output=True, text=True, cwd=str(site.parent))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_commands_help_renders_from_the_wheel(site):
    commands = _commands(site)
    assert ["push"] in commands and ["images", "prune"] in commands and len(commands) >= 15
    for argv in commands:
        out = run_from(site, *argv, "--help")
        assert out.returncode == 0 and "Usage" in out.stdout, (argv, out.stdout[-500:], out.stderr[-500:])
        assert "error" not in out.stderr.lower(), (argv, out.stderr)
    assert "HOST[:PORT][/NAMESPACE]" in run_from(site, "push", "--help").stdout.replace("\n", "")


def test_commands_run_from_the_wheel_without_the_source_tree(site, tmp_path):
    cap = make_capture(tmp_path / "work")
    out = run_from(site, "dockerfile", cap.model_path, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "FROM python:3.8-slim" in out.stdout
    inspected = run_from(site, "inspect", cap.model_path, "--json", cwd=tmp_path)
    assert inspected.returncode == 0 and json.loads(inspected.stdout)


def test_a_template_missing_from_the_install_is_one_line_and_exit_70(site, tmp_path):
    broken = tmp_path / "broken-site"
    shutil.copytree(site, broken)
    (broken / "envrepro" / "images" / "fragments" / "install.Dockerfile").unlink()
    cap = make_capture(tmp_path / "work")
    out = run_from(broken, "dockerfile", cap.model_path, cwd=tmp_path)
    assert out.returncode == 70, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "envrepro/images/fragments/install.Dockerfile is missing" in lines[0]
    assert "pip install --force-reinstall envrepro" in lines[0]


def test_a_module_missing_from_the_install_is_one_line_and_exit_70(site, tmp_path):
    broken = tmp_path / "broken-site"
    shutil.copytree(site, broken)
    shutil.rmtree(broken / "envrepro" / "bundling")
    cap = make_capture(tmp_path / "work")
    out = run_from(broken, "bundle", cap.model_path, "-o", tmp_path / "x.tar", "--wheels", cwd=tmp_path)
    assert out.returncode == 70, out.stdout + out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert "module envrepro.bundling is missing" in out.stderr and "--force-reinstall" in out.stderr


def test_a_runtime_file_missing_from_an_installed_wheel_is_named(tmp_path, wheel):
    """Installed for real (RECORD in place), a deleted runtime module is found before any
    container or probe starts."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    code = "import envrepro.runtime, os; print(os.path.dirname(envrepro.runtime.__file__))"
    rt = Path(subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=str(tmp_path)).stdout.strip())
    assert str(rt).startswith(str(venv)), rt
    (rt / "reference.py").unlink()
    proc = subprocess.run([str(py), "-c", "from envrepro import shipped; shipped.runtime_dir()"],
                          capture_output=True, text=True, cwd=str(tmp_path))
    assert "envrepro/runtime/reference.py is missing" in proc.stderr


def test_envrepro_runs_from_a_zip_and_mounts_a_real_runtime_folder(site, tmp_path):
    """A zipapp-like layout: the package is read through importlib.resources, and the runtime
    (which Docker mounts and old interpreters import by path) is copied once into the cache."""
    archive = tmp_path / "envrepro.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted((site / "envrepro").rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(site).as_posix())
    cap = make_capture(tmp_path / "work")
    cache = tmp_path / "xdg"
    out = run_from(archive, "dockerfile", cap.model_path, cwd=tmp_path, env={"XDG_CACHE_HOME": str(cache)})
    assert out.returncode == 0, out.stderr
    assert "FROM python:3.8-slim" in out.stdout
    code = ("import sys; sys.path.insert(0, sys.argv[1]); sys.path.append(sys.argv[2]); import envrepro; "
            "assert envrepro.__file__.startswith(sys.argv[1]); from envrepro import shipped; print(shipped.runtime_dir())")
    argv = [sys.executable, "-S", "-c", code, str(archive), sysconfig.get_paths()["purelib"]]
    first = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, XDG_CACHE_HOME=str(cache)),
                           cwd=str(tmp_path))
    again = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, XDG_CACHE_HOME=str(cache)),
                           cwd=str(tmp_path))
    folder = Path(first.stdout.strip())
    assert first.returncode == 0 and folder.is_dir() and str(folder).startswith(str(cache)), first.stderr
    assert again.stdout == first.stdout     # copied once, by digest
    shipped_names = {p.name for p in (site / "envrepro" / "runtime").glob("*.py")}
    assert {p.name for p in folder.glob("*.py")} == shipped_names
    # the copy runs as the runtime package under a plain interpreter, as in a container: the
    # probe imports every module it needs and answers a missing model with its one line, exit 2
    from envrepro.runtime import launch

    argv = launch.host_argv(sys.executable, "probe", ["--model", tmp_path / "nope.h5", "--out", tmp_path / "o"],
                            root=str(folder))
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 2 and "Error" not in proc.stderr.split(":")[0], proc.stderr
    assert "ImportError" not in proc.stderr and "ModuleNotFound" not in proc.stderr, proc.stderr
