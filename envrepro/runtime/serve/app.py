"""The model server's data plane: readiness, routing to the protocols, the limits decided before a
body is read, and the one predict path both protocols share; independent of sockets and of either
protocol's JSON (v1.py: TF Serving REST, v2.py: Open Inference Protocol, adapters over this).

``App.route`` finds a path's endpoint (the contract's fixed paths here, the others through the
protocols' ``route``); ``App.check`` refuses what the request line and headers already rule out
(404, 405, 411, 413, 415) before any body is read (the framing itself is framing.py's);
``App.answer`` answers a request with its body; ``App.limits`` (limits.py) holds the memory of
bodies and parses and bounds the JSON. A refusal is an errors.ServeError, raised here and by the
protocols and written by the HTTP layer (http.py); messages are one line and never quote the
request's values. An answer is a Response: a handler returns one, or ``(status, JSON object)``.
Standard library only, Python 3.6 syntax.
"""
from __future__ import absolute_import, division, print_function

import binascii
import functools
import json
import os
import threading

from . import binary, config, v1, v2
from .errors import (LengthRequired, MethodNotAllowed, NotFound, NotReady, PayloadTooLarge, Unavailable,
                     UnsupportedMediaType)
from .limits import Limits, tensor_bytes
from .metrics import CONTENT_TYPE as METRICS_TYPE
from .queue import DeadlineExceeded, clock
from .tensors import RawJSON

JSON_TYPE = "application/json"
# The Open Inference Protocol's binary tensor data extension (binary.py): a JSON header of this many
# bytes, then raw tensor data; V2 infer only (415 elsewhere).
BINARY_HEADER = binary.HEADER
# The protocol adapters: ``route(path)`` -> (endpoint, method, handler(app, body, started), model
# name, version), or None.
PROTOCOLS = (v1, v2)


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


