"""Serving under load, end to end: the real serving image of the seed TF 2.4.1 model, run by the
installed wheel's ``envrepro serve MODEL --port P --memory 1g`` (no network, its port on loopback
carried by the engine's relay, the pids limit of every serving container), loaded with ``hey``
(Debian's package) while Python threads play slow and hostile clients over the same window.

Good clients: ``hey -z 20s`` of V1 predict (24 connections) and V2 infer (8) at once: 32
predictions at most in flight, within the queue (32 waiting + 1 worker), so a correct server
answers every one 200. Meanwhile, from before hey starts to after it ends:

- 200 slowloris connections: a request head sent a byte every few seconds, never finished;
- slow bodies: a whole head with ``Content-Length`` of 32 MiB (``ENVREPRO_SERVE_MAX_BODY``), the
  body trickled: eight of them declare twice the body memory (a quarter of
  ``ENVREPRO_SERVE_REQUEST_MEMORY``, 128 MiB); each, cut for its pace (408 two seconds after its
  memory was held), comes back, so that good requests keep meeting a body memory taken by slow
  clients;
- oversized bodies: ``Content-Length`` over ``ENVREPRO_SERVE_MAX_BODY`` (413 before the body is
  read), a real body over it sent whole (413, or the connection closed while sending), and real
  9 MB bodies under it with a wrong row width (parsed: 400);
- JSON nested 100 000 deep (400), malformed framing (400), bodies that are not JSON (400);
- clients that send requests and never read the answers (read once the load is over).

Then: no good request failed (hey's status code distribution is all 200, no error), each hostile
kind got its status and never a 5xx, the model's container is still the same process (running,
``State.StartedAt`` unchanged, RestartCount 0, not OOM-killed, no OOM kill in its memory cgroup),
its memory peak stayed under the 1 GiB limit, its relay still runs (not OOM-killed), so does
``envrepro serve``, and the server still answers the reference prediction. The figures (requests, p50/p99, memory and pids
peaks, outcomes per kind) are printed (``-s``). Bounded: the window is 20 s, each client ends
with it, the whole test takes about a minute once the image exists.
"""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from support import http_json, installed_argv, need  # noqa: E402
from support import installed_cli as cli  # noqa: E402
from test_serve_e2e import docker as serve_docker
from test_serve_e2e import seed  # noqa: F401 - the module's seed model (a fixture)

from envrepro.runtime.serve import config as serveconfig

pytestmark = pytest.mark.e2e

MEMORY, MEMORY_BYTES = "1g", 1 << 30     # the model container's limit (envrepro serve --memory)
GRACE = 5                                # ENVREPRO_SERVE_GRACE of the serve (its drain at the end)
WINDOW = 20                              # seconds of hey; the hostile clients span it
V1_CLIENTS, V2_CLIENTS = 24, 8           # hey -c: 32 predictions in flight at most (queue 32 + 1)
SLOWLORIS = 200                          # (the server had a pool of 128 threads, one per connection)
DRIP = 3.0                               # seconds between a slowloris client's bytes
NEVER_READ = 6
MAX_BODY = int(serveconfig.SETTINGS["ENVREPRO_SERVE_MAX_BODY"])   # the serve's default: 32 MiB
SLOW_BODIES, SLOW_BODY_LENGTH = 8, MAX_BODY
RELAY_FOR = "org.envrepro.relay-for"
REQUEST_LINE = re.compile(r"envrepro-serve: \S+ (?:[A-Z]+ \S+|- -) \d{3} [\d.]+ms$")


def docker(*args, check=True, timeout=120):
    return serve_docker(*args, check=check, timeout=timeout)


def inspect(cid):
    return json.loads(docker("inspect", cid).stdout)[0]


@pytest.fixture(scope="session")      # session: set up before the session-scoped model fixtures
def hey():
    path = shutil.which("hey")
    need(path, "`hey` is not installed (Debian's package: apt-get install hey; .ci/run installs it)")
    return path


