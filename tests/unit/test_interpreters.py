"""envrepro.interpreters: finding a host interpreter of a Python X.Y (moved from test_resolve.py)."""
import sys

import pytest

from envrepro import interpreters
from envrepro.errors import EnvreproError


def test_find_python(monkeypatch, tmp_path):
    assert interpreters.find_python("%d.%d" % sys.version_info[:2]) == sys.executable
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.delenv("ENVREPRO_RESOLVE_PYTHON", raising=False)
    monkeypatch.setattr(interpreters.shutil, "which", lambda name: None)
    assert interpreters.find_python("2.1") is None
    monkeypatch.setenv("ENVREPRO_RESOLVE_PYTHON", sys.executable)
    assert interpreters.find_python("%d.%d" % sys.version_info[:2]) == sys.executable


def test_pyenv_versions_are_tried_newest_first(monkeypatch, tmp_path):
    for v in ("3.8.9", "3.8.18", "3.8-dev", "3.80.1"):
        (tmp_path / "versions" / v / "bin").mkdir(parents=True)
        (tmp_path / "versions" / v / "bin" / "python").write_text("")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    found = interpreters._pyenv_pythons("3.8")
    assert [p.split("/versions/")[1].split("/")[0] for p in found] == ["3.8.18", "3.8.9"]


def test_find_interpreter_gives_the_full_version():
    xy = "%d.%d" % sys.version_info[:2]
    assert interpreters.find_interpreter(xy) == (sys.executable, "%d.%d.%d" % sys.version_info[:3])
    assert interpreters.python_version(sys.executable) == "%d.%d.%d" % sys.version_info[:3]
    assert interpreters.python_version("/nonexistent/python") is None


def test_python_xy():
    assert interpreters.python_xy("3.8.18") == "3.8" and interpreters.python_xy("3.11") == "3.11"
    with pytest.raises(EnvreproError, match="not a Python version"):
        interpreters.python_xy("three")
