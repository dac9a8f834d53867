"""The model server's HTTP/1.1 layer: connections (keep-alive, pipelined requests answered in
order) over a bounded pool (listener.py), requests framed strictly (framing.py), the limits
decided before a body is read (by the data plane, app.py), one log line per request, in-flight
accounting for the drain on SIGTERM. Every errors.ServeError raised under it is answered here,
with its status and headers and ``{"error": message}`` (``error_response``).

Each request has one deadline, its first byte + ENVREPRO_SERVE_DEADLINE: the request line, headers
and body must arrive by then (else 408), and the prediction must be done by then (else 504). A body
is read only once its memory is held (limits.py; ``Expect: 100-continue`` is answered then).
Nothing a client sends can raise out of a connection or print a traceback: a failure is answered
500 with one line and logged as one line. Responses are written with one send (status line,
headers and body) and Nagle's algorithm off, within WRITE_TIMEOUT seconds. Standard library only,
Python 3.6 syntax. (This module is the runtime's ``serve.http``; the standard library's ``http``
package is not used.)
"""
from __future__ import absolute_import, division, print_function

import socket
import threading

from ..facts import short_error
from . import config, framing
from .app import json_response
from .errors import MAX_MESSAGE, RETRY_AFTER, InternalError, ServeError
from .listener import Listener
from .queue import clock

IDLE_TIMEOUT = 60      # seconds a keep-alive connection may wait for its next request
WRITE_TIMEOUT = 60     # seconds to send an answer; a client that doesn't read it is dropped
LINGER = 1.0           # seconds spent reading (and dropping) what a refused client still sends
MAX_CONNECTIONS = int(config.SETTINGS["ENVREPRO_SERVE_MAX_CONNECTIONS"])


def error_response(err):
    """The answer to an errors.ServeError: its status and headers, ``{"error": message}`` (cut to
    errors.MAX_MESSAGE characters)."""
    message = err.message if len(err.message) <= MAX_MESSAGE else err.message[:MAX_MESSAGE - 3] + "..."
    return json_response(err.status, {"error": message}, err.headers)


def _printable(text, limit=200):
    text = "".join(c if " " < c < "\x7f" else "?" for c in (text or "-"))
    return text[:limit] + ("..." if len(text) > limit else "")


