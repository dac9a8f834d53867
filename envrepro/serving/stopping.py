"""How ``envrepro serve`` stops on a signal, whatever it is doing (``Signals``).

SIGINT (Ctrl-C), SIGTERM and SIGHUP are handled for the whole command, one way: the first one
becomes ``Stopped`` in the main thread, wherever it is (building, self-checking, starting the
container, following its log, draining): the code unwinds, each step's own clean-up runs, and
``serving.foreground`` stops (drains) the server and removes what it started. A second signal
becomes ``Stopped(hurry=True)``: the drain is cut short (the containers are killed). Later
signals are only counted. SIGINT is handled even when the process started with it ignored (a
background job of a script: ``cmd &`` ignores SIGINT); SIGHUP is left alone when ignored
(``nohup``).

Python runs a signal's handler in the main thread between two bytecodes, so the exception can
land anywhere; clean-up that must not be cut short runs in ``deferred()`` (signals only
counted), and ``arm()`` raises a signal that came before the code was ready for it. A deadline
bounds it all: ``margin`` seconds after the drain's grace from the first signal, if the command
has not finished (an engine that stopped answering), the process exits with 128 + the signal's
number, and its watcher and the next sweep remove what is left (``serving.orphans``).
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional

HANDLED = ("SIGINT", "SIGTERM", "SIGHUP")
MARGIN = 15.0      # seconds past the drain's grace before the process exits whatever it is doing


class Stopped(KeyboardInterrupt):
    """A stop signal, raised in the main thread (a KeyboardInterrupt: code that cleans up on
    Ctrl-C cleans up on it too, and ``except Exception`` doesn't swallow it)."""

    def __init__(self, signum: int, hurry: bool = False):
        super().__init__(signum)
        self.signum, self.hurry = signum, hurry

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return str(self.signum)


def _hard_exit(code: int) -> None:      # pragma: no cover - replaced in the unit tests
    os._exit(code)      # no flush: the main thread may hold stderr's lock, blocked on a full pipe


class Signals:
    """The handlers, installed for the ``with`` block (restored after it); ``grace``: the
    server's drain, the deadline being ``grace + margin`` seconds after the first signal."""

    def __init__(self, grace: float, margin: float = MARGIN, say: Optional[Callable[[str], None]] = None,
                 exit: Callable[[int], None] = _hard_exit):
        self.grace, self.margin, self.say, self._exit = float(grace), float(margin), say, exit
        self.count = 0
        self.first: Optional[int] = None
        self._armed = False
        self._deferring = 0
        self._previous: Dict[int, Any] = {}
        self._done = threading.Event()
        self._deadline: Optional[threading.Thread] = None

    # -- installation -----------------------------------------------------------------------
    def __enter__(self) -> "Signals":
        if threading.current_thread() is not threading.main_thread():
            return self          # signal.signal works in the main thread only: nothing to handle
        for name in HANDLED:
            signum = getattr(signal, name, None)
            if signum is None:
                continue         # no SIGHUP on Windows
            previous = signal.getsignal(signum)
            if name == "SIGHUP" and previous is signal.SIG_IGN:
                continue         # nohup: hang-ups are meant to be ignored
            self._previous[signum] = previous
            signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.finished()
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    # -- the handler ------------------------------------------------------------------------
    def handle(self, signum: int, frame: Any = None) -> None:
        self.count += 1
        if self.count == 1:
            self.first = signum
            self._start_deadline()
        if self._armed and not self._deferring and self.count <= 2:
            raise Stopped(signum, hurry=self.count > 1)

    def arm(self) -> None:
        """From now on a signal raises; one that came before raises now."""
        self._armed = True
        if self.count and not self._deferring:
            raise Stopped(self.first or signal.SIGINT, hurry=self.count > 1)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Signals are only counted inside (clean-up that must run to its end)."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1

    @property
    def hurry(self) -> bool:
        return self.count > 1

    # -- the deadline -----------------------------------------------------------------------
    def _start_deadline(self) -> None:
        if self._deadline is not None or self._done.is_set():
            return
        self._deadline = threading.Thread(target=self._watch, name="envrepro-serve-deadline", daemon=True)
        # the thread starts with the handled signals blocked (it inherits this mask), so that the
        # kernel gives them to the main thread, the one that can act on them
        old = None
        if hasattr(signal, "pthread_sigmask") and self._previous:
            try:
                old = signal.pthread_sigmask(signal.SIG_BLOCK, list(self._previous))
            except (OSError, ValueError):
                old = None
        try:
            self._deadline.start()
        finally:
            if old is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _watch(self) -> None:
        if self._done.wait(self.grace + self.margin):
            return
        code = 128 + int(self.first or signal.SIGTERM)
        line = (f"envrepro: error: could not stop within {self.grace + self.margin:g} s of the signal (is the "
                f"Docker engine answering?); exiting {code}: the watcher or the next `envrepro serve` / "
                "`envrepro images prune` removes what is left\n").encode()
        # written by a thread of its own: stderr may be a full pipe nobody reads, the exit must not wait
        writer = threading.Thread(target=self._write, args=(line,), daemon=True)
        writer.start()
        writer.join(1.0)
        self._exit(code)

    @staticmethod
    def _write(data: bytes) -> None:
        try:
            os.write(2, data)
        except OSError:
            pass

    def finished(self) -> None:
        """The command is done: the deadline no longer applies."""
        self._done.set()
