"""Air-gapped bundles against the real engine: capture a small Keras 3 model with the host's
environment (the local ``python:3.11-slim`` stand-in is its base), ``envrepro bundle`` it, remove
the environment image, then ``envrepro load FILE.tar`` with every proxy and index pointed at a
closed port: the image comes from the bundle (``docker load``, then found locally), the sandbox
runs with no network. A tampered and a truncated bundle are refused and load no image.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support import OFFLINE, SAVE_TINY_HOOKED as SAVE, installed_cli as cli  # noqa: E402

pytestmark = pytest.mark.e2e



@pytest.fixture(scope="module")
def shipped(engine, standin_311, tmp_path_factory, tf):
    """The model captured at save time and its bundle (the image built first if needed)."""
    train = tmp_path_factory.mktemp("train")
    proc = subprocess.run([sys.executable, "-c", SAVE, str(train)], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bundle = tmp_path_factory.mktemp("ship") / "tiny.tar"
    out = cli("bundle", train / "tiny.keras", "-o", bundle, "--json")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    written = json.loads(out.stdout)
    assert written["kind"] == "image" and written["image"].startswith("envrepro-env:")
    return bundle, written["image"]


def test_bundle_loads_offline_from_its_own_image(engine, shipped):
    bundle, tag = shipped
    assert engine.remove_image(tag, force=True) and not engine.image_exists(tag)
    out = cli("load", bundle, "--json", env=OFFLINE)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["image"]["tag"] == tag and report["image"]["source"] == "local"
    assert report["image"]["bundle"] == str(bundle)
    assert report["verdict"] == "verified" and report["loader"]["network"]["isolated"]
    assert "Building" not in out.stderr and "Pulling" not in out.stderr
    assert (bundle.with_name("tiny.bundle") / "tiny.keras.envrepro" / "envrepro.yaml").is_file()
    # again: verified again, the extraction kept; the text report names the bundle
    out = cli("load", bundle, env=OFFLINE)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"loaded from bundle {bundle}" in out.stdout


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def test_tampered_and_truncated_bundles_load_no_image(engine, shipped, tmp_path):
    import tarfile

    bundle, tag = shipped
    engine.remove_image(tag, force=True)
    with tarfile.open(bundle) as tar:
        image = next(m for m in tar.getmembers() if m.name == "image.tar")
    spot = image.offset_data + image.size - 100    # deep in the image archive, read last
    _flip(bundle, spot)
    try:
        out = cli("load", bundle, "--into", tmp_path / "x", env=OFFLINE)
        assert out.returncode == 2, out.stderr[-2000:]
        assert "'image.tar' does not match its sha256" in out.stderr
        assert not engine.image_exists(tag) and not (tmp_path / "x").exists()
    finally:
        _flip(bundle, spot)
    cut = tmp_path / "cut.tar"
    with open(bundle, "rb") as src, open(cut, "wb") as dst:
        left = image.offset_data + image.size // 2
        while left > 0:
            chunk = src.read(min(left, 1 << 24))
            dst.write(chunk)
            left -= len(chunk)
    out = cli("load", cut, env=OFFLINE)
    assert out.returncode == 2 and "truncated" in out.stderr, out.stderr[-2000:]
    assert [line for line in out.stderr.splitlines() if line.startswith("envrepro")] == \
        [line for line in out.stderr.splitlines() if line.startswith("envrepro: error")]
    assert not engine.image_exists(tag) and not (tmp_path / "cut.bundle").exists()
    # the good bundle still loads (and leaves the image in place for others)
    assert cli("load", bundle, "--into", tmp_path / "y", env=OFFLINE).returncode == 0


@pytest.fixture
def trap():
    """A listener that counts connections: every proxy and index points at it, so any request
    envrepro (or pip under it) made on the way would be counted."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    seen, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            seen.append(1)
            conn.close()
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}"
    env = {k: url for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")}
    env.update(PIP_INDEX_URL=url + "/simple", PIP_EXTRA_INDEX_URL="", PIP_FIND_LINKS="", ENVREPRO_REGISTRY="")
    yield env, seen
    stop.set()
    t.join(2)
    srv.close()


def test_a_wheels_bundle_builds_its_image_offline_from_the_carried_wheelhouse(engine, shipped, tmp_path, trap):
    """``bundle --wheels`` carries the wheelhouse instead of the image. On the other machine (an
    empty wheel cache, no environment or closure image, every proxy and index closed) the image
    is built from the carried wheels only: nothing downloaded, the installs ran with no network."""
    bundle, tag = shipped
    model = bundle.with_name("tiny.bundle") / "tiny.keras"
    if not model.exists():
        assert cli("load", bundle, env=OFFLINE).returncode == 0
    here = dict(XDG_CACHE_HOME=str(tmp_path / "here-cache"))
    wheels = tmp_path / "tiny-wheels.tar"
    out = cli("bundle", model, "-o", wheels, "--wheels", "--json", env=here)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert json.loads(out.stdout)["kind"] == "wheels"
    heavy = engine.inspect_image(tag)["Config"]["Labels"].get("org.envrepro.heavy")
    engine.remove_image(tag, force=True)
    if heavy:
        engine.remove_image(f"envrepro-heavy:{heavy}", force=True)
    offline, requests = trap
    there = dict(offline, XDG_CACHE_HOME=str(tmp_path / "there-cache"))
    out = cli("load", wheels, "--into", tmp_path / "there", "--json", env=there)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["image"]["tag"] == tag and report["image"]["source"] == "built"
    assert report["image"]["builder"] == "wheelhouse" and report["image"]["wheelhouse"]["downloaded"] == 0
    assert report["verdict"] == "verified" and report["image"]["bundle"] == str(wheels)
    assert requests == [], f"{len(requests)} request(s) left for a proxy or an index"
