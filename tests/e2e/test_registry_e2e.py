"""Registry push and pull by content key, end to end: a real Docker engine and a real registry
(Debian's ``docker-registry``, distribution 2.x) on 127.0.0.1, which Docker reaches over plain
HTTP without configuration (127.0.0.0/8 is an insecure registry by default).

The seed TF 2.4.1 custom-layer model is captured, ``envrepro push``-ed, its environment image
removed here, and ``envrepro load --registry`` pulls it back (report: "pulled from <ref>") and
verifies the model. A registry holding another image under a capture's key (same content but a
wrong lock label) is refused: the image is built here instead and the local tag never points at
the registry's image. Nothing is pulled from the internet: bases are the local stand-ins.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from support import CI, need  # noqa: E402
from support import installed_cli as cli  # noqa: E402

from envrepro.image import ensure as images, spec
from envrepro.sidecar.manifest import Capture

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
RUN = uuid.uuid4().hex[:8]
SIX = ("six==1.16.0 \\\n"
       "    --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254\n"
       "    # via -r requirements.in\n")
CONFIG = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def docker(*args, check=True, timeout=900):
    proc = subprocess.run(["docker", *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _registry_binary():
    found = shutil.which("docker-registry") or shutil.which("registry")
    if found is None and CI and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "docker-registry"]):
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=False)
        found = shutil.which("docker-registry")
    need(found is not None, "no docker-registry binary (apt-get install docker-registry)")
    return found


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registry(engine, tmp_path_factory):
    """Our own registry on 127.0.0.1:<free port>, temp storage, own config; killed afterwards."""
    binary = _registry_binary()
    tmp = tmp_path_factory.mktemp("registry")
    port = _free_port()
    config = tmp / "config.yml"
    config.write_text(CONFIG.format(root=tmp / "storage", port=port))
    log = open(tmp / "registry.log", "w")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp / "registry.log").read_text()[-2000:]
            time.sleep(0.1)
        else:
            pytest.fail(f"the registry did not answer: {(tmp / 'registry.log').read_text()[-2000:]}")
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(autouse=True)
def no_registry_setting(monkeypatch):
    monkeypatch.delenv("ENVREPRO_REGISTRY", raising=False)


@pytest.fixture(scope="module")
def seed(py38_tf24, standin_38, tmp_path_factory):
    out = tmp_path_factory.mktemp("registry-seed")
    proc = subprocess.run([py38_tf24, str(EXAMPLES / "custom_layer_model.py"), str(out)], cwd=str(EXAMPLES),
                          capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "custom_model"


def test_push_then_load_elsewhere_pulls_it_back_and_verifies(registry, seed):
    out = cli("push", seed, "--registry", registry, "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    pushed = json.loads(out.stdout)
    key = pushed["key"]
    env = pushed["pushed"][0]
    ref = f"{registry}/envrepro-env:{key}"
    assert env["kind"] == "environment" and env["ref"] == ref and env["local"] == spec.image_tag(key)
    assert env["digest"].startswith("sha256:") and env["size"] > 0
    assert "docker login" not in out.stderr and "auth" not in out.stdout.lower()

    # "another machine": neither the local tag nor the pushed ref is here any more
    docker("rmi", spec.image_tag(key), ref)
    assert docker("image", "inspect", spec.image_tag(key), check=False).returncode != 0

    try:
        out = cli("load", seed, "--registry", registry)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert f"(pulled from {ref}" in out.stdout and f"Pulling {ref}" in out.stderr
        assert "result: OK" in out.stdout
        labels = json.loads(docker("image", "inspect", spec.image_tag(key)).stdout)[0]["Config"]["Labels"]
        assert labels["org.envrepro.key"] == key

        docker("rmi", spec.image_tag(key), ref)
        out = cli("load", seed, "--registry", registry, "--json")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        report = json.loads(out.stdout)
        assert report["image"]["source"] == "pulled" and report["image"]["pulled_from"] == ref
        assert report["image"]["registry"]["outcome"] == "pulled"
        assert report["verdict"] == "verified" and report["loader"]["reference"]["allclose"]

        again = cli("load", seed, "--registry", registry)       # now local: found, not pulled again
        assert again.returncode == 0 and "found locally" in again.stdout
    finally:
        docker("rmi", ref, check=False)                       # the pulled ref; the local tag stays


def small_capture(tmp_path: Path) -> Capture:
    root = tmp_path / "small.envrepro"
    root.mkdir()
    (root / "requirements.lock").write_text(SIX)
    return Capture(root=root, data={"python": {"version": "3.8.18"}, "frameworks": {"tensorflow": "2.4.1"}})


def test_registry_image_with_the_capture_key_but_other_labels_is_not_used(registry, engine, standin_38,
                                                                           tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cap = small_capture(tmp_path)
    real = images.ensure_image(cap, engine, on_progress=lambda line: None)
    keep = f"envrepro-e2e-keep:{RUN}"                      # keeps the real image (and its build cache)
    docker("tag", real.tag, keep)
    ref = f"{registry}/envrepro-env:{real.key}"
    try:
        # the same image, relabelled as if built from another lock, pushed under the real key
        forged = subprocess.run(["docker", "build", "-q", "-t", ref, "-"], text=True, capture_output=True,
                                input=f'FROM {real.tag}\nLABEL org.envrepro.lock-sha256="{"0" * 64}"\n',
                                timeout=300)
        assert forged.returncode == 0, forged.stderr[-2000:]
        forged_id = json.loads(docker("image", "inspect", ref).stdout)[0]["Id"]
        docker("push", ref)
        docker("rmi", ref, real.tag)

        lines = []
        info = images.ensure_image(cap, engine, registry=registry, on_progress=lines.append)
        assert info.source == "built" and info.pulled_from is None
        assert info.registry["outcome"] == "refused" and "org.envrepro.lock-sha256" in info.registry["reason"]
        assert info.image_id != forged_id
        assert json.loads(docker("image", "inspect", real.tag).stdout)[0]["Id"] != forged_id
        assert docker("image", "inspect", ref, check=False).returncode != 0     # the pulled tag is gone
        assert any(line.startswith(f"Refusing {ref}") for line in lines), lines
    finally:
        docker("rmi", keep, check=False)
        docker("rmi", ref, check=False)
