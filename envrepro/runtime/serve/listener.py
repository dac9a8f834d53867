"""The model server's listening socket and its connections: one thread (the gate) reads every
connection until its request is whole, and a bounded pool of handler threads answers whole
requests.

A connection costs no thread while it is idle or while its request arrives, however slowly: the
gate accepts, reads (``selectors``, non-blocking) and enforces the deadlines: a request's from its
first byte (408), an idle keep-alive connection's (closed). A request whose line, headers and
body are all in (or that is already refused by its head, or past its deadline) goes to the
handlers (handlers.py: at most MAX_HANDLERS threads, in the order requests became whole); the
answer written, a kept-alive connection comes back to the gate. So 300 clients sending a byte every
few seconds cost 300 sockets and their buffered heads, not 300 threads, and the clients whose
requests arrive get the handlers.

At most ``limit`` connections are open (ENVREPRO_SERVE_MAX_CONNECTIONS): one more first makes room
by closing the connection idle longest (between requests, or connected without a byte, for MIN_IDLE
seconds at least: closing it loses nothing, HTTP clients reopen); when none is idle, it gets
``503`` with ``Retry-After`` and is closed. Standard library only, Python 3.6 syntax.

A connection (``connect(sock, addr)``, http.Connection) has ``sock``; ``idle_since`` (a clock()
time while it waits for a request's first byte, else None); ``deadline`` (its request's, or its
idle timeout); ``feed(data)`` -> MORE, WAIT (its body's memory is not free: not read until it is,
asked again every TICK) or READY; ``too_slow(now, contended)``; ``expire(stopping=False)`` (it
will answer 408, or 503); ``stalled(since)``; ``gone()`` and ``abandon()`` (dropped mid-request);
``serve()`` (in a handler) -> KEEP, READY, WAIT, WRITE (the gate writes ``out``, then ``after``),
LINGER (what the client still sends is read and dropped for LINGER_SECONDS, so that closing
doesn't reset the answer) or CLOSE; ``resume()`` after a written answer.
"""
from __future__ import absolute_import, division, print_function

import collections
import errno
import selectors
import socket
import threading

from .limits import raise_descriptor_limit
from .queue import clock

from .handlers import KEEP, LINGER, MAX_HANDLERS, MORE, READY, WAIT, WRITE, HandlerPool

