"""envrepro.build.images with a FakeEngine: keys, base choice, pip settings, GPU bases, and the
local -> registry -> build order. No Docker, no network."""
import io

import pytest

from envrepro.build import images as build
from envrepro.build import dockerfile as df
from envrepro.engine.base import PullFailed
from envrepro.engine.docker import DockerEngine
from envrepro.errors import EXIT_BUILD_FAILED, EXIT_NO_ENGINE, BuildFailed, EnvreproError, NoEngine
from envrepro.sidecar.manifest import Capture

try:
    from .fakes import FakeEngine, context_files, dockerfile_of, image
except ImportError:
    from fakes import FakeEngine, context_files, dockerfile_of, image

LOCK = """six==1.16.0 \\
    --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254
    # via -r requirements.in
termcolor==1.1.0 \\
    --hash=sha256:1d6d69ce66211143803fbc56652b41d73b4a400a2891d7bf7a1cdf4c02de613b
    # via -r requirements.in
"""
NO_PIP = df.PipSettings()


@pytest.fixture
def capture(tmp_path):
    root = tmp_path / "m.envrepro"
    root.mkdir()
    (root / "requirements.lock").write_text(LOCK)
    return Capture(root=root, data={"python": {"version": "3.8.18"},
                                    "frameworks": {"tensorflow": "2.4.1"}})


def base_image(tag="python:3.8-slim", digest="python@sha256:" + "0" * 64):
    return image(tag, digest=digest)


def ensure(capture, engine, **kw):
    lines = []
    kw.setdefault("pip", NO_PIP)
    info = build.ensure_image(capture, engine, on_progress=lines.append, **kw)
    return info, lines


# -- keys ---------------------------------------------------------------------------------------
def test_image_key_is_stable():
    key = build.image_key("python:3.8-slim", "3.8.18", LOCK, "1")
    assert key == build.image_key("python:3.8-slim", "3.8.18", "# header\n" + LOCK.replace("    # via -r requirements.in\n", ""), "1")
    assert len(key) == 32 and int(key, 16) >= 0
    # A fixed value: if this changes, every user's images are rebuilt. Change it on purpose only.
    assert key == "6fd7534fafd7cbe8a88a9d448559e4b4"


@pytest.mark.parametrize("change", [
    dict(base_image="python:3.8-slim-bullseye"), dict(python_version="3.8.17"),
    dict(lock_text=LOCK.replace("1.16.0", "1.15.0")), dict(runtime_version="2"),
])
def test_image_key_changes_with_each_input(change):
    args = dict(base_image="python:3.8-slim", python_version="3.8.18", lock_text=LOCK, runtime_version="1")
    assert build.image_key(**{**args, **change}) != build.image_key(**args)


def test_image_tag():
    assert build.image_tag("0123456789abcdef0123") == "envrepro-env:0123456789abcdef"


# -- base image choice --------------------------------------------------------------------------
def test_default_base_order(monkeypatch, tmp_path):
    assert build.default_base("3.8.18") == "python:3.8-slim"
    cfg = tmp_path / "config" / "envrepro" / "config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("base_image: registry.example/python:{xy}-slim-bookworm\n")
    assert build.default_base("3.8.18") == "registry.example/python:3.8-slim-bookworm"
    monkeypatch.setenv("ENVREPRO_BASE_IMAGE", "from-env:{python}")
    assert build.default_base("3.8.18") == "from-env:3.8.18"
    assert build.default_base("3.8.18", "from-arg") == "from-arg"


def test_registry_from_env_or_config(monkeypatch, tmp_path):
    assert build.configured_registry() is None
    monkeypatch.setenv("ENVREPRO_REGISTRY", "reg.example:5000/team/")
    assert build.configured_registry() == "reg.example:5000/team"
    assert build.configured_registry("other.example") == "other.example"


# -- host pip settings --------------------------------------------------------------------------
HOST_PIP_CONFIG_LIST = """:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.default-timeout='180'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple https://u:t@idx.example/simple'
global.find-links='/opt/wheels'
global.index-url='https://mirror.example/simple'
global.trusted-host='idx.example'
"""


def test_pip_settings_keep_http_urls_only():
    s = build.host_pip_settings(runner=lambda: HOST_PIP_CONFIG_LIST)
    assert s.index_url == "https://mirror.example/simple"
    assert s.extra_index_urls == ("https://u:t@idx.example/simple",)
    assert s.find_links == ()
    assert s.trusted_hosts == ("idx.example",)
    assert s.cert == "/etc/ssl/certs/ca-certificates.crt"


