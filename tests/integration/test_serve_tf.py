"""The model server on real TensorFlow: the dev venv's TF 2.21 (Keras 3) serves a .keras model, and
Python 3.8 + TF 2.4.1 (Keras 2) an .h5 one, each with a custom layer, two named inputs and two
named outputs, started exactly as the serving image starts it (launch bootstrap, a plan made by make_plan, here with host paths). Both protocols'
predictions equal model.predict's, the metadata and metrics describe the model, the warm-up
checked the capture's reference, HTTP adds little latency over an in-process call, SIGTERM
exits 0."""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from envrepro.runtime import launch
from envrepro.runtime.serve import config as serveconfig
from envrepro.sandbox import loadplan as plans
from envrepro.sidecar import layout, manifest

from support import http_json  # noqa: E402
from tf_helpers import CUSTOM_LAYERS, write_module

pytestmark = pytest.mark.tf

LOCK = "0123456789abcdef" * 4
NAME = "served"

# Builds and saves the model, the capture's reference, a test batch with model.predict's outputs,
# and the in-process latency of a batch-1 prediction (both call paths), printed as JSON.
TRAIN = textwrap.dedent('''
    import json, sys, time
    import numpy as np
    import tensorflow as tf
    sys.path.insert(0, sys.argv[1])
    from custom_layers import MyCustomLayer
    model_path, ref_dir, out_dir = sys.argv[2:5]
    tf.random.set_seed(0)
    features = tf.keras.Input(shape=(16,), name="features")
    extra = tf.keras.Input(shape=(4,), name="extra")
    h = tf.keras.layers.Dense(8, activation="relu")(features)
    h = MyCustomLayer(units=4, name="mine")(h)
    h = tf.keras.layers.Concatenate()([h, extra])
    outputs = {"score": tf.keras.layers.Dense(1, name="score")(h),
               "probs": tf.keras.layers.Dense(3, activation="softmax", name="probs")(h)}
    model = tf.keras.Model({"features": features, "extra": extra}, outputs)
    model.compile(optimizer="adam", loss={"score": "mse", "probs": "categorical_crossentropy"})
    model.save(model_path)
    rng = np.random.RandomState(0)
    ref = {"features": rng.rand(3, 16).astype("float32"), "extra": rng.rand(3, 4).astype("float32")}
    np.save(ref_dir + "/input_0.npy", ref["features"])
    np.save(ref_dir + "/input_1.npy", ref["extra"])
    out = model(ref, training=False)
    np.save(ref_dir + "/output_0.npy", np.asarray(out["probs"]))
    np.save(ref_dir + "/output_1.npy", np.asarray(out["score"]))
    test = {"features": rng.rand(5, 16).astype("float32"), "extra": rng.rand(5, 4).astype("float32")}
    expected = model.predict(test, verbose=0)
    for key, arr in list(test.items()) + [("out_" + k, v) for k, v in expected.items()]:
        np.save("%s/%s.npy" % (out_dir, key), arr)
    one = {"features": test["features"][:1], "extra": test["extra"][:1]}
    def p50(func, n=200):
        for _ in range(20):
            func()
        runs = []
        for _ in range(n):
            t = time.perf_counter(); func(); runs.append(time.perf_counter() - t)
        return sorted(runs)[n // 2]
    print(json.dumps({"call": p50(lambda: model(one, training=False)),
                      "predict_on_batch": p50(lambda: model.predict_on_batch(one))}))
''')


# (interpreter fixture, model file suffix, Keras flavor, TensorFlow version): TF 2.21 + Keras 3 in
# the dev venv, TF 2.4.1 + its tf.keras (Keras 2) under Python 3.8, the oldest envrepro loads.
ENVIRONMENTS = {"tf221": ("tf", ".keras", "keras3", "2.21.0"), "tf241": ("py38_tf24", ".h5", "tf.keras", "2.4.1")}


@pytest.fixture(scope="module", params=sorted(ENVIRONMENTS))
def environment(request):
    fixture, suffix, flavor, version = ENVIRONMENTS[request.param]
    python = request.getfixturevalue(fixture)
    return {"python": sys.executable if fixture == "tf" else python, "suffix": suffix, "flavor": flavor,
            "version": version}


