"""The model server's listening socket and its connections: one thread (the gate) reads every
connection until its request is whole, and a bounded pool of handler threads answers whole
requests.

A connection costs no thread while it is idle or while its request arrives, however slowly: the
gate accepts, reads (``selectors``, non-blocking) and enforces the deadlines: a request's from its
first byte (408), an idle keep-alive connection's (closed). A request whose line, headers and
body are all in (or that is already refused by its head, or past its deadline) goes to the
handlers, at most MAX_HANDLERS threads, in the order requests became whole; the answer written, a
kept-alive connection comes back to the gate (unless its next request comes within NEXT_SOON
seconds while no other request waits for a handler: a client sending requests back to back is
answered without the trip). So 300 clients sending a byte every few seconds cost
300 sockets and their buffered heads, not 300 threads, and the clients whose requests arrive get
the handlers.

At most ``limit`` connections are open (ENVREPRO_SERVE_MAX_CONNECTIONS): one more first makes room
by closing the connection idle longest (between requests, or connected without a byte, for MIN_IDLE
seconds at least: closing it loses nothing, HTTP clients reopen); when none is idle, it gets
``503`` with ``Retry-After`` and is closed. Standard library only, Python 3.6 syntax.

A connection (``connect(sock, addr)``) has: ``sock``; ``idle_since`` (a clock() time while it waits
for a request's first byte, else None); ``deadline`` (a clock() time: its request's, or its idle
timeout); ``feed(data)`` -> MORE (wait for bytes), WAIT (its body's memory is not free yet: not
read until it is; asked again every TICK) or READY; ``too_slow(now)`` (its body holds memory and comes too
slowly to be whole by its deadline); ``expire(stopping=False)`` (past its deadline, too slow, or
the server is stopping: it will answer that); ``stalled(since)`` (its request began before the clock()
time ``since`` and its head is not whole yet: a slow client the drain does not wait for); ``serve()`` (in a handler: answers the request, and any whole one pipelined behind it) ->
KEEP, WAIT (a pipelined request's body waits for memory), LINGER (answered, but the client may still be sending: read and dropped for LINGER seconds,
so that closing doesn't reset the answer before it is read) or CLOSE; ``gone()`` (the client left
mid-request).
"""
from __future__ import absolute_import, division, print_function

import collections
import errno
import select
import selectors
import socket
import threading

from .queue import clock

MORE, WAIT, READY = "more", "wait", "ready"
KEEP, LINGER, CLOSE = "keep", "linger", "close"

