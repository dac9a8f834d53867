"""Load generators of the serving benchmark (serve_bench.py): standard library + numpy, loopback.

- ``Request``: one prebuilt HTTP/1.1 request (TF Serving REST v1 JSON, or KServe V2 infer with
  the binary tensor data extension), sent as is on a raw keep-alive socket, so that the client's
  own cost per request stays small next to the server's;
- ``drive``: ``clients`` threads, each on its own keep-alive connection, sending one request
  after the other until a request count or a time is reached; every request is timed, a failure
  (not 200, a cut or refused connection) is counted and its connection reopened;
- ``SlowClients``: connections that each send a partial request head one byte every few seconds
  and never finish it (the slowloris pattern), reopened when the server closes them, bounded in
  count and time, all closed by ``stop()``.
"""
from __future__ import annotations

import json
import math
import random
import selectors
import socket
import threading
import time

V2_NUMPY = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "INT8": "i1", "INT16": "<i2", "INT32": "<i4",
            "INT64": "<i8", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "BOOL": "u1"}
HEADER = "Inference-Header-Content-Length"


class Failed(Exception):
    """An answer that is not 200, or a connection cut short."""


def pct(values, q):
    """The ``q`` quantile (nearest rank) of ``values``; inf when there are none."""
    if not values:
        return math.inf
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def http_get_json(port, path, timeout=30.0):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise Failed(f"GET {path}: {resp.status} {data[:200]!r}")
        return json.loads(data)
    finally:
        conn.close()


class Request:
    """A prebuilt request: ``wire`` is what goes on the socket."""

    def __init__(self, label, path, body=None, headers=None, method="POST"):
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        head += [f"Content-Length: {len(body)}"] if body is not None else []
        body, headers = body or b"", headers or {}
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.label = label
        self.wire = ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


def _inputs(meta, batch):
    import numpy as np

    rng = np.random.RandomState(0)
    out = []
    for spec in meta["inputs"]:
        shape = [batch] + [d if d > 0 else 1 for d in spec["shape"][1:]]
        x = rng.standard_normal(shape)
        out.append((spec, x.astype(V2_NUMPY.get(spec["datatype"], "<f4"))))
    return out


def json_request(meta, name, batch):
    """TF Serving REST v1 predict, row format, ``batch`` rows of seeded inputs."""
    inputs = _inputs(meta, batch)
    if len(inputs) == 1:
        instances = inputs[0][1].tolist()
    else:
        instances = [{spec["name"]: x[i].tolist() for spec, x in inputs} for i in range(batch)]
    body = json.dumps({"instances": instances}).encode()
    return Request(f"v1 JSON b{batch}", f"/v1/models/{name}:predict", body, {"Content-Type": "application/json"})


def binary_request(meta, name, batch):
    """KServe V2 infer with the binary tensor data extension: raw little-endian inputs after the
    JSON header, every output asked binary (as tritonclient sends with ``binary_data=True``)."""
    inputs = _inputs(meta, batch)
    header = {"inputs": [{"name": spec["name"], "shape": list(x.shape), "datatype": spec["datatype"],
                          "parameters": {"binary_data_size": x.nbytes}} for spec, x in inputs],
              "parameters": {"binary_data_output": True}}
    head = json.dumps(header).encode()
    body = head + b"".join(x.tobytes() for _, x in inputs)
    return Request(f"v2 binary b{batch}", f"/v2/models/{name}/infer", body,
                   {"Content-Type": "application/octet-stream", HEADER: str(len(head))})