class State(object):
    """Where the server is: ``loading`` (until the model is loaded and warmed up), ``ready``,
    ``failed`` (the load or warm-up failed, or a prediction worker died) or ``draining``
    (stopping: SIGTERM). ``servable`` and
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

    def broken(self, message):
        """A prediction worker died: readiness off for good (the server exits)."""
        with self._lock:
            self.error = message
            self.phase = "failed"

    def drain(self):
        with self._lock:
            if self.phase != "failed":
                self.phase = "draining"


class Route(object):
    """A matched endpoint: its metric label, method, ``handler(body, started)`` and the model
    name/version asked."""

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
    """The data plane of one server: ``name`` is the model's NAME in the URLs, ``settings`` has
    ``deadline`` (seconds) and ``max_body`` (bytes), and optionally what limits.Limits takes
    (``max_elements``, ``max_batch``, ``memory``); ``version`` is the server's version."""

    def __init__(self, name, settings, metrics, state, version=""):
        self.name = name
        self.settings = settings
        self.metrics = metrics
        self.state = state
        self.version = version
        self.limits = Limits(settings)

    # -- routing -------------------------------------------------------------------------------

    def route(self, path):
        """The Route for ``path`` (query string ignored), or None."""
        path = path.split("?", 1)[0]
        if len(path) > 1:
            path = path.rstrip("/")
        # the paths probes and Dockerfiles point at come from the one contract (config), whatever
        # the protocol; their metric labels are the Open Inference Protocol's names
        fixed = {config.METRICS_PATH: ("metrics", "GET", self.metrics_page),
                 config.LIVE_PATH: ("v2_health_live", "GET", self.live),
                 config.READY_PATH: ("v2_health_ready", "GET", self.ready)}
        if path in fixed:
            return Route(*fixed[path])
        for protocol in PROTOCOLS:
            found = protocol.route(path)
            if found is not None:
                endpoint, method, handler, name, version = found
                return Route(endpoint, method, functools.partial(handler, self), name, version)
        return None

    def check(self, route, method, headers, length=None):
        """Raise the errors.ServeError due before the body is read, if any: ``route`` is
        ``route(path)``'s answer (None: 404), then the method (405), the model and version asked
        (404) and, for a POST, its ``length`` (framing.body_length: None is 411; over
        ENVREPRO_SERVE_MAX_BODY 413) and type (415; the binary tensor extension too).
        ``headers`` has ``get(name)`` (case-insensitive)."""
        if route is None:
            raise NotFound("no such endpoint")
        if method != route.method and not (method == "HEAD" and route.method == "GET"):
            raise MethodNotAllowed(method, route.method)
        if route.name is not None and route.name != self.name:
            raise NotFound("model not found; this server serves '%s'" % self.name)
        if route.version is not None and route.version != config.MODEL_VERSION:
            raise NotFound("version not found; '%s' has version %s only" % (self.name, config.MODEL_VERSION))
        if route.method != "POST":
            return
        if length is None:
            raise LengthRequired("a POST needs a Content-Length")
        if length > self.settings["max_body"]:
            raise PayloadTooLarge("the body is %d bytes, over the limit of %d (ENVREPRO_SERVE_MAX_BODY)"
                                  % (length, self.settings["max_body"]))
        if headers.get(BINARY_HEADER) is not None:
            if route.endpoint != "v2_infer":
                raise UnsupportedMediaType("the binary tensor data extension (%s) is for V2 infer "
                                           "only: send the tensors as JSON" % BINARY_HEADER)
            binary.header_length(headers.get(BINARY_HEADER), length)   # 400 unless it fits
        elif not content_type_ok(headers.get("Content-Type")):
            raise UnsupportedMediaType("send Content-Type: application/json (UTF-8)")

    def answer(self, route, body, started, headers=None):
        """The answer (a Response) to a routed request whose body (bytes, b"" for GET) has been
        read; ``started`` is the clock() time it arrived (the deadline counts from there);
        ``headers`` (``get(name)``) the request's, checked by ``check``. Raises
        errors.ServeError."""
        value = headers.get(BINARY_HEADER) if headers is not None else None
        if value is not None:   # V2 infer only (check)
            result = route.handler(body, started, binary.header_length(value, len(body)))
        else:
            result = route.handler(body, started)
        if isinstance(result, binary.BinaryAnswer):
            header = dumps(result.obj).encode("utf-8")
            return Response(200, b"".join([header] + result.chunks), binary.CONTENT_TYPE,
                            [(BINARY_HEADER, str(len(header)))])
        return result if isinstance(result, Response) else json_response(*result)

    # -- health, metrics -----------------------------------------------------------------------

    def live(self, body, started):
        return 200, {"live": True}

    def ready(self, body, started):
        ok = self.state.ready()
        return (200 if ok else 503), {"ready": ok}

    def metrics_page(self, body, started):
        return Response(200, self.metrics.render().encode("utf-8"), METRICS_TYPE)

    # -- what the protocols ask of the model ----------------------------------------------------

    def servable(self):
        """The warmed-up servable (model.Servable); Unavailable once it failed to load, NotReady
        (Retry-After) while it loads or warms up."""
        servable = self.state.servable
        if self.state.phase == "failed":
            if servable is not None:
                raise Unavailable("the server is stopping: %s" % self.state.error)
            raise Unavailable("the model failed to load: %s" % self.state.error)
        if servable is not None:
            return servable
        raise NotReady("the model is not ready yet (loading or warming up)")

    def predict(self, body, started, parse, describe, extra=None):
        """The one predict path: the request's ``body`` scanned and decoded as JSON under the
        limits (limits.py), ``parse(obj, signature)`` (the protocol's) -> ``(inputs, format)``,
        the batch checked, the prediction queued and waited for until the deadline (counted from
        ``started``), and ``format(outputs)`` returned. ``describe(signature)`` is how the
        protocol writes the signature in a message; ``extra(obj)``, the bytes the inputs will
        take beyond what the JSON's scan counts (binary data), reserved before they are made."""
        servable = self.servable()
        queue = self.state.queue
        seconds = self.settings["deadline"]
        deadline = started + seconds
        hint = " (the model's signature: %s)" % describe(servable.signature)
        obj, hold, found = self.limits.parse(body, deadline, hint)
        try:
            more = extra(obj) if extra is not None else 0
            if more:
                self.limits.grow(hold, hold.size + more, deadline)
            inputs, fmt = parse(obj, servable.signature)
            del obj    # the inputs are made: the parsed JSON goes
            self.limits.check_batch(inputs, servable.signature)
            hold.shrink(tensor_bytes(inputs, found) + more)
            if clock() >= deadline:
                raise DeadlineExceeded("the deadline of %gs passed before the prediction was queued" % seconds)
            try:
                outputs = queue.wait(queue.submit(inputs, deadline))   # QueueFull, PredictFailed: as raised
            except DeadlineExceeded:
                raise DeadlineExceeded("the prediction did not finish within the deadline of %gs "
                                       "(ENVREPRO_SERVE_DEADLINE, queue wait included)" % seconds)
        finally:
            hold.release()
        return fmt(outputs)
