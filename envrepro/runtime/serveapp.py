"""The model server's endpoints: routing, readiness, and the predict path shared by both protocols
(servev1.py: TF Serving REST, servev2.py: Open Inference Protocol), independent of sockets.

``App.check`` decides what can be decided from the request line and headers (404, 405, 411, 413,
415) before any body is read; ``App.answer`` answers a request with its body. Every answer is a
Response; request errors are one-line JSON messages (``{"error": ...}``) that never quote the
request's values. Standard library only, Python 3.6 syntax.
"""
from __future__ import absolute_import, division, print_function

import binascii
import json
import os
import threading

try:
    from urllib.parse import unquote
except ImportError:  # pragma: no cover
    from urllib import unquote

from . import serveconfig, servev1, servev2
from .facts import short_error
from .servemetrics import CONTENT_TYPE as METRICS_TYPE
from .servequeue import DeadlineExceeded, PredictFailed, QueueFull, clock
from .servetensors import InputError, RawJSON

JSON_TYPE = "application/json"
RETRY_AFTER = "1"


class Response(object):
    def __init__(self, status, body=b"", content_type=JSON_TYPE, headers=()):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = list(headers)


def dumps(obj):
    """``json.dumps`` that splices in the text of RawJSON values (numeric outputs written fast)."""
    raws = []
    nonce = binascii.hexlify(os.urandom(8)).decode("ascii")

    def default(value):
        if isinstance(value, RawJSON):
            raws.append(value.text)
            return "\x00%s-%d\x00" % (nonce, len(raws) - 1)
        raise TypeError("%s is not JSON serializable" % type(value).__name__)

    text = json.dumps(obj, separators=(",", ":"), default=default)
    for i, raw in enumerate(raws):
        text = text.replace('"\\u0000%s-%d\\u0000"' % (nonce, i), raw, 1)
    return text


def json_response(status, obj, headers=()):
    return Response(status, dumps(obj).encode("utf-8"), JSON_TYPE, headers)


def error(status, message, headers=()):
    return json_response(status, {"error": message}, headers)


class State(object):
    """Where the server is: ``loading`` (until the model is loaded and warmed up), ``ready``,
    ``failed`` (the load or warm-up failed) or ``draining`` (stopping: SIGTERM). ``servable`` and
    ``queue`` are set once the model is served."""

    def __init__(self):
        self.phase = "loading"
        self.error = ""
        self.servable = None
        self.queue = None
        self._lock = threading.Lock()

    def ready(self):
        return self.phase == "ready"

    def serve(self, servable, queue):
        with self._lock:
            self.servable, self.queue = servable, queue
            if self.phase == "loading":
                self.phase = "ready"

    def fail(self, message):
        with self._lock:
            self.error = message
            if self.phase == "loading":
                self.phase = "failed"

    def drain(self):
        with self._lock:
            self.phase = "draining"


class Route(object):
    """A matched endpoint: its metric label, method, handler and the model name/version asked."""

    def __init__(self, endpoint, method, handler, name=None, version=None):
        self.endpoint, self.method, self.handler = endpoint, method, handler
        self.name, self.version = name, version


def content_type_ok(value):
    """``application/json`` with no charset or a UTF-8 one; a missing header is accepted."""
    if value is None:
        return True
    parts = [p.strip().lower() for p in value.split(";")]
    if parts[0] != JSON_TYPE:
        return False
    for param in parts[1:]:
        key, _, val = param.partition("=")
        if key.strip() == "charset" and val.strip().strip('"') not in ("utf-8", "utf8"):
            return False
    return True


