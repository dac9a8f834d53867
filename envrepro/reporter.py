"""The progress a user sees on stderr: ``Reporter``, the screen side of ``envrepro.progress``.

On a terminal the running step is one live line (rich's live display) that turns into a finished
line; elsewhere, one plain line per step start and end. The protocol (steps, messages, log lines)
and the build log are in ``envrepro.progress``.
"""
from __future__ import annotations

import itertools
import sys
import threading
import time
from collections import deque
from typing import IO, Any, Deque, Optional

from envrepro.progress import _DOCKER_STEP, TAIL, DockerSteps, _count, elapsed

MAX_WIDTH = 110      # step lines on wide terminals: the time stays near the text


class _State:
    __slots__ = ("token", "title", "total", "unit", "completed", "detail", "started", "last_log")

    def __init__(self, token: int, title: str, total: Optional[int], unit: str):
        self.token, self.title, self.total, self.unit = token, title, total, unit
        self.completed = 0
        self.detail = ""
        self.last_log = ""
        self.started = time.monotonic()


class Reporter:
    """Progress on ``stream`` (stderr): steps, messages (plain strings) and log lines.

    On a terminal the running step is one live line (spinner, title, count, what it is doing,
    elapsed time) that becomes a finished line "✔ title  note  count  12.3 s" (✘ when it failed);
    messages print above it; log lines only with ``verbose``. Elsewhere, or with ``live=False``:
    one plain line per step start and end, messages as they are, no ANSI codes (``messages``
    False: step lines only, as with --json). Thread-safe (the wheelhouse fetch reports from its
    download threads).

    Docker's ``Step N/M :`` lines said as messages (the serving image's build) become steps, and
    what Docker prints between them log lines, until ``Successfully built``.
    """

    def __init__(self, stream: Optional[IO[str]] = None, verbose: bool = False, live: Optional[bool] = None,
                 messages: bool = True):
        self.stream: Any = stream if stream is not None else sys.stderr
        self.verbose, self.messages = verbose, messages
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.live = tty if live is None else (bool(live) and tty)
        self._lock = threading.RLock()
        self._tokens = itertools.count(1)
        self._active: Optional[_State] = None
        self._hidden: Deque[str] = deque(maxlen=TAIL)
        self._docker: Optional[DockerSteps] = None
        self._console: Any = None
        self._live_display: Any = None
        if self.live:
            try:
                from rich.console import Console

                self._console = Console(file=self.stream, highlight=False)
            except ImportError:  # pragma: no cover - rich is a dependency
                self.live = False
            else:
                if self._console.is_dumb_terminal or not self._console.is_terminal:
                    self.live, self._console = False, None

    # messages and log lines
    def __call__(self, text: str) -> None:
        with self._lock:
            if self._docker is None and text.startswith("Successfully tagged "):
                self.log(text)      # the end of a Docker build shown as steps
                return
            if self._docker is None and _DOCKER_STEP.match(text.strip()):
                self._docker = DockerSteps(self)
            if self._docker is not None:
                self._docker(text)
                if self._docker.finished:
                    self._docker = None
                return
            self.note(text)

    def note(self, text: str) -> None:
        text = text.rstrip()
        if not text.strip() or not self.messages:
            return
        with self._lock:
            self._print(text)

    def log(self, line: str) -> None:
        line = line.rstrip()
        if not line.strip():
            return
        with self._lock:
            if self._active is not None:
                self._active.last_log = line.strip()
            if self.verbose:
                self._print(line, style="dim")
            else:
                self._hidden.append(line)

    # steps
    def begin(self, title: str, total: Optional[int] = None, unit: str = "") -> int:
        with self._lock:
            if self._active is not None:
                self.end(self._active.token)
            state = _State(next(self._tokens), " ".join(title.split()), total, unit)
            self._active = state
            self._hidden.clear()
            if self.live:
                self._start_live()
            else:
                self._write("[step] " + state.title + (f" ({total} {unit})".replace(" )", ")") if total else ""))
            return state.token

    def update(self, token: Any, advance: int = 0, completed: Optional[int] = None,
               total: Optional[int] = None, detail: Optional[str] = None) -> None:
        with self._lock:
            s = self._active
            if s is None or s.token != token:
                return
            if total is not None:
                s.total = total
            if completed is not None:
                s.completed = completed
            s.completed += advance
            if detail is not None:
                s.detail = " ".join(detail.split())

    def end(self, token: Any, ok: bool = True, note: str = "") -> None:
        with self._lock:
            s = self._active
            if s is None or s.token != token:
                return
            self._active = None
            seconds = time.monotonic() - s.started
            count = _count(s.completed, s.total, s.unit)
            if self.live:
                self._stop_live()
                self._console.print(self._line(s, "✔" if ok else "✘", seconds, note), soft_wrap=False)
            else:
                tail = ", ".join(p for p in (count, note) if p)
                self._write(("[ ok ] " if ok else "[fail] ") + s.title + (f": {tail}" if tail else "")
                            + f" ({elapsed(seconds)})")

    def close(self) -> None:
        """End the display; a step still running failed (an error or Ctrl-C went past it): it is
        marked so, with the last lines it logged when they were not shown."""
        with self._lock:
            if self._docker is not None:
                self._docker.finished = True
                self._docker = None
            s = self._active
            if s is not None:
                hidden = list(self._hidden)
                self.end(s.token, ok=False)
                if hidden and not self.verbose:
                    for line in hidden:
                        self._print("  | " + line, style="dim")
            self._stop_live()

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    # output
    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _print(self, text: str, style: str = "") -> None:
        if not self.live:
            self._write(text)
            return
        from rich.text import Text

        self._console.print(Text(text, style=style), soft_wrap=True)

    def _start_live(self) -> None:
        if self._live_display is not None:
            return
        from rich.live import Live

        self._live_display = Live(_LiveLine(self), console=self._console, refresh_per_second=8,
                                  transient=True, redirect_stdout=False,
                                  redirect_stderr=self.stream is sys.stderr)
        self._live_display.start()

    def _stop_live(self) -> None:
        if self._live_display is not None:
            live, self._live_display = self._live_display, None
            live.stop()

    def _line(self, s: _State, mark: Any, seconds: float, note: str = "", detail: str = "") -> Any:
        """One step's line: mark, title (then its note or what it is doing, cut first when the
        terminal is narrow), count, elapsed time."""
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1), expand=True)
        # a little short of the terminal's width: a ^C echoed after the live line must not wrap
        grid.width = min(self._console.width - 3, MAX_WIDTH)
        grid.add_column(no_wrap=True, width=1)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(justify="right", no_wrap=True)
        grid.add_column(justify="right", no_wrap=True, min_width=7)
        text = Text(s.title)
        for extra in (note, detail):
            if extra:
                text.append("  " + extra, style="dim")
        finished = isinstance(mark, str)
        if finished:
            mark = Text(mark, style="green" if mark == "✔" else "bold red")
        grid.add_row(mark, text, Text(_count(s.completed, s.total, s.unit), style="cyan"),
                     Text(elapsed(seconds), style="dim" if finished else "yellow"))
        return grid


class _LiveLine:
    """The running step, rendered afresh at every refresh of the live display."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter
        from rich.spinner import Spinner

        self.spinner = Spinner("dots", style="cyan")

    def __rich__(self) -> Any:
        from rich.text import Text

        s = self.reporter._active
        if s is None:
            return Text("")
        return self.reporter._line(s, self.spinner, time.monotonic() - s.started,
                                   detail=s.detail or s.last_log)
