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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from support import need, pyenv_python  # noqa: E402

RUNTIME_FILES = sorted(Path(launch.HOST_DIR).rglob("*.py"))   # the serve/ subpackage included


@pytest.mark.parametrize("minor", ["3.6", None])
def test_every_runtime_file_is_python36_syntax(minor):
    python = pyenv_python(minor) if minor else sys.executable
    need(python, "no Python %s interpreter (pyenv's build)" % minor)
    assert len(RUNTIME_FILES) > 5 and Path(launch.HOST_DIR, "serve", "main.py") in RUNTIME_FILES
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


def test_dotted_entry_runs_its_module_with_its_file_as_argv0():
    """``serve.main`` is the module serve/main.py of the runtime package: imported as such, and the
    path its argv[0] shows is that real file."""
    argv = launch.container_argv("python", "serve.main", ["--plan", "p"], root="/opt/rt/envrepro_runtime")
    assert "from envrepro_runtime.serve.main import main" in argv[3] and argv[4:] == ["--plan", "p"]
    assert repr("/opt/rt/envrepro_runtime/serve/main.py") in argv[3]
    assert launch.script_path(launch.HOST_DIR, "serve.main") == os.path.join(launch.HOST_DIR, "serve", "main.py")
    assert os.path.isfile(launch.script_path(launch.HOST_DIR, "serve.main"))
    # the real bootstrap, with the call of main() swapped for a print of argv[0] and the module's file
    spy = ("import sys, json; print(json.dumps([sys.argv[0], sys.modules['envrepro_runtime.serve.main'].__file__]))"
           "; sys.exit(0)")
    code = launch.host_argv(sys.executable, "serve.main")[3].replace("from envrepro_runtime.serve.main import main\n",
                                                                     "import envrepro_runtime.serve.main\n")
    code = code.replace("sys.exit(main())", spy)
    proc = subprocess.run([sys.executable, "-B", "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    argv0, module_file = json.loads(proc.stdout)
    assert argv0 == module_file == os.path.join(launch.HOST_DIR, "serve", "main.py")
