"""``envrepro serve`` stopped by signals, and killed, with a real Docker engine and the installed
wheel's command, on a host kept busy (busy-loop processes, bounded in time) as in the ``make
test`` run of issue 22.

SIGINT and SIGTERM in each phase (the self-check of a new serving image, the container starting
and warming up, serving idle, streaming log lines under requests) and a second signal cutting the
drain short: the command exits 0 within the drain's grace plus a few seconds and no container,
relay or volume labelled with its pid is left. Every run starts with SIGINT ignored, as a script's
``cmd &`` starts it (how the CI run that found the race started it: the old serve never saw the
SIGINT). Killed with SIGKILL: its watcher removes its containers at once; with the watcher killed
too, ``envrepro images`` lists the container as orphaned and the next ``envrepro serve`` removes
it. The seed model is test_serve_e2e's (a TF 2.4.1 custom-layer SavedModel).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from support import http_json, installed_argv  # noqa: E402
from support import installed_cli as cli  # noqa: E402
from test_serve_e2e import seed  # noqa: F401 - the module's seed model (a fixture)

from envrepro.runtime.serve import config as serveconfig

pytestmark = pytest.mark.e2e

RUN = uuid.uuid4().hex[:8]
GRACE = 5                 # ENVREPRO_SERVE_GRACE of every serve here
BOUND = GRACE + 10        # the drain's grace plus a few seconds (a busy host: the server's own exit)
OWNER_PID = "org.envrepro.owner.pid"
BUSY_SECONDS = 420        # the busy loops end by themselves even if the module's teardown never runs


def docker(*args, check=True, timeout=120):
    proc = subprocess.run(["docker", *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def labelled(kind, pid, *filters):
    """Ids of the containers (``ps``) or volumes (``volume``) labelled with owner ``pid``."""
    args = ["ps", "-aq", "--no-trunc"] if kind == "ps" else ["volume", "ls", "-q"]
    for f in (f"{OWNER_PID}={pid}",) + filters:
        args += ["--filter", f"label={f}"]
    return docker(*args).stdout.split()


@pytest.fixture(scope="module", autouse=True)
def busy():
    """Two busy loops on the host (its two cores) while the module runs, as a busy CI machine."""
    code = f"import time\nend = time.time() + {BUSY_SECONDS}\nwhile time.time() < end:\n    pass\n"
    loops = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    yield
    for p in loops:
        p.kill()
        p.wait()


@pytest.fixture(scope="module")
def served_image(seed):  # noqa: F811 - the imported fixture
    """The serving image ``envrepro serve`` of the seed uses (envrepro-serve:KEY), built and
    self-checked once: each serve below starts at once."""
    out = cli("build", seed["model"], "--serve", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout)["tag"]


class Serve:
    """``envrepro serve`` of the seed in the background (SIGINT ignored at its start, as ``cmd &``
    in a script), its output read as it comes."""

    def __init__(self, model, *args):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", ENVREPRO_SERVE_GRACE=str(GRACE))
        env.pop("ENVREPRO_DEBUG", None)
        self.proc = subprocess.Popen(
            [*installed_argv(), "serve", str(model), "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        self.pid = self.proc.pid
        self.out, self.err = [], []
        self.readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self.readers:
            t.start()

    @staticmethod
    def _read(stream, lines):
        for line in stream:
            lines.append(line.rstrip("\n"))

    def tail(self):
        return "\n".join(self.err[-40:])

    def wait_for(self, check, what, timeout=300):
        end = time.time() + timeout
        while time.time() < end:
            if check():
                return
            assert self.proc.poll() is None, f"envrepro serve exited {self.proc.returncode} before {what}:\n{self.tail()}"
            time.sleep(0.1)
        raise AssertionError(f"not {what} in {timeout} s:\n{self.tail()}")

    def ready(self):
        try:
            return http_json(self.port, "GET", serveconfig.READY_PATH, timeout=5)[0] == 200
        except OSError:
            return False

    def containers(self, *filters):
        return labelled("ps", self.pid, *filters)

    def stop(self, *signals, gap=0.5):
        """Send ``signals`` (``gap`` s apart): the seconds from the first to the exit."""
        t0 = time.monotonic()
        for i, sig in enumerate(signals):
            if i:
                time.sleep(gap)
            self.proc.send_signal(sig)
        try:
            self.proc.wait(BOUND + 60)
        except subprocess.TimeoutExpired:
            pass
        took = time.monotonic() - t0
        for t in self.readers:
            t.join(30)
        return took

    def assert_stopped_clean(self, took, sig_name):
        assert self.proc.returncode == 0, f"exit {self.proc.returncode}:\n{self.tail()}"
        assert took <= BOUND, f"{took:.1f} s after the signal (bound {BOUND} s):\n{self.tail()}"
        assert "Traceback" not in "\n".join(self.err), self.tail()
        assert any(f"Stopping ({sig_name})" in line for line in self.err), self.tail()
        assert self.containers() == [] and labelled("volume", self.pid) == [], "left behind"

    def clean_up(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for cid in self.containers():
            docker("rm", "-f", cid, check=False)
        for volume in labelled("volume", self.pid):
            docker("volume", "rm", "-f", volume, check=False)


def requests_until(port, stop, name):
    """Health checks and predictions, back to back: the server logs a line for each."""
    body = {"instances": [[0.0] * 16]}
    while not stop.is_set():
        try:
            http_json(port, "GET", serveconfig.LIVE_PATH, timeout=5)
            http_json(port, "POST", f"/v1/models/{name}:predict", body, timeout=10)
        except OSError:
            time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", ["starting", "serving", "streaming"])
def test_a_signal_in_each_phase_stops_it_within_the_grace_and_leaves_nothing(seed, served_image, phase, sig):  # noqa: F811
    serve = Serve(seed["model"])
    stop_requests = threading.Event()
    try:
        if phase == "starting":      # the model's container exists; the server is loading, not ready
            serve.wait_for(lambda: serve.containers("org.envrepro.owner.role=serve"), "started")
        else:
            serve.wait_for(serve.ready, "ready")
            labels = json.loads(docker("inspect", "-f", "{{json .Config.Labels}}", serve.containers()[0]).stdout)
            assert labels[OWNER_PID] == str(serve.pid) and labels["org.envrepro.owner.watcher"]
        if phase == "streaming":
            client = threading.Thread(target=requests_until, args=(serve.port, stop_requests, seed["name"]), daemon=True)
            client.start()
            seen = len(serve.err)
            serve.wait_for(lambda: len(serve.err) > seen + 20, "logging requests", timeout=120)
        took = serve.stop(sig)
        stop_requests.set()
        serve.assert_stopped_clean(took, sig.name)
        print(f"\n{phase} {sig.name}: exited 0 {took:.1f} s after the signal")
    finally:
        stop_requests.set()
        serve.clean_up()


def test_a_second_signal_cuts_the_drain_short(seed, served_image):  # noqa: F811
    serve = Serve(seed["model"])
    stop_requests = threading.Event()
    try:
        serve.wait_for(serve.ready, "ready")
        threading.Thread(target=requests_until, args=(serve.port, stop_requests, seed["name"]), daemon=True).start()
        took = serve.stop(signal.SIGTERM, signal.SIGINT)
        serve.assert_stopped_clean(took, "SIGTERM")
        assert any("Stopping at once" in line for line in serve.err) or took < 2, serve.tail()
    finally:
        stop_requests.set()
        serve.clean_up()


def test_a_signal_during_the_self_check_stops_it_and_removes_the_check_s_container(seed, served_image):  # noqa: F811
    """A new --name: a new serving image, built and self-checked by serve itself; SIGTERM while
    the self-check's container runs."""
    name = f"stop-{RUN}"
    serve = Serve(seed["model"], "--name", name)
    try:
        serve.wait_for(lambda: serve.containers("org.envrepro.owner.role=self-check"), "self-checking", timeout=600)
        took = serve.stop(signal.SIGTERM)
        serve.assert_stopped_clean(took, "SIGTERM")
    finally:
        serve.clean_up()
        for image in docker("images", "-q", "--filter", f"label=org.envrepro.serve.name={name}").stdout.split():
            docker("rmi", "-f", image, check=False)


