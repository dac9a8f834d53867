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


# --- services: a port with no network (the relay) ------------------------------------------------

class _StubContainer:
    def __init__(self, world, cid, kwargs):
        self.world, self.id, self.kwargs = world, cid, kwargs
        self.labels = dict(kwargs.get("labels") or {})
        self.removed = self.stopped = False
        ports = kwargs.get("ports") or {}
        self.attrs = {"State": {"Running": True},
                      "Mounts": [{"Type": m["Type"], "Name": m["Source"], "Destination": m["Target"]}
                                 for m in kwargs.get("mounts") or []],
                      "NetworkSettings": {"Ports": {k: [{"HostIp": v[0], "HostPort": str(40000 + i)}]
                                                    for i, (k, v) in enumerate(ports.items())}}}

    def reload(self):
        pass

    def logs(self, **kwargs):
        return b"envrepro relay: can't listen: [Errno 98] Address in use\n"

    def stop(self, timeout=None):
        self.stopped = True
        self.world.order.append(("stop", self.id))

    def wait(self, timeout=None):
        return {"StatusCode": 0}

    def remove(self, force=False):
        self.removed = True
        self.world.order.append(("remove", self.id))


class _StubWorld:
    """containers, volumes and exec of a Docker SDK client, recorded."""

    def __init__(self, exec_exit=None, relay_running=True):
        self.exec_exit, self.relay_running = exec_exit, relay_running
        self.made, self.volumes_made, self.volumes_removed, self.execs, self.order = [], [], [], [], []
        world = self

        class Containers:
            def run(self, image, command=None, **kwargs):
                c = _StubContainer(world, f"c{len(world.made)}" + "0" * 62, dict(kwargs, image=image, command=command))
                if "entrypoint" in kwargs:
                    c.attrs["State"]["Running"] = world.relay_running
                    c.attrs["State"]["ExitCode"] = None if world.relay_running else 3
                world.made.append(c)
                return c

            def get(self, cid):
                return next(c for c in world.made if c.id == cid or c.id.startswith(cid))

            def list(self, all=False, filters=None):
                key, _, value = filters["label"].partition("=")
                return [c for c in world.made if c.labels.get(key) == value and not c.removed]

        class Volume:
            def __init__(self, name):
                self.name = name

            def remove(self, force=False):
                world.volumes_removed.append(self.name)

        class Volumes:
            def create(self, **kwargs):
                world.volumes_made.append(kwargs)

            def get(self, name):
                return Volume(name)

        class API:
            def exec_create(self, cid, cmd, **kwargs):
                world.execs.append(dict(kwargs, container=cid, cmd=cmd))
                return {"Id": "exec1"}

            def exec_start(self, exec_id, detach=False):
                assert detach is True

            def exec_inspect(self, exec_id):
                done = world.exec_exit is not None
                return {"Running": not done, "ExitCode": world.exec_exit}

        self.containers, self.volumes, self.api = Containers(), Volumes(), API()


