"""Environment images built by a real Docker engine (docs/architecture.md), by each builder.

Small locks on the local ``python:3.8-slim`` stand-in (tests/e2e/standins.py): a wheel (six) and
an sdist-only pin (termcolor 1.1.0, as in TensorFlow 2.4.1's lock), with hashes. The wheelhouse
builder (the default) fetches from PyPI on the host with the host's pip settings and CA bundle and
installs in containers with no network; the Dockerfile builder (``ENVREPRO_BUILDER=dockerfile``)
reaches PyPI from its builder stage. The heavy TensorFlow build is exercised by the flagship test.
"""
from __future__ import annotations

import json
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from envrepro.image import ensure as images, spec
from envrepro.packages.pipconfig import CREDENTIALS_ENV, PipSettings
from envrepro.errors import BuildFailed, EnvreproError
from envrepro.sidecar.manifest import Capture

pytestmark = pytest.mark.e2e

SIX = ("six==1.16.0 \\\n"
       "    --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254\n"
       "    # via -r requirements.in\n")
TERMCOLOR = ("termcolor==1.1.0 \\\n"
             "    --hash=sha256:1d6d69ce66211143803fbc56652b41d73b4a400a2891d7bf7a1cdf4c02de613b\n"
             "    # via -r requirements.in\n")
