"""Unit tests never read or write the developer's home, config, cache or registry settings.

They live in one folder per room (``tests/unit/<room>/``, as ``envrepro/<room>/``); the tests of
the top-level modules and the shared helpers (``fakes.py``, ``fake_dists.py``...) are here. Every
folder is put on sys.path, so a test imports the helpers and a few fixtures of its neighbours by
module name (test modules have unique names across folders).
"""
import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
for _folder in [_HERE] + sorted(p for p in _HERE.iterdir() if p.is_dir() and p.name not in ("snapshots", "__pycache__")):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("ENVREPRO_BASE_IMAGE", "ENVREPRO_REGISTRY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(autouse=True)
def dockerfile_builder_by_default(request, monkeypatch):
    """The fake engine builds from Dockerfiles: image tests read the context they send. Tests of
    the wheelhouse builder (test_wheelhouse*.py, test_commitbuild.py) choose it themselves."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    if not (name.startswith("test_wheelhouse") or name == "test_commitbuild"):
        monkeypatch.setenv("ENVREPRO_BUILDER", "dockerfile")


@pytest.fixture(autouse=True)
def no_real_resolution(request, monkeypatch):
    """Unit tests never resolve against the index with pip-compile: a translated lock (a macOS or
    Windows capture, ``--gpus``) comes from a fake resolver or was put in the cache first."""
    if request.module.__name__.rsplit(".", 1)[-1] == "test_resolve":
        return
    from envrepro.packages import compile as resolve

    def refuse(*args, **kwargs):
        raise AssertionError("a unit test reached the real pip-compile: pass platforms.translate a "
                             "fake resolver, or translate into the cache first")
    monkeypatch.setattr(resolve, "pip_compile", refuse)
