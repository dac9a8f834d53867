"""The model server's listening socket and its bounded pool of connections: one thread per open
connection, at most ENVREPRO_SERVE_MAX_CONNECTIONS of them.

A connection over the limit first makes room by closing the connection that has been idle
longest (a keep-alive connection between requests, or one that has sent nothing yet, for
MIN_IDLE seconds at least: closing it loses nothing, HTTP clients reopen); when every connection
is busy with a request it waits up to ADMIT_WAIT seconds for one to end (not while such a wait
just failed: a flood is refused at once), then gets ``503`` with ``Retry-After`` and is closed,
never a thread of its own. Standard library only, Python 3.6 syntax.
"""
from __future__ import absolute_import, division, print_function

import socket
import threading

from .queue import clock

ADMIT_WAIT = 0.5     # seconds a connection over the limit waits for a busy one to end
MIN_IDLE = 0.2       # seconds a connection must have been idle to be closed for a new one
ACCEPT_POLL = 0.2    # seconds between checks for close() while accepting
BACKLOG = 128


class Listener(object):
    """Listens on ``address`` (IPv6 when the host has a colon). Each accepted connection becomes
    ``connect(sock, addr)``, an object with ``run()`` (its thread's work), ``evict()`` (close it
    if it is idle: True when it was) and ``idle_since`` (a clock() time, None while busy);
    ``reject(sock)`` answers one over ``limit`` before it is closed."""

    def __init__(self, address, limit, connect, reject):
        host, port = address
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(BACKLOG)
            self.socket.settimeout(ACCEPT_POLL)
        except BaseException:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self.limit = max(1, int(limit))
        self.connect = connect
        self.reject = reject
        self._cond = threading.Condition()
        self._open = set()
        self._closed = False
        self._saturated_until = 0.0
        self._thread = None

    def start(self):
        """Accept connections in a background thread."""
        self._thread = threading.Thread(target=self._accept, name="envrepro-http")
        self._thread.daemon = True
        self._thread.start()

    def count(self):
        """Connections open now."""
        with self._cond:
            return len(self._open)

    def _accept(self):
        while not self._closed:
            try:
                sock, addr = self.socket.accept()
            except socket.timeout:
                continue
            except OSError:   # closed, or out of descriptors for a moment
                if self._closed:
                    return
                threading.Event().wait(0.05)
                continue
            self._admit(sock, addr)

    def _admit(self, sock, addr):
        conn = None
        with self._cond:
            end = None
            evicted = False
            while len(self._open) >= self.limit and not self._closed:
                evicted = evicted or self._evict_one()
                if end is None:   # wait for a slot, unless a wait just failed: a flood is refused at once
                    end = clock() + (ADMIT_WAIT if clock() >= self._saturated_until else 0.05)
                left = end - clock()
                if left <= 0:
                    self._saturated_until = clock() + ADMIT_WAIT
                    break
                self._cond.wait(min(left, 0.05))
            if len(self._open) < self.limit and not self._closed:
                conn = self.connect(sock, addr)
                self._open.add(conn)
        if conn is None:
            self._refuse(sock)
            return
        thread = threading.Thread(target=self._run, args=(conn,), name="envrepro-conn")
        thread.daemon = True
        try:
            thread.start()
        except RuntimeError:   # no thread to be had: refused like one over the limit
            self._gone(conn)
            self._refuse(sock)

    def _refuse(self, sock):
        try:
            self.reject(sock)
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _evict_one(self):
        """Close the connection idle longest, if any has been for MIN_IDLE seconds (called holding
        the lock): a connection accepted a moment ago has its request on the way."""
        since = clock() - MIN_IDLE
        idle = sorted((c for c in self._open if c.idle_since is not None and c.idle_since <= since),
                      key=lambda c: c.idle_since)
        for conn in idle:
            if conn.evict():
                return True
        return False

    def _run(self, conn):
        try:
            conn.run()
        finally:
            self._gone(conn)

    def _gone(self, conn):
        with self._cond:
            self._open.discard(conn)
            self._cond.notify_all()

    def close(self):
        """Accept nothing more: the listening socket is closed. Open connections stay (a request
        on one is still answered, and closes it); their threads are daemons."""
        self._closed = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5 * ACCEPT_POLL)
        try:
            self.socket.close()
        except OSError:
            pass
        with self._cond:
            self._cond.notify_all()
