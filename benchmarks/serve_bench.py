"""Serving benchmark: the HTTP server against the same model called in-process, in the same image.

For each model (TF 2.21 ``.keras`` models saved here: a small one with a custom layer and a
compute-bound "wide MLP", 16 -> 4096 -> 4096 -> 64, 17M parameters; the seed TF 2.4.1 SavedModel
when the Python 3.8 + TF 2.4.1 venv exists), ``envrepro build --serve`` makes the serving image.
Then, side by side in one run:

- in-process: a container of that image runs the server's own predict core (``plan_servable``,
  warmed up as the server does), single-threaded, and times each call;
- HTTP: the server in a container of the same image (started as ``envrepro serve`` starts it:
  ``engine.start`` with ``service_args()``, no network, its port through the relay on loopback),
  driven by serve_load.py (raw keep-alive sockets, one thread per client, bounded count and time).

Both containers run at once and each comparison alternates its sides in ROUNDS rounds (in-process
calls, then HTTP requests, then again), so that both see the same background load of the host.
Information rows locate the cost: ``GET /v2/health/live`` (no model, no body) is the floor of HTTP
and the relay; a client inside the server's container (``docker exec``, its loopback) times batch 1
and that GET without the relay; each HTTP measurement also reads the server's own time per request
(first byte to answer) from its ``/metrics`` (``srv mean``).

Goals, each row of the final table saying met or MISSED (a missed goal is reported, not an error:
the exit status is non-zero only when something failed to run):

1. batch 1, one client (TF Serving REST v1 JSON): HTTP p50 <= in-process p50 + 1 ms.
2. wide MLP only, 16 concurrent clients each sending batch-1 requests back to back: the server
   with adaptive batching on (ENVREPRO_SERVE_BATCH_MAX_SIZE=16, ENVREPRO_SERVE_BATCH_TIMEOUT_MS=5)
   answers >= 3x the requests/s of the default server (batching off), at <= 2x its p50 latency.
   Both servers have the default ENVREPRO_SERVE_WORKERS=1 (one predict thread) and every other
   setting at its default; the batched one is a second container of the same image, running
   alongside, the two measured in alternating rounds.
3. batch 32, KServe V2 infer with the binary tensor data extension (raw little-endian inputs,
   outputs asked binary), two clients: >= 0.9x the in-process calls/s, for every model. (The
   same batch as JSON, v1, two clients, is shown as information: JSON's parse and writing cost
   more than a small model's call.)
4. 300 slow clients: each opens a connection and sends a partial request head one byte every 2 s,
   never finishing it (reopened 1 s after the server closes it). Four good clients (v1 JSON,
   batch 1, keep-alive connections opened at the start of each phase) run for 10 s quiet, then
   10 s with the slow clients connected; goal: their p99 with the slow clients <= 2x the quiet
   p99. A failed good request (503, a closed connection) counts as infinitely slow, so that the
   p99 is "inf" when more than 1% failed. The slow clients are all closed after the phase.

Loopback only; each measurement is bounded (MAX_SECONDS); every container and serving image is
removed at the end. ``ENVREPRO_BENCH_REQUESTS`` sets the request count of goals 1 to 3 (400).
"""
from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from envrepro import commandbase, commands  # noqa: E402
from envrepro.runtime.serve import config as serveconfig  # noqa: E402
from envrepro.serving.proof import service_args, wait_ready  # noqa: E402
from serve_inside import InProcess, in_container  # noqa: E402
from serve_load import Request, SlowClients, binary_request, drive, http_get_json, json_request  # noqa: E402

N_REQUESTS = int(os.environ.get("ENVREPRO_BENCH_REQUESTS", "400"))
MAX_SECONDS = 60.0          # per measurement (all its rounds), whatever N is
ROUNDS = 4                  # each comparison alternates its sides this many times
CACHE = Path(os.environ.get("ENVREPRO_DEV_CACHE", os.path.expanduser("~/.cache/envrepro-dev")))
BATCHING = {"ENVREPRO_SERVE_BATCH_MAX_SIZE": "16", "ENVREPRO_SERVE_BATCH_TIMEOUT_MS": "5"}
CONCURRENT = 16             # goal 2's clients
SLOW, SLOW_INTERVAL, SLOW_REOPEN = 300, 2.0, 1.0     # goal 4's slow clients
GOOD_CLIENTS, PHASE_SECONDS = 4, 10.0                # goal 4's good load, per phase

