"""DockerEngine's build containers against a stub Docker SDK client, no daemon: what ``run`` and
``commit_run`` ask the engine for (capabilities, no-new-privileges, limits), the wall-clock limit
that kills a container still running, and output held in memory only up to a bound."""
import threading

import pytest

from envrepro.engine import output as engine_output
from envrepro.engine.base import Limits, Mount, TimedOut
from envrepro.engine.docker import DockerEngine
from envrepro.errors import BuildFailed, EnvreproError

pytest.importorskip("docker")


class _Container:
    """A created container: ``chunks`` is what it prints; ``hang``: it runs until killed."""

    def __init__(self, kwargs, chunks, hang=False, code=0, oom=False):
        self.kwargs, self.chunks, self.code, self.oom = kwargs, list(chunks), code, oom
        self.killed = threading.Event()
        self.hang = hang
        self.committed = self.removed = False
        self.attrs = {}

    def attach(self, demux=False, **kwargs):
        for c in self.chunks:
            yield (c, None) if demux else c
        if self.hang:
            assert self.killed.wait(10), "the deadline never killed the container"

    def start(self):
        pass

    def kill(self):
        self.killed.set()

    def wait(self, timeout=None):
        return {"StatusCode": 137 if self.killed.is_set() else self.code}

    def logs(self, stdout=True, stderr=True, stream=False, follow=False):
        data = b"".join(self.chunks) if stdout else b""
        return iter([data[i:i + 7] for i in range(0, len(data), 7)]) if stream else data

    def reload(self):
        self.attrs = {"State": {"OOMKilled": self.oom}}

    def commit(self, repository=None, tag=None, changes=None):
        self.committed = True
        return type("Image", (), {"id": "sha256:new"})()

    def remove(self, force=False):
        self.removed = True


class _Client:
    def __init__(self, **container):
        self.made = []
        self.container = container
        client = self

        class Containers:
            def create(self, image, command=None, **kwargs):
                c = _Container(dict(kwargs, image=image, command=command), **client.container)
                client.made.append(c)
                return c

        self.containers = Containers()


def test_commit_run_drops_every_capability_but_those_asked_for_with_limits():
    client = _Client(chunks=[b"Successfully installed six\n"])
    lines = []
    image_id = DockerEngine(client=client).commit_run(
        "python:3.8-slim", ["sh", "/mnt/install.sh", "heavy"], "envrepro-heavy:k", [Mount("/s", "/mnt")],
        {"PATH": "/bin"}, ["USER 10001:10001"], {"/tmp": "rw,size=1g"}, on_line=lines.append, timeout=60,
        cap_add=("CHOWN", "DAC_OVERRIDE", "FOWNER"), mem_limit="4g", pids_limit=512)
    (c,) = client.made
    kw = c.kwargs
    assert image_id == "sha256:new" and c.committed and c.removed
    assert kw["cap_drop"] == ["ALL"] and kw["cap_add"] == ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
    assert kw["security_opt"] == ["no-new-privileges"] and kw["network_mode"] == "none" and kw["user"] == "0:0"
    assert (kw["mem_limit"], kw["pids_limit"], kw["tmpfs"]) == ("4g", 512, {"/tmp": "rw,size=1g"})
    assert lines == ["Successfully installed six"]
    DockerEngine(client=client).commit_run("img", ["true"], "t:1")
    assert client.made[1].kwargs["cap_add"] is None and client.made[1].kwargs["cap_drop"] == ["ALL"]
    assert "mem_limit" not in client.made[1].kwargs


def test_a_build_container_still_running_at_its_deadline_is_killed_and_nothing_is_committed():
    client = _Client(chunks=[b"Processing /mnt/wheels/x.whl\n"], hang=True)
    with pytest.raises(BuildFailed, match="still running after 0.2 s") as e:
        DockerEngine(client=client).commit_run("img", ["sh"], "envrepro-env:k", timeout=0.2)
    (c,) = client.made
    assert c.killed.is_set() and not c.committed and c.removed and "allow it more time" in e.value.fix


