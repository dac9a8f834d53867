"""The model server over real HTTP on 127.0.0.1 (runtime/serve/main.py Serving, http.py,
app.py) with a fake numpy model in process: every status a bad request gets, the next good
request still answered, readiness before and after the warm-up, concurrent clients, logs."""
import http.client
import os
import socket
import sys
import threading
import time

import pytest

from envrepro.runtime.serve import main as serve
from envrepro.runtime.serve import tensors as servetensors

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from serve_fake import FAIL_VALUE, FakeServable  # noqa: E402
from support import http_json  # noqa: E402

SECRET = 987654.321
GOOD = {"instances": [[1, 2, 3]]}


def start(settings=None, **fake):
    environ = dict({"ENVREPRO_SERVE_HOST": "127.0.0.1", "ENVREPRO_SERVE_PORT": "0"}, **(settings or {}))
    opts = serve.options([], environ)
    model = FakeServable(servetensors, **fake)
    serving = serve.Serving(opts, lambda: model, "fake", version="9.9")
    serving.listen()
    serving.start_loading()
    serving.model = model
    return serving


def wait_ready(serving, timeout=5):
    end = time.time() + timeout
    while not serving.state.ready():
        assert serving.failed is None and time.time() < end
        time.sleep(0.01)
    return serving


@pytest.fixture
def server():
    servers = []

    def make(settings=None, ready=True, **fake):
        s = start(settings, **fake)
        servers.append(s)
        return wait_ready(s) if ready else s

    yield make
    for s in servers:
        if s.model.gate is not None:
            s.model.gate.set()
        s.drain(2)


def call(serving, method, path, body=None, headers=None, conn=None):
    return http_json(serving.port, method, path, body, headers, conn, timeout=10)


def raw_request(serving, head, body=b""):
    """Send raw bytes; the full answer, read until the server closes the connection."""
    s = socket.create_connection(("127.0.0.1", serving.port), timeout=10)
    s.sendall(head + body)
    chunks = []
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    s.close()
    text = b"".join(chunks).decode("latin-1")
    status = int(text.split(" ", 2)[1])
    return status, text


def assert_still_serves(serving):
    status, _, payload = call(serving, "POST", "/v1/models/fake:predict", GOOD)
    assert status == 200 and payload == {"predictions": [[2.0, 4.0]]}


def test_both_protocols_and_metadata(server):
    s = server()
    assert call(s, "POST", "/v1/models/fake/versions/1:predict", {"inputs": {"x": [[1, 2, 3]]}})[2] == \
        {"outputs": [[2.0, 4.0]]}
    status, _, out = call(s, "POST", "/v2/models/fake/versions/1/infer",
                          {"id": "a", "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
    assert status == 200 and out["id"] == "a" and out["outputs"][0]["data"] == [2.0, 4.0]
    assert call(s, "GET", "/v1/models/fake/versions/1")[2]["model_version_status"][0]["state"] == "AVAILABLE"
    assert "serving_default" in call(s, "GET", "/v1/models/fake/metadata")[2]["metadata"]["signature_def"]["signature_def"]
    assert call(s, "GET", "/v2/models/fake")[2]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert call(s, "GET", "/v2")[2] == {"name": "envrepro", "version": "9.9", "extensions": ["binary_tensor_data"]}
    assert call(s, "GET", "/v2/models/fake/ready")[0] == 200
    status, headers, text = call(s, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'envrepro_requests_total{endpoint="v1_predict",code="200"} 1' in text


def test_multi_input_model(server):
    s = server(multi=True)
    body = {"instances": [{"a": [1, 2, 3], "b": [1, 2], "text": "hi"}, {"a": [0, 0, 1], "b": [3, 4], "text": {"b64": "/w=="}}]}
    status, _, out = call(s, "POST", "/v1/models/fake:predict", body)
    assert status == 200
    assert out["predictions"][0] == {"y": [2.0, 4.0], "n": 3, "echo_bytes": {"b64": "aGkh"}}
    assert out["predictions"][1]["n"] == 7 and out["predictions"][1]["echo_bytes"] == {"b64": "/yE="}


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not UTF-8"),
    ({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, 400, "exactly one of"),
    ({"nothing": SECRET}, 400, "exactly one of"),
    ({"instances": [[1, 2, SECRET, 4]]}, 400, "expects shape [-1, 3]"),
    ({"instances": [["SECRET", "b", "c"]]}, 400, "got strings"),
    ({"instances": [[FAIL_VALUE, 0, 0]]}, 500, "the model failed: RuntimeError: boom: the fake model failed"),
])
def test_bad_bodies(server, body, status, words, capsys):
    s = server()
    got, _, payload = call(s, "POST", "/v1/models/fake:predict", body)
    assert got == status and words in payload["error"]
    assert "987654" not in payload["error"] and "SECRET" not in payload["error"]
    assert "\n" not in payload["error"] and "second line" not in payload["error"]
    if status == 400:
        assert "x float32 [-1, 3]" in payload["error"]
    assert_still_serves(s)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "987654" not in err and "SECRET" not in err
    assert "POST /v1/models/fake:predict %d " % status in err


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/v1/models/other", 404), ("POST", "/v1/models/other:predict", 404),
    ("GET", "/v1/models/fake/versions/2", 404), ("POST", "/v2/models/fake/versions/7/infer", 404),
    ("GET", "/v2/models/other/ready", 404), ("GET", "/nope", 404), ("GET", "/v1/models/fake:classify", 404),
    ("GET", "/v1/models/fake:predict", 405), ("POST", "/v2/health/ready", 405), ("DELETE", "/metrics", 405),
])
def test_unknown_models_versions_paths_methods(server, method, path, status):
    s = server()
    got, headers, payload = call(s, method, path, GOOD if method == "POST" else None)
    assert got == status and payload["error"]
    if status == 405:
        assert headers["Allow"] in ("GET", "POST")
    assert_still_serves(s)


