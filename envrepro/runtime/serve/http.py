"""The model server's HTTP/1.1 layer: a threaded server (one thread per connection, keep-alive),
the limits decided before a body is read (by the data plane, app.py), one log line per request,
in-flight accounting for the drain on SIGTERM. Every errors.ServeError raised under it is answered
here, with its status and headers and ``{"error": message}`` (``error_response``).

Python 3.6 has no ``http.server.ThreadingHTTPServer``: ``socketserver.ThreadingMixIn`` over
``HTTPServer`` is the same thing. Nothing a client sends can raise out of a handler or print a
traceback: a failure is answered 500 with one line and logged as one line. Responses are written
with one send (status line, headers and body) and Nagle's algorithm off, so a keep-alive client
never waits on a delayed ACK. Standard library only, Python 3.6 syntax. (``import http.server``
below is the standard library's: this module is ``envrepro_runtime.serve.http``, never top-level.)
"""
from __future__ import absolute_import, division, print_function

import http.server
import socket
import socketserver
import sys
import threading

from ..facts import short_error
from .app import json_response
from .errors import InternalError, ServeError
from .queue import clock

IDLE_TIMEOUT = 60      # seconds a connection may sit between requests or stall mid-read
_PHRASES = dict((s.value, s.phrase) for s in http.server.HTTPStatus)


def error_response(err):
    """The answer to an errors.ServeError: its status and headers, ``{"error": message}``."""
    return json_response(err.status, {"error": err.message}, err.headers)


def _printable(text, limit=200):
    text = "".join(c if " " < c < "\x7f" else "?" for c in (text or "-"))
    return text[:limit] + ("..." if len(text) > limit else "")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "envrepro-serve"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT

    def handle_one_request(self):
        self._t0 = None
        self._answered = False
        try:
            http.server.BaseHTTPRequestHandler.handle_one_request(self)
        finally:
            if self._t0 is not None and not self._answered:   # the client went away mid-request
                self.server.request_done(None, None, 0.0)
                self.close_connection = True

    def parse_request(self):
        self._begin()
        return http.server.BaseHTTPRequestHandler.parse_request(self)

    def _begin(self):
        if self._t0 is None:
            self._t0 = clock()
            self.server.request_started()

    def handle_expect_100(self):
        """``Expect: 100-continue``: refuse before the body is sent when the headers already
        say no (404, 411, 413, 415...)."""
        app = self.server.app
        route = app.route(self.path)
        try:
            app.check(route, self.command, self.headers)
        except ServeError as err:
            self.close_connection = True
            self._send(route, error_response(err))
            return False
        return http.server.BaseHTTPRequestHandler.handle_expect_100(self)

    def _serve(self):
        app = self.server.app
        route = app.route(self.path)
        sent_length = self.headers.get("Content-Length")
        try:
            app.check(route, self.command, self.headers)
        except ServeError as err:
            if self.command == "POST" or (sent_length not in (None, "0")):
                self.close_connection = True   # the body stays unread
            return self._send(route, error_response(err))
        body = b""
        if route.method == "POST":
            length = int(sent_length.strip())
            body = self.rfile.read(length) if length else b""
            if len(body) != length:     # the client closed the connection mid-body
                self.close_connection = True
                return
        elif sent_length not in (None, "0"):
            self.close_connection = True
        try:
            response = app.answer(route, body, self._t0)
        except ServeError as err:
            response = error_response(err)
        except Exception as exc:   # a bug: one line, never a traceback
            self.server.log("internal error on %s %s: %s" % (self.command, _printable(self.path.split("?")[0]),
                                                             short_error(exc)))
            response = error_response(InternalError("internal error: %s" % short_error(exc)))
        self._send(route, response)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    def send_error(self, code, message=None, explain=None):
        """Errors found by http.server itself (bad request line, headers too long, unknown
        method): a JSON answer without the offending text."""
        self._begin()
        self.close_connection = True
        self._send(None, error_response(ServeError(int(code), _PHRASES.get(int(code), "error"))))

    def _send(self, route, response):
        if self.server.draining:
            self.close_connection = True
        body = response.body
        lines = ["%s %d %s" % (self.protocol_version, response.status, _PHRASES.get(response.status, "")),
                 "Server: %s" % self.server_version,
                 "Date: %s" % self.date_time_string(),
                 "Content-Type: %s" % response.content_type,
                 "Content-Length: %d" % len(body)]
        lines.extend("%s: %s" % kv for kv in response.headers)
        if self.close_connection:
            lines.append("Connection: close")
        elif self.request_version == "HTTP/1.0":   # it asked for keep-alive: say it is kept
            lines.append("Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._answered = True
        seconds = clock() - (self._t0 if self._t0 is not None else clock())
        endpoint = route.endpoint if route is not None else "unknown"
        # Logged before the answer leaves: a client that has its answer finds the line written.
        self.server.log("%s %s %s %d %.1fms" % (
            self.client_address[0] if self.client_address else "-", self.command or "-",
            _printable((getattr(self, "path", None) or "-").split("?")[0]), response.status,
            seconds * 1e3))
        try:
            self.wfile.write(head if self.command == "HEAD" else head + body)
        finally:
            self.server.request_done(endpoint, response.status, seconds)

    def log_message(self, format, *args):   # http.server's own lines: ours replace them
        pass


class HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """Listens on ``(host, port)`` (IPv6 when the host has a colon) and answers with ``app``;
    ``log(line)`` writes one log line, ``metrics`` counts requests."""

    # Connection threads are daemons, never joined on server_close: an idle keep-alive
    # connection doesn't hold up the drain, which waits for requests in flight only.
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, app, metrics, log):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        self.metrics = metrics
        self.log = log
        self.draining = False
        self._cond = threading.Condition()
        self._in_flight = 0
        self._thread = None
        http.server.HTTPServer.__init__(self, address, Handler)

    def server_bind(self):
        # HTTPServer.server_bind looks the host name up (getfqdn): slow without a network.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def start(self):
        """Accept connections in a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="envrepro-http")
        self._thread.daemon = True
        self._thread.start()

    def request_started(self):
        with self._cond:
            self._in_flight += 1
        self.metrics.started()

    def request_done(self, endpoint, status, seconds):
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()
        if endpoint is None:
            self.metrics.dropped()
        else:
            self.metrics.finished(endpoint, status, seconds)

    def in_flight(self):
        with self._cond:
            return self._in_flight

    def stop_accepting(self):
        """Answer what is in flight (each answer closes its connection) but accept nothing new:
        the listening socket is closed."""
        self.draining = True
        if self._thread is not None:
            self.shutdown()
        self.server_close()

    def wait_idle(self, timeout, abort=None):
        """Wait until no request is in flight (True) or ``timeout`` seconds pass or ``abort()``
        says stop (False)."""
        end = clock() + timeout
        with self._cond:
            while self._in_flight > 0:
                left = end - clock()
                if left <= 0 or (abort is not None and abort()):
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def handle_error(self, request, client_address):
        """An exception out of a connection's thread (the peer reset it...): one line."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout)):
            return
        self.log("connection error from %s: %s" % (client_address[0] if client_address else "-",
                                                   short_error(exc)))