def test_pip_config_list_precedence():
    values = build.parse_pip_config_list("global.index-url='https://g/simple'\n"
                                         "install.index-url='https://i/simple'\n"
                                         ":env:.index-url='https://e/simple'\n"
                                         "global.cert='/a'\n")
    assert values == {"index-url": "https://e/simple", "cert": "/a"}


def test_pip_config_list_multiline_values_are_unescaped():
    text = "global.extra-index-url='\\nhttps://a.example/simple\\nhttps://b.example/simple'\n"
    s = build.pip_settings_from(build.parse_pip_config_list(text))
    assert s.extra_index_urls == ("https://a.example/simple", "https://b.example/simple")


def test_pip_settings_fall_back_to_files_and_env(monkeypatch, tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nextra-index-url =\n    https://x.example/simple\n    file:///local\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "none"))
    monkeypatch.setenv("PIP_INDEX_URL", "https://env.example/simple")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)

    def broken():
        raise OSError("no pip here")

    s = build.host_pip_settings(runner=broken)
    assert s.extra_index_urls == ("https://x.example/simple",)
    assert s.index_url == "https://env.example/simple"


# -- GPU bases ----------------------------------------------------------------------------------
@pytest.mark.parametrize("tf,cuda,cudnn,image_prefix", [
    ("2.4.1", "11.0", "8.0", "nvidia/cuda:11.0.3-cudnn8-runtime-ubuntu20.04"),
    ("2.8.4", "11.2", "8.1", "nvidia/cuda:11.2.2-cudnn8-runtime"),
    ("2.13.1", "11.8", "8.6", "nvidia/cuda:11.8.0-cudnn8-runtime"),
    ("2.15.0", "12.2", "8.9", "nvidia/cuda:12.2.2-cudnn8-runtime"),
    ("2.16.1", "12.3", "8.9", "nvidia/cuda:12.3.2-cudnn8-runtime"),
    ("2.17.0", "12.3", "8.9", "nvidia/cuda:12.3.2-cudnn8-runtime"),
    ("2.18.0", "12.5.1", "9.3", "nvidia/cuda:12.5.1-cudnn-runtime"),
    ("2.21.0", "12.5.1", "9.3", "nvidia/cuda:12.5.1-cudnn-runtime"),
])
def test_gpu_base_follows_tensorflows_tested_configurations(tf, cuda, cudnn, image_prefix):
    g = build.gpu_base(tf)
    assert (g.cuda, g.cudnn) == (cuda, cudnn) and g.image.startswith(image_prefix)


def test_gpu_base_unknown_version():
    with pytest.raises(EnvreproError, match="no known CUDA base"):
        build.gpu_base("1.13.1")


def test_gpu_dockerfile_builds_python_on_the_cuda_base(capture):
    text = build.dockerfile_for(capture, gpus=True)
    assert "FROM nvidia/cuda:11.0.3-cudnn8-runtime-ubuntu20.04 AS envrepro-python-build" in text
    assert "Python-3.8.18.tgz" in text and 'org.envrepro.base="nvidia/cuda:11.0.3' in text


# -- ensure_image: local -> registry -> build ---------------------------------------------------
def test_local_image_is_used_without_pull_or_build(capture):
    key = build.image_key("python:3.8-slim", "3.8.18", LOCK)
    engine = FakeEngine([image(build.image_tag(key), {"org.envrepro.key": key})])
    info, lines = ensure(capture, engine)
    assert info.source == "local" and info.tag == build.image_tag(key)
    assert engine.builds == [] and engine.pulls == []


