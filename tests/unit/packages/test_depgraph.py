"""envrepro.packages.depgraph: markers evaluated for the training interpreter."""
from envrepro.packages import depgraph

try:
    from .fake_dists import PY38, PY311
except ImportError:
    from fake_dists import PY38, PY311


def test_marker_environment_from_facts():
    env = depgraph.marker_environment(PY38)
    assert env["python_version"] == "3.8" and env["python_full_version"] == "3.8.18"
    assert env["platform_system"] == "Linux" and env["os_name"] == "posix"
    assert env["implementation_name"] == "cpython"
    assert env["platform_python_implementation"] == "CPython"
    mac = depgraph.marker_environment(dict(PY311, sys_platform="darwin", machine="arm64"))
    assert mac["platform_system"] == "Darwin" and mac["platform_machine"] == "arm64"
