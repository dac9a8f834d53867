"""envrepro installs on Python 3.8 through 3.13, gives a working `envrepro` command, and the
hook path imports neither the Docker SDK, typer nor pip-tools."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import CI, pyenv_python  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

HOOK_CHECK = r"""
import sys
import envrepro
from envrepro.capturing import hook
from envrepro.capturing import capture as capturing
from envrepro.sidecar import manifest
from envrepro.packages import lockwriter as lock
from envrepro.capturing import snapshot
from envrepro.runtime import probe
heavy = [m for m in ("docker", "typer", "piptools", "rich", "tensorflow") if m in sys.modules]
assert not heavy, heavy
print("hook path clean on", sys.version.split()[0])
"""


@pytest.mark.parametrize("minor", ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"])
def test_installs_and_hook_path_is_light(minor, tmp_path):
    base = pyenv_python(minor)
    if not base:
        if CI:
            pytest.fail(f"CI=true and no Python {minor} interpreter", pytrace=False)
        pytest.skip(f"no Python {minor}")
    venv = tmp_path / "venv"
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", str(REPO)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = subprocess.run([str(venv / "bin" / "envrepro"), "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("envrepro 0.1.0 (runtime ") and f"on Python {minor}." in out.stdout, out.stdout
    out = subprocess.run([str(py), "-c", HOOK_CHECK], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=""))
    assert out.returncode == 0, out.stderr[-2000:]
    # The installed runtime package (all of its modules) starts as the probe entry point.
    model = tmp_path / "none.h5"
    model.write_bytes(b"")
    start_probe = ("import subprocess, sys; from envrepro.runtime import launch; "
                   "sys.exit(subprocess.call(launch.host_argv(sys.executable, 'probe', sys.argv[1:])))")
    out = subprocess.run([str(py), "-c", start_probe, "--model", str(model), "--out", str(tmp_path / "facts"),
                          "--no-load"], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=""),
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(tmp_path / "facts" / "facts.json")
