"""Adaptive batching (serve/batching.py): concurrent requests with the same input signature merged
into fewer, larger model calls, each client getting exactly its own rows; the maximum size, the
timeout, the deadlines, different signatures and a failing request kept apart; the settings and
metrics. Over the queue directly, and through the real server with the fake numpy model."""
import os
import sys
import threading
import time

import numpy as np
import pytest

from envrepro.runtime.serve import batching
from envrepro.runtime.serve import main as serve
from envrepro.runtime.serve import tensors as servetensors
from envrepro.runtime.serve.queue import DeadlineExceeded, PredictFailed, clock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support import http_json  # noqa: E402

SIG = servetensors.Signature([servetensors.TensorSpec("x", "float32", [None, 3])],
                             [servetensors.TensorSpec("y", "float32", [None, 2])])


class Recorder(object):
    """y = 2 * x[:, :2], recording the rows of each call; ``gate`` holds the first call."""

    def __init__(self, delay=0.0):
        self.calls = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, inputs):
        self.gate.wait(5)
        x = inputs["x"]
        self.calls.append(x.shape[0])
        if self.delay:
            time.sleep(self.delay)
        if (x == 666).any():
            raise ValueError("bad row")
        return [("y", x[:, :2] * 2), ("total", np.full((x.shape[0],), x.shape[0]))]


def queue(model, max_size=8, timeout=0.2, size=32, **kwargs):
    q = batching.BatchingQueue(model, SIG, max_size, timeout, workers=1, size=size, **kwargs)
    q.start()
    return q


def rows(n, start):
    return {"x": np.arange(start, start + 3 * n, dtype="float32").reshape(n, 3)}


def test_queued_requests_are_merged_and_split_back_exactly():
    model = Recorder()
    runs = []
    q = queue(model, on_run=lambda r, waits: runs.append((r, len(waits))))
    jobs = [q.submit(rows(n, 100 * i), clock() + 5) for i, n in enumerate([1, 1, 2, 3, 1, 4])]
    answers = [q.wait(j) for j in jobs]
    q.stop()
    assert model.calls == [8, 4]        # 1+1+2+3+1 rows fill the maximum; the 4 rows left wait their turn
    assert runs == [(8, 5), (4, 1)]
    for job, out in zip(jobs, answers):
        x = job.inputs["x"]
        assert dict(out)["y"].tolist() == (x[:, :2] * 2).tolist()
        assert dict(out)["total"].tolist() == [8 if job is not jobs[-1] else 4] * x.shape[0]


def test_max_size_and_signature_keep_requests_apart():
    model = Recorder()
    q = queue(model, max_size=4, timeout=0.1)
    first = q.submit(rows(1, 0), clock() + 5)
    big = q.submit(rows(5, 10), clock() + 5)                                  # over the maximum: alone
    other = q.submit({"x": np.zeros((1, 3), "float64")}, clock() + 5)         # another dtype: alone
    ok = q.submit(rows(2, 30), clock() + 5)
    for job in (first, big, other, ok):
        assert dict(q.wait(job))["y"].tolist() == (job.inputs["x"][:, :2] * 2).tolist()
    q.stop()
    assert model.calls == [3, 5, 1]


def test_a_request_past_its_deadline_while_gathered_never_runs():
    model = Recorder()
    expired = []
    q = queue(model, max_size=4, timeout=0.3, on_expired=lambda: expired.append(1))
    first = q.submit(rows(1, 0), clock() + 5)
    late = q.submit({"x": np.full((1, 3), 7, "float32")}, clock() + 0.1)
    ok = q.submit(rows(1, 30), clock() + 5)
    with pytest.raises(DeadlineExceeded):
        q.wait(late)
    assert dict(q.wait(first))["y"].tolist() == [[0, 2]]
    assert dict(q.wait(ok))["y"].tolist() == [[60, 62]]
    q.stop()
    assert model.calls == [2] and expired == [1]


def test_the_first_request_waits_no_longer_than_the_timeout():
    model = Recorder()
    q = queue(model, timeout=0.05)
    t = clock()
    assert dict(q.wait(q.submit(rows(1, 0), clock() + 5)))["y"].shape == (1, 2)
    assert 0.04 < clock() - t < 1
    q.stop()


def test_a_failing_request_fails_alone():
    model = Recorder()
    model.gate.clear()
    q = queue(model)
    first = q.submit(rows(1, 0), clock() + 5)
    time.sleep(0.05)
    bad = q.submit({"x": np.full((1, 3), 666, "float32")}, clock() + 5)
    good = q.submit(rows(2, 5), clock() + 5)
    model.gate.set()
    with pytest.raises(PredictFailed):
        q.wait(bad)
    assert dict(q.wait(first))["y"].tolist() == [[0, 2]]
    assert dict(q.wait(good))["y"].tolist() == [[10, 12], [16, 18]]
    q.stop()


def test_batch_key():
    assert batching.batch_key(rows(2, 0), SIG) == (("x", "<f4", (3,)),)
    assert batching.batch_key({"x": np.zeros((0, 3), "float32")}, SIG) is None
    fixed = servetensors.Signature([servetensors.TensorSpec("x", "float32", [2, 3])], [])
    assert batching.batch_key(rows(2, 0), fixed) is None
    assert batching.batch_key({"x": np.float32(1)}, SIG) is None


def test_settings():
    opts = serve.options([], {})
    assert opts["batch_max_size"] == 0 and opts["batch_timeout_ms"] == 2.0
    assert batching.describe(opts) == "batching off"
    with pytest.raises(serve.UsageError, match="ENVREPRO_SERVE_BATCH_TIMEOUT_MS must be a number \\(ms\\)"):
        serve.options([], {"ENVREPRO_SERVE_BATCH_TIMEOUT_MS": "-1"})
    with pytest.raises(serve.UsageError, match="ENVREPRO_SERVE_BATCH_MAX_SIZE"):
        serve.options([], {"ENVREPRO_SERVE_BATCH_MAX_SIZE": "x"})


def test_concurrent_clients_are_batched_through_the_server(server):
    s = server({"ENVREPRO_SERVE_BATCH_MAX_SIZE": "64", "ENVREPRO_SERVE_BATCH_TIMEOUT_MS": "100"},
               delay=0.05)
    model = s.model
    calls_before = model.calls
    results = {}

    def client(i):
        x = [[i, i + 0.5, 0], [-i, 1, 2]][: 1 + i % 2]
        if i % 2:
            body = {"inputs": [{"name": "x", "shape": [len(x), 3], "datatype": "FP32",
                                "data": [v for r in x for v in r]}]}
            status, _, got = http_json(s.port, "POST", "/v2/models/fake/infer", body, timeout=20)
            results[i] = (status, x, np.array(got["outputs"][0]["data"]).reshape(-1, 2).tolist())
        else:
            status, _, got = http_json(s.port, "POST", "/v1/models/fake:predict", {"instances": x}, timeout=20)
            results[i] = (status, x, got["predictions"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    for i, (status, x, y) in results.items():
        assert status == 200 and y == [[2 * r[0], 2 * r[1]] for r in x], i
    assert len(results) == 12 and model.calls - calls_before < 12
    rendered = s.metrics.render()
    assert "envrepro_batch_size_count" in rendered and "envrepro_queue_wait_seconds_count" in rendered