def test_a_killed_serve_leaves_nothing_its_watcher_removes_it_at_once(seed, served_image):  # noqa: F811
    serve = Serve(seed["model"])
    try:
        serve.wait_for(serve.ready, "ready")
        assert len(serve.containers()) == 2               # the model's container and its relay
        serve.proc.kill()
        t0 = time.monotonic()
        serve.proc.wait()
        end = t0 + BOUND + 10
        while serve.containers() and time.monotonic() < end:
            time.sleep(0.2)
        assert serve.containers() == [] and labelled("volume", serve.pid) == []
        print(f"\nSIGKILL: the watcher removed the containers in {time.monotonic() - t0:.1f} s")
    finally:
        serve.clean_up()


def test_an_orphan_is_listed_and_the_next_serve_removes_it(seed, served_image, tmp_path):  # noqa: F811
    """serve and its watcher both SIGKILLed (the whole tree gone): the containers stay; ``envrepro
    images`` lists the model's container as orphaned (text and --json), ``images prune --dry-run``
    would remove it, and the next ``envrepro serve`` does before it starts. (The listings run with
    an images index of their own: the shared one's captures take long to check, and serving
    containers don't depend on it.)"""
    own_index = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    first = Serve(seed["model"])
    second = None
    try:
        first.wait_for(first.ready, "ready")
        labels = {c: json.loads(docker("inspect", "-f", "{{json .Config.Labels}}", c).stdout) for c in first.containers()}
        (model,) = [c for c, ls in labels.items() if "org.envrepro.relay-for" not in ls]    # not its relay
        labels = labels[model]
        os.kill(int(labels["org.envrepro.owner.watcher"]), signal.SIGKILL)
        first.proc.kill()
        first.proc.wait()
        time.sleep(2)
        assert model in first.containers(), "the orphan should still be there (watcher killed too)"
        listed = cli("images", "--json", env=own_index, timeout=300)
        assert listed.returncode == 0, listed.stderr[-2000:]
        found = [s for r in json.loads(listed.stdout) for s in r["serving"] if s["full_id"] == model]
        assert [s["state"] for s in found] == ["orphaned"] and found[0]["pid"] == first.pid, found
        assert found[0]["ports"] == [f"127.0.0.1:{first.port}"] and found[0]["relays"]
        text = cli("images", env=own_index, timeout=300)
        line = next(l for l in text.stdout.splitlines() if l.strip().startswith(model[:12]))
        assert "ORPHANED" in line and f"pid {first.pid}" in line, text.stdout
        dry = cli("images", "prune", "--dry-run", env=own_index, timeout=300)
        assert f"would remove orphaned serving container {model[:12]}" in dry.stdout, dry.stdout[-2000:]
        assert model in first.containers()                  # a dry run removes nothing
        second = Serve(seed["model"])
        second.wait_for(lambda: not first.containers(), "the orphan removed", timeout=120)
        assert any("whose envrepro serve is gone" in l and model[:12] in l for l in second.err), second.tail()
        assert labelled("volume", first.pid) == []
        second.wait_for(second.ready, "ready")
        took = second.stop(signal.SIGINT)
        second.assert_stopped_clean(took, "SIGINT")
    finally:
        first.clean_up()
        if second is not None:
            second.clean_up()