class Connection(object):
    """One client connection: its requests, one after the other, in the connection's thread."""

    def __init__(self, server, sock, addr):
        self.server, self.sock = server, sock
        self.client = addr[0] if addr else "-"
        self.reader = framing.Reader(sock)
        self.idle_since = clock()    # None while a request is handled
        self._lock = threading.Lock()
        self._evicted = False
        self._linger = False

    def evict(self):
        """Close the connection if it is idle (between requests): True when it was."""
        with self._lock:
            if self.idle_since is None or self._evicted:
                return False
            self._evicted = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)   # wakes the thread waiting in recv
        except OSError:
            pass
        return True

    def run(self):
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while self._next() and self._handle():
                with self._lock:
                    self.idle_since = clock()
            if self._linger:
                self._drop_input()
        except (OSError, ValueError):   # the client reset the connection...
            pass
        except Exception as exc:   # a bug: one line
            self.server.log("connection error from %s: %s" % (self.client, short_error(exc)))
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def _next(self):
        """Wait for the next request's first byte: False to close the connection. (During a drain
        too: a request on an open connection is still answered, with ``Connection: close``.)"""
        got = self.reader.wait(IDLE_TIMEOUT)
        with self._lock:
            if self._evicted or not got:
                return False
            self.idle_since = None
        return True

    def _drop_input(self):
        """After refusing a request whose body (or framing) was left unread: stop sending, then
        read what the client still sends for a moment, so that closing doesn't reset the
        connection before the client has read the answer."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            end = clock() + LINGER
            dropped = 0
            while dropped < (1 << 20) and clock() < end:
                self.sock.settimeout(max(0.01, end - clock()))
                data = self.sock.recv(65536)
                if not data:
                    break
                dropped += len(data)
        except (OSError, ValueError):
            pass

    def _handle(self):
        """Read, answer and log one request; whether the connection stays open."""
        t0 = clock()
        self.server.request_started()
        self.method = self.path = "-"
        self.keep_alive_10 = False
        holds = []
        try:
            route, response, keep = self._exchange(t0, holds)
        except framing.ClientGone:   # gone mid-request: nobody to answer
            self.server.request_done(None, None, 0.0)
            return False
        except Exception as exc:   # a bug: one line, a 500, and the connection closed
            self.server.log("internal error on %s %s: %s" % (_printable(self.method),
                                                             _printable(self.path.split("?")[0]), short_error(exc)))
            route, response, keep = None, error_response(InternalError("internal error: %s" % short_error(exc))), False
        finally:
            for hold in holds:   # the answer is made: a slow reader of it holds no request memory
                hold.release()
        return self._send(route, response, t0, keep)

    def _exchange(self, t0, holds):
        """The request's route, the answer, and whether to keep the connection."""
        server, app = self.server, self.server.app
        deadline = t0 + app.settings["deadline"]
        route = None
        try:
            head = framing.read_head(self.reader, deadline)
            self.method, self.path = head.method, head.target
            route = app.route(head.target)
            length = framing.body_length(head)
        except ServeError as err:   # the framing can't be trusted: answered, then closed
            self._linger = True
            return route, error_response(err), False
        keep = framing.keep_alive(head)
        self.keep_alive_10 = keep and head.version == "HTTP/1.0"
        body = b""
        try:
            app.check(route, head.method, head, length)
            expect = framing.expects_continue(head)
            if route.method == "POST":
                holds.append(app.limits.hold_body(length, deadline))
                if expect and length:
                    try:
                        self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    except (OSError, ValueError):
                        raise framing.ClientGone()
                body = self.reader.read_body(length, deadline) if length else b""
            elif length:   # a body nobody reads: the connection can't be reused
                keep = False
                self._linger = True
        except ServeError as err:
            if length or (length is None and head.method == "POST"):   # a body may follow, unread
                keep = False
                self._linger = True
            return route, error_response(err), keep
        try:
            response = app.answer(route, body, t0, head)
        except ServeError as err:
            response = error_response(err)
        except Exception as exc:   # a bug: one line, never a traceback
            server.log("internal error on %s %s: %s" % (self.method, _printable(self.path.split("?")[0]),
                                                        short_error(exc)))
            response = error_response(InternalError("internal error: %s" % short_error(exc)))
        return route, response, keep

    def _write(self, data):
        self.sock.settimeout(WRITE_TIMEOUT)
        self.sock.sendall(data)

    def _send(self, route, response, t0, keep):
        """Write the answer and log it; whether the connection stays open."""
        keep = keep and not self.server.draining
        head = framing.head_bytes(response.status, response.content_type, len(response.body), response.headers,
                                  close=not keep, keep_alive_10=keep and self.keep_alive_10)
        seconds = clock() - t0
        endpoint = route.endpoint if route is not None else "unknown"
        # Logged before the answer leaves: a client that has its answer finds the line written.
        self.server.log("%s %s %s %d %.1fms" % (self.client, _printable(self.method),
                                                 _printable(self.path.split("?")[0]), response.status,
                                                 seconds * 1e3))
        try:
            self._write(head if self.method == "HEAD" else head + response.body)
        except (OSError, ValueError):
            keep = False
        finally:
            self.server.request_done(endpoint, response.status, seconds)
        return keep


class HTTPServer(object):
    """Listens on ``(host, port)`` and answers with ``app``; ``log(line)`` writes one log line,
    ``metrics`` counts requests; at most ``max_connections`` connections at once."""

    def __init__(self, address, app, metrics, log, max_connections=MAX_CONNECTIONS):
        self.app = app
        self.metrics = metrics
        self.log = log
        self.draining = False
        self._cond = threading.Condition()
        self._in_flight = 0
        self._last_refusal = None
        self.listener = Listener(address, max_connections, lambda sock, addr: Connection(self, sock, addr),
                                 self._refuse)
        self.server_address = self.listener.server_address
        if metrics is not None:
            metrics.connections = self.listener.count

    def start(self):
        """Accept connections in a background thread."""
        self.listener.start()

    def _refuse(self, sock):
        """A connection over the limit: 503 with Retry-After (one send, never waiting), closed."""
        err = ServeError(503, "the server has its maximum of %d connections open "
                              "(ENVREPRO_SERVE_MAX_CONNECTIONS); retry" % self.listener.limit,
                         [("Retry-After", RETRY_AFTER)])
        response = error_response(err)
        try:
            sock.setblocking(False)
            sock.send(framing.head_bytes(503, response.content_type, len(response.body), response.headers,
                                         close=True) + response.body)
            sock.shutdown(socket.SHUT_WR)
            for _ in range(16):   # what already came: closing over unread bytes would reset the answer
                if not sock.recv(65536):
                    break
        except OSError:   # nothing more to read now (or the client is gone)
            pass
        if self.metrics is not None:
            self.metrics.refused()
        now = clock()
        if self._last_refusal is None or now - self._last_refusal > 10:   # one line per 10 s at most
            self._last_refusal = now
            self.log("connection refused: %d connections open (ENVREPRO_SERVE_MAX_CONNECTIONS)"
                     % self.listener.limit)

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
        self.listener.close()

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
