"""The serving benchmark's sides inside containers (serve_bench.py): the in-process predict core
in a container of the serving image, and an HTTP client inside the server's own container (its
loopback: HTTP without the relay). Standard library; the scripts they run are Python 3.6 syntax.
"""
from __future__ import annotations

import json
import queue
import subprocess
import tempfile
import textwrap
import threading
import time
import uuid

from envrepro.runtime import launch
from envrepro.runtime.serve import config as serveconfig
from envrepro.serving.proof import service_args
from serve_load import Result

# The in-process side: the server's predict core in a container of the serving image, answering
# "BATCH N" lines on stdin with the times of N calls, so that it is measured in rounds alternating
# with the HTTP measurements (the same background load on both sides).
INPROCESS = textwrap.dedent('''
    import importlib.util, json, sys, time
    root = %(root)r
    spec = importlib.util.spec_from_file_location(%(pkg)r, root + "/__init__.py", submodule_search_locations=[root])
    pkg = importlib.util.module_from_spec(spec); sys.modules[spec.name] = pkg; spec.loader.exec_module(pkg)
    from envrepro_runtime.serve.main import plan_servable
    from envrepro_runtime.serve.model import seeded_inputs
    s = plan_servable(json.load(open(%(plan)r)))
    s.warmup()
    xs = {}
    print("READY", flush=True)
    for line in sys.stdin:
        batch, n = [int(v) for v in line.split()]
        if batch not in xs:
            xs[batch] = seeded_inputs(s.signature, batch)
            for _ in range(20):
                s.predict(xs[batch])
        times, end = [], time.time() + %(max)s
        while len(times) < n and time.time() < end:
            t0 = time.perf_counter(); s.predict(xs[batch]); times.append(time.perf_counter() - t0)
        print("TIMES " + json.dumps(times), flush=True)
''')

# A client inside the server's container (docker exec), on its loopback: HTTP without the relay.
# stdin: {label: request bytes as latin-1}; each sent N times on one keep-alive raw socket.
INCONTAINER = textwrap.dedent('''
    import json, socket, sys, time
    wires, n, out = json.load(sys.stdin), int(sys.argv[1]), {}
    s = socket.create_connection(("127.0.0.1", %(port)d), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    def more():
        data = s.recv(262144)
        if not data:
            sys.exit("the server closed the connection")
        return data
    for label, wire in wires.items():
        wire, times = wire.encode("latin-1"), []
        for i in range(n + 5):
            t0 = time.perf_counter()
            s.sendall(wire)
            while b"\\r\\n\\r\\n" not in buf:
                buf += more()
            head, _, buf = buf.partition(b"\\r\\n\\r\\n")
            fields = [l.partition(b":") for l in head.split(b"\\r\\n")[1:]]
            length = int([v for k, _, v in fields if k.lower() == b"content-length"][0])
            while len(buf) < length:
                buf += more()
            ok, buf = head.split(b" ")[1] == b"200", buf[length:]
            if i >= 5:
                times.append(time.perf_counter() - t0 if ok else -1.0)
        out[label] = times
    print("TIMES " + json.dumps(out))
''')

class InProcess:
    """The in-process side (INPROCESS) in a container of ``tag`` with the load sandbox's flags,
    kept running: ``times(batch, n)`` are the seconds of n calls."""

    def __init__(self, tag, max_seconds):
        self.max_seconds = max_seconds
        code = INPROCESS % {"root": serveconfig.RUNTIME_DIR, "pkg": launch.PACKAGE, "plan": serveconfig.PLAN_FILE,
                            "max": self.max_seconds}
        self.name = f"envrepro-bench-inproc-{uuid.uuid4().hex[:12]}"
        self.err = tempfile.TemporaryFile()
        argv = ["docker", "run", "--rm", "-i", "--name", self.name, "--entrypoint", "python", "--read-only",
                "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "--user", service_args()["user"], "--network", "none", "--memory", "4g", tag, "-B", "-c", code]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self._line("READY", 300)
        except BaseException:
            self.close()
            raise

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _line(self, prefix, timeout):
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.err.seek(0)
                tail = self.err.read()[-3000:].decode("utf-8", "replace")
                raise RuntimeError(f"the in-process run gave no {prefix} line:\n{tail}")
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def times(self, batch, n):
        self.proc.stdin.write(f"{batch} {n}\n")
        self.proc.stdin.flush()
        res = Result(f"in-process b{batch}", 1)
        res.times = json.loads(self._line("TIMES", self.max_seconds + 60))
        res.wall = sum(res.times)
        return res

    def close(self):
        if self.err.closed:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(20)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)
            self.proc.kill()
            self.proc.wait()
        self.err.close()


def in_container(cid, reqs, n, max_seconds):
    """Results of ``reqs`` sent n times each by a client inside the server's container (INCONTAINER)."""
    wires = json.dumps({r.label + " in container": r.wire.decode("latin-1") for r in reqs})
    proc = subprocess.run(["docker", "exec", "-i", cid, "python", "-B", "-c", INCONTAINER % {"port": serveconfig.PORT},
                           str(n)], input=wires, capture_output=True, text=True, timeout=max_seconds + 60)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("TIMES ")), None)
    if line is None:
        raise RuntimeError("the client in the container failed:\n" + proc.stderr[-2000:])
    out = []
    for label, times in json.loads(line[6:]).items():
        r = Result(label, 1)
        r.times, r.failed, r.wall = [t for t in times if t >= 0], [t for t in times if t < 0], sum(map(abs, times))
        r.first_error = "not 200" if r.failed else None
        out.append(r)
    return out
