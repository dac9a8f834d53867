"""The model server's metrics in the Prometheus text exposition format 0.0.4 (``GET /metrics``).

Standard library only, Python 3.6 syntax (see launch.py). Thread-safe: request threads record,
any thread renders.
"""
from __future__ import absolute_import, division, print_function

import threading

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds; the request latency histogram's upper bounds (+Inf is implied).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Rows per model call (batching merges requests); the batch size histogram's upper bounds.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def escape(value):
    """A label value as the text format quotes it."""
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs):
    if not pairs:
        return ""
    return "{" + ",".join('%s="%s"' % (k, escape(v)) for k, v in pairs) + "}"


def _num(x):
    if isinstance(x, bool):
        return "1" if x else "0"
    if isinstance(x, int):
        return str(x)
    x = float(x)
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)


def _observe(hist, bounds, value):
    for i, bound in enumerate(bounds):
        if value <= bound:
            hist[i] += 1
    hist[-2] += value
    hist[-1] += 1


def _histogram(out, name, bounds, hist):
    for bound, n in zip(bounds, hist):
        out.append('%s_bucket{le="%s"} %s' % (name, _num(bound), n))
    out.append('%s_bucket{le="+Inf"} %s' % (name, hist[-1]))
    out.append("%s_sum %s" % (name, _num(hist[-2])))
    out.append("%s_count %s" % (name, hist[-1]))


class Metrics(object):
    """Counters, the latency histogram and gauges of one server. ``queue_depth`` and ``ready``
    are callables read at render time."""

    def __init__(self, queue_depth=None, ready=None):
        self._lock = threading.Lock()
        self._requests = {}          # (endpoint, code) -> count
        self._durations = {}         # endpoint -> [count per bucket..., sum, count]
        self._in_flight = 0
        self._expired = 0
        self._batches = [0] * len(BATCH_BUCKETS) + [0, 0]     # count per bucket..., sum, count
        self._waits = [0] * len(BUCKETS) + [0.0, 0]
        self._refused = 0
        self.connections = lambda: 0     # open connections (the HTTP layer sets it)
        self.queue_depth = queue_depth or (lambda: 0)
        self.ready = ready or (lambda: False)
        self.load_seconds = None
        self.build_info = {}

    def started(self):
        with self._lock:
            self._in_flight += 1

    def finished(self, endpoint, code, seconds):
        """One answered request: counted by endpoint and status code, timed by endpoint."""
        with self._lock:
            self._in_flight -= 1
            key = (endpoint, str(code))
            self._requests[key] = self._requests.get(key, 0) + 1
            hist = self._durations.get(endpoint)
            if hist is None:
                hist = self._durations[endpoint] = [0] * len(BUCKETS) + [0.0, 0]
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    hist[i] += 1
            hist[-2] += seconds
            hist[-1] += 1

    def ran(self, rows, waits):
        """One model call: the ``rows`` it predicts, and the seconds each of its requests waited
        in the queue (``waits``)."""
        with self._lock:
            _observe(self._batches, BATCH_BUCKETS, rows)
            for seconds in waits:
                _observe(self._waits, BUCKETS, seconds)

    def dropped(self):
        """A request abandoned before it was answered (the client went away)."""
        with self._lock:
            self._in_flight -= 1

    def expired(self):
        """A queued request dropped unrun: its deadline passed while it waited."""
        with self._lock:
            self._expired += 1

    def refused(self):
        """A connection refused: ENVREPRO_SERVE_MAX_CONNECTIONS were open."""
        with self._lock:
            self._refused += 1

    def in_flight(self):
        with self._lock:
            return self._in_flight

    def render(self):
        """The exposition text."""
        with self._lock:
            requests = sorted(self._requests.items())
            durations = sorted((k, list(v)) for k, v in self._durations.items())
            in_flight, expired, refused = self._in_flight, self._expired, self._refused
            batches, waits = list(self._batches), list(self._waits)
        out = []

        def family(name, kind, text):
            out.append("# HELP %s %s" % (name, text))
            out.append("# TYPE %s %s" % (name, kind))

        family("envrepro_requests_total", "counter", "HTTP requests answered, by endpoint and status code.")
        for (endpoint, code), n in requests:
            out.append("envrepro_requests_total%s %s" % (_labels([("endpoint", endpoint), ("code", code)]), n))
        family("envrepro_request_duration_seconds", "histogram",
               "Time from reading a request to answering it, by endpoint.")
        for endpoint, hist in durations:
            for bound, n in zip(BUCKETS, hist):
                out.append("envrepro_request_duration_seconds_bucket%s %s"
                           % (_labels([("endpoint", endpoint), ("le", _num(bound))]), n))
            out.append("envrepro_request_duration_seconds_bucket%s %s"
                       % (_labels([("endpoint", endpoint), ("le", "+Inf")]), hist[-1]))
            out.append("envrepro_request_duration_seconds_sum%s %s" % (_labels([("endpoint", endpoint)]), _num(hist[-2])))
            out.append("envrepro_request_duration_seconds_count%s %s" % (_labels([("endpoint", endpoint)]), hist[-1]))
        family("envrepro_requests_in_flight", "gauge", "Requests being handled now.")
        out.append("envrepro_requests_in_flight %s" % in_flight)
        family("envrepro_connections_open", "gauge", "Client connections open now.")
        out.append("envrepro_connections_open %s" % _num(int(self.connections())))
        family("envrepro_connections_refused_total", "counter",
               "Connections refused (503) because ENVREPRO_SERVE_MAX_CONNECTIONS were open.")
        out.append("envrepro_connections_refused_total %s" % refused)
        family("envrepro_queue_depth", "gauge", "Predictions waiting for a worker.")
        out.append("envrepro_queue_depth %s" % _num(int(self.queue_depth())))
        family("envrepro_queue_expired_total", "counter",
               "Queued predictions dropped unrun because their deadline passed.")
        out.append("envrepro_queue_expired_total %s" % expired)
        family("envrepro_batch_size", "histogram",
               "Rows per model call (several requests when batching merges them).")
        _histogram(out, "envrepro_batch_size", BATCH_BUCKETS, batches)
        family("envrepro_queue_wait_seconds", "histogram",
               "Time a prediction waited in the queue (batching's wait included) before its model call.")
        _histogram(out, "envrepro_queue_wait_seconds", BUCKETS, waits)
        family("envrepro_model_ready", "gauge", "1 when the model is loaded, warmed up and served.")
        out.append("envrepro_model_ready %s" % _num(bool(self.ready())))
        family("envrepro_model_load_seconds", "gauge", "Seconds the model took to load and warm up.")
        if self.load_seconds is not None:
            out.append("envrepro_model_load_seconds %s" % _num(self.load_seconds))
        family("envrepro_build_info", "gauge",
               "The reproduced environment: TensorFlow, Keras and Python versions, the capture's lock sha256.")
        out.append("envrepro_build_info%s 1" % _labels(sorted(self.build_info.items())))
        return "\n".join(out) + "\n"
