"""envrepro.packages.lockwriter and indexhashes against the real index (PyPI): hashes for a Python 3.8 / TF 2.4.1 venv, pip's
hash checking on them, and an editable install turned into a wheel."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envrepro.packages import indexhashes, lockwriter as lock
from envrepro.fsutil import sha256_file
from envrepro.sidecar import lockfile
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import need, probe_environment  # noqa: E402

pytestmark = pytest.mark.network


def probe(python) -> dict:
    """What the probe collects in the training interpreter: its installed distributions."""
    import tempfile

    return probe_environment(python, tempfile.mkdtemp(prefix="envrepro-probe-"))


def index_reachable() -> bool:
    return indexhashes._reachable("https://pypi.org/simple/", os.environ.get("PIP_CERT"), None,
                                  [], None) is None


@pytest.fixture(scope="module")
def online():
    need(index_reachable(), "PyPI unreachable")  # skips locally, fails under CI=true


@pytest.fixture(scope="module")
def venv38_lock(tmp_path_factory, online, py38_tf24):
    VENV38 = py38_tf24
    env = probe(VENV38)
    out = tmp_path_factory.mktemp("cap38")
    t = time.perf_counter()
    res = lock.write_lock(env["distributions"], env["python"], out, hashes=True,
                          training_python=str(VENV38))
    elapsed = time.perf_counter() - t
    print(f"\nonline lock of the venv38 environment ({res.count} pins): {elapsed:.1f}s")
    return res, (out / "requirements.lock").read_text(), elapsed, VENV38


def pip_env() -> dict:
    """pip as the image build runs it: http(s) indexes only (no local file indexes, no
    find-links, no host constraints), the host's CA bundle."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    if os.environ.get("PIP_CERT"):
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    elif os.path.exists("/etc/ssl/certs/ca-certificates.crt"):
        env["PIP_CERT"] = "/etc/ssl/certs/ca-certificates.crt"
    return env


def entry_block(text: str, name: str) -> str:
    m = re.search(rf"^{re.escape(name)}==.*?(?=^\S|\Z)", text, re.M | re.S)
    assert m, name
    return m.group(0)


def test_venv38_lock_has_hashes_and_reports_sdist_only(venv38_lock):
    res, text, elapsed, _ = venv38_lock
    assert res.hashes is True and res.missing_hashes == [], res.warnings
    assert lockfile.has_hashes(text)
    entries = lockfile.parse_lock(text)
    assert len(entries) == res.count >= 30
    for e in entries:
        assert e.hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in e.hashes), e
    assert {"termcolor", "wrapt"} <= set(res.sdist_only)
    assert res.unavailable == []
    by = {e.name: e for e in entries}
    assert by["tensorflow-cpu"].version == "2.4.1" and by["numpy"].version == "1.19.5"
    # wheels of every platform are hashed (pip-compile --generate-hashes does the same)
    assert len(by["numpy"].hashes) > 10
    assert "tensorflow-cpu" in res.top_level  # beside envrepro's own dependencies (typer, docker, ...)
    assert "pip==" not in text and "# setuptools==" in text
    heavy, rest = lockfile.split_closure(entries)
    assert {"tensorflow-cpu", "numpy", "six", "termcolor"} <= {e.name for e in heavy}


def test_pip_download_with_require_hashes(venv38_lock, tmp_path):
    _, text, _, VENV38 = venv38_lock
    small = entry_block(text, "six") + entry_block(text, "termcolor")
    lock = tmp_path / "small.lock"
    lock.write_text(small)
    cmd = [str(VENV38), "-m", "pip", "download", "--no-deps", "--require-hashes", "-r",
           str(lock), "-d", str(tmp_path / "dl")]
    ok = subprocess.run(cmd, env=pip_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert ok.returncode == 0, ok.stdout.decode()
    names = sorted(p.name for p in (tmp_path / "dl").iterdir())
    assert any(n.startswith("six-1.15.0") for n in names)
    assert any(n.startswith("termcolor-1.1.0") for n in names)

    # termcolor 1.1.0 is one sdist, one hash: alter it and pip refuses the file
    [termcolor_hash] = lockfile.parse_lock(entry_block(text, "termcolor"))[0].hashes
    digest = termcolor_hash.split(":", 1)[1]
    altered = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    lock.write_text(small.replace(digest, altered))
    bad = subprocess.run(cmd[:-1] + [str(tmp_path / "dl2")], env=pip_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = bad.stdout.decode()
    assert bad.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in output, output


def test_editable_install_is_built_into_a_wheel(tmp_path, online):
    proj = tmp_path / "proj"
    (proj / "envrepro_lock_demo").mkdir(parents=True)
    (proj / "envrepro_lock_demo" / "__init__.py").write_text("VALUE = 42\n")
    (proj / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "envrepro-lock-demo"\nversion = "0.3.1"\n'
        'dependencies = ["six"]\n')
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "six==1.16.0", "-e", str(proj)],
                   check=True, env=pip_env())
    env = probe(py)
    [demo] = [d for d in env["distributions"] if d["name"] == "envrepro-lock-demo"]
    assert demo["editable"] and demo["direct_url"]["dir_info"]["editable"]

    out = tmp_path / "cap"
    res = lock.write_lock(env["distributions"], env["python"], out, hashes=True,
                          training_python=str(py))
    text = (out / "requirements.lock").read_text()
    [entry] = res.local
    assert entry["kind"] == "editable" and entry["name"] == "envrepro-lock-demo"
    assert entry["version"] == "0.3.1" and entry["source"] == str(proj)
    wheel = out / entry["wheel"]
    assert wheel.name.startswith("envrepro_lock_demo-0.3.1-") and wheel.name.endswith(".whl")
    assert sha256_file(wheel) == entry["sha256"]
    assert (f"envrepro-lock-demo @ file:///envrepro/capture/wheels/{wheel.name} \\\n"
            f"    --hash=sha256:{entry['sha256']}\n    # via -r requirements.in\n") in text
    assert "six==1.16.0 \\\n    --hash=sha256:" in text
    assert "    # via envrepro-lock-demo" in text
    assert res.hashes and res.missing_hashes == [] and lockfile.has_hashes(text)
    assert "envrepro-lock-demo @ file:///envrepro/capture/wheels/" in \
        (out / "requirements.in").read_text()

    # the lock installs as is, with hash checking, once the capture is at /envrepro/capture:
    # here the wheel URL is pointed at the capture folder on the host.
    target = tmp_path / "site"
    local_lock = tmp_path / "local.lock"
    local_lock.write_text(text.replace("file:///envrepro/capture/", out.as_uri() + "/"))
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--require-hashes",
                    "--target", str(target), "-r", str(local_lock)], check=True, env=pip_env())
    assert (target / "envrepro_lock_demo" / "__init__.py").read_text() == "VALUE = 42\n"
