"""Helpers shared by the test folders (importable as ``support``: conftest modules aren't)."""
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CI = os.environ.get("CI", "").lower() == "true"
DEV_CACHE = Path(os.environ.get("ENVREPRO_DEV_CACHE", Path.home() / ".cache" / "envrepro-dev"))

# A tiny Keras model saved through the save hook (``python -c SAVE_TINY_HOOKED FOLDER``), and the
# environment of a command that must work offline: every proxy and index points at the discard port.
SAVE_TINY_HOOKED = textwrap.dedent('''
    import sys, keras, envrepro
    envrepro.install_hook()
    m = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2)])
    m.save(sys.argv[1] + "/tiny.keras")
''')
CLOSED = "http://127.0.0.1:9"          # discard port: nothing listens, every request fails
OFFLINE = {"HTTP_PROXY": CLOSED, "HTTPS_PROXY": CLOSED, "http_proxy": CLOSED, "https_proxy": CLOSED,
           "ALL_PROXY": CLOSED, "PIP_INDEX_URL": CLOSED + "/simple", "PIP_EXTRA_INDEX_URL": "",
           "PIP_FIND_LINKS": "", "ENVREPRO_REGISTRY": ""}


def need(condition, reason):
    """Skip locally, fail under CI."""
    if condition:
        return
    if CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _pyenv_root():
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    try:
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
        root = out or root
    except (OSError, subprocess.CalledProcessError):
        pass
    return root


# Resolved once, at import: unit tests point HOME elsewhere.
PYENV_ROOT = _pyenv_root()


def pyenv_python(minor):
    versions = sorted(Path(PYENV_ROOT, "versions").glob(f"{minor}.*"),
                      key=lambda p: [int(x) for x in p.name.split(".") if x.isdigit()])
    for v in reversed(versions):
        exe = v / "bin" / "python"
        if exe.exists():
            return str(exe)
    return shutil.which(f"python{minor}")




def probe_environment(python, workdir):
    """The distributions and Python facts of ``python``'s environment, collected by the real
    probe (``--no-load``: no TensorFlow import), exactly as a capture gets them."""
    import json
    import sys

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    dummy = workdir / "none.h5"
    dummy.write_bytes(b"")
    out = workdir / "probe-out"
    from envrepro.runtime import launch

    proc = subprocess.run(launch.host_argv(python or sys.executable, "probe",
                                           ["--model", dummy, "--out", out, "--no-load"]),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    facts = json.loads((out / "facts.json").read_text())
    return {"distributions": facts["distributions"], "python": facts["python"]}


def envrepro_cli(*args, python=None, env=None, cwd=None, timeout=1800):
    """Run the envrepro CLI as a user would (a separate process), return CompletedProcess."""
    exe = python or sys.executable
    return _run_cli([exe, "-m", "envrepro"], args, env, cwd, timeout)


def installed_cli(*args, python=None, env=None, cwd=None, timeout=1800):
    """The end-to-end tests' CLI: the ``envrepro`` command of the built wheel installed in a clean
    virtualenv when ``make test`` made one (ENVREPRO_UNDER_TEST), as users run it; ``python``
    (a training environment with envrepro installed) runs that one instead."""
    if python:
        return envrepro_cli(*args, python=python, env=env, cwd=cwd, timeout=timeout)
    return _run_cli(installed_argv(), args, env, cwd, timeout)


def installed_argv():
    """argv that starts the CLI ``installed_cli`` runs (for tests that drive the process)."""
    exe = os.environ.get("ENVREPRO_UNDER_TEST")
    return [exe] if exe else [sys.executable, "-m", "envrepro"]


def _run_cli(argv, args, env, cwd, timeout):
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    full_env.pop("ENVREPRO_DEBUG", None)
    if env:
        full_env.update(env)
    return subprocess.run([*argv, *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


def http_json(port, method, path, body=None, headers=None, conn=None, timeout=60):
    """One request to the model server on 127.0.0.1:``port``: ``body`` as bytes (sent as is) or
    a value (sent as JSON); ``conn`` reuses a keep-alive connection. (status, headers, payload):
    the payload parsed as JSON, else the text."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    c.request(method, path, body=data, headers=hdrs)
    r = c.getresponse()
    raw = r.read()
    if conn is None:
        c.close()
    try:
        payload = json.loads(raw.decode())
    except ValueError:
        payload = raw.decode()
    return r.status, dict(r.getheaders()), payload


def installed_envrepro(tmp_path_factory=None):
    """The ``envrepro`` command of the built wheel installed in a clean virtualenv: the one
    ``make test`` made (ENVREPRO_UNDER_TEST, from scripts/check-dist.sh), else made now. Under
    CI=true it must have been made by ``make test``."""
    exe = os.environ.get("ENVREPRO_UNDER_TEST")
    if exe:
        assert os.access(exe, os.X_OK), f"ENVREPRO_UNDER_TEST={exe} is not an executable"
        return exe
    if CI:
        pytest.fail("CI=true and ENVREPRO_UNDER_TEST is not set: run the tests with `make test`, "
                    "which installs the built wheel", pytrace=False)
    out = (tmp_path_factory.mktemp("dist") if tmp_path_factory else Path(tempfile.mkdtemp())) / "envrepro-dist"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "check-dist.sh"), str(out)], capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


# Prints every command and subcommand of the envrepro CLI it imports, as JSON argv prefixes.
LIST_COMMANDS = """
import json, typer.main
from envrepro.cli import app
out = []
def walk(cmd, prefix):
    out.append(prefix)
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        walk(sub, prefix + [name])
walk(typer.main.get_command(app), [])
print(json.dumps(out))
"""
