"""A container's output and clock, bounded: what ``DockerEngine.run`` keeps of a stream
(``Kept``), a build container's output as lines for the build log (``Lines``), and a wall-clock
limit that kills a container while its output is being read (``Deadline``)."""
from __future__ import annotations

import codecs
import collections
import threading
from typing import Any, Deque, Optional

from envrepro.engine.base import LineCallback
from envrepro.engine.messages import ANSI as _ANSI

MAX_LINE = 8192      # characters: a longer line of a build container reaches on_line in pieces
TAIL_LINES = 200     # lines of a build container's output kept in memory, for its error
WAIT_GRACE = 60.0    # seconds ``wait`` may take beyond a run's own timeout (the kill, the exit)


class Kept:
    """The last ``limit`` characters of one output stream (all of it when ``limit`` is None):
    what a container printed is held in memory only up to that."""

    def __init__(self, limit: Optional[int]):
        self.limit, self.parts, self.size = limit, [], 0   # type: Optional[int], List[str], int

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.limit is not None and self.size > 2 * self.limit + 65536:
            self.parts = ["".join(self.parts)[-self.limit:]]
            self.size = len(self.parts[0])

    def text(self) -> str:
        joined = "".join(self.parts)
        return joined if self.limit is None else joined[-self.limit:] if self.limit else ""


class Lines:
    """A build container's output chunks as lines for ``on_line``: ANSI codes dropped, UTF-8
    decoded across chunk boundaries, a line longer than MAX_LINE passed on in pieces (so a
    newline-less stream can't grow in memory); the last TAIL_LINES kept in ``tail``."""

    def __init__(self, on_line: Optional[LineCallback]):
        self.on_line, self.pending = on_line, ""
        self.tail: Deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._decode = codecs.getincrementaldecoder("utf-8")("replace").decode

    def _emit(self, line: str) -> None:
        for i in range(0, max(len(line), 1), MAX_LINE):
            piece = line[i:i + MAX_LINE]
            self.tail.append(piece)
            if self.on_line:
                self.on_line(piece)

    def feed(self, chunk: bytes) -> None:
        *lines, self.pending = (self.pending + _ANSI.sub("", self._decode(chunk))).split("\n")
        for line in lines:
            self._emit(line)
        while len(self.pending) > MAX_LINE:
            self._emit(self.pending[:MAX_LINE])
            self.pending = self.pending[MAX_LINE:]

    def close(self) -> None:
        rest = self.pending + self._decode(b"", True)
        self.pending = ""
        if rest:
            self._emit(rest)


class Deadline:
    """Kills ``container`` once ``seconds`` have passed (None: never): a wall-clock limit that
    holds while the caller is blocked reading the container's output."""

    def __init__(self, container: Any, seconds: Optional[float]):
        self.container, self.expired = container, False
        self._timer: Optional[threading.Timer] = None
        if seconds is not None:
            self._timer = threading.Timer(seconds, self._kill)
            self._timer.daemon = True
            self._timer.start()

    def _kill(self) -> None:
        self.expired = True
        try:
            self.container.kill()
        except Exception:          # it had exited on its own meanwhile
            self.expired = False

    def stop(self) -> bool:
        """No kill from now on (one under way is waited for); whether the time ran out."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join()
        return self.expired


def wait_timeout(timeout: Optional[float]) -> Optional[float]:
    return None if timeout is None else timeout + WAIT_GRACE
