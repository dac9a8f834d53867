"""A prediction worker that dies (the model raises SystemExit, KeyboardInterrupt or another
BaseException, or the worker thread ends): its request is answered 500, queued ones 503 at once,
readiness turns off (both protocols), and the server process exits 75 after answering what is in
flight; nothing waits for its deadline. Also the hostile requests of test_serve_hostile.py that
matter most on old interpreters (a 1.6M-digit number is quadratic to parse on Python 3.6), against
the server under Python 3.6."""
import json
import os
import signal
import socket
import sys
import threading
import time

import pytest

from envrepro.runtime.serve import config as serveconfig
from envrepro.runtime.serve.queue import PredictQueue, clock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from serve_fake import DEATH_VALUES  # noqa: E402
from support import http_json  # noqa: E402

from test_serve_process import Server  # noqa: E402

GOOD = {"instances": [[1, 2, 3]]}
EXIT_WORKER_DIED = serveconfig.EXIT_CODES["worker_died"]


@pytest.fixture
def server(server):
    """conftest's server, with a 10 s request deadline unless a test gives another."""
    def make(settings=None, **fake):
        return server(dict({"ENVREPRO_SERVE_DEADLINE": "10"}, **(settings or {})), **fake)
    return make


def call(s, method, path, body=None):
    return http_json(s.port, method, path, body, timeout=20)


def assert_not_ready(s):
    assert call(s, "GET", serveconfig.READY_PATH)[0] == 503
    assert call(s, "GET", serveconfig.MODEL_READY_PATH.format(name="fake"))[0] == 503
    status, _, payload = call(s, "GET", serveconfig.V1_STATUS_PATH.format(name="fake"))
    assert status == 503 and "a prediction worker died" in payload["model_version_status"][0]["status"]["error_message"]
    assert "envrepro_model_ready 0" in call(s, "GET", serveconfig.METRICS_PATH)[2]


@pytest.mark.parametrize("value", sorted(DEATH_VALUES))
def test_a_dying_worker_answers_500_turns_readiness_off_and_hangs_nothing(server, value, capsys):
    s = server({"ENVREPRO_SERVE_WORKERS": "1"}, delay=0.3)
    death = DEATH_VALUES[value].__name__
    results = []
    dying = threading.Thread(target=lambda: results.append(call(s, "POST", "/v1/models/fake:predict",
                                                                {"instances": [[value, 0, 0]]})))
    dying.start()
    time.sleep(0.1)
    t = clock()
    status, headers, payload = call(s, "POST", "/v1/models/fake:predict", GOOD)   # queued behind it
    assert status == 503 and headers["Retry-After"] == "1" and "worker died" in payload["error"]
    assert clock() - t < 2                               # not at the 10 s deadline
    dying.join(5)
    status, _, payload = results[0]
    assert status == 500 and payload["error"] == "the model failed: %s: 3" % death
    assert s.failed == EXIT_WORKER_DIED
    assert_not_ready(s)
    t = clock()
    status, headers, payload = call(s, "POST", "/v2/models/fake/infer", {"inputs": [
        {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
    assert status == 503 and clock() - t < 1 and "the server is stopping" in payload["error"]
    err = capsys.readouterr().err
    assert "a prediction worker died: %s: 3" % death in err and "Traceback" not in err


def test_a_worker_thread_gone_without_a_word_is_noticed(server):
    s = server()
    queue = s.state.queue
    gone = threading.Thread(target=lambda: None)
    gone.start()
    gone.join()
    queue._threads[0] = gone                             # as if the worker thread had ended
    assert not queue.alive()
    s.watch()
    assert s.failed == EXIT_WORKER_DIED and queue.dead == "a prediction worker died: its thread ended"
    assert_not_ready(s)
    assert call(s, "POST", "/v1/models/fake:predict", GOOD)[0] == 503


def test_queue_fails_waiting_jobs_at_once_when_a_worker_dies():
    told = []

    def predict(inputs):
        time.sleep(0.2)
        raise SystemExit(1)

    queue = PredictQueue(predict, workers=1, size=4, on_fatal=told.append)
    queue.start()
    jobs = [queue.submit({}, clock() + 10) for _ in range(3)]
    t = clock()
    errors = []
    for job in jobs:
        try:
            queue.wait(job)
        except Exception as exc:
            errors.append((exc.status, type(exc).__name__))
    assert errors == [(500, "PredictFailed"), (503, "WorkerDied"), (503, "WorkerDied")] and clock() - t < 2
    assert told == ["a prediction worker died: SystemExit: 1"] and not queue.alive()
    with pytest.raises(Exception) as info:
        queue.submit({}, clock() + 10)
    assert info.value.status == 503


def test_the_server_process_exits_75_after_a_worker_dies(tmp_path):
    s = Server(sys.executable, {"FAKE_DELAY": "0.3", "ENVREPRO_SERVE_WORKERS": "2", "ENVREPRO_SERVE_GRACE": "5"})
    try:
        s.wait_ready()
        results = []
        slow = threading.Thread(target=lambda: results.append(s.call("POST", "/v1/models/fake:predict", GOOD)))
        slow.start()                                     # on the other worker: answered before the exit
        time.sleep(0.05)
        status, payload = s.call("POST", "/v1/models/fake:predict", {"instances": [[777, 0, 0]]})
        assert status == 500 and "SystemExit" in payload["error"]
        assert s.proc.wait(10) == EXIT_WORKER_DIED
        slow.join(5)
        assert results == [(200, {"predictions": [[2.0, 4.0]]})]
        err = s.stderr()
        assert "a prediction worker died: SystemExit: 3" in err and "prediction worker died: draining" in err
        assert "Traceback" not in err
    finally:
        s.stop()


def _raw(port, data):
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(data)
    answer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body.decode())


def test_hostile_requests_under_python36(py36_numpy):
    s = Server(py36_numpy, {"ENVREPRO_SERVE_DEADLINE": "1", "ENVREPRO_SERVE_MAX_CONNECTIONS": "4"})
    try:
        s.wait_ready()
        post = b"POST /v1/models/fake:predict HTTP/1.1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
        for body, status, words in ((b'{"instances": [[1, 2, ' + b"7" * 1600000 + b"]]}", 400, "number"),
                                    (b"[" * 100000 + b"]" * 100000, 400, "nested deeper"),
                                    (b'{"instances": [[1, 2, "\\ud800"]]}', 400, "got strings")):
            t = time.time()
            got, payload = _raw(s.port, post % len(body) + body)
            assert got == status and words in payload["error"] and time.time() - t < 3
        assert _raw(s.port, b"POST /v1/models/fake:predict HTTP/1.1\r\nContent-Length: +26\r\n\r\n")[0] == 400
        assert _raw(s.port, b"GET /v2/health/live HTTP/1.1\r\nHost : x\r\n\r\n")[0] == 400
        slow = socket.create_connection(("127.0.0.1", s.port), timeout=20)
        slow.sendall(b"GET /v2/health/li")
        t = time.time()
        assert slow.recv(65536).startswith(b"HTTP/1.1 408 ") and time.time() - t < 3
        slow.close()
        assert s.call("POST", "/v1/models/fake:predict", GOOD) == (200, {"predictions": [[2.0, 4.0]]})
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(15) == 0
        assert "Traceback" not in s.stderr()
    finally:
        s.stop()