def test_build_when_missing_labels_and_logs(capture, tmp_path):
    engine = FakeEngine([base_image()])
    info, lines = ensure(capture, engine)
    assert info.source == "built" and info.built and engine.pulls == []  # local base: never pulled
    labels = engine.inspect_image(info.tag)["Config"]["Labels"]
    assert labels["org.envrepro.key"] == info.key
    assert labels["org.envrepro.python"] == "3.8.18"
    assert labels["org.envrepro.tensorflow"] == "2.4.1"
    assert labels["org.envrepro.base"] == "python:3.8-slim"
    assert labels["org.envrepro.base-digest"] == "python@sha256:" + "0" * 64
    assert labels["org.envrepro.runtime-version"] == build.RUNTIME_VERSION
    assert len(labels["org.envrepro.lock-sha256"]) == 64
    assert info.log_path and str(info.log_path).startswith(str(tmp_path / "cache" / "envrepro" / "logs"))
    assert "Step 2/2 : RUN pip install" in info.log_path.read_text()
    assert any(line.startswith("Building envrepro-env:") for line in lines)
    assert info.python == "/opt/envrepro/venv/bin/python"


def test_local_only_base_records_its_image_id(capture):
    engine = FakeEngine([base_image(digest=None)])
    info, _ = ensure(capture, engine)
    assert info.base_digest == engine.inspect_image("python:3.8-slim")["Id"]


def test_missing_base_is_pulled(capture):
    engine = FakeEngine(registry={"python:3.8-slim": base_image()})
    info, _ = ensure(capture, engine)
    assert engine.pulls == ["python:3.8-slim"] and info.source == "built"


def test_missing_base_that_cannot_be_pulled(capture):
    engine = FakeEngine()
    engine.raise_pull("python:3.8-slim")
    with pytest.raises(BuildFailed) as e:
        ensure(capture, engine)
    assert "python:3.8-slim" in str(e.value) and "--base-image" in str(e.value)
    assert e.value.exit_code == EXIT_BUILD_FAILED and engine.builds == []


def test_registry_image_is_pulled_and_tagged(capture, monkeypatch):
    key = build.image_key("python:3.8-slim", "3.8.18", LOCK)
    ref = f"reg.example/envrepro-env:{key}"
    engine = FakeEngine(registry={ref: image(ref, {"org.envrepro.key": key})})
    monkeypatch.setenv("ENVREPRO_REGISTRY", "reg.example")
    info, _ = ensure(capture, engine)
    assert info.source == "pulled" and engine.builds == []
    assert engine.image_exists(build.image_tag(key))


def test_unreachable_registry_falls_back_to_building(capture):
    key = build.image_key("python:3.8-slim", "3.8.18", LOCK)
    engine = FakeEngine([base_image()])
    engine.raise_pull(f"reg.example/envrepro-env:{key}")
    info, lines = ensure(capture, engine, registry="reg.example")
    assert info.source == "built"
    assert any("Could not pull" in line and "no such host" in line for line in lines)


def test_registry_image_with_the_wrong_key_is_not_trusted(capture):
    key = build.image_key("python:3.8-slim", "3.8.18", LOCK)
    ref = f"reg.example/envrepro-env:{key}"
    engine = FakeEngine([base_image()], registry={ref: image(ref, {"org.envrepro.key": "other"})})
    info, _ = ensure(capture, engine, registry="reg.example")
    assert info.source == "built"


def test_build_failure_names_the_log_and_its_tail(capture):
    engine = FakeEngine([base_image()], build_lines=[
        "Step 5/13 : RUN pip install -r heavy.lock", " ---> Running in 0123", "Collecting six==1.16.0",
        "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.",
        "    six==1.16.0 from https://files/six.whl:", "        Expected sha256 0000", "             Got        8abb"],
        build_error="The command '/bin/sh -c pip install' returned a non-zero code: 1")
    with pytest.raises(BuildFailed) as e:
        ensure(capture, engine)
    msg = str(e.value)
    assert "full build log: " in msg and "envrepro/logs/build-" in msg
    assert "DO NOT MATCH THE HASHES" in msg and "hash check failed" in msg
    assert "---> Running in" not in msg
    assert not any(t.startswith("envrepro-env:") for t in engine.local)  # nothing tagged