MIN_IDLE = 0.2       # seconds a connection must have been idle to be closed for a new one
STALLED = 1.0        # seconds since a request's first byte, its head not whole, when the drain starts: 503
TICK = 0.05          # seconds between the gate's checks of deadlines and waiting bodies
LINGER_SECONDS = 1.0
LINGER_BYTES = 1 << 20
BACKLOG = 1024
_RECV = 65536
_ACCEPTS = 64        # connections accepted per wake-up at most
ACCEPT_PAUSE = 0.1   # seconds accepting pauses when the process is out of descriptors
WRITE_SECONDS = 60   # seconds the gate writes an answer's rest for; a client that doesn't read it is dropped
class Listener(object):
    """Listens on ``address`` (IPv6 when the host has a colon); ``connect(sock, addr)`` makes each
    accepted connection's object (see the module's docstring); ``reject(sock)`` answers one over
    ``limit`` before it is closed."""

    def __init__(self, address, limit, connect, reject, handlers=MAX_HANDLERS):
        host, port = address
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(BACKLOG)
            self.socket.setblocking(False)
        except BaseException:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self.limit = raise_descriptor_limit(max(1, int(limit)))
        self.connect = connect
        self.reject = reject
        self._lock = threading.Lock()
        self._open = set()                      # every connection, wherever it is
        self.handlers = HandlerPool(handlers, self._handed_back, lambda: self._closed)
        self._back = collections.deque()        # (connection, KEEP/LINGER/CLOSE) from the handlers
        self._closed = False
        self._listening = threading.Event()
        self._thread = None
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        self._sel.register(self.socket, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._reading = {}                      # connection -> True while the gate reads it
        self._waiting = collections.OrderedDict()   # connections whose body waits for memory, oldest first
        self._lingering = {}                    # socket -> (end, bytes dropped)
        self._writing = {}                      # connection -> when its answer's rest is given up
        self._accept_paused = None              # clock() time accepting resumes (out of descriptors)

    def start(self):
        """Run the gate in a background thread."""
        self._thread = threading.Thread(target=self._gate, name="envrepro-gate")
        self._thread.daemon = True
        self._thread.start()

    def count(self):
        """Connections open now."""
        with self._lock:
            return len(self._open)

    def writing(self):
        """Answers whose rest the gate is writing now."""
        return len(self._writing)

    def close(self):
        """Accept nothing more: the listening socket is closed. Open connections stay: a request
        on one is still read and answered (and closes it), but one whose head has been arriving
        for STALLED seconds is answered 503 at once (the drain would wait for it)."""
        self._closed = True
        self._wake()
        if self._thread is not None and self._thread.is_alive():
            self._listening.wait(1.0)
        else:
            self.socket.close()

    # -- the gate ------------------------------------------------------------------------------

    def _wake(self):
        try:
            self._wake_w.send(b"x")
        except OSError:   # full (a wake-up is pending anyway) or closing
            pass

    def _gate(self):
        next_tick = clock() + TICK
        while True:
            try:
                events = self._sel.select(max(0.0, min(TICK, next_tick - clock())))
            except (OSError, ValueError):   # a socket closed under it
                events = []
            for key, _ in events:
                try:
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    elif key.data == "linger":
                        self._linger_read(key.fileobj)
                    elif isinstance(key.data, tuple):
                        self._write_more(key.data[1])
                    else:
                        self._read(key.data)
                except Exception:   # a bug: that connection goes, the gate stays
                    conn = key.data[1] if isinstance(key.data, tuple) else key.data
                    if conn not in ("accept", "wake", "linger"):
                        conn.abandon()
                        self._close(conn)
            try:
                self._take_back()
                if self._closed and not self._listening.is_set():
                    self._stop_listening()
                if clock() >= next_tick:
                    next_tick = clock() + TICK
                    self._sweep()
            except Exception:   # a bug: the next round tries again; the gate never ends
                next_tick = clock() + TICK

    def _drain_wake(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _stop_listening(self):
        try:
            self._sel.unregister(self.socket)
        except (KeyError, ValueError):
            pass
        self.socket.close()
        stalled = clock() - STALLED
        for conn in [c for c in self._reading if c.stalled(stalled)]:   # not worth the drain's wait
            self._unwatch(conn)
            conn.expire(stopping=True)
            self._hand_over(conn)
        self._listening.set()

    def _accept(self):
        for _ in range(_ACCEPTS):
            if self._closed:
                return
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:   # out of descriptors for a moment, or a client gone already
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting()
                    return
                continue
            self._admit(sock, addr)

    def _pause_accepting(self):
        """Out of descriptors: stop watching the listening socket for ACCEPT_PAUSE seconds (it
        stays readable: watched, the gate would spin); clients wait in the backlog meanwhile."""
        try:
            self._sel.unregister(self.socket)
        except (KeyError, ValueError):
            pass
        self._accept_paused = clock() + ACCEPT_PAUSE

    def _resume_accepting(self):
        self._accept_paused = None
        if not self._closed:
            try:
                self._sel.register(self.socket, selectors.EVENT_READ, "accept")
            except (KeyError, ValueError, OSError):
                pass

    def _admit(self, sock, addr):
        if len(self._open) + len(self._lingering) >= self.limit and not self._evict_one():
            self._refuse(sock)
            return
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        conn = self.connect(sock, addr)
        with self._lock:
            self._open.add(conn)
        self._watch(conn)

    def _refuse(self, sock):
        try:
            self.reject(sock)
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _evict_one(self):
        """Close the connection idle longest, if any has been for MIN_IDLE seconds: one accepted
        a moment ago has its request on the way."""
        since = clock() - MIN_IDLE
        idle = [c for c in self._reading if c.idle_since is not None and c.idle_since <= since]
        if not idle:
            return False
        self._close(min(idle, key=lambda c: c.idle_since))
        return True

    def _watch(self, conn):
        """The gate reads ``conn`` (waiting for a request, or the rest of one)."""
        try:
            conn.sock.setblocking(False)   # a handler wrote with a timeout
            self._sel.register(conn.sock, selectors.EVENT_READ, conn)
        except (KeyError, ValueError, OSError):
            conn.abandon()
            self._close(conn)
            return
        self._reading[conn] = True

    def _unwatch(self, conn):
        if self._reading.pop(conn, None):
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass

    def _read(self, conn):
        try:
            data = conn.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, ValueError):
            data = b""
        if not data:   # closed or reset by the client (mid-request: given back)
            conn.abandon()
            self._close(conn)
            return
        state = conn.feed(data)
        if state != MORE:
            self._unwatch(conn)
            self._after(conn, state)

    def _sweep(self):
        """Deadlines: a request past its own (or a body too slow for it) is answered (408 or
        503); an idle connection past its idle timeout, or an answer's rest past WRITE_SECONDS,
        closed. Bodies waiting for memory asked again, oldest first; lingering sockets closed."""
        now = clock()
        if self._accept_paused is not None and now >= self._accept_paused:
            self._resume_accepting()
        for conn in list(self._waiting):
            self._guarded(self._retry_waiting, conn, now)
        contended = bool(self._waiting)
        for conn in [c for c in self._reading if now >= c.deadline or c.too_slow(now, contended)]:
            self._guarded(self._expire, conn)
        for conn in [c for c, end in self._writing.items() if now >= end]:
            self._guarded(self._close, conn)
        for sock, (end, _) in list(self._lingering.items()):
            if now >= end:
                self._end_linger(sock)

    def _guarded(self, step, conn, *args):
        try:
            step(conn, *args)
        except Exception:   # a bug: that connection goes, the sweep goes on
            conn.abandon()
            self._close(conn)

    def _retry_waiting(self, conn, now):
        state = conn.feed(b"")
        if state == WAIT and now >= conn.deadline:
            conn.expire()
            state = READY
        if state != WAIT:
            self._waiting.pop(conn, None)
            self._after(conn, KEEP if state == MORE else state)

    def _expire(self, conn):
        if conn.idle_since is not None:
            self._close(conn)
        else:
            self._unwatch(conn)
            conn.expire()
            self._hand_over(conn)

    def _close(self, conn):
        self._unwatch(conn)
        self._waiting.pop(conn, None)
        if self._writing.pop(conn, None) is not None:
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        try:
            conn.sock.close()
        except OSError:
            pass
        with self._lock:
            self._open.discard(conn)

    # -- after an answer -----------------------------------------------------------------------

    def _take_back(self):
        while True:
            try:
                conn, how = self._back.popleft()
            except IndexError:
                return
            try:
                conn.sock.setblocking(False)   # a handler may have read with a timeout
            except OSError:
                pass
            self._guarded(self._after, conn, how)

    def _after(self, conn, how):
        """Where a connection goes in state ``how``: after a handler, a read, a retry for memory or
        the gate's write of an answer's rest."""
        if how == KEEP:
            self._watch(conn)
        elif how == WAIT:
            self._waiting[conn] = True
        elif how == READY:
            self._hand_over(conn)
        elif how == WRITE:
            self._sel.register(conn.sock, selectors.EVENT_WRITE, ("write", conn))
            self._writing[conn] = clock() + WRITE_SECONDS
        elif how == LINGER:
            self._start_linger(conn)
        else:
            self._close(conn)

    def _write_more(self, conn):
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, ValueError):   # the client is gone
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if conn.out:
            return
        self._writing.pop(conn, None)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        self._after(conn, conn.resume() if conn.after == KEEP else conn.after)

    def _start_linger(self, conn):
        with self._lock:
            self._open.discard(conn)
        sock = conn.sock
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
            self._sel.register(sock, selectors.EVENT_READ, "linger")
        except (OSError, KeyError, ValueError):
            sock.close()
            return
        self._lingering[sock] = (clock() + LINGER_SECONDS, 0)

    def _linger_read(self, sock):
        end, dropped = self._lingering.get(sock, (0, 0))
        try:
            data = sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, ValueError):
            data = b""
        dropped += len(data)
        if not data or dropped >= LINGER_BYTES:
            self._end_linger(sock)
        else:
            self._lingering[sock] = (end, dropped)

    def _end_linger(self, sock):
        self._lingering.pop(sock, None)
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def _hand_over(self, conn):
        if not self.handlers.hand_over(conn):   # no thread to be had: dropped (its place in flight given back)
            conn.abandon()
            self._close(conn)

    def _handed_back(self, conn, how):
        """From a handler thread: ``conn`` answered, and where it goes now (``_after``)."""
        self._back.append((conn, how))
        self._wake()
