"""The model server's handler threads: whole requests, as the gate (listener.py) hands them over,
answered in the order they became whole by at most MAX_HANDLERS threads, started as needed and
kept. A handler answers a connection's request (``serve()``) and gives the connection back to the
gate with its state, unless the client's next request comes within NEXT_SOON seconds while no
other request waits for a handler: a client sending requests back to back is answered without
the trip through the gate. Also the states a connection reports (listener.py says what each
means). Standard library only, Python 3.6 syntax.
"""
from __future__ import absolute_import, division, print_function

import collections
import select
import threading

MORE, WAIT, READY = "more", "wait", "ready"
KEEP, LINGER, CLOSE, WRITE = "keep", "linger", "close", "write"

MAX_HANDLERS = 64    # threads answering whole requests
NEXT_SOON = 0.002    # seconds a handler waits on a kept-alive connection for its next request
_RECV = 65536


class HandlerPool(object):
    """At most ``limit`` threads answering whole requests; ``give_back(conn, state)`` is called
    from the thread once a connection is answered; ``stopping()`` says the server accepts nothing
    more (no wait for a next request then)."""

    def __init__(self, limit, give_back, stopping):
        self.limit = max(1, int(limit))
        self.threads = 0
        self._give_back = give_back
        self._stopping = stopping
        self._lock = threading.Lock()
        self._ready = collections.deque()       # whole requests, oldest first
        self._cond = threading.Condition(self._lock)
        self._idle = 0

    def hand_over(self, conn):
        """Queue ``conn`` (its request is whole) for a handler, starting one if none is idle for
        it; False when it can't be answered (no thread at all could be started)."""
        with self._lock:
            self._ready.append(conn)
            if self._idle:
                self._cond.notify()
            if self._idle >= len(self._ready) or self.threads >= self.limit:
                return True   # (an idle handler counts until it has taken its request)
            self.threads += 1
        thread = threading.Thread(target=self._handle, name="envrepro-handler")
        thread.daemon = True
        try:
            thread.start()
        except RuntimeError:   # no thread to be had now: the running handlers take it...
            with self._lock:
                self.threads -= 1
                if self.threads > 0:
                    return True
                self._ready.remove(conn)   # ... unless there are none
            return False
        return True

    def _handle(self):
        while True:
            with self._lock:
                while not self._ready:
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                conn = self._ready.popleft()
            try:
                how = self._serve(conn)
            except Exception:   # a bug: that connection goes, never the handler
                conn.abandon()
                how = CLOSE
            self._give_back(conn, how)

    def _serve(self, conn):
        while True:
            how = conn.serve()
            if how != KEEP or self._ready or self._stopping():
                return how
            state = self._next_soon(conn)
            if state != READY:
                return WAIT if state == WAIT else KEEP

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