MAX_HANDLERS = 64    # threads answering whole requests
MIN_IDLE = 0.2       # seconds a connection must have been idle to be closed for a new one
STALLED = 1.0        # seconds since a request's first byte, its head not whole, when the drain starts: 503
NEXT_SOON = 0.002    # seconds a handler waits on a kept-alive connection for its next request
TICK = 0.05          # seconds between the gate's checks of deadlines and waiting bodies
LINGER_SECONDS = 1.0
LINGER_BYTES = 1 << 20
BACKLOG = 1024
_RECV = 65536
_ACCEPTS = 64        # connections accepted per wake-up at most


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
        self.limit = max(1, int(limit))
        self.connect = connect
        self.reject = reject
        self.max_handlers = max(1, int(handlers))
        self._lock = threading.Lock()
        self._open = set()                      # every connection, wherever it is
        self._ready = collections.deque()       # whole requests, for the handlers
        self._ready_cond = threading.Condition(self._lock)
        self._handlers = 0
        self._idle_handlers = 0
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
        self._waiting = set()                   # connections whose body waits for memory
        self._lingering = {}                    # socket -> (end, bytes dropped)

    def start(self):
        """Run the gate in a background thread."""
        self._thread = threading.Thread(target=self._gate, name="envrepro-gate")
        self._thread.daemon = True
        self._thread.start()

    def count(self):
        """Connections open now."""
        with self._lock:
            return len(self._open)

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
                    else:
                        self._read(key.data)
                except Exception:   # a bug: that connection goes, the gate stays
                    if key.data not in ("accept", "wake", "linger"):
                        self._close(key.data)
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
                    return
                continue
            self._admit(sock, addr)

    def _admit(self, sock, addr):
        if len(self._open) >= self.limit and not self._evict_one():
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
        if not data:   # closed or reset by the client
            if conn.idle_since is None:
                conn.gone()
            self._close(conn)
            return
        self._next_step(conn, conn.feed(data))

    def _next_step(self, conn, state):
        if state == MORE:
            return
        self._unwatch(conn)
        if state == WAIT:
            self._waiting.add(conn)
        else:
            self._hand_over(conn)

    def _sweep(self):
        """Deadlines: a request past its own is answered (408 or 503); an idle connection past its
        idle timeout closed. Bodies waiting for memory asked again; lingering sockets closed."""
        now = clock()
        for conn in list(self._waiting):
            state = conn.feed(b"")
            if state == WAIT and now >= conn.deadline:
                conn.expire()
                state = READY
            if state != WAIT:
                self._waiting.discard(conn)
                if state == MORE:
                    self._watch(conn)
                else:
                    self._hand_over(conn)
        for conn in [c for c in self._reading if now >= c.deadline or c.too_slow(now)]:
            if conn.idle_since is not None:
                self._close(conn)
            else:
                self._unwatch(conn)
                conn.expire()
                self._hand_over(conn)
        for sock, (end, _) in list(self._lingering.items()):
            if now >= end:
                self._end_linger(sock)

    def _close(self, conn):
        self._unwatch(conn)
        self._waiting.discard(conn)
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
            if how == KEEP:
                self._watch(conn)
            elif how == WAIT:
                self._waiting.add(conn)
            elif how == LINGER:
                self._start_linger(conn)
            else:
                self._close(conn)

    def _start_linger(self, conn):
        with self._lock:
            self._open.discard(conn)
        sock = conn.sock
        try:
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

    # -- the handlers --------------------------------------------------------------------------

    def _hand_over(self, conn):
        with self._lock:
            self._ready.append(conn)
            if self._idle_handlers:
                self._ready_cond.notify()
                return
            if self._handlers >= self.max_handlers:
                return
            self._handlers += 1
        thread = threading.Thread(target=self._handle, name="envrepro-handler")
        thread.daemon = True
        try:
            thread.start()
        except RuntimeError:   # no thread to be had now: the running handlers take it
            with self._lock:
                self._handlers -= 1
                alone = self._handlers == 0
            if alone:   # ... unless there are none: refused
                with self._lock:
                    self._ready.remove(conn)
                    self._open.discard(conn)
                self._refuse(conn.sock)

    def _handle(self):
        while True:
            with self._lock:
                while not self._ready:
                    self._idle_handlers += 1
                    self._ready_cond.wait()
                    self._idle_handlers -= 1
                conn = self._ready.popleft()
            while True:
                try:
                    how = conn.serve()
                except Exception:   # serve() answers its own errors; never lose the handler
                    how = CLOSE
                if how != KEEP or self._ready or self._closed:
                    break
                state = self._next_soon(conn)
                if state != READY:
                    how = WAIT if state == WAIT else KEEP
                    break
            self._back.append((conn, how))
            self._wake()

    def _next_soon(self, conn):
        """A keep-alive client's next request, read here when it comes within NEXT_SOON seconds
        (a client sending requests back to back is answered without a trip through the gate):
        its feed() state, or None (nothing came)."""
        sock = conn.sock
        try:
            poll = select.poll()   # not select(): descriptors may be over 1024
            poll.register(sock, select.POLLIN)
            if not poll.poll(int(NEXT_SOON * 1000)):
                return None
            sock.setblocking(False)
            data = sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return None
        except (OSError, ValueError):
            data = b""
        if not data:
            return None   # the gate sees the close
        return conn.feed(data)
