"""Shared fixtures: the Python 3.8 + TF 2.4.1 and 3.9 + TF 2.8.4 training environments, and CI's
rules.

With CI=true nothing that needs a real component may skip: a missing Python 3.8, TensorFlow or
Docker engine fails the run, and a run in which no end-to-end test passed fails too. As a net
under those rules, any test that still skips under CI=true (an ``importorskip``, a ``skipif``)
fails the session, named.
"""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import CI, DEV_CACHE, REPO, need, pyenv_python  # noqa: E402,F401


def _venv_key(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode())
    return h.hexdigest()[:12]


def _pip(py, *args):
    proc = subprocess.run([str(py), "-m", "pip", "-q", *args], capture_output=True, text=True)
    if proc.returncode:
        pytest.fail(f"pip {' '.join(args)} failed under {py}:\n{proc.stderr[-3000:]}", pytrace=False)


def _py38_venv(name, *pins):
    """A cached Python 3.8 virtualenv with ``pins`` and envrepro from this checkout, keyed by
    the interpreter and the pins (a changed pin builds a new one)."""
    base = pyenv_python("3.8")
    need(base, "no Python 3.8 interpreter (pyenv's 3.8 build) found")
    venv = DEV_CACHE / f"{name}-{_venv_key(base, *pins)}"
    py = venv / "bin" / "python"
    imports = ", ".join(["tensorflow", "yaml"] + [p.split("==")[0].replace("-", "_")
                                                  for p in pins[1:]])
    ok = py.exists() and subprocess.run([str(py), "-c", f"import {imports}"], capture_output=True).returncode == 0
    if not ok:
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        _pip(py, "install", *pins)
    # envrepro from this checkout, with its dependencies resolved for Python 3.8
    _pip(py, "install", "-e", str(REPO))
    return str(py)


def _pinned_venv(minor, name, pins, module):
    """A cached virtualenv of pyenv's Python ``minor`` with ``pins`` and nothing else, keyed by
    the interpreter and the pins; rebuilt when ``module`` does not import."""
    base = pyenv_python(minor)
    need(base, f"no Python {minor} interpreter (pyenv's {minor} build) found")
    venv = DEV_CACHE / f"{name}-{_venv_key(base, *pins)}"
    py = venv / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", f"import {module}"], capture_output=True).returncode == 0
    if not ok:
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        _pip(py, "install", *pins)
    return str(py)


TF28_PINS = ("tensorflow-cpu==2.8.4", "protobuf<4", "numpy<1.24")


@pytest.fixture(scope="session")
def py39_tf28():
    """A Python 3.9 virtualenv with tensorflow-cpu==2.8.4 and nothing else (cached by key): the
    issue-8 environment whose subclassed models load only by SavedModel revival. TF 2.8's own
    requirements admit protobuf 4 and numpy 1.24, which break it today, hence the pins."""
    return _pinned_venv("3.9", "venv39-tf284", TF28_PINS, "tensorflow")


PY36_NUMPY_PINS = ("numpy==1.19.5",)


@pytest.fixture(scope="session")
def py36_numpy():
    """A Python 3.6 virtualenv with numpy 1.19.5 (the last release for 3.6) and nothing else
    (cached by key): the oldest interpreter the runtime supports, for the model server's tests."""
    return _pinned_venv("3.6", "venv36-numpy", PY36_NUMPY_PINS, "numpy")


@pytest.fixture(scope="session")
def py38_tf24():
    """A Python 3.8 virtualenv with tensorflow-cpu==2.4.1 and envrepro installed (cached by key)."""
    return _py38_venv("venv38-tf241", "tensorflow-cpu==2.4.1")


@pytest.fixture(scope="session")
def py38_tf24_addons():
    """py38_tf24 plus tensorflow-addons 0.12.1 (the release built for TF 2.4): AdamW models."""
    return _py38_venv("venv38-tf241-tfa", "tensorflow-cpu==2.4.1", "tensorflow-addons==0.12.1")


@pytest.fixture(scope="session")
def tf():
    try:
        import tensorflow as tf_mod  # noqa: F401
    except ImportError:
        need(False, "TensorFlow is not installed on the host (make venv installs tensorflow-cpu)")
    return tf_mod


_E2E = {"passed": 0, "collected": 0}
_SKIPPED = []
_FIGURES = []     # lines a test records with record_property("figure", ...), printed at the end


def pytest_collection_modifyitems(config, items):
    _E2E["collected"] = sum(1 for i in items if i.get_closest_marker("e2e"))


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed and "e2e" in report.keywords:
        _E2E["passed"] += 1
    if report.when == "call":
        _FIGURES.extend(v for k, v in report.user_properties if k == "figure")
    if report.skipped:
        _SKIPPED.append(f"{report.nodeid}: {report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr}")


def pytest_sessionfinish(session, exitstatus):
    if CI and _SKIPPED and exitstatus == 0:
        session.exitstatus = 1
        print(f"\nCI=true but {len(_SKIPPED)} test(s) skipped (no test may skip in CI):\n  "
              + "\n  ".join(_SKIPPED), file=sys.stderr)
    if CI and _E2E["collected"] and _E2E["passed"] == 0 and exitstatus == 0:
        session.exitstatus = 1
        print("\nCI=true but no end-to-end test passed", file=sys.stderr)


def pytest_terminal_summary(terminalreporter):
    for line in _FIGURES:
        terminalreporter.write_line(line)
    if _E2E["collected"]:
        terminalreporter.write_line(f"end-to-end tests passed: {_E2E['passed']} of {_E2E['collected']} collected")