class App(object):
    """The endpoints of one server: ``name`` is the model's NAME in the URLs, ``settings`` has
    ``deadline`` (seconds) and ``max_body`` (bytes), ``version`` is the server's version."""

    def __init__(self, name, settings, metrics, state, version=""):
        self.name = name
        self.settings = settings
        self.metrics = metrics
        self.state = state
        self.version = version

    # -- routing -------------------------------------------------------------------------------

    def route(self, path):
        """The Route for ``path`` (query string ignored), or None."""
        path = path.split("?", 1)[0]
        if len(path) > 1:
            path = path.rstrip("/")
        # the paths probes and Dockerfiles point at come from the one contract (serveconfig)
        fixed = {serveconfig.METRICS_PATH: ("metrics", "GET", self.metrics_page),
                 "/v2": ("v2_server_metadata", "GET", self.server_metadata),
                 serveconfig.LIVE_PATH: ("v2_health_live", "GET", self.live),
                 serveconfig.READY_PATH: ("v2_health_ready", "GET", self.ready)}
        if path in fixed:
            return Route(*fixed[path])
        if path.startswith("/v1/models/"):
            return self._route_v1(path[len("/v1/models/"):])
        if path.startswith("/v2/models/"):
            return self._route_v2(path[len("/v2/models/"):])
        return None

    def _route_v1(self, rest):
        predict = rest.endswith(":predict")
        if predict:
            rest = rest[:-len(":predict")]
        parts = rest.split("/")
        version = None
        if len(parts) >= 3 and parts[1] == "versions":
            version = parts[2]
            parts = [parts[0]] + parts[3:]
        if not parts[0] or ":" in parts[-1]:
            return None
        name = unquote(parts[0])
        if predict and len(parts) == 1:
            return Route("v1_predict", "POST", self.v1_predict, name, version)
        if not predict and len(parts) == 1:
            return Route("v1_status", "GET", self.v1_status, name, version)
        if not predict and parts[1:] == ["metadata"]:
            return Route("v1_metadata", "GET", self.v1_metadata, name, version)
        return None

    def _route_v2(self, rest):
        parts = rest.split("/")
        version = None
        if len(parts) >= 3 and parts[1] == "versions":
            version = parts[2]
            parts = [parts[0]] + parts[3:]
        if not parts[0]:
            return None
        name = unquote(parts[0])
        tail = parts[1:]
        if not tail:
            return Route("v2_model_metadata", "GET", self.model_metadata, name, version)
        if tail == ["ready"]:
            return Route("v2_model_ready", "GET", self.model_ready, name, version)
        if tail == ["infer"]:
            return Route("v2_infer", "POST", self.v2_infer, name, version)
        return None

    def check(self, method, path, headers):
        """``(route, response)``: the route, and an answer when one is due before the body is
        read (404, 405, 411, 413, 415, 400 for a bad Content-Length), else None."""
        route = self.route(path)
        if route is None:
            return None, error(404, "no such endpoint")
        if method != route.method and not (method == "HEAD" and route.method == "GET"):
            return route, error(405, "%s is not allowed here; use %s" % (method, route.method),
                                [("Allow", route.method)])
        if route.name is not None and route.name != self.name:
            return route, error(404, "model not found; this server serves '%s'" % self.name)
        if route.version is not None and route.version != servev1.VERSION:
            return route, error(404, "version not found; '%s' has version %s only"
                                % (self.name, servev1.VERSION))
        if route.method != "POST":
            return route, None
        if (headers.get("Transfer-Encoding") or "").strip():
            return route, error(411, "chunked or other transfer encodings are not supported: "
                                     "send the body with a Content-Length")
        length = headers.get("Content-Length")
        if length is None:
            return route, error(411, "a POST needs a Content-Length")
        try:
            length = int(length.strip())
            if length < 0:
                raise ValueError(length)
        except ValueError:
            return route, error(400, "invalid Content-Length")
        if length > self.settings["max_body"]:
            return route, error(413, "the body is %d bytes, over the limit of %d "
                                     "(ENVREPRO_SERVE_MAX_BODY)" % (length, self.settings["max_body"]))
        if not content_type_ok(headers.get("Content-Type")):
            return route, error(415, "send Content-Type: application/json (UTF-8)")
        return route, None

    def answer(self, route, body, started):
        """The answer to a routed request whose body (bytes, b"" for GET) has been read;
        ``started`` is the clock() time it arrived (the deadline counts from there)."""
        return route.handler(body, started)

    # -- health, metadata, metrics -------------------------------------------------------------

    def live(self, body, started):
        return json_response(200, {"live": True})

    def ready(self, body, started):
        ok = self.state.ready()
        return json_response(200 if ok else 503, {"ready": ok})

    def model_ready(self, body, started):
        ok = self.state.ready()
        return json_response(200 if ok else 503, {"name": self.name, "ready": ok})

    def server_metadata(self, body, started):
        return json_response(200, servev2.server_metadata(self.version))

    def metrics_page(self, body, started):
        return Response(200, self.metrics.render().encode("utf-8"), METRICS_TYPE)

    def v1_status(self, body, started):
        phase = self.state.phase
        if phase == "ready":
            return json_response(200, servev1.status("AVAILABLE"))
        if phase == "failed":
            return json_response(503, servev1.status("END", "UNKNOWN", self.state.error))
        if phase == "draining":
            return json_response(503, servev1.status("UNLOADING", "UNAVAILABLE", "the server is stopping"))
        return json_response(503, servev1.status("LOADING", "UNAVAILABLE", "the model is loading"))

    def _not_served(self):
        """503 while there is no warmed-up model to answer with."""
        if self.state.servable is not None:
            return None
        if self.state.phase == "failed":
            return error(503, "the model failed to load: %s" % self.state.error)
        return error(503, "the model is not ready yet (loading or warming up)",
                     [("Retry-After", RETRY_AFTER)])

    def v1_metadata(self, body, started):
        return self._not_served() or json_response(
            200, servev1.metadata(self.name, self.state.servable.signature))

    def model_metadata(self, body, started):
        return self._not_served() or json_response(
            200, servev2.model_metadata(self.name, self.state.servable.signature))

    # -- predictions ---------------------------------------------------------------------------

    def v1_predict(self, body, started):
        def parse(obj, signature):
            inputs, columnar = servev1.parse_predict(obj, signature)
            return inputs, lambda outputs: servev1.format_predict(outputs, columnar)

        return self._predict(body, started, parse, lambda sig: sig.describe())

    def v2_infer(self, body, started):
        def parse(obj, signature):
            inputs, requested, request_id = servev2.parse_infer(obj, signature)
            return inputs, lambda outputs: servev2.format_infer(self.name, outputs, requested, request_id)

        return self._predict(body, started, parse, servev2.describe)

    def _predict(self, body, started, parse, describe):
        """Parse, queue, wait until the deadline, format: the one predict path."""
        not_served = self._not_served()
        if not_served is not None:
            return not_served
        servable, queue = self.state.servable, self.state.queue
        deadline = started + self.settings["deadline"]
        try:
            obj = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            return error(400, "the body is not UTF-8 JSON (the model's signature: %s)"
                         % describe(servable.signature))
        except ValueError as exc:
            return error(400, "the body is not valid JSON: %s (the model's signature: %s)"
                         % (str(exc).splitlines()[0][:200], describe(servable.signature)))
        try:
            inputs, fmt = parse(obj, servable.signature)
        except InputError as exc:
            return error(400, str(exc))
        if clock() >= deadline:
            return error(504, "the deadline of %gs passed before the prediction was queued"
                         % self.settings["deadline"])
        try:
            outputs = queue.wait(queue.submit(inputs, deadline))
        except QueueFull:
            return error(503, "the server is busy: the queue of %d requests is full" % queue.size,
                         [("Retry-After", RETRY_AFTER)])
        except DeadlineExceeded:
            return error(504, "the prediction did not finish within the deadline of %gs "
                              "(ENVREPRO_SERVE_DEADLINE, queue wait included)" % self.settings["deadline"])
        except PredictFailed as exc:
            return error(500, "the model failed: %s" % short_error(exc.cause))
        try:
            return json_response(200, fmt(outputs))
        except InputError as exc:
            return error(400, str(exc))