def test_a_service_with_no_network_is_reached_through_the_relay(monkeypatch):
    pytest.importorskip("docker")
    from envrepro.engine import services

    monkeypatch.setattr(services, "RELAY_START_SECONDS", 0.0)
    world = _StubWorld()
    eng = DockerEngine(client=world)
    cid = eng.start("envrepro-serve:k", ports={8501: ("127.0.0.1", 0)}, user="10001:10001", gpus=False)
    service, relay_ctr = world.made
    assert cid == service.id
    # the service: --network none, no port of its own, the relay's volume mounted
    assert service.kwargs["network_mode"] == "none" and "ports" not in service.kwargs
    (mount,) = service.kwargs["mounts"]
    (volume,) = world.volumes_made
    assert mount["Type"] == "volume" and mount["Source"] == volume["name"] and mount["Target"] == services.RELAY_DIR
    assert volume["driver_opts"]["type"] == "tmpfs" and "uid=10002,gid=10002,mode=0700" in volume["driver_opts"]["o"]
    # the inner relay: exec'd in the service as the relay's user, unix socket -> 127.0.0.1:8501
    (ex,) = world.execs
    assert ex["container"] == cid and ex["user"] == services.RELAY_USER != "10001:10001"
    assert ex["cmd"][:2] == ["/bin/sh", "-c"] and ex["cmd"][-3:] == ["unix-to-tcp", f"{services.RELAY_DIR}/8501.sock", "8501"]
    # the outer relay: the port published, the image's entry point and HEALTHCHECK replaced
    kw = relay_ctr.kwargs
    assert kw["ports"] == {"8501/tcp": ("127.0.0.1", None)} and "network_mode" not in kw
    assert kw["entrypoint"][-3:] == ["tcp-to-unix", "8501", f"{services.RELAY_DIR}/8501.sock"]
    assert kw["healthcheck"] == {"test": ["NONE"]} and kw["environment"] == {}
    assert kw["user"] == services.RELAY_USER and kw["read_only"] and kw["cap_drop"] == ["ALL"]
    assert kw["labels"][services.RELAY_FOR] == cid and kw["mounts"] == [mount]
    assert "-I" in kw["entrypoint"][2] and "-S" in kw["entrypoint"][2]
    assert eng.host_port(cid, 8501) == 40000              # the relay's published port
    # stop: the service first (its drained answers still flow through the relay), then the rest
    assert eng.stop(cid, timeout=5) == 0
    assert world.order == [("stop", cid), ("remove", cid), ("remove", relay_ctr.id)]
    assert world.volumes_removed == [volume["name"]]


def test_a_service_with_a_network_publishes_its_own_port():
    pytest.importorskip("docker")
    world = _StubWorld()
    eng = DockerEngine(client=world)
    cid = eng.start("img", ports={8501: ("0.0.0.0", 8080)}, network_disabled=False)
    (service,) = world.made
    assert service.kwargs["ports"] == {"8501/tcp": ("0.0.0.0", 8080)} and "network_mode" not in service.kwargs
    assert world.volumes_made == [] and world.execs == [] and eng.host_port(cid, 8501) == 40000


@pytest.mark.parametrize("exec_exit, relay_running, said", [
    (127, True, "the relay in the service container exited with code 127"),
    (None, False, "the relay container exited with code 3: envrepro relay: can't listen"),
])
def test_a_relay_that_dies_at_once_is_one_error_and_nothing_is_left(monkeypatch, exec_exit, relay_running, said):
    pytest.importorskip("docker")
    from envrepro.engine import services
    from envrepro.engine.base import RunFailed

    monkeypatch.setattr(services, "RELAY_START_SECONDS", 0.0)
    world = _StubWorld(exec_exit=exec_exit, relay_running=relay_running)
    with pytest.raises(RunFailed) as e:
        DockerEngine(client=world).start("img", ports={8501: ("127.0.0.1", 0)})
    assert said in str(e.value) and "\n" not in str(e.value)
    assert all(c.removed for c in world.made) and len(world.made) == 2
    assert set(world.volumes_removed) == {world.volumes_made[0]["name"]}


def test_a_service_that_dies_before_its_relay_starts_is_left_to_the_caller(monkeypatch):
    """The server exited at once (a bad plan, say): no relay error hides it; the caller reads its
    state and logs (the self-check's "exited with code N"), and stop removes it and the volume."""
    pytest.importorskip("docker")
    from envrepro.engine import services

    monkeypatch.setattr(services, "RELAY_START_SECONDS", 0.0)
    world = _StubWorld()

    def exec_create(cid, cmd, **kwargs):
        raise RuntimeError(f"Container {cid} is not running")

    world.api.exec_create = exec_create
    eng = DockerEngine(client=world)
    real_run = world.containers.run

    def run(image, command=None, **kwargs):
        c = real_run(image, command, **kwargs)
        c.attrs["State"] = {"Running": False, "ExitCode": 70}
        return c

    world.containers.run = run
    cid = eng.start("img", ports={8501: ("127.0.0.1", 0)})
    assert len(world.made) == 1 and eng.container_state(cid) == {"running": False, "exit_code": 70,
                                                                 "oom_killed": False}
    assert eng.host_port(cid, 8501) is None
    assert eng.stop(cid) == 0
    assert world.made[0].removed and world.volumes_removed == [world.volumes_made[0]["name"]]
