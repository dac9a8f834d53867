"""The model server's HTTP/1.1 layer: connections (keep-alive, pipelined requests answered in
order), each request gathered whole by the listener's gate before a handler thread answers it
(listener.py: a slow client holds no thread), requests framed strictly (framing.py), the limits
decided before a body is read (by the data plane, app.py), one log line per request, in-flight
accounting for the drain on SIGTERM. Every errors.ServeError raised under it is answered here,
with its status and headers and ``{"error": message}`` (``error_response``).

Each request has one deadline, its first byte + ENVREPRO_SERVE_DEADLINE: the request line, headers
and body must arrive by then (else 408), and the prediction must be done by then (else 504). A body
is read only once its memory is held (limits.py; ``Expect: 100-continue`` is answered then).
Nothing a client sends can raise out of a connection or print a traceback: a failure is answered
500 with one line and logged as one line. Responses are written with one send (status line,
headers and body), Nagle's algorithm off; what the socket doesn't take at once, the gate writes
(within listener.WRITE_SECONDS). Standard library only,
Python 3.6 syntax. (This module is the runtime's ``serve.http``; the standard library's ``http``
package is not used.)
"""
from __future__ import absolute_import, division, print_function

import socket
import threading

from ..facts import short_error
from . import config, framing
from .app import json_response
from .errors import MAX_MESSAGE, RETRY_AFTER, InternalError, RequestTimeout, ServeError, Unavailable
from .limits import body_busy
from .handlers import CLOSE, KEEP, LINGER, MORE, READY, WAIT, WRITE
from .listener import Listener
from .queue import clock

IDLE_TIMEOUT = 60      # seconds a keep-alive connection may wait for its next request
PIPELINED_TURN = 8     # pipelined requests a handler answers in a row before others get a turn
SLOW_HOLD = 1 << 20    # bytes of body memory from which a body must keep pace with its deadline
SLOW_GRACE = 2.0       # seconds a held body has before its pace is judged
MAX_CONNECTIONS = int(config.SETTINGS["ENVREPRO_SERVE_MAX_CONNECTIONS"])


def error_response(err):
    """The answer to an errors.ServeError: its status and headers, ``{"error": message}`` (cut to
    errors.MAX_MESSAGE characters)."""
    message = err.message if len(err.message) <= MAX_MESSAGE else err.message[:MAX_MESSAGE - 3] + "..."
    return json_response(err.status, {"error": message}, err.headers)


def _printable(text, limit=200):
    text = "".join(c if " " < c < "\x7f" else "?" for c in (text or "-"))
    return text[:limit] + ("..." if len(text) > limit else "")


class Request(object):
    """What the gate learned of a request from its head: ``head``, ``route``, ``length`` (of the
    body), ``keep`` (the connection), ``error`` (a ServeError to answer instead), ``linger`` (a body
    may follow, unread), ``expect`` (100-continue), ``hold`` (its body's memory, once held)."""

    def __init__(self, head=None, error=None):
        self.head, self.error = head, error
        self.route = self.length = self.hold = self.held_at = None
        self.keep = self.expect = False
        self.linger = error is not None

    def refuse(self, err):
        self.error, self.keep = err, False
        self.linger = True

    def body_wanted(self):
        return self.error is None and self.route.method == "POST" and bool(self.length)


