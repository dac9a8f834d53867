"""DockerEngine (envrepro.engine.docker) against a stub SDK client, no daemon: errors become one
readable envrepro error, builds are tagged only after success, the SDK is imported lazily."""
import pytest

from envrepro.engine.base import PullFailed
from envrepro.engine.docker import DockerEngine
from envrepro.errors import EXIT_NO_ENGINE, BuildFailed, EnvreproError, NoEngine


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

    code = ("import sys, envrepro.engine.docker, envrepro.image.ensure, envrepro.image.inventory, "
            "envrepro.sandbox.container; print('docker' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


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


def test_save_image_streams_chunks_and_load_images_reads_what_was_loaded():
    import io
    from types import SimpleNamespace

    class API:
        def get_image(self, tag):
            yield b"ab"
            yield b"cd"

        def load_image(self, data, quiet=None):
            assert data.read() == b"abcd" and quiet is True
            return iter([{"stream": "Loaded image: envrepro-env:0123\n"},
                         {"stream": "Loaded image ID: sha256:" + "e" * 64 + "\n"}])

    eng = DockerEngine(client=SimpleNamespace(api=API()))
    out = io.BytesIO()
    eng.save_image("envrepro-env:0123", out)
    assert out.getvalue() == b"abcd"
    out.seek(0)
    assert eng.load_images(out) == ["envrepro-env:0123", "sha256:" + "e" * 64]

    class Failing(API):
        def load_image(self, data, quiet=None):
            return iter([{"errorDetail": {"message": "no space left on device"}}])

    with pytest.raises(EnvreproError) as e:
        DockerEngine(client=SimpleNamespace(api=Failing())).load_images(io.BytesIO(b""))
    assert "no space left" in str(e.value)