def test_limits_decided_before_the_body(server):
    s = server({"ENVREPRO_SERVE_MAX_BODY": "100"})
    path = b"POST /v1/models/fake:predict HTTP/1.1\r\nHost: x\r\n"
    # 413 from Content-Length alone: the body is never sent, the answer comes anyway
    status, text = raw_request(s, path + b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
    assert status == 413 and "Connection: close" in text and "ENVREPRO_SERVE_MAX_BODY" in text
    status, _ = raw_request(s, path + b"Content-Type: application/json\r\n\r\n")
    assert status == 411
    status, text = raw_request(s, path + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                                          b"5\r\nhello\r\n0\r\n\r\n")
    assert status == 411 and "Content-Length" in text
    status, _ = raw_request(s, path + b"Content-Type: application/json\r\nContent-Length: -3\r\n\r\n")
    assert status == 400
    # Expect: 100-continue with a body over the limit: refused without a 100 Continue
    status, text = raw_request(s, path + b"Content-Type: application/json\r\nContent-Length: 500\r\n"
                                          b"Expect: 100-continue\r\n\r\n")
    assert status == 413 and "100 Continue" not in text
    status, _ = raw_request(s, b"GARBAGE\r\n\r\n")
    assert status == 400
    status, text = raw_request(s, b"GET /v2/health/live HTTP/1.0\r\n\r\n")   # HTTP/1.0: closed after
    assert status == 200 and "Connection: close" in text
    assert_still_serves(s)


@pytest.mark.parametrize("content_type, status", [
    ("text/plain", 415), ("application/x-www-form-urlencoded", 415), ("application/json; charset=latin-1", 415),
    ("application/json", 200), ("Application/JSON; charset=UTF-8", 200), ("application/json;charset=utf8", 200),
])
def test_content_types(server, content_type, status):
    s = server()
    got = call(s, "POST", "/v1/models/fake:predict", GOOD, {"Content-Type": content_type})[0]
    assert got == status
    assert_still_serves(s)


def test_full_queue_is_503_with_retry_after(server):
    s = server({"ENVREPRO_SERVE_QUEUE": "0", "ENVREPRO_SERVE_WORKERS": "1"}, delay=0.4)
    results = []
    first = threading.Thread(target=lambda: results.append(call(s, "POST", "/v1/models/fake:predict", GOOD)[0]))
    first.start()
    time.sleep(0.15)
    status, headers, payload = call(s, "POST", "/v1/models/fake:predict", GOOD)
    assert status == 503 and headers["Retry-After"] == "1" and "queue" in payload["error"]
    first.join()
    assert results == [200]
    assert_still_serves(s)


def test_deadline_is_504_and_expired_queued_requests_never_run(server):
    s = server({"ENVREPRO_SERVE_DEADLINE": "0.3", "ENVREPRO_SERVE_WORKERS": "1"}, delay=0.5)
    calls_before = s.model.calls
    results = []
    threads = [threading.Thread(target=lambda: results.append(call(s, "POST", "/v1/models/fake:predict", GOOD)[0]))
               for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert results == [504, 504, 504]
    time.sleep(0.6)   # the one that ran finishes; the two queued ones were dropped
    assert s.model.calls - calls_before == 1
    assert "envrepro_queue_expired_total 2" in call(s, "GET", "/metrics")[2]
    s.model.delay = 0
    assert_still_serves(s)


def test_readiness_waits_for_the_warm_up(server):
    gate = threading.Event()
    s = server(ready=False, gate=gate)
    time.sleep(0.05)
    assert call(s, "GET", "/v2/health/live")[0] == 200
    assert call(s, "GET", "/v2/health/ready") == (503, call(s, "GET", "/v2/health/ready")[1], {"ready": False})
    assert call(s, "GET", "/v2/models/fake/ready")[0] == 503
    status, _, payload = call(s, "GET", "/v1/models/fake")
    assert status == 503 and payload["model_version_status"][0]["state"] == "LOADING"
    status, headers, _ = call(s, "POST", "/v1/models/fake:predict", GOOD)
    assert status == 503 and headers["Retry-After"] == "1"
    assert call(s, "GET", "/v2/models/fake")[0] == 503
    assert "envrepro_model_ready 0" in call(s, "GET", "/metrics")[2]
    gate.set()
    wait_ready(s)
    assert call(s, "GET", "/v2/health/ready")[0] == 200 and call(s, "GET", "/v2/models/fake/ready")[0] == 200
    assert call(s, "GET", "/v1/models/fake")[0] == 200
    assert "envrepro_model_ready 1" in call(s, "GET", "/metrics")[2]
    assert_still_serves(s)


def test_failed_warm_up_keeps_liveness_and_fails(server, capsys):
    s = server(ready=False, warm_fail=True)
    end = time.time() + 5
    while s.failed is None and time.time() < end:
        time.sleep(0.01)
    assert s.failed == serve.EXIT_LOAD_FAILED
    assert call(s, "GET", "/v2/health/live")[0] == 200 and call(s, "GET", "/v2/health/ready")[0] == 503
    status, _, payload = call(s, "GET", "/v1/models/fake")
    assert status == 503 and payload["model_version_status"][0]["state"] == "END"
    assert "warm-up exploded" in payload["model_version_status"][0]["status"]["error_message"]
    err = capsys.readouterr().err
    assert "the model failed to warm up: RuntimeError: warm-up exploded" in err and "Traceback" not in err


def test_concurrent_clients(server):
    s = server({"ENVREPRO_SERVE_WORKERS": "2"})
    statuses = []
    lock = threading.Lock()

    def client(i):
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        for j in range(20):
            status, _, out = call(s, "POST", "/v1/models/fake:predict", {"instances": [[i, j, 0]]}, conn=conn)
            with lock:
                statuses.append(status == 200 and out == {"predictions": [[2.0 * i, 2.0 * j]]})
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == 320 and all(statuses)
    assert 'envrepro_requests_total{endpoint="v1_predict",code="200"} 320' in call(s, "GET", "/metrics")[2]


def test_keep_alive_head_and_drain_closes_connections(server):
    s = server()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)   # HTTP/1.0 keep-alive
    for _ in range(2):
        sock.sendall(b"GET /v2/health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        answer = sock.recv(65536).decode("latin-1")
        assert answer.startswith("HTTP/1.1 200") and "Connection: keep-alive" in answer
    sock.close()
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    for _ in range(3):
        assert call(s, "GET", "/v2/health/live", conn=conn)[0] == 200
    conn.request("HEAD", "/v2/health/live")
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b"" and int(r.getheader("Content-Length")) > 0
    s.state.drain()
    s.http.draining = True
    status, headers, _ = call(s, "GET", "/v2/health/ready", conn=conn)
    assert status == 503 and headers["Connection"] == "close"
    conn.close()
