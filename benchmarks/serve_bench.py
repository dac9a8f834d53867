"""Serving benchmark: the HTTP server against the same model called in-process, in the same image.

For each model (a TF 2.21 ``.keras`` model saved here; the seed TF 2.4.1 SavedModel when the
Python 3.8 + TF 2.4.1 venv exists), ``envrepro build --serve`` makes the serving image. Then, side
by side in one run:

- in-process: a container of that image runs the server's own predict core (``plan_servable``,
  warmed up as the server does) in a loop, single-threaded, and reports each call's time;
- HTTP: the server in a container of the same image, its port on loopback, driven by a stdlib
  load generator (keep-alive connections, bounded request count and time), TF Serving REST v1.

Batch 1: p50 latency, one client (goal: HTTP adds <= 2 ms). Batch 32: throughput with two clients
(goal: >= 0.9x in-process requests/s). The goal at batch 32 is only within reach when the model
computes for longer than JSON takes to parse and write its tensors: a tiny model's row measures the
JSON cost, the wide MLP's row the case the goal is about. Loopback only; every container is removed
at the end.
"""
from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from envrepro import commandbase, commands  # noqa: E402
from envrepro.runtime import launch  # noqa: E402
from envrepro.runtime.serve import config as serveconfig  # noqa: E402
from envrepro.serving.proof import service_args, wait_ready  # noqa: E402

N_REQUESTS = int(os.environ.get("ENVREPRO_BENCH_REQUESTS", "400"))
MAX_SECONDS = 60.0          # per measurement, whatever N is
CACHE = Path(os.environ.get("ENVREPRO_DEV_CACHE", os.path.expanduser("~/.cache/envrepro-dev")))

INPROCESS = textwrap.dedent('''
    import importlib.util, json, sys, time
    root = %(root)r
    spec = importlib.util.spec_from_file_location(%(pkg)r, root + "/__init__.py", submodule_search_locations=[root])
    pkg = importlib.util.module_from_spec(spec); sys.modules[spec.name] = pkg; spec.loader.exec_module(pkg)
    from envrepro_runtime.serve.main import plan_servable
    from envrepro_runtime.serve.model import seeded_inputs
    s = plan_servable(json.load(open(%(plan)r)))
    s.warmup()
    out = {}
    for batch in (1, 32):
        x = seeded_inputs(s.signature, batch)
        for _ in range(20):
            s.predict(x)
        times, end = [], time.time() + %(max)s
        while len(times) < %(n)d and time.time() < end:
            t0 = time.perf_counter(); s.predict(x); times.append(time.perf_counter() - t0)
        out[batch] = times
    print("BENCH " + json.dumps(out))
''')

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


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def models(work):
    """(label, model path) of the models to serve."""
    out = []
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", KERAS3_SAVE, str(work), str(ROOT / "examples")], env=env,
                          capture_output=True, text=True)
    if proc.returncode == 0:
        out.append(("TF 2.21 .keras, custom layer", work / "k3.keras"))
        out.append(("TF 2.21 .keras, wide MLP (17M params)", work / "wide.keras"))
    else:
        say("could not save the TF 2.21 model:\n" + proc.stderr[-2000:])
    py38 = sorted(CACHE.glob("venv38-tf241-*/bin/python"))
    if py38:
        proc = subprocess.run([str(py38[0]), "custom_layer_model.py", str(work)], cwd=str(ROOT / "examples"),
                              env=env, capture_output=True, text=True)
        if proc.returncode == 0:
            out.append(("TF 2.4.1 SavedModel, custom layer", work / "custom_model"))
    return out


def in_process(engine, tag):
    code = INPROCESS % {"root": serveconfig.RUNTIME_DIR, "pkg": launch.PACKAGE, "plan": serveconfig.PLAN_FILE,
                        "n": N_REQUESTS, "max": MAX_SECONDS}
    args = service_args()
    argv = ["docker", "run", "--rm", "--entrypoint", "python", "--read-only", "--tmpfs", "/tmp",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user", args["user"], "--network", "none",
            tag, "-B", "-c", code]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError("in-process run failed:\n" + proc.stderr[-3000:])
    return {int(k): v for k, v in json.loads(line[6:]).items()}