@pytest.fixture(scope="module")
def capture(environment, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    model = folder / f"{NAME}{environment['suffix']}"
    root = layout.sidecar_for(model)
    snap, ref, out = root / "snapshot", root / "reference", folder / "expected"
    write_module(snap, "custom_layers", CUSTOM_LAYERS)
    ref.mkdir(parents=True)
    out.mkdir()
    proc = subprocess.run([environment["python"], "-c", TRAIN, str(snap), str(model), str(ref), str(out)],
                          capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    inproc = json.loads(proc.stdout.strip().splitlines()[-1])
    data = {
        "schema": layout.SCHEMA,
        "model": {"name": model.name, "format": environment["suffix"][1:]},
        "frameworks": {"tensorflow": environment["version"], "keras_flavor": environment["flavor"]},
        "env": {"TF_USE_LEGACY_KERAS": None, "KERAS_BACKEND": None},
        "load": {"compile": True, "custom_objects": {"MyCustomLayer": "custom_layers:MyCustomLayer"},
                 "modules": ["custom_layers"]},
        "reference": {"inputs": ["reference/input_0.npy", "reference/input_1.npy"],
                      "outputs": ["reference/output_0.npy", "reference/output_1.npy"],
                      "input_structure": "dict", "input_names": ["features", "extra"],
                      "output_structure": "dict", "output_names": ["probs", "score"],
                      "tolerance": {"atol": 1e-05, "rtol": 1e-04}},
    }
    expected = {p[:-4]: np.load(out / p) for p in os.listdir(out)}
    return manifest.Capture(root=root, data=data), expected, inproc


@pytest.fixture(scope="module")
def server(environment, capture, tmp_path_factory):
    yield from _serve(environment, capture, tmp_path_factory, {"ENVREPRO_SERVE_WORKERS": "2"})


@pytest.fixture(scope="module")
def batched_server(environment, capture, tmp_path_factory):
    yield from _serve(environment, capture, tmp_path_factory,
                      {"ENVREPRO_SERVE_BATCH_MAX_SIZE": "5", "ENVREPRO_SERVE_BATCH_TIMEOUT_MS": "2000"})


def _serve(environment, capture, tmp_path_factory, settings):
    cap, _, _ = capture
    tmp = tmp_path_factory.mktemp("plan")
    paths = plans.ContainerPaths(model=str(cap.model_path), capture=str(cap.root), runtime=launch.HOST_DIR)
    plan = plans.make_plan(cap, paths)
    plan[serveconfig.PLAN_LOCK_KEY] = LOCK
    plan[serveconfig.PLAN_VERSION_KEY] = "0.1.0"
    plan_file = tmp / "plan.json"
    plan_file.write_text(json.dumps(plan))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "ENVREPRO_"))}
    env.update(settings, HOME=str(tmp))
    proc = subprocess.Popen(launch.host_argv(environment["python"], serveconfig.ENTRY,
                                             ["--plan", plan_file, "--host", "127.0.0.1", "--port", "0"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(tmp))
    lines, port = [], []

    def read():
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                port.append(int(m.group(1)))

    threading.Thread(target=read, daemon=True).start()
    end = time.time() + 30
    while not port:
        assert proc.poll() is None and time.time() < end, "".join(lines)
        time.sleep(0.05)
    srv = {"proc": proc, "port": port[0], "lines": lines, "version": environment["version"]}
    # liveness answers during the load, readiness once the model is loaded and warmed up
    assert call(srv, "GET", serveconfig.LIVE_PATH)[0] == 200
    end = time.time() + 300
    while call(srv, "GET", serveconfig.READY_PATH)[0] != 200:
        assert proc.poll() is None and time.time() < end, "".join(lines)
        time.sleep(0.2)
    yield srv
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def call(srv, method, path, body=None, conn=None):
    status, _headers, payload = http_json(srv["port"], method, path, body, conn=conn, timeout=60)
    return status, payload


def close(got, want):
    got = np.asarray(got, dtype="float32")
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-6


def test_v1_rows_and_columns_equal_model_predict(server, capture):
    _, exp, _ = capture
    rows = [{"features": f.tolist(), "extra": e.tolist()} for f, e in zip(exp["features"], exp["extra"])]
    status, out = call(server, "POST", f"/v1/models/{NAME}:predict", {"instances": rows})
    assert status == 200, out
    preds = out["predictions"]
    assert len(preds) == 5 and set(preds[0]) == {"score", "probs"}
    close([p["score"] for p in preds], exp["out_score"])
    close([p["probs"] for p in preds], exp["out_probs"])
    status, out = call(server, "POST", f"/v1/models/{NAME}/versions/1:predict",
                       {"inputs": {"features": exp["features"].tolist(), "extra": exp["extra"].tolist()}})
    assert status == 200
    close(out["outputs"]["score"], exp["out_score"])
    close(out["outputs"]["probs"], exp["out_probs"])


def test_v2_infer_equals_model_predict(server, capture):
    _, exp, _ = capture
    body = {"id": "x1", "inputs": [
        {"name": "features", "shape": [5, 16], "datatype": "FP32", "data": exp["features"].ravel().tolist()},
        {"name": "extra", "shape": [5, 4], "datatype": "FP32", "data": exp["extra"].tolist()}]}
    status, out = call(server, "POST", f"/v2/models/{NAME}/infer", body)
    assert status == 200 and out["id"] == "x1" and out["model_name"] == NAME
    by_name = {o["name"]: o for o in out["outputs"]}
    assert by_name["score"]["shape"] == [5, 1] and by_name["probs"]["datatype"] == "FP32"
    close(np.reshape(by_name["score"]["data"], by_name["score"]["shape"]), exp["out_score"])
    close(np.reshape(by_name["probs"]["data"], by_name["probs"]["shape"]), exp["out_probs"])
    body["outputs"] = [{"name": "probs"}]
    assert [o["name"] for o in call(server, "POST", f"/v2/models/{NAME}/infer", body)[1]["outputs"]] == ["probs"]


def test_metadata_status_and_bad_input(server):
    status, meta = call(server, "GET", f"/v1/models/{NAME}/metadata")
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert status == 200 and set(sig["inputs"]) == {"features", "extra"} and set(sig["outputs"]) == {"score", "probs"}
    assert sig["inputs"]["features"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sig["inputs"]["features"]["tensor_shape"]["dim"]] == ["-1", "16"]
    assert [d["size"] for d in sig["outputs"]["probs"]["tensor_shape"]["dim"]] == ["-1", "3"]
    status, meta = call(server, "GET", f"/v2/models/{NAME}")
    assert status == 200 and meta["platform"] == "tensorflow_keras" and meta["versions"] == ["1"]
    assert {"name": "extra", "datatype": "FP32", "shape": [-1, 4]} in meta["inputs"]
    assert call(server, "GET", f"/v1/models/{NAME}")[1]["model_version_status"][0]["state"] == "AVAILABLE"
    assert call(server, "GET", "/v2")[1] == {"name": "envrepro", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
    status, out = call(server, "POST", f"/v1/models/{NAME}:predict", {"instances": [{"features": [1] * 15, "extra": [0] * 4}]})
    assert status == 400 and "features float32 [-1, 16]" in out["error"]
    assert call(server, "GET", f"/v2/models/{NAME}/ready")[0] == 200


def test_metrics_and_logs(server):
    status, text = call(server, "GET", serveconfig.METRICS_PATH)
    assert status == 200
    info = re.search(r"^envrepro_build_info\{(.*)\} 1$", text, re.M).group(1)
    assert f'tensorflow="{server["version"]}"' in info and f'lock="{LOCK}"' in info
    assert ('keras="3.' if server["version"] == "2.21.0" else 'keras="2.4.') in info
    assert ('python="%d.%d.' % sys.version_info[:2] if server["version"] == "2.21.0" else 'python="3.8.') in info
    assert float(re.search(r"^envrepro_model_load_seconds (\S+)$", text, re.M).group(1)) > 0
    assert "envrepro_model_ready 1" in text
    log = "".join(server["lines"])
    assert "warm-up: the capture's reference prediction matches" in log and "predict call: " in log
    assert "Traceback" not in log


def test_http_latency_at_batch_1(server, capture):
    _, exp, inproc = capture
    body = {"instances": [{"features": exp["features"][0].tolist(), "extra": exp["extra"][0].tolist()}]}
    conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=60)
    for _ in range(20):
        call(server, "POST", f"/v1/models/{NAME}:predict", body, conn=conn)
    runs = []
    for _ in range(200):
        t = time.perf_counter()
        status, _ = call(server, "POST", f"/v1/models/{NAME}:predict", body, conn=conn)
        runs.append(time.perf_counter() - t)
        assert status == 200
    conn.close()
    http_p50 = sorted(runs)[100]
    fastest = min(inproc.values())
    print("\nTF %s, batch 1 p50: in-process model(x) %.2f ms, predict_on_batch %.2f ms; HTTP v1 predict %.2f ms "
          "(%.2f ms over the faster in-process call)" % (server["version"], inproc["call"] * 1e3, inproc["predict_on_batch"] * 1e3,
                                                          http_p50 * 1e3, (http_p50 - fastest) * 1e3))
    # the goal is <= 2 ms on a quiet machine; this bound only catches a regression (Nagle, predict())
    assert http_p50 - fastest < 0.010


def test_concurrent_requests_are_batched_and_split_exactly(batched_server, capture):
    """Five one-row requests at once: one model call of five rows (the metrics say so), each
    client answered its own row (binary outputs: the float32 bits as computed). Not asserted:
    bit-for-bit equality with the rows predicted one at a time. TF 2.21's oneDNN kernels give
    some rows a different last bit at batch 1 than at batch 5 (docs/serving.md, Batching)."""
    _, exp, _ = capture
    answers = {}

    def client(i):
        body = {"parameters": {"binary_data_output": True}, "inputs": [
            {"name": "features", "shape": [1, 16], "datatype": "FP32", "data": exp["features"][i].tolist()},
            {"name": "extra", "shape": [1, 4], "datatype": "FP32", "data": exp["extra"][i].tolist()}]}
        c = http.client.HTTPConnection("127.0.0.1", batched_server["port"], timeout=60)
        c.request("POST", f"/v2/models/{NAME}/infer", body=json.dumps(body).encode(),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        cut = int(r.getheader("Inference-Header-Content-Length"))
        header, offset, out = json.loads(data[:cut]), cut, {}
        for o in header["outputs"]:
            size = o["parameters"]["binary_data_size"]
            out[o["name"]] = np.frombuffer(data[offset:offset + size], "<f4").reshape(o["shape"])
            offset += size
        answers[i] = (r.status, out)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, (status, out) in sorted(answers.items()):
        assert status == 200
        close(out["score"], exp["out_score"][i:i + 1])
        close(out["probs"], exp["out_probs"][i:i + 1])
    assert len(answers) == 5
    metrics = call(batched_server, "GET", serveconfig.METRICS_PATH)[1]
    count = int(re.search(r"^envrepro_batch_size_count (\d+)", metrics, re.M).group(1))
    assert re.search(r"^envrepro_batch_size_sum 5(\.0)?$", metrics, re.M) and count < 5, metrics


def test_sigterm_exits_0(server):
    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    time.sleep(0.2)
    log = "".join(server["lines"])
    assert "SIGTERM: draining" in log and "Traceback" not in log



def test_a_model_that_fails_to_load_exits_5_after_one_line(environment, tmp_path):
    """Liveness answers while TensorFlow loads; the failure is one log line, then exit 5."""
    model = tmp_path / f"broken{environment['suffix']}"
    model.write_bytes(b"not a model")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"model_path": str(model), "format": environment["suffix"][1:],
                                     "keras_flavor": environment["flavor"], "safe_mode": True}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "ENVREPRO_"))}
    proc = subprocess.Popen(launch.host_argv(environment["python"], serveconfig.ENTRY,
                                             ["--plan", plan_file, "--host", "127.0.0.1", "--port", "0"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(env, HOME=str(tmp_path)))
    first = proc.stderr.readline().decode()
    second = proc.stderr.readline().decode()
    port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", second).group(1))
    srv = {"port": port}
    try:
        live, ready = call(srv, "GET", serveconfig.LIVE_PATH)[0], call(srv, "GET", serveconfig.READY_PATH)[0]
    except OSError:   # the load failed (and the server exited) before the first probe
        live = ready = None
    assert proc.wait(300) == serveconfig.EXIT_CODES["load_failed"]
    rest = proc.stderr.read().decode()
    assert "serving " in first and (live, ready) in ((200, 503), (None, None))
    failures = [ln for ln in rest.splitlines() if "envrepro-serve: the model failed to load (stage load)" in ln]
    assert len(failures) == 1 and "Traceback" not in rest, rest[-3000:]
