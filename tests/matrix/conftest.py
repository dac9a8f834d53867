"""The fidelity matrix runs with ``make matrix`` (ENVREPRO_MATRIX=1), not with ``make test``: it
trains models in five real TensorFlow environments and loads each in Docker. At the end it prints
the matrix as a table (runner.table) and writes it to matrix-out/matrix.txt."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402

import runner  # noqa: E402
from support import need  # noqa: E402

if os.environ.get("ENVREPRO_MATRIX") != "1":
    collect_ignore = ["test_matrix.py"]

RESULTS = []


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    text = runner.table(RESULTS)
    runner.OUT.mkdir(parents=True, exist_ok=True)
    (runner.OUT / "matrix.txt").write_text(text + "\n")
    terminalreporter.write_sep("=", "fidelity matrix")
    for line in text.splitlines():
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def engine():
    """A connected Docker engine and the stand-in base images of every training env's Python
    (no registry is reachable here): skips locally without an engine, fails when CI=true."""
    from envrepro.engine.docker import DockerEngine
    from envrepro.errors import NoEngine

    try:
        eng = DockerEngine().connect()
    except NoEngine as e:
        need(False, f"no Docker engine: {e}")
    try:
        runner.ensure_standins()
    except SystemExit as e:
        need(False, f"cannot build a stand-in base image: {e}")
    return eng
