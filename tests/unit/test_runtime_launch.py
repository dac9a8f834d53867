"""runtime/launch.py: entry points run as modules of the runtime package under any interpreter,
without the host's envrepro and without changing the sys.path user code sees; every runtime file
is Python 3.6 syntax."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from envrepro.runtime import launch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support import need, pyenv_python  # noqa: E402

RUNTIME_FILES = sorted(Path(launch.HOST_DIR).glob("*.py"))


@pytest.mark.parametrize("minor", ["3.6", None])
def test_every_runtime_file_is_python36_syntax(minor):
    python = pyenv_python(minor) if minor else sys.executable
    need(python, "no Python %s interpreter (pyenv's build)" % minor)
    assert len(RUNTIME_FILES) > 5
    for path in RUNTIME_FILES:
        proc = subprocess.run([python, "-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())", str(path)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, (path, proc.stderr)


def test_runtime_imports_no_host_code():
    for path in RUNTIME_FILES:
        text = path.read_text()
        assert "from envrepro" not in text and "import envrepro" not in text, path


def test_entry_point_runs_as_the_runtime_package_without_host_envrepro(tmp_path):
    """What user code sees when imported by the probe: no host envrepro, the runtime under its own
    name only, no runtime folder or working directory on sys.path, a script-like argv[0]."""
    code = tmp_path / "code"
    code.mkdir()
    seen = tmp_path / "seen.json"
    (code / "spy.py").write_text(
        "import json, sys\n"
        "json.dump({'modules': sorted(m for m in sys.modules if m.split('.')[0].startswith('envrepro')),\n"
        "           'path': sys.path, 'argv0': sys.argv[0]}, open(%r, 'w'))\n" % str(seen))
    model = tmp_path / "m.h5"
    model.write_bytes(b"")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(launch.host_argv(sys.executable, "probe", ["--model", model, "--out", tmp_path / "out",
                                                                     "--no-load", "--module", "spy", "--code-path", code]),
                          capture_output=True, text=True, cwd=str(workdir), env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(seen.read_text())
    assert got["modules"] and all(m.split(".")[0] == launch.PACKAGE for m in got["modules"])
    assert got["argv0"] == os.path.join(launch.HOST_DIR, "probe.py")
    on_path = [os.path.abspath(p or ".") for p in got["path"]]
    assert launch.HOST_DIR not in on_path and os.path.dirname(launch.HOST_DIR) not in on_path
    assert "" not in got["path"] and str(workdir) not in on_path


def test_container_argv_uses_the_mounted_runtime():
    argv = launch.container_argv("python", "loader", ["--plan", 3])
    assert argv[:3] == ["python", "-B", "-c"] and argv[4:] == ["--plan", "3"]
    assert launch.CONTAINER_DIR == "/envrepro/lib/envrepro_runtime"
    assert repr(launch.CONTAINER_DIR + "/__init__.py") in argv[3] and launch.HOST_DIR not in argv[3]
    assert "from envrepro_runtime.loader import main" in argv[3]