class Conn:
    """A raw keep-alive HTTP/1.1 client connection for Request objects."""

    def __init__(self, port, timeout):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closing = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self):
        chunk = self.sock.recv(262144)
        if not chunk:
            raise Failed("connection closed by the server")
        self.buf += chunk

    def send(self, req):
        """Send ``req``, read its whole answer; Failed unless 200. Returns the body's length."""
        self.sock.sendall(req.wire)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(fields.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        if status != 200:
            raise Failed(f"{status} {body[:120]!r}")
        self.closing = fields.get("connection", "").lower() == "close"   # answered; reopen for the next
        return length


class Result:
    def __init__(self, label, clients):
        self.label = label
        self.clients = clients
        self.times = []        # seconds of each 200
        self.failed = []       # seconds until each failure
        self.first_error = None
        self.wall = 0.0
        self.server = [0.0, 0]  # server-side seconds and requests (its /metrics), when measured

    def merge(self, other):
        """This result and ``other`` (the same load, another round) as one."""
        self.times += other.times
        self.failed += other.failed
        self.wall += other.wall
        self.server = [a + b for a, b in zip(self.server, other.server)]
        self.first_error = self.first_error or other.first_error
        return self

    @property
    def n(self):
        return len(self.times)

    @property
    def rps(self):
        return self.n / self.wall if self.wall else 0.0

    def p(self, q, failures_as_inf=False):
        """A quantile of the successes (seconds); with ``failures_as_inf``, of every attempt with
        each failure counted as infinitely slow (inf when they are over 1 - q of the attempts)."""
        if failures_as_inf:
            return pct(self.times + [math.inf] * len(self.failed), q)
        return pct(self.times, q)


def server_seconds(port, endpoint):
    """(sum, count) of the server's envrepro_request_duration_seconds for ``endpoint``: from a
    request's first byte to its answer, as the server measures it."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    got = {}
    for line in text.splitlines():
        for what in ("sum", "count"):
            if line.startswith(f'envrepro_request_duration_seconds_{what}{{endpoint="{endpoint}"}}'):
                got[what] = float(line.rsplit(" ", 1)[1])
    return got.get("sum", 0.0), int(got.get("count", 0))


def drive(port, req, clients, count=None, seconds=60.0, warm=10, timeout=60.0, endpoint=None):
    """``clients`` keep-alive connections, each sending ``req`` back to back, until ``count``
    requests in all (None: no count) or ``seconds``. ``warm`` untimed requests first, on one
    connection. Connections open when the timed run starts (their setup is in the first request's
    time). A failed request is counted, its connection closed and reopened."""
    for _ in range(warm):
        conn = Conn(port, timeout)
        try:
            conn.send(req)
        finally:
            conn.close()
    res, lock = Result(req.label, clients), threading.Lock()
    before = server_seconds(port, endpoint) if endpoint else None
    per = None if count is None else max(1, count // clients)
    end = time.perf_counter() + seconds

    def client():
        conn, done = None, 0
        while (per is None or done < per) and time.perf_counter() < end:
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = Conn(port, timeout)
                conn.send(req)
                dt, ok, err = time.perf_counter() - t0, True, None
                if conn.closing:
                    conn.close()
                    conn = None
            except (OSError, Failed, ValueError, IndexError) as e:
                dt, ok, err = time.perf_counter() - t0, False, e
                if conn is not None:
                    conn.close()
                conn = None
            done += 1
            with lock:
                (res.times if ok else res.failed).append(dt)
                if err is not None and res.first_error is None:
                    res.first_error = f"{type(err).__name__}: {err}"
            if not ok:
                time.sleep(0.01)
        if conn is not None:
            conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + timeout + 5)
    res.wall = time.perf_counter() - t0
    if before is not None:
        after = server_seconds(port, endpoint)
        res.server = [after[0] - before[0], after[1] - before[1]]
    return res


class SlowClients:
    """``count`` connections to ``port``, each sending a request head one byte every ``interval``
    seconds (staggered), never finishing it. One thread, non-blocking sockets. A connection the
    server closes (or answers: a 408, a 503) is reopened ``reopen`` seconds later. Everything
    stops and is closed by ``stop()``, and at ``max_seconds`` at the latest."""

    HEAD = b"POST /v1/models/m:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Slow: "

    def __init__(self, port, count, interval=2.0, reopen=1.0, max_seconds=120.0):
        self.port, self.count, self.interval, self.reopen = port, count, interval, reopen
        self.max_seconds = max_seconds
        self.sel = selectors.DefaultSelector()
        self.sent = {}            # socket -> bytes of the head sent
        self.next = {}            # socket -> when its next byte goes
        self.due = []             # (time, slot) of connections to (re)open
        self.opened = self.closed_by_server = self.answered = self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    def start(self, spread=1.0):
        now = time.monotonic()
        self.due = [(now + spread * i / self.count, i) for i in range(self.count)]
        self._thread.start()

    def connected(self):
        return len(self.sent)

    def _open(self):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=2.0)
            s.sendall(self.HEAD[:1])
            s.setblocking(False)
        except OSError:
            self.refused += 1
            return False
        self.sel.register(s, selectors.EVENT_READ)
        self.sent[s] = 1
        self.next[s] = time.monotonic() + random.uniform(0.5, 1.0) * self.interval
        self.opened += 1
        return True

    def _drop(self, s):
        self.sel.unregister(s)
        self.sent.pop(s, None)
        self.next.pop(s, None)
        s.close()

    def _run(self):
        end = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < end:
            now = time.monotonic()
            still = []
            for when, slot in self.due:
                if when <= now and not self._open():
                    still.append((now + self.reopen, slot))
                elif when > now:
                    still.append((when, slot))
            self.due = still
            for key, _ in self.sel.select(timeout=0.05):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if data:
                    self.answered += 1
                else:
                    self.closed_by_server += 1
                self._drop(s)
                self.due.append((time.monotonic() + self.reopen, 0))
            now = time.monotonic()
            for s in [s for s, when in self.next.items() if when <= now]:
                n = self.sent[s]
                try:
                    s.send(self.HEAD[n:n + 1] if n < len(self.HEAD) else b"a")
                    self.sent[s] = n + 1
                    self.next[s] = now + self.interval
                except OSError:
                    self._drop(s)
                    self.due.append((now + self.reopen, 0))
        for s in list(self.sent):
            self._drop(s)
        self.sel.close()

    def stop(self):
        self._stop.set()
        self._thread.join(30)
