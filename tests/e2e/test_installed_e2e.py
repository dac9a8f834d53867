"""envrepro as users install it: the built wheel in a clean virtualenv (scripts/check-dist.sh),
run from a folder outside the clone, end to end against the real engine and PyPI.

Where the test runs as root (CI does), every envrepro command runs in a mount namespace in which
the clone is an empty tmpfs and the wheel's virtualenv is read-only: a command that read a file
from the source tree, or wrote next to its own code, fails here. The smoke: ``--version``,
``--help`` of every command, ``capture --python`` of a model with a custom layer trained in this
host's TensorFlow, ``load`` in Docker, ``bundle`` and ``load FILE.tar``, ``build --serve`` and one
prediction over HTTP from the served image, equal to the capture's reference.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from support import LIST_COMMANDS, http_json, installed_envrepro

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RUN = uuid.uuid4().hex[:8]
CI = os.environ.get("CI", "").lower() == "true"
SAVE = textwrap.dedent('''
    import sys, keras
    sys.path.insert(0, sys.argv[2])
    from custom_layers import MyCustomLayer
    m = keras.Sequential([keras.Input(shape=(16,)), keras.layers.Dense(8), MyCustomLayer(units=4)])
    m.save(sys.argv[1])    # no hook: captured from outside, by the installed envrepro
''')
HIDE = ('mount -t tmpfs -o size=1m,mode=0555 envrepro-clone-hidden "$0" && '
        'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"')


def _can_hide() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                          capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def installed(engine, standin_311, tf, tmp_path_factory):
    exe = installed_envrepro(tmp_path_factory)
    venv = Path(exe).resolve().parent.parent
    assert not str(venv).startswith(str(REPO)), f"the wheel's venv must be outside the clone: {venv}"
    hide = _can_hide()
    if not hide and CI:
        pytest.fail("CI=true and the clone can't be hidden (needs root and unshare --mount)", pytrace=False)
    return {"exe": exe, "venv": venv, "hide": hide}


def run(inst, *args, cwd, timeout=1800):
    argv = [inst["exe"], *map(str, args)]
    if inst["hide"]:
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", HIDE, str(REPO), str(inst["venv"])] + argv
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ENVREPRO_DEBUG", "VIRTUAL_ENV")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run(argv, capture_output=True, text=True, cwd=str(cwd), env=env, timeout=timeout)


def test_the_installed_wheel_captures_loads_bundles_and_serves(installed, tmp_path, record_property):
    t0 = time.perf_counter()
    work = tmp_path / "outside-the-clone"
    (work / "src").mkdir(parents=True)
    shutil.copy(REPO / "examples" / "custom_layers.py", work / "src" / "custom_layers.py")
    model = work / "smoke.keras"
    proc = subprocess.run([sys.executable, "-c", SAVE, str(model), str(work / "src")], capture_output=True,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = {}

    def step(name, *args, expect=0):
        t = time.perf_counter()
        out = run(installed, *args, cwd=work)
        steps[name] = round(time.perf_counter() - t, 1)
        assert out.returncode == expect, f"{name}: exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        assert "Traceback" not in out.stderr, out.stderr[-3000:]
        return out

    if installed["hide"]:   # the namespace really hides the clone and freezes the venv
        probe = run(installed, "--version", cwd=work)
        assert probe.returncode == 0, probe.stderr
        seen = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", HIDE, str(REPO),
                               str(installed["venv"]), "sh", "-c",
                               f'ls -A "{REPO}" | wc -l; touch "{installed["venv"]}/x" 2>/dev/null && echo writable'],
                              capture_output=True, text=True)
        assert seen.stdout.split() == ["0"], seen.stdout + seen.stderr

    version = step("version", "--version").stdout
    assert version.startswith("envrepro ") and str(installed["venv"]) in version and "envrepro/v1" in version
    # --help of every command and subcommand, from the installed package's own command tree
    listing = subprocess.run([str(installed["venv"] / "bin" / "python"), "-c", LIST_COMMANDS], capture_output=True,
                             text=True, cwd=str(work))
    assert listing.returncode == 0, listing.stderr
    commands = json.loads(listing.stdout)
    assert ["push"] in commands and ["images", "prune"] in commands, commands
    t = time.perf_counter()
    for argv in commands:
        helped = run(installed, *argv, "--help", cwd=work)
        assert helped.returncode == 0 and "Usage" in helped.stdout and not helped.stderr, (argv, helped.stderr)
    steps[f"--help x{len(commands)}"] = round(time.perf_counter() - t, 1)

    step("capture", "capture", model, "--python", sys.executable, "--code-path", work / "src",
         "--module", "custom_layers")
    loaded = json.loads(step("load", "load", model, "--json").stdout)
    assert loaded["verdict"] == "verified", loaded
    assert loaded["loader"]["network"]["isolated"]

    bundle = work / "smoke.tar"
    step("bundle", "bundle", model, "-o", bundle)
    assert bundle.is_file() and bundle.stat().st_size > 1_000_000
    again = json.loads(step("load FILE.tar", "load", bundle, "--into", work / "unpacked", "--json").stdout)
    assert again["verdict"] == "verified" and again["image"]["bundle"] == str(bundle)

    tag = f"envrepro-smoke-serve:{RUN}"
    built = json.loads(step("build --serve", "build", model, "--serve", "-t", tag, "--json").stdout)
    assert built["proof"]["verdict"] == "verified" and built["proof"]["v1"]["ok"] and built["proof"]["v2"]["ok"], built
    try:
        t = time.perf_counter()
        cid = subprocess.run(["docker", "run", "-d", "-p", "127.0.0.1::8501", "--read-only", "--tmpfs", "/tmp",
                              "--cap-drop", "ALL", "--security-opt", "no-new-privileges", tag],
                             capture_output=True, text=True, check=True).stdout.strip()
        port = int(subprocess.run(["docker", "port", cid, "8501/tcp"], capture_output=True, text=True,
                                  check=True).stdout.split()[0].rsplit(":", 1)[1])
        cap_root = Path(str(model) + ".envrepro")
        manifest = json.loads(step("inspect", "inspect", model, "--json").stdout)
        ref = manifest["reference"]
        x = np.load(cap_root / ref["inputs"][0])
        y = np.load(cap_root / ref["outputs"][0])
        deadline = time.time() + 300
        while True:
            try:
                if http_json(port, "GET", "/v2/health/ready", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline, subprocess.run(["docker", "logs", cid], capture_output=True,
                                                          text=True).stderr[-3000:]
            time.sleep(0.2)
        status, _, answer = http_json(port, "POST", "/v1/models/smoke:predict", {"instances": x.tolist()})
        assert status == 200, answer
        got = np.asarray(answer["predictions"], dtype=y.dtype).reshape(y.shape)
        np.testing.assert_allclose(got, y, atol=1e-5, rtol=1e-4)
        steps["serve + predict"] = round(time.perf_counter() - t, 1)
    finally:
        if "cid" in locals():
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
    total = round(time.perf_counter() - t0, 1)
    record_property("figure", f"smoke from the installed wheel ({'clone hidden, venv read-only' if installed['hide'] else 'clone visible'}): "
                    f"{total} s; " + ", ".join(f"{k} {v} s" for k, v in steps.items()))