def test_context_carries_pip_settings_and_ca_in_the_build_stage_only(capture, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nSENTINEL\n")
    pip = df.PipSettings(extra_index_urls=("https://u:TOKEN@idx.example/simple",), cert=str(ca))
    engine = FakeEngine([base_image()])
    ensure(capture, engine, pip=pip)
    files = context_files(engine.builds[0][0])
    assert files["build/ca.crt"] == ca.read_bytes()
    assert b"TOKEN" in files["build/pip.conf"] and b"TOKEN" not in files["Dockerfile"]
    assert "cert = /etc/envrepro-build/ca.crt" in files["build/pip.conf"].decode()
    assert "rest.lock" in dockerfile_of(engine.builds[0][0])


def test_second_identical_build_gives_identical_context(capture):
    a, b = FakeEngine([base_image()]), FakeEngine([base_image()])
    ensure(capture, a)
    ensure(capture, b)
    assert a.builds[0][0] == b.builds[0][0]


# -- progress and engine errors -----------------------------------------------------------------
def test_console_progress_without_a_terminal_prints_plain_lines():
    out = io.StringIO()
    p = build.ConsoleProgress(out)
    p("Step 3/12 : RUN pip install")
    p("")
    p.close()
    assert out.getvalue() == "Step 3/12 : RUN pip install\n"


def test_no_engine_is_one_line_with_the_fix(monkeypatch):
    pytest.importorskip("docker")
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    with pytest.raises(NoEngine) as e:
        DockerEngine(timeout=5).connect()
    msg = str(e.value)
    assert "\n" not in msg and "tcp://127.0.0.1:1" in msg
    assert "sudo dockerd &" in msg and "Docker Desktop" in msg and "envrepro doctor" in msg
    assert e.value.exit_code == EXIT_NO_ENGINE


def test_import_engine_does_not_import_docker():
    import subprocess
    import sys

    code = "import sys, envrepro.engine.docker, envrepro.build.images, envrepro.build.dockerfile; print('docker' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -- Engine error translation (a stub SDK client: no daemon) ------------------------------------
class _StubAPI:
    def __init__(self, build_items=(), build_exc=None, pull_exc=None):
        self.build_items, self.build_exc, self.pull_exc = list(build_items), build_exc, pull_exc
        self.tagged = []

    def build(self, **kwargs):
        yield from self.build_items
        if self.build_exc:
            raise self.build_exc

    def tag(self, image, repo, tag, force=False):
        self.tagged.append((image, f"{repo}:{tag}"))

    def pull(self, repo, tag=None, stream=True, decode=True):
        if self.pull_exc:
            raise self.pull_exc
        yield {"status": "Pulling"}


class _StubClient:
    def __init__(self, api):
        self.api = api


def test_engine_build_tags_only_after_success():
    api = _StubAPI([{"stream": "Step 1/1 : FROM x\n"}, {"aux": {"ID": "sha256:abc"}},
                    {"stream": "Successfully built abc\n"}])
    lines = []
    assert DockerEngine(client=_StubClient(api)).build(b"", "envrepro-env:k", on_line=lines.append) == "sha256:abc"
    assert api.tagged == [("sha256:abc", "envrepro-env:k")] and lines[0] == "Step 1/1 : FROM x"


def test_engine_build_error_is_build_failed_and_untagged():
    api = _StubAPI([{"stream": "Step 1/1 : RUN x\n"},
                    {"error": "write /var/lib/docker/tmp/x: no space left on device",
                     "errorDetail": {"message": "no space left on device"}}])
    with pytest.raises(BuildFailed) as e:
        DockerEngine(client=_StubClient(api)).build(b"", "envrepro-env:k")
    assert "no space left on device" in str(e.value) and "docker system prune" in str(e.value)
    assert api.tagged == []


def test_engine_daemon_dying_mid_build_is_explained():
    import requests

    api = _StubAPI([{"stream": "Step 1/3 : FROM x\n"}],
                   build_exc=requests.exceptions.ConnectionError("Connection aborted."))
    with pytest.raises(BuildFailed) as e:
        DockerEngine(client=_StubClient(api)).build(b"", "envrepro-env:k")
    assert "stopped answering in the middle of the build" in str(e.value) and api.tagged == []


def test_engine_pull_denied_and_not_found():
    docker_errors = pytest.importorskip("docker.errors")
    resp = type("R", (), {"status_code": 401, "reason": "Unauthorized", "url": "x"})()
    denied = docker_errors.NotFound("401", response=resp, explanation="unauthorized: authentication required")
    with pytest.raises(PullFailed) as e:
        DockerEngine(client=_StubClient(_StubAPI(pull_exc=denied))).pull("reg.example/a:b")
    assert "docker login" in str(e.value)
    missing = docker_errors.NotFound("404", explanation="manifest for reg.example/a:b not found: manifest unknown")
    assert DockerEngine(client=_StubClient(_StubAPI(pull_exc=missing))).pull("reg.example/a:b") is False