class Connection(object):
    """One client connection (the listener's: see listener.py). Its requests are gathered by the
    listener's gate (``feed``) and answered by a handler thread (``serve``), one after the other."""

    def __init__(self, server, sock, addr):
        self.server, self.sock = server, sock
        self.client = addr[0] if addr else "-"
        self.reader = framing.Reader(sock)
        self._linger = self._abandoned = False
        self.out, self.after = b"", CLOSE   # an answer's unsent rest, and what follows it (WRITE)
        self._idle()

    def _idle(self):
        self.idle_since = clock()
        self.deadline = self.idle_since + IDLE_TIMEOUT
        self.t0 = self.req = None
        self._searched = 0

    def _begin(self):
        """A request's first byte is here: its deadline starts (and it is in flight)."""
        self.t0 = clock()
        self.idle_since = None
        self.deadline = self.t0 + self.server.app.settings["deadline"]
        self.method = self.path = "-"
        self.keep_alive_10 = False
        self.server.request_started()

    def feed(self, data):
        """Bytes received (b"": ask again): MORE, WAIT or READY (listener.py)."""
        if data:
            if self.t0 is None:
                self._begin()
            self.reader.buf += data
        elif self.t0 is None:
            if not self.reader.buf:
                return MORE
            self._begin()
        try:
            return self._gather()
        except Exception as exc:   # a bug: answered 500 with one line, never the gate's end
            self.server.log("internal error reading a request from %s: %s" % (self.client, short_error(exc)))
            self.req = Request(error=InternalError("internal error: %s" % short_error(exc)))
            return READY

    def _gather(self):
        buf = self.reader.buf
        if self.req is None:
            try:
                got = framing.parse_head(buf, self._searched)
            except ServeError as err:
                self.req = Request(error=err)
                return READY
            if got is None:
                self._searched = len(buf)
                return MORE
            head, size = got
            del buf[:size]
            self.req = self._examine(head)
        req = self.req
        if not req.body_wanted():
            return READY
        if req.hold is None:
            try:
                req.hold = self.server.app.limits.try_hold_body(req.length)
            except ServeError as err:
                req.refuse(err)
                return READY
            if req.hold is None:
                return WAIT
            req.held_at = clock()
            if req.expect:
                try:
                    self.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                except OSError:   # the client sends its body after its own wait anyway
                    pass
        return READY if len(buf) >= req.length else MORE

    def _examine(self, head):
        """The Request of ``head``: its route, length and the refusals due before its body."""
        app = self.server.app
        req = Request(head)
        self.method, self.path = head.method, head.target
        try:
            req.route = app.route(head.target)
            req.length = framing.body_length(head)
        except ServeError as err:   # the framing can't be trusted: answered, then closed
            req.refuse(err)
            return req
        req.keep = framing.keep_alive(head)
        self.keep_alive_10 = req.keep and head.version == "HTTP/1.0"
        try:
            app.check(req.route, head.method, head, req.length)
            req.expect = framing.expects_continue(head)
            if req.route.method != "POST" and req.length:   # a body nobody reads: not reused
                req.keep, req.linger = False, True
        except ServeError as err:
            req.error = err
            if req.length or (req.length is None and head.method == "POST"):   # a body may follow, unread
                req.keep, req.linger = False, True
        return req

    def stalled(self, since):
        """Whether the request began before ``since`` and its head is not whole yet."""
        return self.t0 is not None and self.t0 < since and self.req is None

    def too_slow(self, now, contended=False):
        """Whether its body holds SLOW_HOLD bytes or more of the request memory (any amount when
        ``contended``: other bodies wait for memory) and, at the rate it has come since it was held
        (SLOW_GRACE seconds at least), would not be whole within twice the time left to its
        deadline: it would end in 408, holding memory others wait for."""
        req = self.req
        if req is None or req.hold is None or now - req.held_at < SLOW_GRACE:
            return False
        if req.length < SLOW_HOLD and not contended:
            return False
        got = len(self.reader.buf)
        rate = got / (now - req.held_at)
        return req.length - got > rate * 2 * max(0.0, self.deadline - now)

    def expire(self, stopping=False):
        """Past the request's deadline before it was whole, or its body too slow (too_slow): 408
        (503 when its body's memory never was free); ``stopping``: 503, the server is stopping."""
        req = self.req
        if stopping:
            self.req = Request(error=Unavailable("the server is stopping", [("Retry-After", RETRY_AFTER)]))
        elif req is not None and req.error is None and req.hold is not None and clock() < self.deadline:
            req.refuse(RequestTimeout("the body is arriving too slowly to be whole within the request's deadline "
                                      "(ENVREPRO_SERVE_DEADLINE); its memory is given to others"))
        elif req is None:
            self.req = Request(error=framing.timeout_error())
        elif req.body_wanted() and req.hold is None:
            req.refuse(body_busy())
        elif req.error is None:
            req.refuse(framing.timeout_error())

    def gone(self):
        """The client left before its request was whole."""
        if self.req is not None and self.req.hold is not None:
            self.req.hold.release()
        self.server.request_done(None, None, 0.0)

    def serve(self, turns=PIPELINED_TURN):
        """Answer the request (and up to ``turns`` - 1 whole ones pipelined behind it): KEEP,
        READY (another is whole: back in line for a handler), WAIT, WRITE (the answer's rest is
        the gate's to write, then ``after``), LINGER or CLOSE (listener.py)."""
        for _ in range(max(1, turns)):
            try:
                keep = self._handle()
            except (OSError, ValueError):   # the client reset the connection...
                keep, self.out = False, b""
            except Exception as exc:   # a bug: one line
                self.server.log("connection error from %s: %s" % (self.client, short_error(exc)))
                keep, self.out = False, b""
            after = (LINGER if self._linger else CLOSE) if not keep else KEEP
            if self.out:   # the client reads slowly: the gate writes the rest, no handler waits
                self.after = after
                return WRITE
            if after != KEEP:
                return after
            state = self.resume()
            if state != READY:
                return state
        return READY

    def resume(self):
        """After an answer, on a kept connection: the next request's state (MORE: wait for it)."""
        self._idle()
        state = self.feed(b"")
        return KEEP if state == MORE else state

    def abandon(self):
        """The connection is dropped mid-request (a bug, no thread, no selector): its memory and
        its place in flight are given back, once."""
        if self.t0 is not None and not self._abandoned:
            self._abandoned = True
            self.gone()

    def _handle(self):
        """Answer and log one request; whether the connection stays open."""
        t0, req = self.t0, self.req
        self.out = b""
        self.t0 = None   # from here on, the request is answered (or dropped) once: abandon() leaves it
        holds = [req.hold] if req.hold is not None else []
        try:
            response, keep = self._exchange(t0, req, holds)
        except framing.ClientGone:   # gone mid-request: nobody to answer
            self.server.request_done(None, None, 0.0)
            return False
        except Exception as exc:   # a bug: one line, a 500, and the connection closed
            self.server.log("internal error on %s %s: %s" % (_printable(self.method),
                                                             _printable(self.path.split("?")[0]), short_error(exc)))
            response, keep = error_response(InternalError("internal error: %s" % short_error(exc))), False
        finally:
            for hold in holds:   # the answer is made: a slow reader of it holds no request memory
                hold.release()
        return self._send(req.route, response, t0, keep)

    def _exchange(self, t0, req, holds):
        """The answer, and whether to keep the connection."""
        app = self.server.app
        self._linger = req.linger   # a body left unread (an error, or a GET with one)
        if req.error is not None:
            return error_response(req.error), req.keep
        body = b""
        if req.body_wanted():
            deadline = t0 + app.settings["deadline"]
            if req.hold is None:
                holds.append(app.limits.hold_body(req.length, deadline))
            body = self.reader.take(req.length, deadline)
        try:
            response = app.answer(req.route, body, t0, req.head)
        except ServeError as err:
            response = error_response(err)
        except Exception as exc:   # a bug: one line, never a traceback
            self.server.log("internal error on %s %s: %s" % (self.method, _printable(self.path.split("?")[0]),
                                                             short_error(exc)))
            response = error_response(InternalError("internal error: %s" % short_error(exc)))
        return response, req.keep

    def _write(self, data):
        """Send what the socket takes now, without waiting: the rest (b"" when all went) is kept
        in ``out`` for the gate to write. OSError when the client is gone."""
        self.sock.setblocking(False)
        view, sent = memoryview(data), 0
        try:
            while sent < len(data):
                try:
                    sent += self.sock.send(view[sent:])
                except (BlockingIOError, InterruptedError):
                    break
        finally:
            view.release()
        self.out = data[sent:] if sent < len(data) else b""

    def _send(self, route, response, t0, keep):
        """Write the answer (what the client takes now: the gate writes the rest) and log it;
        whether the connection stays open."""
        seconds, endpoint, status = clock() - t0, "unknown", 500
        try:
            keep = keep and not self.server.draining
            status = response.status
            endpoint = route.endpoint if route is not None else "unknown"
            head = framing.head_bytes(status, response.content_type, len(response.body), response.headers,
                                      close=not keep, keep_alive_10=keep and self.keep_alive_10)
            # Logged before the answer leaves: a client that has its answer finds the line written.
            self.server.log("%s %s %s %d %.1fms" % (self.client, _printable(self.method),
                                                     _printable(self.path.split("?")[0]), status, seconds * 1e3))
            try:
                self._write(head if self.method == "HEAD" else head + response.body)
            except (OSError, ValueError):
                keep, self.out = False, b""
        finally:
            self.server.request_done(endpoint, status, seconds)
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
            while self._in_flight > 0 or self.listener.writing():   # answers the gate still writes too
                left = end - clock()
                if left <= 0 or (abort is not None and abort()):
                    return False
                self._cond.wait(min(left, 0.1))
        return True
