"""Fixtures for end-to-end tests against a real Docker engine.

``engine``: a connected ``envrepro.engine.docker.DockerEngine``; skips when no engine answers, fails when
CI=true (end-to-end tests never skip in CI). ``standin_38`` / ``standin_39`` / ``standin_311``: local stand-ins
for ``python:3.8-slim`` / ``python:3.9-slim`` / ``python:3.11-slim`` (tests/e2e/standins.py), built once and cached by tag.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import standins  # noqa: E402

CI = os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    if CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engine():
    from envrepro.engine.docker import DockerEngine
    from envrepro.errors import NoEngine

    try:
        return DockerEngine().connect()
    except NoEngine as e:
        skip_or_fail(f"no Docker engine: {e}")


def _standin(engine, tag: str) -> str:
    try:
        return standins.ensure_standin(tag)
    except SystemExit as e:  # standins reports its failures as SystemExit(message)
        skip_or_fail(f"cannot build the stand-in {tag}: {e}")
        raise


@pytest.fixture(scope="session")
def standin_38(engine) -> str:
    return _standin(engine, "python:3.8-slim")


@pytest.fixture(scope="session")
def standin_311(engine) -> str:
    return _standin(engine, "python:3.11-slim")


@pytest.fixture(scope="session")
def standin_312(engine) -> str:
    return _standin(engine, "python:3.12-slim")


@pytest.fixture(scope="session")
def standin_39(engine) -> str:
    return _standin(engine, "python:3.9-slim")
