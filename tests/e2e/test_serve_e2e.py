"""Serving, end to end with a real Docker engine and real TensorFlow.

The seed TF 2.4.1 custom-layer SavedModel (a model TensorFlow Serving cannot serve: its layer is
Python) is built into a serving image from this Python 3.11 / TF 2.21 host, self-checked over both
protocols, then run like production: predictions equal the reference, every bad input gets its
status and the next good request succeeds, concurrent clients, readiness 503 before the warm-up,
SIGTERM with requests in flight (all answered, exit 0). A TF 2.21 ``.keras`` model too, the
context written by ``dockerfile --serve -o`` built with the plain docker CLI, and ``envrepro
serve`` in the foreground stopped with Ctrl-C. The model's container, in the self-check and under
``envrepro serve``, has no network (only loopback), its port carried by the engine's relay.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from support import installed_cli as cli  # noqa: E402
from support import http_json, installed_argv  # noqa: E402

from envrepro.runtime.serve import config as serveconfig
from envrepro.sidecar import layout, manifest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
RUN = uuid.uuid4().hex[:8]


def docker(*args, check=True, timeout=600):
    proc = subprocess.run(["docker", *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def request(port, method, path, body=None, headers=None, timeout=60):
    return http_json(port, method, path, body, headers, timeout=timeout)


def start(tag, *env):
    """docker run -d like production (non-root, read-only, no capabilities), port on loopback."""
    args = ["run", "-d", "-p", f"127.0.0.1::{serveconfig.PORT}", "--read-only", "--tmpfs", "/tmp",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    for e in env:
        args += ["-e", e]
    cid = docker(*args, tag).stdout.strip()
    port = int(docker("port", cid, f"{serveconfig.PORT}/tcp").stdout.strip().splitlines()[0].rsplit(":", 1)[1])
    return cid, port


def wait_ready(port, cid, timeout=300):
    seen = []
    end = time.time() + timeout
    while time.time() < end:
        try:
            status = request(port, "GET", serveconfig.READY_PATH, timeout=5)[0]
            seen.append(status)
            if status == 200:
                return seen
        except OSError:
            pass
        state = docker("inspect", "-f", "{{.State.Running}}", cid).stdout.strip()
        assert state == "true", docker("logs", cid, check=False).stderr[-3000:]
        time.sleep(0.05)
    raise AssertionError(f"not ready in {timeout} s: {docker('logs', cid, check=False).stderr[-3000:]}")


@pytest.fixture(scope="module")
def seed(py38_tf24, standin_38, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve-seed")
    proc = subprocess.run([py38_tf24, str(EXAMPLES / "custom_layer_model.py"), str(out)], cwd=str(EXAMPLES),
                          capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = out / "custom_model"
    cap = manifest.read(layout.sidecar_for(model))
    ref = cap.data["reference"]
    return {"model": model, "x": np.load(cap.root / ref["inputs"][0]), "y": np.load(cap.root / ref["outputs"][0]),
            "name": "custom_model", "input": ref["input_names"][0]}


@pytest.fixture(scope="module")
def built(seed):
    tag = f"envrepro-e2e-serve:{RUN}"
    out = cli("build", seed["model"], "--serve", "-t", tag, "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    yield tag, json.loads(out.stdout)
    docker("rmi", "-f", tag, check=False)


@pytest.fixture(scope="module")
def served(built):
    cid, port = start(built[0], "ENVREPRO_SERVE_MAX_BODY=200000", "ENVREPRO_SERVE_DEADLINE=20")
    wait_ready(port, cid)
    yield port
    docker("rm", "-f", cid, check=False)


def test_build_self_checks_both_protocols_and_labels_the_verdict(built):
    tag, res = built
    p = res["proof"]
    assert p["verdict"] == "verified" and p["v1"]["ok"] and p["v2"]["ok"], res
    assert p["v1"]["max_abs_diff"] <= 1e-5 and p["exit_code"] == 0
    labels = json.loads(docker("inspect", "-f", "{{json .Config.Labels}}", tag).stdout)
    assert labels["org.envrepro.serve.verdict"] == "verified"
    assert labels["org.envrepro.serve.tensorflow"] == "2.4.1"
    cfg = json.loads(docker("inspect", "-f", "{{json .Config}}", tag).stdout)
    assert cfg["User"] == "10001:10001" and cfg["Healthcheck"]["Test"][-1].endswith(serveconfig.LIVE_PATH + "', timeout=2)")
    # no CA bundle, pip configuration or credentials in any layer of the serving image
    cid = docker("create", tag).stdout.strip()
    try:
        proc = subprocess.Popen(["docker", "export", cid], stdout=subprocess.PIPE)
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            names = [m.name for m in tar]
        proc.wait()
    finally:
        docker("rm", cid, check=False)
    assert not [n for n in names if n.startswith("etc/envrepro-build") or n.endswith(("pip.conf", "build/ca.crt"))]
    assert "opt/envrepro/serve/model/custom_model/saved_model.pb" in names


def test_predictions_over_both_protocols_equal_the_reference(seed, served):
    x, y, name = seed["x"], seed["y"], seed["name"]
    status, _, body = request(served, "POST", f"/v1/models/{name}:predict", {"instances": x.tolist()})
    assert status == 200 and np.allclose(body["predictions"], y, atol=1e-6, rtol=0)
    status, _, body = request(served, "POST", f"/v1/models/{name}/versions/1:predict", {"inputs": x.tolist()})
    assert status == 200 and np.allclose(body["outputs"], y, atol=1e-6, rtol=0)
    status, _, body = request(served, "POST", f"/v2/models/{name}/infer",
                              {"id": "req-7", "inputs": [{"name": seed["input"], "shape": list(x.shape), "datatype": "FP32",
                                                          "data": x.reshape(-1).tolist()}]})
    assert status == 200 and body["id"] == "req-7", body
    out = body["outputs"][0]
    assert np.allclose(np.asarray(out["data"]).reshape(out["shape"]), y, atol=1e-6, rtol=0)


def test_status_metadata_and_metrics(seed, served):
    name = seed["name"]
    status, _, body = request(served, "GET", f"/v1/models/{name}")
    assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
    assert request(served, "GET", f"/v1/models/{name}/metadata")[0] == 200
    status, _, body = request(served, "GET", f"/v2/models/{name}")
    assert status == 200 and body["name"] == name and body["inputs"] and body["outputs"]
    assert request(served, "GET", f"/v2/models/{name}/ready")[0] == 200
    assert request(served, "GET", "/v2")[0] == 200
    status, headers, text = request(served, "GET", serveconfig.METRICS_PATH)
    assert status == 200 and "text/plain" in headers.get("Content-Type", "")
    assert 'envrepro_build_info{' in text and 'tensorflow="2.4.1"' in text and 'python="3.8' in text
    for metric in ("envrepro_requests_total", "envrepro_request_duration_seconds_bucket",
                   "envrepro_requests_in_flight", "envrepro_queue_depth", "envrepro_model_load_seconds"):
        assert metric in text, metric


def _raw(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(data)
    chunks = []
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    s.close()
    return b"".join(chunks).split(b"\r\n", 1)[0]


def test_bad_inputs_get_their_status_and_the_server_keeps_serving(seed, served):
    name, x = seed["name"], seed["x"]
    good = {"instances": x[:1].tolist()}
    path = f"/v1/models/{name}:predict"
    cases = [
        (lambda: request(served, "POST", path, b"{not json")[0], 400),
        (lambda: request(served, "POST", path, {"instances": x.tolist(), "inputs": x.tolist()})[0], 400),
        (lambda: request(served, "POST", path, {})[0], 400),
        (lambda: request(served, "POST", path, {"instances": [[1.0, 2.0]]})[0], 400),
        (lambda: request(served, "POST", path, {"instances": [["a"] * x.shape[1]]})[0], 400),
        (lambda: request(served, "POST", "/v1/models/nope:predict", good)[0], 404),
        (lambda: request(served, "GET", f"/v1/models/{name}/versions/7")[0], 404),
        (lambda: request(served, "POST", path, json.dumps(good).encode(), {"Content-Type": "text/csv"})[0], 415),
        (lambda: request(served, "POST", path, b"[" + b"0," * 150000 + b"0]")[0], 413),
        (lambda: int(_raw(served, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                  "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n".encode()).split()[1]), 411),
    ]
    for i, (send, want) in enumerate(cases):
        assert send() == want, i
        status, _, body = request(served, "POST", path, good)
        assert status == 200 and np.allclose(body["predictions"], seed["y"][:1], atol=1e-6), i
    status, _, body = request(served, "POST", path, {"instances": [[1.0, 2.0]]})
    assert "signature" in body["error"] and "[-1, 16]" in body["error"]      # names the signature,
    assert "[1.0, 2.0]" not in body["error"]                                  # never echoes the payload


def test_concurrent_clients(seed, served):
    name, x, y = seed["name"], seed["x"], seed["y"]
    results = []

    def client(i):
        for _ in range(10):
            status, _, body = request(served, "POST", f"/v1/models/{name}:predict", {"instances": x.tolist()})
            results.append(status == 200 and np.allclose(body["predictions"], y, atol=1e-6))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 80 and all(results)


def four_slow_requests_in_flight(seed, port):
    """Four slow predict requests sent at once, returned once all four are in flight (the metrics
    scrape that sees them is the fifth): (the input, the client threads, their answers)."""
    big = np.repeat(seed["x"], 20000, axis=0)
    body_bytes = json.dumps({"instances": big.tolist()}).encode()   # once, before the clients start:
    answers = []                                                     # on a busy host four dumps in four
                                                                     # threads kept them from overlapping
    def client():
        try:
            status, _, body = request(port, "POST", f"/v1/models/{seed['name']}:predict",
                                      body_bytes, timeout=180)
            answers.append((status, len(body.get("predictions", [])) if isinstance(body, dict) else 0))
        except OSError as e:
            answers.append((str(e), 0))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    end = time.time() + 120
    while time.time() < end:
        text = request(port, "GET", serveconfig.METRICS_PATH)[2]
        line = next(l for l in text.splitlines() if l.startswith("envrepro_requests_in_flight"))
        if float(line.split()[-1]) >= 5:
            return big, threads, answers
        time.sleep(0.01)
    raise AssertionError("the four requests never were in flight together")


def test_readiness_is_503_before_the_warm_up_and_sigterm_drains_in_flight_requests(seed, built):
    cid, port = start(built[0], "ENVREPRO_SERVE_WORKERS=2", "ENVREPRO_SERVE_GRACE=30")
    try:
        seen = wait_ready(port, cid)
        assert 503 in seen and seen[-1] == 200, seen    # loading then warm: never ready too early
        big, threads, answers = four_slow_requests_in_flight(seed, port)
        docker("kill", "--signal", "TERM", cid)
        for t in threads:
            t.join(120)
        code = int(docker("wait", cid, timeout=120).stdout.strip())
        assert code == 0, docker("logs", cid, check=False).stderr[-3000:]
        assert answers and all(a == (200, len(big)) for a in answers), answers
    finally:
        docker("rm", "-f", cid, check=False)


KERAS3_SAVE = textwrap.dedent('''
    import sys, keras
    sys.path.insert(0, sys.argv[2])
    import envrepro
    from custom_layers import MyCustomLayer
    envrepro.install_hook()
    m = keras.Sequential([keras.Input(shape=(16,)), keras.layers.Dense(8), MyCustomLayer(units=64)])
    m.save(sys.argv[1] + "/k3.keras")
''')


def test_a_tf221_keras_model_serves_and_its_context_builds_with_plain_docker(standin_311, tmp_path, tf):
    proc = subprocess.run([sys.executable, "-c", KERAS3_SAVE, str(tmp_path), str(EXAMPLES)], capture_output=True,
                          text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = tmp_path / "k3.keras"
    tag = f"envrepro-e2e-serve:k3-{RUN}"
    out = cli("build", model, "--serve", "-t", tag, "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert json.loads(out.stdout)["proof"]["verdict"] == "verified"
    ctx = tmp_path / "ctx"
    out = cli("dockerfile", model, "--serve", "-o", ctx)
    assert out.returncode == 0, out.stderr[-2000:]
    plain = f"envrepro-e2e-serve:plain-{RUN}"
    try:
        docker("build", "-q", "-t", plain, ctx, timeout=1800)   # the plain CLI, no envrepro involved
        cid, port = start(plain)
        try:
            wait_ready(port, cid)
            cap = manifest.read(layout.sidecar_for(model))
            x = np.load(cap.root / cap.data["reference"]["inputs"][0])
            y = np.load(cap.root / cap.data["reference"]["outputs"][0])
            status, _, body = request(port, "POST", "/v1/models/k3:predict", {"instances": x.tolist()})
            assert status == 200 and np.allclose(body["predictions"], y, atol=1e-5), body
        finally:
            docker("rm", "-f", cid, check=False)
    finally:
        docker("rmi", "-f", tag, plain, check=False)


RELAY_FOR = "org.envrepro.relay-for"
# Run inside the model's container as its user: what its code could reach.
REACH = textwrap.dedent("""
    import json, socket
    out = {"interfaces": sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])}
    for name, addr in (("internet", ("1.1.1.1", 443)), ("metadata", ("169.254.169.254", 80)),
                       ("host", ("172.17.0.1", 2375))):
        try:
            socket.create_connection(addr, timeout=3).close()
            out[name] = "reached"
        except OSError as e:
            out[name] = e.strerror or str(e)
    try:
        socket.getaddrinfo("pypi.org", 443)
        out["dns"] = "resolved"
    except OSError as e:
        out["dns"] = str(e)
    print(json.dumps(out))