def test_run_kills_at_its_deadline_and_says_so():
    client = _Client(chunks=[b"building\n"], hang=True)
    with pytest.raises(TimedOut) as e:
        DockerEngine(client=client).run("img", ["sh"], stream=True, on_output=lambda n, t: None, timeout=0.2)
    assert e.value.seconds == 0.2 and e.value.stdout == "building\n" and client.made[0].removed
    client = _Client(chunks=[b"quick\n"])
    assert DockerEngine(client=client).run("img", ["sh"], stream=False, timeout=30) == (0, "quick\n", "")


def test_run_passes_capabilities_and_limits_and_keeps_only_the_tail_of_its_output():
    client = _Client(chunks=[b"x" * 1000, b"the end\n"])
    seen = []
    code, out, err = DockerEngine(client=client).run(
        "img", ["sh"], cap_add=("CHOWN",), mem_limit="1g", pids_limit=64, output_limit=20,
        on_output=lambda name, text: seen.append(text))
    kw = client.made[0].kwargs
    assert kw["cap_drop"] == ["ALL"] and kw["cap_add"] == ["CHOWN"] and kw["security_opt"] == ["no-new-privileges"]
    assert (kw["mem_limit"], kw["pids_limit"]) == ("1g", 64)
    assert out == ("x" * 1000 + "the end\n")[-20:] and "".join(seen) == "x" * 1000 + "the end\n"
    _, out, _ = DockerEngine(client=_Client(chunks=[b"y" * 500 + b"\nlast\n"])).run(
        "img", ["sh"], stream=False, output_limit=10)
    assert out == ("y" * 500 + "\nlast\n")[-10:]
    assert DockerEngine(client=_Client(chunks=[b"a"])).run("img", ["sh"])[2] == ""
    assert client.made[0].kwargs.get("cap_add") == ["CHOWN"]


def test_a_build_container_that_prints_without_end_reaches_on_line_in_bounded_pieces(monkeypatch):
    monkeypatch.setattr(engine_output, "MAX_LINE", 10)
    monkeypatch.setattr(engine_output, "TAIL_LINES", 3)
    client = _Client(chunks=[b"a" * 25, b"\xc3", b"\xa9\n", b"\x1b[1mbold\x1b[0m\nend"], code=1)
    lines = []
    with pytest.raises(BuildFailed, match="non-zero code: 1"):
        DockerEngine(client=client).commit_run("img", ["sh"], "t:1", on_line=lines.append)
    assert lines == ["a" * 10, "a" * 10, "aaaaa\u00e9", "bold", "end"]     # é split over two chunks
    assert not client.made[0].committed


def test_an_oom_killed_build_says_so():
    client = _Client(chunks=[b"Installing collected packages: tensorflow\n"], code=137, oom=True)
    with pytest.raises(BuildFailed) as e:
        DockerEngine(client=client).commit_run("img", ["sh"], "t:1", mem_limit="4g")
    assert "out of memory (the limit is 4g)" in e.value.fix


def test_limits_read_from_the_environment(monkeypatch):
    default = Limits(memory="4g", pids=512, seconds=1200.0)
    assert default.from_env("ENVREPRO_X") == default
    monkeypatch.setenv("ENVREPRO_X_MEMORY", "512m")
    monkeypatch.setenv("ENVREPRO_X_PIDS", "100")
    monkeypatch.setenv("ENVREPRO_X_TIMEOUT", "90.5")
    assert default.from_env("ENVREPRO_X") == Limits("512m", 100, 90.5)
    for var, value in (("ENVREPRO_X_MEMORY", "-1g"), ("ENVREPRO_X_MEMORY", "4 GB"), ("ENVREPRO_X_PIDS", "0"),
                       ("ENVREPRO_X_TIMEOUT", "inf"), ("ENVREPRO_X_TIMEOUT", "soon")):
        monkeypatch.setenv(var, value)
        with pytest.raises(EnvreproError, match=var):
            default.from_env("ENVREPRO_X")
        monkeypatch.setenv(var, {"ENVREPRO_X_MEMORY": "1g", "ENVREPRO_X_PIDS": "1", "ENVREPRO_X_TIMEOUT": "1"}[var])
