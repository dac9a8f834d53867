"""A byte relay between a TCP port and a unix socket: how a service container with no network is
still reached on a published port (``ServiceMixin.start(network_disabled=True)``).

The model's container runs with ``--network none``. Two copies of this program carry its port:

    client -> published port -> [relay container, default bridge]  tcp-to-unix
           -> unix socket on a tmpfs volume both containers mount
           -> [exec'd in the model's container, no network]         unix-to-tcp -> 127.0.0.1:PORT

so the model's code can be reached but can reach nothing: its container has only a loopback
interface, and the socket belongs to the relay's own user (the model's user can't connect to it).

This file is envrepro's code, never the capture's. It is sent as ``python3 -I -S -c SOURCE`` to
the base image's own interpreter (isolated mode, no ``site``: no ``.pth`` file, no
``sitecustomize`` and no ``PYTHON*`` variable of the environment is read), so it must be standard
library only, in Python 3.6 syntax, and import nothing of envrepro. One thread, ``selectors``:
connections cost no thread, so the relay never competes for the container's pids limit.
"""
import errno
import os
import selectors
import signal
import socket
import sys

CHUNK = 65536
HIGH_WATER = 1 << 20          # bytes buffered for one direction before reading from it pauses
MAX_CONNECTIONS = 1024        # more at once: new clients are closed at once
CONNECT_TIMEOUT = 5.0


class Pipe(object):
    """One accepted client and its upstream connection: bytes both ways, half-closes passed on."""

    def __init__(self, relay, a, b):
        self.relay = relay
        self.socks = (a, b)
        self.out = {a: bytearray(), b: bytearray()}      # bytes waiting to be written to the key
        self.eof = {a: False, b: False}                  # the key sent EOF (nothing more to read)
        self.shut = {a: False, b: False}                 # the key was told EOF (SHUT_WR sent)
        self.closed = False
        for s in self.socks:
            s.setblocking(False)
            relay.sel.register(s, selectors.EVENT_READ, self)
        self.relay.open += 1

    def peer(self, s):
        return self.socks[1] if s is self.socks[0] else self.socks[0]

    def events(self, s):
        ev = 0
        if not self.eof[s] and len(self.out[self.peer(s)]) < HIGH_WATER:
            ev |= selectors.EVENT_READ
        if self.out[s]:
            ev |= selectors.EVENT_WRITE
        return ev

    def update(self):
        if self.closed:
            return
        for s in self.socks:
            if self.eof[self.peer(s)] and not self.out[s] and not self.shut[s]:
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                self.shut[s] = True
        if all(self.shut.values()):
            self.close()
            return
        for s in self.socks:
            ev = self.events(s)
            key = self.relay.sel.get_map().get(s)
            if ev and key is None:
                self.relay.sel.register(s, ev, self)
            elif ev and key.events != ev:
                self.relay.sel.modify(s, ev, self)
            elif not ev and key is not None:
                self.relay.sel.unregister(s)

    def ready(self, s, mask):
        try:
            if mask & selectors.EVENT_READ:
                data = s.recv(CHUNK)
                if data:
                    peer = self.peer(s)
                    out = self.out[peer]
                    out += data
                    if len(out) == len(data):   # nothing was queued for the peer: write it now
                        try:                    # (a select round and two epoll changes less a hop)
                            del out[:peer.send(out)]
                        except (BlockingIOError, InterruptedError):
                            pass
                else:
                    self.eof[s] = True
            if mask & selectors.EVENT_WRITE and self.out[s]:
                sent = s.send(self.out[s])
                del self.out[s][:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.close()
            return
        self.update()

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.relay.open -= 1
        for s in self.socks:
            if s in self.relay.sel.get_map():
                self.relay.sel.unregister(s)
            s.close()


class Relay(object):
    """Accept on each listener; for each client, connect upstream and pipe the two."""

    def __init__(self, routes):
        self.sel = selectors.DefaultSelector()
        self.open = 0
        for listener, connect in routes:
            listener.setblocking(False)
            self.sel.register(listener, selectors.EVENT_READ, (listener, connect))

    def accept(self, listener, connect):
        try:
            client, _ = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        if self.open >= MAX_CONNECTIONS:
            client.close()
            return
        try:
            upstream = connect()
        except OSError:            # the server isn't listening yet (or any more): the client retries
            client.close()
            return
        Pipe(self, client, upstream)

    def serve_forever(self):
        while True:
            for key, mask in self.sel.select():
                if isinstance(key.data, tuple):
                    self.accept(*key.data)
                else:
                    key.data.ready(key.fileobj, mask)


def tcp_listener(port, host="0.0.0.0"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(128)
    return s


def unix_listener(path):
    try:
        os.unlink(path)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)          # only the relay's own user may connect
    try:
        s.bind(path)
    finally:
        os.umask(old)
    s.listen(128)
    return s


def connector(family, address):
    def connect():
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.connect(address)
        except OSError:
            s.close()
            raise
        return s
    return connect


USAGE = "usage: relay tcp-to-unix PORT SOCKET [PORT SOCKET...] | relay unix-to-tcp SOCKET PORT [SOCKET PORT...]"


def routes(mode, pairs):
    """(listener, connect) for each pair of ``tcp-to-unix PORT SOCKET...`` (listen on
    0.0.0.0:PORT, forward to the unix SOCKET) or ``unix-to-tcp SOCKET PORT...`` (listen on the
    unix SOCKET, forward to 127.0.0.1:PORT)."""
    if mode not in ("tcp-to-unix", "unix-to-tcp") or not pairs or len(pairs) % 2:
        raise ValueError(mode)
    out = []
    for first, second in zip(pairs[::2], pairs[1::2]):
        if mode == "tcp-to-unix":
            out.append((tcp_listener(int(first)), connector(socket.AF_UNIX, second)))
        else:
            out.append((unix_listener(first), connector(socket.AF_INET, ("127.0.0.1", int(second)))))
    return out


def main(argv):
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))     # PID 1 ignores SIGTERM otherwise
    try:
        relay = Relay(routes(argv[0] if argv else "", list(argv[1:])))
    except ValueError:
        sys.stderr.write(USAGE + "\n")
        return 2
    except OSError as e:
        sys.stderr.write("envrepro relay: can't listen: %s\n" % e)
        return 3
    sys.stderr.write("envrepro relay: %s %s\n" % (argv[0], " ".join(argv[1:])))
    sys.stderr.flush()
    try:
        relay.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