""")


def assert_no_network(cid):
    """The container's network mode is none, and from inside it nothing is reachable."""
    mode = docker("inspect", "-f", "{{.HostConfig.NetworkMode}}", cid).stdout.strip()
    networks = json.loads(docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", cid).stdout)
    assert mode == "none" and list(networks) == ["none"], (mode, networks)
    reach = json.loads(docker("exec", "-u", "10001:10001", cid, "python", "-c", REACH, timeout=60).stdout)
    assert reach["interfaces"] == ["lo"], reach
    for name in ("internet", "metadata", "host"):
        assert reach[name] == "Network is unreachable", reach
    assert reach["dns"] != "resolved", reach


def assert_relay_sandboxed(relay):
    cfg = json.loads(docker("inspect", "-f", "{{json .Config}}", relay).stdout)
    host = json.loads(docker("inspect", "-f", "{{json .HostConfig}}", relay).stdout)
    assert cfg["User"] == "10002:10002" and cfg["Healthcheck"]["Test"] == ["NONE"]
    assert cfg["Entrypoint"][:2] == ["/bin/sh", "-c"] and "-I -S" in cfg["Entrypoint"][2]
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]


def test_the_self_check_runs_the_model_with_no_network(seed, built):
    """While ``build --serve`` self-checks a new serving image (a new --name: a new key, on the
    environment image the module built), its model container has network mode none: no interface
    but loopback, the internet, cloud metadata, the host's bridge address and DNS unreachable from
    inside; the check still passes over both protocols through the relay, and nothing is left."""
    name = f"netcheck-{RUN}"
    proc = subprocess.Popen([*installed_argv(), "build", str(seed["model"]), "--serve", "--name", name, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    seen = None
    try:
        end = time.time() + 900
        while time.time() < end and proc.poll() is None and seen is None:
            ids = docker("ps", "-q", "--no-trunc", "--filter", f"label=org.envrepro.serve.name={name}").stdout.split()
            relays = [c for c in ids if docker("inspect", "-f", f'{{{{index .Config.Labels "{RELAY_FOR}"}}}}', c,
                                               check=False).stdout.strip() not in ("", "<no value>")]
            models = [c for c in ids if c not in relays]
            if models and relays:
                (model,), (relay,) = models, relays
                assert_no_network(model)
                assert_relay_sandboxed(relay)
                seen = model
            time.sleep(0.2)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert seen, "the self-check's containers were never seen running: " + err[-3000:]
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    res = json.loads(out)
    try:
        p = res["proof"]
        assert p["verdict"] == "verified" and p["v1"]["ok"] and p["v2"]["ok"] and p["exit_code"] == 0, p
        assert docker("ps", "-aq", "--filter", f"label={RELAY_FOR}={seen}").stdout.strip() == ""
        assert docker("ps", "-aq", "--filter", f"id={seen}").stdout.strip() == ""
    finally:
        docker("rmi", "-f", res["tag"], check=False)


def test_sigterm_drains_in_flight_requests_through_the_relay(seed, built, engine):
    """The engine's way of serving with no network (``start``: the relay), stopped with requests
    in flight: the model's container exits 0 after answering all of them, the relay carried every
    answer whole, and nothing is left (relay container, volume)."""
    from envrepro.serving.proof import service_args

    cid = engine.start(built[0], ports={serveconfig.PORT: ("127.0.0.1", 0)},
                       environment={"ENVREPRO_SERVE_WORKERS": "2", "ENVREPRO_SERVE_GRACE": "30"}, **service_args())
    try:
        port = engine.host_port(cid, serveconfig.PORT)
        relay = docker("ps", "-q", "--no-trunc", "--filter", f"label={RELAY_FOR}={cid}").stdout.strip()
        volume = docker("inspect", "-f", '{{index .Config.Labels "org.envrepro.relay-volume"}}', relay).stdout.strip()
        end = time.time() + 300
        while time.time() < end:
            try:
                if request(port, "GET", serveconfig.READY_PATH, timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        big, threads, answers = four_slow_requests_in_flight(seed, port)
        code = engine.stop(cid, timeout=40)
        cid = None
        for t in threads:
            t.join(120)
        assert code == 0 and answers == [(200, len(big))] * 4, (code, answers)
        assert docker("ps", "-aq", "--filter", f"id={relay}").stdout.strip() == ""
        assert volume and docker("volume", "ls", "-q", "--filter", f"name={volume}").stdout.strip() == ""
    finally:
        if cid:
            engine.stop(cid, timeout=5)


def test_envrepro_serve_runs_in_the_foreground_until_ctrl_c(seed, built):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([*installed_argv(), "serve", str(seed["model"]), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        end = time.time() + 600
        status = None
        while time.time() < end and proc.poll() is None:
            try:
                status = request(port, "GET", serveconfig.READY_PATH, timeout=5)[0]
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert status == 200, proc.stderr.read()[-3000:] if proc.poll() is not None else "not ready"
        got = request(port, "POST", f"/v1/models/{seed['name']}:predict", {"instances": seed["x"].tolist()})
        assert got[0] == 200 and np.allclose(got[2]["predictions"], seed["y"], atol=1e-6)
        # the model's container has no network; the relay publishing its port is this one's
        relays = [c for c in docker("ps", "-q", "--no-trunc", "--filter", f"label={RELAY_FOR}").stdout.split()
                  if f"127.0.0.1:{port}" in docker("port", c, check=False).stdout]
        assert len(relays) == 1, relays
        model = docker("inspect", "-f", f'{{{{index .Config.Labels "{RELAY_FOR}"}}}}', relays[0]).stdout.strip()
        assert_no_network(model)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        assert f"http://127.0.0.1:{port}/v1/models/{seed['name']}" in out
        assert "Traceback" not in err
        assert docker("ps", "-aq", "--filter", f"id={relays[0]}").stdout.strip() == ""
        assert docker("ps", "-aq", "--filter", f"id={model}").stdout.strip() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