KERAS3_SAVE = textwrap.dedent('''
    import sys, keras
    sys.path.insert(0, sys.argv[2])
    import envrepro
    from custom_layers import MyCustomLayer
    envrepro.install_hook()
    m = keras.Sequential([keras.Input(shape=(16,)), keras.layers.Dense(8), MyCustomLayer(units=64)])
    m.save(sys.argv[1] + "/k3.keras")
    # compute-bound: ~1 GFLOP per batch of 32, so the HTTP layer is a small part of a request
    w = keras.Sequential([keras.Input(shape=(16,)), keras.layers.Dense(4096, activation="relu"),
                          keras.layers.Dense(4096, activation="relu"), MyCustomLayer(units=64)])
    w.save(sys.argv[1] + "/wide.keras")
''')


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def ms(seconds):
    return "inf" if math.isinf(seconds) else f"{seconds * 1e3:.2f}"


def models(work):
    """(short label, label, model path, is the wide MLP) of the models to serve."""
    out = []
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", KERAS3_SAVE, str(work), str(ROOT / "examples")], env=env,
                          capture_output=True, text=True)
    if proc.returncode == 0:
        out.append(("k3", "TF 2.21 .keras, custom layer", work / "k3.keras", False))
        out.append(("wide", "TF 2.21 .keras, wide MLP (17M params)", work / "wide.keras", True))
    else:
        say("could not save the TF 2.21 model:\n" + proc.stderr[-2000:])
    py38 = sorted(CACHE.glob("venv38-tf241-*/bin/python"))
    if py38:
        proc = subprocess.run([str(py38[0]), "custom_layer_model.py", str(work)], cwd=str(ROOT / "examples"),
                              env=env, capture_output=True, text=True)
        if proc.returncode == 0:
            out.append(("tf2.4", "TF 2.4.1 SavedModel, custom layer", work / "custom_model", False))
        else:
            say("could not save the TF 2.4.1 model:\n" + proc.stderr[-2000:])
    return out


def rounds(report, model, parts):
    """Run each ``(key, fn(round) -> Result)`` of ``parts`` in turn, ROUNDS times, so that the
    sides compared see the same background load; the results merged per key."""
    merged = {}
    for i in range(ROUNDS):
        for key, fn in parts:
            got = fn(i)
            for k, r in (got.items() if isinstance(got, dict) else [(key, got)]):
                merged[k] = merged[k].merge(r) if k in merged else r
    for r in merged.values():
        report.measured(model, r)
    return merged


class Server:
    """A serving container of ``tag`` (``environment``: its ENVREPRO_SERVE_* settings), ready."""

    def __init__(self, engine, tag, name, environment=None):
        self.engine, self.name = engine, name
        self.cid = engine.start(tag, ports={serveconfig.PORT: ("127.0.0.1", 0)}, environment=environment or {},
                                **service_args())
        try:
            self.port = engine.host_port(self.cid, serveconfig.PORT)
            wait_ready(f"http://127.0.0.1:{self.port}", name, engine, self.cid, 300)
            self.meta = http_get_json(self.port, f"/v2/models/{name}")
        except BaseException:
            self.stop()
            raise

    def stop(self):
        self.engine.stop(self.cid, timeout=30)


class Report:
    def __init__(self):
        self.details = []     # (model, measurement, Result)
        self.goals = []       # (model, goal, baseline, measured, ratio, target, met)
        self.failures = []    # what failed to run
        self.notes = []

    def measured(self, model, res, must_succeed=True):
        self.details.append((model, res))
        if res.failed and must_succeed:
            self.failures.append(f"{model} {res.label} x{res.clients}: {len(res.failed)} request(s) failed "
                                 f"({res.first_error})")
        return res

    def goal(self, *row):
        self.goals.append(row)