def body_for(port, name, batch):
    import numpy as np

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", f"/v2/models/{name}")
    meta = json.loads(conn.getresponse().read())
    conn.close()
    shape = [batch if i == 0 else (d if d > 0 else 1) for i, d in enumerate(meta["inputs"][0]["shape"])]
    x = np.random.RandomState(0).standard_normal(shape).astype("float32")
    return json.dumps({"instances": x.tolist()}).encode()


def drive(port, name, body, clients):
    """``clients`` keep-alive connections sending ``body`` until N_REQUESTS or MAX_SECONDS."""
    times, errors, lock = [], [], threading.Lock()
    end = time.time() + MAX_SECONDS
    per = max(1, N_REQUESTS // clients)

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(per):
            if time.time() > end:
                break
            t0 = time.perf_counter()
            conn.request("POST", f"/v1/models/{name}:predict", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            dt = time.perf_counter() - t0
            with lock:
                (times if resp.status == 200 else errors).append(dt)
        conn.close()

    for _ in range(20 // clients + 1):     # warm the connection path
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", f"/v1/models/{name}:predict", body=body, headers={"Content-Type": "application/json"})
        conn.getresponse().read()
        conn.close()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return times, len(times) / wall if wall else 0.0, len(errors)


def main():
    engine = commandbase.default_engine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="envrepro-serve-bench-") as tmp:
        for label, model in models(Path(tmp)):
            say(f"\n== {label}: building the serving image")
            res = commands.build(str(model), serve=True, quiet=True)
            if res.tag is None:
                say(f"serving image not verified: {res.proof.to_dict() if res.proof else res.warnings}")
                continue
            inproc = in_process(engine, res.tag)
            cid = engine.start(res.tag, ports={serveconfig.PORT: ("127.0.0.1", 0)}, **service_args())
            try:
                port = engine.host_port(cid, serveconfig.PORT)
                wait_ready(f"http://127.0.0.1:{port}", res.name, engine, cid, 300)
                for batch, clients in ((1, 1), (32, 2)):
                    times, rps, errs = drive(port, res.name, body_for(port, res.name, batch), clients)
                    ip = inproc[batch]
                    rows.append((label, batch, clients, statistics.median(ip) * 1e3, pct(ip, 0.99) * 1e3,
                                 1.0 / statistics.mean(ip), statistics.median(times) * 1e3, pct(times, 0.99) * 1e3,
                                 rps, errs, len(times)))
            finally:
                engine.stop(cid, timeout=30)
                engine.remove_image(res.tag)
    print("\nServing benchmark (loopback; in-process = the server's predict core in the same image)")
    print(f"{'model':<34} {'batch':>5} {'clients':>7} | {'in-proc p50':>11} {'p99':>7} {'req/s':>8} | "
          f"{'HTTP p50':>9} {'p99':>7} {'req/s':>8} {'n':>5} {'err':>3} | {'+p50 ms':>8} {'ratio':>6}  goal")
    ok = True
    for (label, batch, clients, ip50, ip99, iprps, h50, h99, hrps, errs, n) in rows:
        overhead, ratio = h50 - ip50, hrps / iprps if iprps else 0.0
        if batch == 1:
            goal, met = "+p50 <= 2 ms", overhead <= 2.0
        else:
            goal, met = "ratio >= 0.9", ratio >= 0.9
        ok = ok and met and errs == 0
        print(f"{label:<34} {batch:>5} {clients:>7} | {ip50:>9.2f}ms {ip99:>6.2f} {iprps:>8.0f} | "
              f"{h50:>7.2f}ms {h99:>6.2f} {hrps:>8.0f} {n:>5} {errs:>3} | {overhead:>8.2f} {ratio:>6.2f}  "
              f"{goal} {'met' if met else 'MISSED'}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