@pytest.fixture(scope="module")
def served_image(seed):  # noqa: F811 - the imported fixture
    """The serving image ``envrepro serve`` of the seed uses, built and self-checked once."""
    out = cli("build", seed["model"], "--serve", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout)["tag"]


@pytest.fixture(scope="module")
def served(seed, served_image, tmp_path_factory):  # noqa: F811
    """``envrepro serve`` of the seed with a 1 GiB memory limit, ready: its port, the model's
    container and its relay, the process and its log."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("serve-load") / "serve.log"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", ENVREPRO_SERVE_GRACE=str(GRACE))
    env.pop("ENVREPRO_DEBUG", None)
    with open(log, "wb") as f:     # the server's request log is long: a file, never an unread pipe
        proc = subprocess.Popen([*installed_argv(), "serve", str(seed["model"]), "--port", str(port),
                                 "--memory", MEMORY], stdout=f, stderr=subprocess.STDOUT, env=env)
    def tail():     # the serve's and the server's own lines, without the request log
        lines = [l for l in log.read_text(errors="replace").splitlines() if not REQUEST_LINE.search(l)]
        return "\n".join(lines[-30:])

    model = relay = None
    try:
        end = time.time() + 600
        while time.time() < end:
            assert proc.poll() is None, f"envrepro serve exited {proc.returncode}: {tail()}"
            try:
                if http_json(port, "GET", serveconfig.READY_PATH, timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError(f"not ready in 600 s: {tail()}")
        relays = [c for c in docker("ps", "-q", "--no-trunc", "--filter", f"label={RELAY_FOR}").stdout.split()
                  if f"127.0.0.1:{port}" in docker("port", c, check=False).stdout]
        assert len(relays) == 1, relays
        relay = relays[0]
        model = inspect(relay)["Config"]["Labels"][RELAY_FOR]
        yield {"port": port, "cid": model, "relay": relay, "proc": proc, "log": log, "tail": tail}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(GRACE + 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for c in (model, relay):           # the serve removes them; a killed one may not have
            if c:
                docker("rm", "-f", c, check=False)


# ---------------------------------------------------------------------------------------------
# Memory and pids of a container, from its cgroup (v2 or v1), else from `docker stats`.

def cgroup_dirs(cid):
    """(memory folder, pids folder) of container ``cid`` on this host, or (None, None)."""
    root = Path("/sys/fs/cgroup")
    v2 = [root / "system.slice" / f"docker-{cid}.scope", root / "docker" / cid]
    for d in v2:
        if (d / "memory.current").exists():
            return d, d
    mem = [root / "memory" / "docker" / cid, root / "memory" / "system.slice" / f"docker-{cid}.scope"]
    pids = [root / "pids" / "docker" / cid, root / "pids" / "system.slice" / f"docker-{cid}.scope"]
    m = next((d for d in mem if (d / "memory.usage_in_bytes").exists()), None)
    p = next((d for d in pids if (d / "pids.current").exists()), None)
    return m, p


def _stat(folder, key):
    for line in (folder / "memory.stat").read_text().splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            return int(v)
    return 0


class Memory:
    """Samples a container's memory (working set: usage less inactive file pages, as `docker
    stats` and the kubelet count it) and pids every quarter second; the kernel's own peak and
    OOM-kill count at the end."""

    def __init__(self, cid):
        self.cid = cid
        self.mem, self.pids = cgroup_dirs(cid)
        self.v2 = self.mem is not None and (self.mem / "memory.current").exists()
        self.max_working_set = 0
        self.max_pids = 0
        self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def working_set(self):
        if self.mem is None:    # no cgroup folder visible here: the engine's own figure
            out = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", self.cid, check=False).stdout
            return parse_size(out.split("/")[0]) if "/" in out else 0
        if self.v2:
            return int((self.mem / "memory.current").read_text()) - _stat(self.mem, "inactive_file")
        return int((self.mem / "memory.usage_in_bytes").read_text()) - _stat(self.mem, "total_inactive_file")

    def pids_now(self):
        try:
            return int((self.pids / "pids.current").read_text()) if self.pids else 0
        except (OSError, ValueError):
            return 0

    def _run(self):
        while not self.stop.is_set():
            try:
                self.max_working_set = max(self.max_working_set, self.working_set())
                self.max_pids = max(self.max_pids, self.pids_now())
                self.samples += 1
            except (OSError, ValueError):
                pass
            self.stop.wait(0.25)

    def peak(self):
        """The kernel's peak of the cgroup's memory (v2 memory.peak, v1 max_usage_in_bytes), or None."""
        for name in ("memory.peak", "memory.max_usage_in_bytes"):
            if self.mem is not None and (self.mem / name).exists():
                return int((self.mem / name).read_text().split()[0])
        return None

    def oom_kills(self):
        for name in ("memory.events", "memory.oom_control"):
            if self.mem is not None and (self.mem / name).exists():
                for line in (self.mem / name).read_text().splitlines():
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
        return None


def parse_size(text):
    m = re.match(r"\s*([\d.]+)\s*([KMGT]?i?B)", text)
    if not m:
        return 0
    unit = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
            "kB": 1000, "KB": 1000, "MB": 10 ** 6, "GB": 10 ** 9}.get(m.group(2), 1)
    return int(float(m.group(1)) * unit)


def mib(n):
    return "n/a" if n is None else f"{n / (1 << 20):.0f} MiB"


# ---------------------------------------------------------------------------------------------
# hey

def run_hey(hey_path, url, body_file, clients, out_file):
    """hey over the window, its summary written to ``out_file`` (the status code and error
    distributions count every request: its csv output leaves failed ones out)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    f = open(out_file, "wb")
    proc = subprocess.Popen([hey_path, "-z", f"{WINDOW}s", "-c", str(clients), "-t", "20", "-m", "POST",
                             "-T", "application/json", "-D", str(body_file), url],
                            stdout=f, stderr=subprocess.STDOUT, env=env)
    proc.out_file, proc.fh = out_file, f
    return proc


def parse_hey(text):
    """{"codes": {status: count}, "errors": {message: count}, "total", "rps", "p50", "p99"}."""
    head, _, errors = text.partition("Error distribution:")
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", head)}
    errs = {msg.strip(): int(n) for n, msg in re.findall(r"^\s*\[(\d+)\]\s+(.+)$", errors, re.M)}
    lat = {int(p): float(s) for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", head)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", head)
    return {"codes": codes, "errors": errs, "total": sum(codes.values()) + sum(errs.values()),
            "rps": float(rps.group(1)) if rps else None, "p50": lat.get(50), "p99": lat.get(99)}


# ---------------------------------------------------------------------------------------------
# Hostile clients: raw sockets, each ends with the window. An outcome is a status (int) or
# "held" (open, unanswered, when the window ended), "closed" (closed by the server without an
# answer) or "reset".

def connect(port, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def read_status(s, timeout=30.0):
    """The status of the answer on ``s`` (int), "closed" or "reset"."""
    s.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        return "timeout"
    except OSError:
        if not data:
            return "reset"
    line = data.split(b"\r\n", 1)[0].split()
    if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
        return int(line[1])
    return "closed" if not data else f"garbage {data[:40]!r}"


def answered(s):
    """The status if the server answered or closed ``s`` already, else None (no wait)."""
    readable, _, _ = select.select([s], [], [], 0)
    return read_status(s, timeout=5) if readable else None


def send_all(s, data):
    """Send; None, or the outcome when the server cut the connection under us."""
    try:
        s.sendall(data)
        return None
    except OSError:
        return read_status(s, timeout=5)


class Hostiles:
    def __init__(self, port, name):
        self.port, self.name = port, name
        self.predict = f"/v1/models/{name}:predict"
        self.stop = threading.Event()
        self.outcomes = {}
        self.lock = threading.Lock()
        self.threads = []
        self.never_read = []

    def record(self, kind, outcome):
        with self.lock:
            self.outcomes.setdefault(kind, Counter())[outcome] += 1

    def spawn(self, fn, *args):
        t = threading.Thread(target=self._guarded, args=(fn,) + args, daemon=True)
        self.threads.append(t)
        t.start()

    def _guarded(self, fn, *args):
        try:
            fn(*args)
        except Exception as e:  # a client's own failure is an outcome, shown in the figures
            self.record(fn.__name__, f"client error {type(e).__name__}: {e}"[:120])

    def head(self, path=None, length=None, extra=""):
        cl = f"Content-Length: {length}\r\n" if length is not None else ""
        return (f"POST {path or self.predict} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"{cl}{extra}\r\n").encode()

    # --- held connections -----------------------------------------------------------------

    def connect(self, kind):
        """A connection, or None (its failure recorded as ``kind``'s outcome)."""
        try:
            return connect(self.port)
        except OSError as e:
            self.record(kind, f"connect failed: {e.strerror or e}")
            return None

    def trickle(self, kind, first, byte):
        """Sends ``first`` then ``byte`` every DRIP seconds until the window ends or an answer."""
        s = self.connect(kind)
        if s is None:
            return
        with s:
            outcome = send_all(s, first)
            while outcome is None and not self.stop.wait(DRIP):
                outcome = answered(s) or send_all(s, byte)
            self.record(kind, outcome or answered(s) or "held")

    def slowloris(self, i):
        self.trickle("slowloris", f"POST {self.predict} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-{i}: ".encode(), b"a")

    def slow_body(self, i):
        while not self.stop.is_set():   # cut for its pace (408), it comes back
            self.trickle("slow body", self.head(length=SLOW_BODY_LENGTH) + b'{"instances": [', b" ")

    # --- repeated requests, each on its own connection ------------------------------------

    def once(self, kind, data, wait=30.0):
        s = self.connect(kind)
        if s is None:
            return
        with s:
            self.record(kind, send_all(s, data) or read_status(s, timeout=wait))

    def repeat(self, kind, make, pause):
        while not self.stop.is_set():
            for data in make():
                self.once(kind, data)
            self.stop.wait(pause)

    def oversized_length(self):
        self.repeat("oversized Content-Length", lambda: [self.head(length=MAX_BODY + 1)], 0.2)

    def oversized_body(self, body):
        self.repeat("oversized body sent", lambda: [self.head(length=len(body)) + body], 2.0)

    def deep_json(self):
        deep = [b"[" * 100000 + b"]" * 100000, b'{"instances": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001]
        self.repeat("deep JSON", lambda: [self.head(length=len(d)) + d for d in deep], 0.2)

    def malformed(self):
        p = self.predict
        cases = [
            f"POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{{}}",
            f"POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}",
            f"POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 2x\r\n\r\n{{}}",
            f"POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length : 2\r\n\r\n{{}}",
            f"POST {p} HTTP/1.1\r\nHost: x\r\nNoColonHere\r\nContent-Length: 2\r\n\r\n{{}}",
            f"POST {p} HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\n{{}}",
            f"POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{{}}",
            "GARBAGE\r\n\r\n",
        ]
        self.repeat("malformed framing", lambda: [c.encode() for c in cases], 0.2)

    def invalid_json(self):
        bodies = [b"{not json", b'{"instances": [[1.0, 2.0', b'{"instances": \xff\xfe}', b"\x00" * 64]
        self.repeat("invalid JSON", lambda: [self.head(length=len(b)) + b for b in bodies], 0.2)

    def wrong_width(self, body):
        """A real body under the limit, parsed, with rows one value short: 400."""
        self.once("large body, wrong width", self.head(length=len(body)) + body, wait=60)

    # --- requests never read --------------------------------------------------------------

    def start_never_read(self, rows_body):
        """Clients that send requests (a prediction of many rows, then metrics scrapes, pipelined)
        and read nothing until the window is over: their answers back up into the server."""
        metrics = f"GET {serveconfig.METRICS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        for _ in range(NEVER_READ):
            s = connect(self.port, rcvbuf=4096)
            s.sendall(self.head(length=len(rows_body)) + rows_body)
            self.never_read.append(s)
        time.sleep(1.0)            # the predictions answered (unread) before the good load starts
        for s in self.never_read:
            s.setblocking(False)
            try:
                s.send(metrics * 2000)
            except OSError:
                pass

    def finish_never_read(self):
        for s in self.never_read:
            s.setblocking(True)
            self.record("never read (first answer, read at the end)", read_status(s, timeout=10))
            s.close()


def test_good_clients_are_all_answered_while_slow_and_hostile_clients_press_the_server(hey, seed, served, tmp_path):  # noqa: F811
    port, cid, name = served["port"], served["cid"], seed["name"]
    before = inspect(cid)["State"]
    memory = Memory(cid)
    memory.thread.start()

    v1_body, v2_body = tmp_path / "v1.json", tmp_path / "v2.json"
    v1_body.write_text(json.dumps({"instances": seed["x"].tolist()}))
    v2_body.write_text(json.dumps({"inputs": [{"name": seed["input"], "shape": list(seed["x"].shape),
                                               "datatype": "FP32", "data": seed["x"].reshape(-1).tolist()}]}))
    rows = np.round(np.random.default_rng(0).standard_normal((60000, seed["x"].shape[1])), 6)
    wrong_width = json.dumps({"instances": rows[:, :-1].tolist()}).encode()       # ~9 MB, 400
    never_read_rows = json.dumps({"instances": rows[:5000].tolist()}).encode()   # answer ~ 100 KB
    over = b"[" + b"0," * (MAX_BODY // 2) + b"0]"                                 # 32 MiB + 2 bytes
    assert len(over) > MAX_BODY and len(wrong_width) < MAX_BODY

    h = Hostiles(port, name)
    t0 = time.monotonic()
    h.start_never_read(never_read_rows)
    for i in range(SLOWLORIS):
        h.spawn(h.slowloris, i)
    for i in range(SLOW_BODIES):
        h.spawn(h.slow_body, i)
    for fn in (h.oversized_length, h.deep_json, h.malformed, h.invalid_json):
        h.spawn(fn)
    h.spawn(h.oversized_body, over)
    time.sleep(2.0)        # the slow clients connected and holding before the good load starts
    base = f"http://127.0.0.1:{port}"
    runs = {"v1": run_hey(hey, f"{base}/v1/models/{name}:predict", v1_body, V1_CLIENTS, tmp_path / "hey-v1.txt"),
            "v2": run_hey(hey, f"{base}/v2/models/{name}/infer", v2_body, V2_CLIENTS, tmp_path / "hey-v2.txt")}
    time.sleep(WINDOW / 2)
    for _ in range(3):     # a burst of large parses mid-window
        h.spawn(h.wrong_width, wrong_width)
    results = {}
    for kind, proc in runs.items():
        try:
            proc.wait(WINDOW + 40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.fh.close()
        results[kind] = parse_hey(Path(proc.out_file).read_text(errors="replace"))
        results[kind]["rc"] = proc.returncode
    h.stop.set()
    for t in h.threads:
        t.join(70)
    h.finish_never_read()
    memory.stop.set()
    memory.thread.join(5)
    elapsed = time.monotonic() - t0

    after = inspect(cid)
    relay = inspect(served["relay"])["State"]
    peak, oom_kills = memory.peak(), memory.oom_kills()
    metrics = ""
    try:
        metrics = http_json(port, "GET", serveconfig.METRICS_PATH, timeout=30)[2]
    except OSError as e:
        metrics = f"(no metrics: {e})"
    try:
        status, _, answer = http_json(port, "POST", f"/v1/models/{name}:predict", {"instances": seed["x"].tolist()},
                                      timeout=30)
        still_answers = status == 200 and np.allclose(answer["predictions"], seed["y"], atol=1e-6)
    except OSError as e:
        status, still_answers = str(e), False

    # the figures, for the engineers (pytest -s)
    lines = [f"serve load e2e: window {WINDOW} s, {elapsed:.1f} s with the hostile clients"]
    for kind, r in results.items():
        lines.append(f"  good {kind}: {r['total']} requests ({r['rps']} req/s), p50 {r['p50']} s, p99 {r['p99']} s, "
                     f"status {dict(sorted(r['codes'].items()))}, errors {r['errors'] or 'none'} (hey exit {r['rc']})")
    for kind, c in sorted(h.outcomes.items()):
        lines.append(f"  {kind}: {dict(c.most_common())}")
    lines.append(f"  memory: kernel peak {mib(peak)}, sampled working-set max {mib(memory.max_working_set)} "
                 f"({memory.samples} samples), limit {mib(MEMORY_BYTES)}, oom kills {oom_kills}; "
                 f"pids max {memory.max_pids} of {after['HostConfig'].get('PidsLimit')}")
    lines.append(f"  container: running {after['State']['Running']}, restarts {after['RestartCount']}, "
                 f"OOMKilled {after['State']['OOMKilled']}, started {after['State']['StartedAt']} "
                 f"(before {before['StartedAt']}); relay running {relay['Running']}, OOMKilled {relay['OOMKilled']}")
    wanted = ("envrepro_connections_refused_total", "envrepro_connections_open", "envrepro_requests_total{")
    lines += [f"  metric {m}" for m in str(metrics).splitlines() if m.startswith(wanted)]
    print("\n" + "\n".join(lines))

    failures = []
    for kind, r in results.items():
        if not r["codes"].get(200):
            failures.append(f"good {kind}: no request answered 200")
        bad = {c: n for c, n in r["codes"].items() if c != 200}
        if bad or r["errors"]:
            failures.append(f"good {kind}: {sum(bad.values()) + sum(r['errors'].values())} of {r['total']} "
                            f"requests failed: status {bad}, errors {r['errors']}")
    allowed = {
        "slowloris": {"held", 408},
        "slow body": {"held", 408},
        "oversized Content-Length": {413},
        "oversized body sent": {413, "closed", "reset"},     # refused before reading, closed under the sender
        "large body, wrong width": {400},
        "deep JSON": {400},
        "malformed framing": {400},
        "invalid JSON": {400},
        "never read (first answer, read at the end)": {200},
    }
    for kind, want in allowed.items():
        got = h.outcomes.get(kind, Counter())
        other = {o: n for o, n in got.items() if o not in want}
        if not got:
            failures.append(f"{kind}: no outcome recorded")
        elif other:
            failures.append(f"{kind}: {sum(other.values())} of {sum(got.values())} got {other} (want {sorted(map(str, want))})")
    for kind in set(h.outcomes) - set(allowed):
        failures.append(f"{kind}: {dict(h.outcomes[kind])}")
    st = after["State"]
    if not st["Running"] or st["OOMKilled"] or after["RestartCount"] or st["StartedAt"] != before["StartedAt"] \
            or st["Pid"] != before["Pid"]:
        failures.append(f"the model's container changed: running {st['Running']}, OOMKilled {st['OOMKilled']}, "
                        f"restarts {after['RestartCount']}, pid {before['Pid']} -> {st['Pid']}, started "
                        f"{before['StartedAt']} -> {st['StartedAt']}")
    if oom_kills:
        failures.append(f"{oom_kills} OOM kill(s) in the container's memory cgroup")
    if peak is not None and peak >= MEMORY_BYTES:
        failures.append(f"memory peak {mib(peak)} reached the limit {mib(MEMORY_BYTES)}")
    if memory.max_working_set >= MEMORY_BYTES or not memory.samples:
        failures.append(f"working set {mib(memory.max_working_set)} ({memory.samples} samples), limit {mib(MEMORY_BYTES)}")
    if not relay["Running"] or relay["OOMKilled"]:
        failures.append(f"the relay: running {relay['Running']}, OOMKilled {relay['OOMKilled']}")
    if served["proc"].poll() is not None:
        failures.append(f"envrepro serve exited {served['proc'].returncode}")
    if not still_answers:
        failures.append(f"the server no longer answers the reference prediction: {status}")
    if failures:
        pytest.fail("\n".join(failures) + "\n--- envrepro serve's log, request lines left out (tail) ---\n"
                    + served["tail"](), pytrace=False)