LOCK = SIX + TERMCOLOR
INSIDE = """
import json, os, sys
from importlib import metadata
print(json.dumps({"uid": os.getuid(), "prefix": sys.prefix, "version": sys.version.split()[0],
                  "dists": sorted(d.metadata["Name"].lower() + "==" + d.version for d in metadata.distributions()),
                  "termcolor": __import__("termcolor").colored("x", "red")}))
"""


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for var in ("ENVREPRO_BASE_IMAGE", "ENVREPRO_REGISTRY", "ENVREPRO_BUILDER"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(params=["wheelhouse", "dockerfile"])
def builder(request, monkeypatch):
    monkeypatch.setenv("ENVREPRO_BUILDER", request.param)
    return request.param


def stage_images(engine) -> set:
    return {i["Id"] for i in engine.images("org.envrepro.stage=builder")}


def make_capture(tmp_path: Path, lock: str, name: str = "m") -> Capture:
    root = tmp_path / f"{name}.envrepro"
    root.mkdir()
    (root / "requirements.lock").write_text(lock)
    return Capture(root=root, data={"python": {"version": "3.8.18"}, "frameworks": {"tensorflow": "2.4.1"}})


def fresh(engine, capture: Capture, base: str) -> str:
    """Remove the environment's tag if an earlier run left it, so this run really builds."""
    tag = spec.image_tag(spec.capture_key(capture, base, capture.lock_path.read_text()))
    engine.remove_image(tag, force=True)
    return tag


def test_small_env_is_built_labelled_and_runs_as_non_root(engine, standin_38, tmp_path, builder):
    capture = make_capture(tmp_path, LOCK)
    tag = fresh(engine, capture, standin_38)
    lines = []
    stages_before = stage_images(engine)
    info = images.ensure_image(capture, engine, on_progress=lines.append)
    assert info.source == "built" and info.tag == tag and engine.image_exists(tag)
    assert info.builder == builder
    assert any(line.startswith("Step ") for line in lines) == (builder == "dockerfile")

    labels = engine.inspect_image(tag)["Config"]["Labels"]
    base = engine.inspect_image(standin_38)
    assert labels["org.envrepro.key"] == info.key
    assert labels["org.envrepro.python"] == "3.8.18"
    assert labels["org.envrepro.tensorflow"] == "2.4.1"
    assert labels["org.envrepro.base"] == "python:3.8-slim"
    assert labels["org.envrepro.base-digest"] == (base.get("RepoDigests") or [base["Id"]])[0]
    assert labels["org.envrepro.runtime-version"] == spec.RUNTIME_VERSION
    assert labels["org.envrepro.lock-sha256"] == __import__("hashlib").sha256(LOCK.encode()).hexdigest()
    assert labels.get("org.envrepro.builder", "dockerfile") == builder
    log = info.log_path.read_text()
    assert "termcolor" in info.built_from_source or "Using cache" in log

    code, out, err = engine.run(tag, ["python", "-c", INSIDE], network_disabled=True, read_only=True,
                                tmpfs={"/tmp": "rw,size=64m"}, mem_limit="512m", pids_limit=128,
                                stream=False)
    assert code == 0, err
    facts = json.loads(out.strip().splitlines()[-1])
    assert facts["uid"] == 10001
    assert facts["prefix"] == "/opt/envrepro/venv" and facts["version"] == "3.8.18"
    assert {"six==1.16.0", "termcolor==1.1.0"} <= set(facts["dists"])
    assert not [d for d in facts["dists"] if d.split("==")[0] not in ("six", "termcolor", "pip", "setuptools")]

    again = images.ensure_image(capture, engine, on_progress=lambda line: None)
    assert again.source == "local" and again.image_id == info.image_id

    if builder == "wheelhouse":
        # no builder stage is kept: the environment costs its image and nothing more on the
        # engine; termcolor (sdist-only) was built once in a container and is in the wheelhouse
        assert stage_images(engine) == stages_before
        assert info.built_from_source == ["termcolor"] and info.wheelhouse["downloaded"] == 1
        assert "no network, no host files but the sdist" in log
        history = subprocess.run(["docker", "history", "--format", "{{.CreatedBy}}", tag], capture_output=True,
                                 text=True, check=True).stdout.splitlines()
        assert history[:2] == ["sh /mnt/install.sh rest", "sh /mnt/install.sh heavy"]
        return
    # the builder stages are labelled, so `envrepro images prune --cache` can find them
    from envrepro.image import inventory as images_cmd
    cache = images_cmd.builder_cache(engine)
    assert cache and all(c["size"] > 0 for c in cache)
    assert {c["id"] for c in images_cmd.prune(engine, dry_run=True, cache=True).cache} >= {c["id"] for c in cache}


def test_altered_hash_fails_with_pips_hash_error_and_tags_nothing(engine, standin_38, tmp_path, builder):
    bad = LOCK.replace("1d6d69ce66211143803fbc56652b41d73b4a400a2891d7bf7a1cdf4c02de613b",
                       "1d6d69ce66211143803fbc56652b41d73b4a400a2891d7bf7a1cdf4c02de6130")
    capture = make_capture(tmp_path, bad)
    tag = fresh(engine, capture, standin_38)
    with pytest.raises(BuildFailed) as e:
        images.ensure_image(capture, engine, on_progress=lambda line: None)
    msg = str(e.value)
    assert "full build log: " in msg and "hash check failed" in msg
    log = Path(msg.split("full build log: ")[1].split()[0])
    bad = "1d6d69ce66211143803fbc56652b41d73b4a400a2891d7bf7a1cdf4c02de6130"
    if builder == "dockerfile":
        assert "THESE PACKAGES DO NOT MATCH THE HASHES" in msg
        assert log.is_file() and f"Expected sha256 {bad}" in log.read_text()
    else:   # the host refuses the downloaded sdist before anything is built or installed
        assert f"the lock pins {bad} (hash mismatch)" in msg and log.is_file()
    assert not engine.image_exists(tag)


def _hits(data: bytes, needles) -> list:
    return [n for n in needles if n.encode() in data]


def test_index_credentials_and_ca_never_reach_the_final_image(engine, standin_38, tmp_path, builder, monkeypatch):
    """The wheelhouse builder never hands pip settings to a container; the Dockerfile builder
    refuses credentials in them unless the user opts in, and then keeps them out of the image."""
    token = f"envrepro-sentinel-token-{uuid.uuid4().hex}"
    ca_mark = f"envrepro-sentinel-ca-{uuid.uuid4().hex}"
    ca = tmp_path / "sentinel-ca.pem"
    # The real host bundle (the build must still reach PyPI through the proxy) plus a marker line.
    ca.write_bytes(Path("/etc/ssl/certs/ca-certificates.crt").read_bytes() + f"\n# {ca_mark}\n".encode())
    pip = PipSettings(extra_index_urls=(f"https://envrepro:{token}@127.0.0.1:9/simple",),
                         trusted_hosts=("127.0.0.1",), cert=str(ca), timeout=5, retries=0)
    capture = make_capture(tmp_path, SIX, "sentinel")
    tag = fresh(engine, capture, standin_38)
    if builder == "dockerfile":      # its builder stages have a network and build sdists: opt-in only
        monkeypatch.delenv(CREDENTIALS_ENV, raising=False)
        with pytest.raises(EnvreproError, match="the host's pip settings carry credentials") as refused:
            images.ensure_image(capture, engine, pip=pip, on_progress=lambda line: None)
        assert token not in str(refused.value.what) and "127.0.0.1:9" in str(refused.value.what)
        assert not engine.image_exists(tag)
        monkeypatch.setenv(CREDENTIALS_ENV, "1")
    info = images.ensure_image(capture, engine, pip=pip, on_progress=lambda line: None)
    assert info.source == "built" and info.builder == builder
    assert "127.0.0.1:9" in info.log_path.read_text(), "the builder must have used the sentinel index"
    assert token not in info.log_path.read_text(), "credentials are never written to the log"
    needles = (token, ca_mark)

    history = subprocess.run(["docker", "history", "--no-trunc", tag], capture_output=True, check=True).stdout
    assert _hits(history, needles) == []
    inspect = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=True).stdout
    assert _hits(inspect, needles) == []

    saved = tmp_path / "image.tar"
    with open(saved, "wb") as f:
        subprocess.run(["docker", "save", tag], stdout=f, check=True)
    found, scanned = [], 0
    with tarfile.open(saved) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            blob = outer.extractfile(member).read()
            found += [(member.name, n) for n in _hits(blob, needles)]
            if member.name.endswith("layer.tar") or blob[257:262] == b"ustar":
                with tarfile.open(fileobj=__import__("io").BytesIO(blob)) as layer:
                    for inner in layer.getmembers():
                        if inner.isfile():
                            data = layer.extractfile(inner).read()
                            scanned += 1
                            found += [(f"{member.name}:{inner.name}", n) for n in _hits(data, needles)]
    assert scanned > 100, "the layers were not unpacked"
    assert found == []
    assert not any("envrepro-build" in line for line in history.decode().splitlines())


