"""The model server's Prometheus text (runtime/serve/metrics.py) and its prediction queue
(runtime/serve/queue.py): format 0.0.4, histogram buckets, deadlines, a full queue."""
import re
import threading
import time

import pytest

from envrepro.runtime.serve import metrics as servemetrics
from envrepro.runtime.serve import queue as servequeue

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? '
                    r'(-?[0-9.e+-]+|\+Inf|-Inf|NaN)$')


def parse(text):
    """Every line is a HELP/TYPE comment or a valid sample; returns {sample without value: value}."""
    assert text.endswith("\n")
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        assert SAMPLE.match(line), line
        key, value = line.rsplit(" ", 1)
        samples[key] = value
    return samples, types


def test_exposition_format_and_values():
    m = servemetrics.Metrics(queue_depth=lambda: 3, ready=lambda: True)
    m.build_info = {"tensorflow": "2.21.0", "python": "3.11.7", "lock": "ab" * 32, "keras": 'we"ird\\'}
    m.load_seconds = 1.5
    for seconds in (0.0004, 0.003, 0.2, 42.0):
        m.started()
        m.finished("v1_predict", 200, seconds)
    m.started()
    m.finished("v2_infer", 400, 0.001)
    m.started()   # still in flight
    m.expired()
    m.connections = lambda: 7
    m.refused()
    m.ran(3, [0.002, 0.0005, 0.2])
    m.ran(1, [0.0])
    samples, types = parse(m.render())
    assert samples['envrepro_batch_size_bucket{le="1"}'] == "1" and samples['envrepro_batch_size_bucket{le="4"}'] == "2"
    assert samples["envrepro_batch_size_count"] == "2" and samples["envrepro_batch_size_sum"] == "4"
    assert samples['envrepro_queue_wait_seconds_bucket{le="0.001"}'] == "2"
    assert samples['envrepro_queue_wait_seconds_bucket{le="+Inf"}'] == "4"
    assert types == {"envrepro_requests_total": "counter", "envrepro_request_duration_seconds": "histogram",
                     "envrepro_requests_in_flight": "gauge", "envrepro_queue_depth": "gauge",
                     "envrepro_queue_expired_total": "counter", "envrepro_model_ready": "gauge",
                     "envrepro_model_load_seconds": "gauge", "envrepro_build_info": "gauge",
                     "envrepro_connections_open": "gauge", "envrepro_connections_refused_total": "counter",
                     "envrepro_batch_size": "histogram", "envrepro_queue_wait_seconds": "histogram"}
    assert samples['envrepro_requests_total{endpoint="v1_predict",code="200"}'] == "4"
    assert samples['envrepro_requests_total{endpoint="v2_infer",code="400"}'] == "1"
    hist = 'envrepro_request_duration_seconds_bucket{endpoint="v1_predict",le="%s"}'
    assert samples[hist % "0.001"] == "1" and samples[hist % "0.005"] == "2"
    assert samples[hist % "0.25"] == "3" and samples[hist % "30.0"] == "3" and samples[hist % "+Inf"] == "4"
    assert samples['envrepro_request_duration_seconds_count{endpoint="v1_predict"}'] == "4"
    assert float(samples['envrepro_request_duration_seconds_sum{endpoint="v1_predict"}']) == pytest.approx(42.2034)
    assert samples["envrepro_requests_in_flight"] == "1" and samples["envrepro_queue_depth"] == "3"
    assert samples["envrepro_queue_expired_total"] == "1" and samples["envrepro_model_ready"] == "1"
    assert samples["envrepro_model_load_seconds"] == "1.5"
    assert samples["envrepro_connections_open"] == "7" and samples["envrepro_connections_refused_total"] == "1"
    info = [k for k in samples if k.startswith("envrepro_build_info")]
    assert info == ['envrepro_build_info{keras="we\\"ird\\\\",lock="%s",python="3.11.7",tensorflow="2.21.0"}'
                    % ("ab" * 32)]
    # buckets are cumulative and ordered
    bounds = [float(b) for b in servemetrics.BUCKETS]
    counts = [int(samples[hist % repr(b)]) for b in bounds]
    assert counts == sorted(counts)


def test_empty_metrics_render():
    samples, _ = parse(servemetrics.Metrics().render())
    assert samples["envrepro_model_ready"] == "0" and "envrepro_model_load_seconds" not in samples


def slow_predict(inputs):
    time.sleep(inputs)
    return inputs


def test_queue_full_and_deadline_drop():
    expired = []
    q = servequeue.PredictQueue(slow_predict, workers=1, size=1, on_expired=lambda: expired.append(1))
    q.start()
    now = servequeue.clock()
    running = q.submit(0.3, now + 5)
    time.sleep(0.05)                       # the worker has taken it
    waiting = q.submit(0.0, now + 0.1)     # waits behind it, deadline before it can run
    with pytest.raises(servequeue.QueueFull):
        q.submit(0.0, now + 5)
    assert q.depth() == 1 and q.busy() == 1
    with pytest.raises(servequeue.DeadlineExceeded):
        q.wait(waiting)
    assert expired == [1] and q.depth() == 0
    assert q.wait(running) == 0.3
    q.stop()


def test_queue_runs_nothing_expired_and_reports_model_errors():
    ran = []

    def predict(x):
        ran.append(x)
        if x == "bad":
            raise ValueError("no")
        return x

    q = servequeue.PredictQueue(predict, workers=2, size=0)
    q.start()
    late = q.submit("late", servequeue.clock() - 1)   # already past its deadline: dropped unrun
    with pytest.raises(servequeue.DeadlineExceeded):
        q.wait(late)
    with pytest.raises(servequeue.PredictFailed) as info:
        q.wait(q.submit("bad", servequeue.clock() + 5))
    assert isinstance(info.value.cause, ValueError)
    assert q.wait(q.submit("ok", servequeue.clock() + 5)) == "ok"
    assert "late" not in ran
    q.stop()


def test_queue_size_zero_takes_one_job_per_idle_worker():
    gate = threading.Event()
    q = servequeue.PredictQueue(lambda x: gate.wait(5), workers=2, size=0)
    q.start()
    time.sleep(0.05)
    jobs = [q.submit(i, servequeue.clock() + 5) for i in range(2)]
    with pytest.raises(servequeue.QueueFull):
        time.sleep(0.05)
        q.submit(3, servequeue.clock() + 5)
    gate.set()
    assert [q.wait(j) for j in jobs] == [True, True]
    q.stop()