def bench_model(engine, report, short, label, model, wide):
    say(f"\n== {label}: building the serving image")
    res = commands.build(str(model), serve=True, quiet=True)
    if res.tag is None:
        raise RuntimeError(f"serving image not verified: {res.proof.to_dict() if res.proof else res.warnings}")
    per = max(1, N_REQUESTS // ROUNDS)
    seconds = MAX_SECONDS / ROUNDS
    try:
        with contextlib.ExitStack() as stack:
            say(f"== {label}: starting the in-process side and the server (default settings)")
            ip = InProcess(res.tag, MAX_SECONDS / ROUNDS)
            stack.callback(ip.close)
            server = Server(engine, res.tag, res.name)
            stack.callback(server.stop)
            port, meta, name = server.port, server.meta, res.name
            b1, live = json_request(meta, name, 1), Request("GET live (floor)", "/v2/health/live", method="GET")
            bin32, json32 = binary_request(meta, name, 32), json_request(meta, name, 32)
            say(f"== {label}: batch 1 and batch 32, in-process and HTTP, {ROUNDS} rounds")
            got = rounds(report, short, [
                ("ip1", lambda i: ip.times(1, per)),
                ("b1", lambda i: drive(port, b1, 1, per, seconds, warm=20 if i == 0 else 2, endpoint="v1_predict")),
                ("live", lambda i: drive(port, live, 1, per, seconds, warm=5 if i == 0 else 0,
                                         endpoint="v2_health_live")),
                ("inside", lambda i: dict(zip(("in_b1", "in_live"), in_container(server.cid, [b1, live], per, seconds)))),
                ("ip32", lambda i: ip.times(32, per)),
                ("bin32", lambda i: drive(port, bin32, 2, per, seconds, warm=10 if i == 0 else 2, endpoint="v2_infer")),
                ("json32", lambda i: drive(port, json32, 2, per, seconds, warm=10 if i == 0 else 2,
                                           endpoint="v1_predict"))])
            ip50, h50 = got["ip1"].p(.5), got["b1"].p(.5)
            report.goal(short, "1 b1 1 client: +p50 HTTP", f"in-proc p50 {ms(ip50)} ms", f"HTTP p50 {ms(h50)} ms",
                        f"+{(h50 - ip50) * 1e3:.2f}", "<= +1 ms", h50 - ip50 <= 0.001)
            inside = got["in_b1"].p(.5)
            report.goal(short, "- b1 inside, no relay", f"in-proc p50 {ms(ip50)} ms",
                        f"HTTP p50 {ms(inside)} ms", f"+{(inside - ip50) * 1e3:.2f}", "(info)", None)
            report.goal(short, "- GET live (floor)", f"in container {ms(got['in_live'].p(.5))} ms",
                        f"HTTP p50 {ms(got['live'].p(.5))} ms", "", "(info)", None)
            for key, goal, target in (("bin32", "3 b32 binary 2 clients", ">= 0.9x"),
                                      ("json32", "- b32 JSON 2 clients", "(info)")):
                ratio = got[key].rps / got["ip32"].rps
                report.goal(short, goal, f"in-proc {got['ip32'].rps:.0f} req/s", f"HTTP {got[key].rps:.0f} req/s",
                            f"{ratio:.2f}x", target, ratio >= 0.9 if goal[0] == "3" else None)
            if wide:
                say(f"== {label}: {CONCURRENT} clients, batching off and on ({BATCHING}), {ROUNDS} rounds")
                batched = Server(engine, res.tag, res.name, BATCHING)
                try:
                    n16 = max(per, 10 * CONCURRENT)
                    got = rounds(report, short, [
                        ("off", lambda i: drive(port, b1, CONCURRENT, n16, seconds, warm=10 if i == 0 else 0,
                                                endpoint="v1_predict")),
                        ("on", lambda i: drive(batched.port, b1, CONCURRENT, n16, seconds, warm=10 if i == 0 else 0,
                                               endpoint="v1_predict"))])
                finally:
                    batched.stop()
                got["on"].label += " batching"
                off, on = got["off"], got["on"]
                up, slower = on.rps / off.rps, on.p(.5) / off.p(.5)
                report.goal(short, "2 16 clients b1: req/s", f"batching off {off.rps:.0f}", f"batching on {on.rps:.0f}",
                            f"{up:.2f}x", ">= 3x", up >= 3.0)
                report.goal(short, "2 16 clients b1: p50", f"batching off {ms(off.p(.5))} ms",
                            f"batching on {ms(on.p(.5))} ms", f"{slower:.2f}x", "<= 2x", slower <= 2.0)
            ip.close()
            slow_goal(report, short, port, b1)
    finally:
        engine.remove_image(res.tag)


def slow_goal(report, short, port, req):
    say(f"   {GOOD_CLIENTS} good clients for {PHASE_SECONDS:.0f} s quiet, then with {SLOW} slow clients")
    quiet = drive(port, req, GOOD_CLIENTS, None, PHASE_SECONDS, warm=5)
    quiet.label += " quiet"
    report.measured(short, quiet)
    slow = SlowClients(port, SLOW, SLOW_INTERVAL, SLOW_REOPEN, max_seconds=PHASE_SECONDS + 40)
    slow.start(spread=1.0)
    try:
        end = time.monotonic() + 10
        while slow.opened < SLOW and time.monotonic() < end:
            time.sleep(0.2)
        time.sleep(2 * SLOW_INTERVAL)      # every slow client has sent a few bytes
        before = slow.connected()
        loaded = drive(port, req, GOOD_CLIENTS, None, PHASE_SECONDS, warm=0)
        loaded.label += f" +{SLOW} slow"
        after = slow.connected()
    finally:
        slow.stop()
    report.measured(short, loaded, must_succeed=False)
    q99, l99 = quiet.p(.99), loaded.p(.99, failures_as_inf=True)
    ratio = l99 / q99
    report.notes.append(f"slow clients ({short}): {slow.opened} opened, open {before} at start / {after} at end; "
                        f"server closed {slow.closed_by_server}, answered {slow.answered}; connects failed {slow.refused}")
    report.goal(short, f"4 {SLOW} slow: good p99", f"quiet p99 {ms(q99)} ms",
                f"slow p99 {ms(l99)} ms, {len(loaded.failed)} err", "inf" if math.isinf(ratio) else f"{ratio:.2f}x",
                "<= 2x", ratio <= 2.0)


def print_report(report, labels, wall):
    print("\nServing benchmark (loopback; in-process = the server's predict core in a container of the same image)")
    for short, label in labels:
        print(f"  {short:<6} {label}")
    print("(srv mean: the server's own time per request, first byte to answer, from its /metrics)")
    print(f"\n{'model':<7} {'measurement':<30} {'clients':>7} {'n':>5} {'err':>5} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'mean ms':>8} {'srv mean':>8} {'req/s':>8}")
    for model, res in report.details:
        mean = sum(res.times) / res.n if res.n else math.inf
        srv = ms(res.server[0] / res.server[1]) if res.server[1] else ""
        print(f"{model:<7} {res.label:<30} {res.clients:>7} {res.n:>5} {len(res.failed):>5} {ms(res.p(.5)):>8} "
              f"{ms(res.p(.99)):>8} {ms(mean):>8} {srv:>8} {res.rps:>8.0f}")
    for note in report.notes:
        print(note)
    print(f"\n{'model':<6} {'goal':<26} {'baseline':<22} {'measured':<26} {'ratio':>7} {'target':<9} result")
    for model, goal, base, measured, ratio, target, met in report.goals:
        result = "" if met is None else ("met" if met else "MISSED")
        print(f"{model:<6} {goal:<26} {base:<22} {measured:<26} {ratio:>7} {target:<9} {result}")
    for failure in report.failures:
        print(f"FAILED: {failure}")
    print(f"wall time {wall:.0f} s")


def main():
    t0 = time.monotonic()
    engine = commandbase.default_engine()
    report = Report()
    labels = []
    with tempfile.TemporaryDirectory(prefix="envrepro-serve-bench-") as tmp:
        found = models(Path(tmp))
        if not found:
            report.failures.append("no model to serve")
        for short, label, model, wide in found:
            labels.append((short, label))
            try:
                bench_model(engine, report, short, label, model, wide)
            except Exception as e:
                say(traceback.format_exc())
                report.failures.append(f"{short}: {type(e).__name__}: {str(e)[:300]}")
    print_report(report, labels, time.monotonic() - t0)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