def test_heavy_layer_is_reused_when_only_the_rest_differs(engine, standin_38, tmp_path, builder):
    """Two environments sharing the TensorFlow closure (here: keras, a heavy root, and six it
    needs) but not the rest: the second build takes the heavy install step from the cache."""
    heavy = ("keras==2.4.3 \\\n"
             "    --hash=sha256:05e2faf6885f7899482a7d18fc00ba9655fe2c9296a35ad96949a07a9c27d1bb\n"
             "    # via -r requirements.in\n"
             "six==1.16.0 \\\n"
             "    --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254\n"
             "    # via keras\n")
    first = make_capture(tmp_path, heavy + TERMCOLOR, "first")
    second = make_capture(tmp_path, heavy, "second")
    for cap in (first, second):
        fresh(engine, cap, standin_38)
    images.ensure_image(first, engine, on_progress=lambda line: None)
    lines = []
    info = images.ensure_image(second, engine, on_progress=lines.append)
    assert info.source == "built"
    if builder == "wheelhouse":
        assert any(line.startswith("Using envrepro-heavy:") for line in lines), lines
        assert info.wheelhouse["downloaded"] == 0          # every file was already in the wheelhouse
        return
    heavy_step = next(i for i, line in enumerate(lines) if line.startswith("Step ") and "heavy.lock" in line
                      and " RUN " in line)
    after = [line for line in lines[heavy_step + 1:] if line.strip()]
    assert after[0].strip() == "---> Using cache", after[:3]


def _local_wheel(tmp_path: Path, wheels: Path) -> str:
    """A pure-Python wheel built the way a capture builds local installs (no hash asked of any
    index: the lock line carries none, as a capture written offline would)."""
    from envrepro.packages import localwheels
    proj = tmp_path / "mypkg-src"
    (proj / "mypkg").mkdir(parents=True)
    (proj / "mypkg" / "__init__.py").write_text("ANSWER = 42\n")
    (proj / "setup.py").write_text("from setuptools import setup\n"
                                   "setup(name='mypkg', version='0.1', packages=['mypkg'])\n")
    [item] = localwheels.build_local_wheels([{"name": "mypkg", "version": "0.1",
                                    "direct_url": {"url": proj.as_uri(), "dir_info": {}}}], wheels)
    return item["wheel"].split("/", 1)[1]


def test_mixed_lock_installs_hashless_entries_unverified(engine, standin_38, tmp_path, builder):
    """Hashed six with --require-hashes, then a local wheel without hash in its own step."""
    built = tmp_path / "built"
    wheel = _local_wheel(tmp_path, built)
    lock = (f"mypkg @ file:///envrepro/capture/wheels/{wheel}\n    # via -r requirements.in\n" + SIX)
    capture = make_capture(tmp_path, lock, "mixed")
    built.rename(capture.root / "wheels")
    tag = fresh(engine, capture, standin_38)
    lines = []
    info = images.ensure_image(capture, engine, on_progress=lines.append)
    assert info.source == "built" and info.unverified == ["mypkg"]
    assert any("without hash verification" in line and "mypkg" in line for line in lines)
    log = info.log_path.read_text()
    if builder == "dockerfile":
        runs = [line for line in log.splitlines() if line.startswith("RUN ") and "pip.sh install" in line]
        assert [("--require-hashes" in r, r.split(" -r ")[-1]) for r in runs] == [
            (True, "/etc/envrepro-build/rest.lock"), (False, "/etc/envrepro-build/unverified.lock")]
    else:
        steps = [line for line in log.splitlines() if line.startswith("envrepro: installing ")]
        assert [("--require-hashes" in r, r.split()[2]) for r in steps] == [
            (True, "rest.lock"), (False, "unverified.lock")], steps
    assert "installed without hash verification: mypkg" in log
    code, out, err = engine.run(tag, ["python", "-c", INSIDE.replace('"termcolor": __import__("termcolor")'
                                                                      '.colored("x", "red")',
                                                                      '"answer": __import__("mypkg").ANSWER')],
                                network_disabled=True, read_only=True, tmpfs={"/tmp": "rw,size=64m"},
                                stream=False)
    assert code == 0, err
    facts = json.loads(out.strip().splitlines()[-1])
    assert facts["answer"] == 42 and {"six==1.16.0", "mypkg==0.1"} <= set(facts["dists"])


def test_prune_keeps_images_a_container_uses(engine, standin_38, tmp_path):
    """Two envrepro-labelled images no capture uses; a (stopped) container was created from one:
    prune keeps that one, named with the container (dry run: other tests' images stay). They are
    tagged in envrepro's own repository: prune never removes another repository's tag."""
    import io

    from envrepro.image import inventory as images_cmd

    run = uuid.uuid4().hex
    ids = {}
    for name in ("with-container", "unused"):
        # A layer of its own: an image that only adds a label has its base's layer chain, and every
        # image built on that base (other tests', the matrix's, running beside these in CI) would
        # stand on it, so prune would rightly keep it.
        dockerfile = (f"FROM {standin_38}\nLABEL {spec.LABEL_KEY}={run}{name}\n"
                      f"RUN echo {run}{name} > /envrepro-prune-test\n").encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            ti = tarfile.TarInfo("Dockerfile")
            ti.size = len(dockerfile)
            tar.addfile(ti, io.BytesIO(dockerfile))
        ids[name] = engine.build(buf.getvalue(), f"envrepro-env:test-{run[:8]}-{name}")
    ctr = f"envrepro-test-prune-{run[:8]}"
    subprocess.run(["docker", "create", "--name", ctr, f"envrepro-env:test-{run[:8]}-with-container", "true"],
                   check=True, capture_output=True)
    try:
        res = images_cmd.prune(engine, dry_run=True)
        kept = {r.key: r for r in res.kept}
        assert kept[f"{run}with-container"].containers == [ctr]
        assert f"{run}unused" in {r.key for r in res.removed}
        assert f"kept envrepro-env:test-{run[:8]}-with-container: used by container(s) {ctr}" in \
            images_cmd.render_prune(res)
    finally:
        subprocess.run(["docker", "rm", "-f", ctr], capture_output=True)
        for name in ids:
            engine.remove_image(f"envrepro-env:test-{run[:8]}-{name}", force=True)
