"""What long work shows while it runs: its steps, with counts and elapsed time, not tools' logs.

Why: a first ``envrepro load`` runs pip on the host and in containers for a minute or more, and
pip's ~50 ``Processing /mnt/wheels/...`` lines tell a user neither what is happening nor how far
along it is, while burying the lines that matter. So the work announces *steps* ("Fetching 50
files into the wheelhouse", "Installing TensorFlow's closure"), each with a count, and the tools'
output goes to the build log (``envrepro.image.ensure``), shown only with ``--verbose``.

The protocol stays the one everything already takes, ``Progress = Callable[[str], None]`` (unit
tests pass ``lines.append``). A callable may also have these methods, which the helpers below use
when present and replace by plain strings when not:

- ``log(line)``: a tool's output line (pip, docker): in the log; on screen only when verbose;
- ``note(text)``: a message that is shown even where plain strings are log lines (``BuildLog``);
- ``begin(title, total, unit) -> token``, ``update(token, ...)``, ``end(token, ok, note)``: a step.

``envrepro.reporter.Reporter`` shows them on a terminal (one live line per running step, turned into a finished
line "✔ title  note  12/12 files  3.4 s") or as plain lines elsewhere ("[step] ..." / "[ ok ] ..."),
never with ANSI codes off a terminal. ``BuildLog`` (``ensure_image``) writes everything into the
build log, and turns plain strings into log lines. ``step(say, ...)`` gives a ``Step`` handle.
"""
from __future__ import annotations

import itertools
import re
import threading
import time
from typing import IO, Any, Callable, Dict, List, Optional, Tuple

Progress = Callable[[str], None]
TAIL = 12            # hidden log lines shown when a step ends without being finished
_DOCKER_STEP = re.compile(r"^Step \d+/\d+ : ")


def elapsed(seconds: float) -> str:
    """``12.3 s``, or ``2 min 05 s`` from a minute on."""
    if seconds < 60:
        return f"{max(seconds, 0.0):.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s"


def _count(completed: int, total: Optional[int], unit: str) -> str:
    if total:
        return f"{min(completed, total)}/{total}" + (f" {unit}" if unit else "")
    return f"{completed} {unit}".rstrip() if completed else ""


# -- helpers for any Progress --------------------------------------------------------------------
def log(say: Progress, line: str) -> None:
    """A tool's output line: ``say.log`` when it has one, else ``say`` (as before)."""
    fn = getattr(say, "log", None)
    (fn if callable(fn) else say)(line)


def note(say: Progress, text: str) -> None:
    """A message to show even during a build (``say.note``), else ``say``."""
    fn = getattr(say, "note", None)
    (fn if callable(fn) else say)(text)


class Step:
    """One step of ``say``'s work. With a plain callable the title is said when it begins and
    ``title: note`` when it ends with a note; counts are then dropped. A context manager: the
    step fails when the block raises, and is done otherwise."""

    def __init__(self, say: Progress, title: str, total: Optional[int] = None, unit: str = ""):
        self.say, self.title = say, title
        begin = getattr(say, "begin", None)
        self._structured = callable(begin)
        self.token: Any = begin(title, total=total, unit=unit) if callable(begin) else None
        if not self._structured:
            say(title)
        self.closed = False

    def update(self, completed: Optional[int] = None, total: Optional[int] = None,
               detail: Optional[str] = None, advance: int = 0) -> None:
        if self._structured and not self.closed:
            self.say.update(self.token, advance=advance, completed=completed,  # type: ignore[attr-defined]
                            total=total, detail=detail)

    def advance(self, n: int = 1, detail: Optional[str] = None) -> None:
        self.update(advance=n, detail=detail)

    def done(self, note: str = "") -> None:
        self._end(True, note)

    def fail(self, note: str = "") -> None:
        self._end(False, note)

    def _end(self, ok: bool, note: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self._structured:
            self.say.end(self.token, ok=ok, note=note)  # type: ignore[attr-defined]
        elif note:
            self.say(f"{self.title}: {note}")

    def __enter__(self) -> "Step":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._end(exc_type is None, "")


def step(say: Progress, title: str, total: Optional[int] = None, unit: str = "") -> Step:
    """Begin a step of ``say``'s work (see ``Step``)."""
    return Step(say, title, total, unit)


class DockerSteps:
    """Docker's classic build output as steps: each ``Step N/M : INSTRUCTION`` line begins a step
    (and ends the one before), the other lines are its log; ``Successfully built`` or ``close``
    ends the last."""

    def __init__(self, say: Progress):
        self.say = say
        self.current: Optional[Step] = None
        self.finished = False

    def __call__(self, line: str) -> None:
        text = line.strip()
        if _DOCKER_STEP.match(text):
            if self.current is not None:
                self.current.done()
            self.current = step(self.say, text)
            return
        log(self.say, line)
        if text.startswith("Successfully built "):
            self.close()
        elif self.current is not None and text.startswith(("Collecting ", "Processing ", "Downloading ",
                                                            "Installing collected packages")):
            self.current.update(detail=text[:120])

    def close(self, ok: bool = True) -> None:
        if self.current is not None:
            self.current.done() if ok else self.current.fail()
            self.current = None
        self.finished = True


class LazyStep:
    """A Progress for work that may not happen (a lock translated, a base image pulled): its
    first line begins a step titled with it, the next ones are that step's log. ``close`` ends
    the step when there was one."""

    def __init__(self, say: Progress):
        self.say = say
        self.current: Optional[Step] = None

    def __call__(self, line: str) -> None:
        if self.current is None:
            self.current = step(self.say, line.strip())
        else:
            log(self.say, line)
            if line.strip():
                self.current.update(detail=line.strip()[:120])

    def close(self, ok: bool = True, note: str = "") -> None:
        if self.current is not None:
            self.current.done(note) if ok else self.current.fail(note)

    def __enter__(self) -> "LazyStep":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(ok=exc_type is None)


# -- the build log ---------------------------------------------------------------------------
class BuildLog:
    """``ensure_image``'s Progress: every line, message and step into the build log (once
    ``attach``-ed; what came before is written then) and into ``lines`` (for a failure's message),
    and passed on to ``say``. Plain strings are log lines here: what the build's own code says
    for the user goes through ``note`` and ``step``."""

    def __init__(self, say: Progress):
        self.say = say
        self.lines: List[str] = []
        self._file: Optional[IO[str]] = None
        self._pending: List[str] = []
        self._lock = threading.Lock()
        self._steps: Dict[int, Tuple[Step, float]] = {}
        self._tokens = itertools.count(1)

    def attach(self, file: IO[str]) -> None:
        with self._lock:
            self._file = file
            for text in self._pending:
                file.write(text + "\n")
            self._pending = []
            file.flush()

    def detach(self) -> None:
        with self._lock:
            self._file = None

    def _write(self, text: str, keep: bool = True, in_file: Optional[str] = None) -> None:
        in_file = text if in_file is None else in_file
        with self._lock:
            if keep:
                self.lines.append(text)
            if self._file is None:
                self._pending.append(in_file)
            else:
                self._file.write(in_file + "\n")
                self._file.flush()

    def __call__(self, line: str) -> None:
        self.log(line)

    def log(self, line: str) -> None:
        self._write(line)
        log(self.say, line)

    def note(self, text: str) -> None:
        self._write(text)
        note(self.say, text)

    def begin(self, title: str, total: Optional[int] = None, unit: str = "") -> int:
        # kept as it is: a Dockerfile build's "Step N/M : ..." stays findable for its failure
        self._write(title, in_file=title if _DOCKER_STEP.match(title) else "==> " + title)
        token = next(self._tokens)
        self._steps[token] = (step(self.say, title, total, unit), time.monotonic())
        return token

    def update(self, token: Any, advance: int = 0, completed: Optional[int] = None,
               total: Optional[int] = None, detail: Optional[str] = None) -> None:
        found = self._steps.get(token)
        if found is not None:
            found[0].update(completed=completed, total=total, detail=detail, advance=advance)

    def end(self, token: Any, ok: bool = True, note: str = "") -> None:
        found = self._steps.pop(token, None)
        if found is None:
            return
        handle, started = found
        self._write(f"--> {'done' if ok else 'FAILED'} after {elapsed(time.monotonic() - started)}: "
                    f"{handle.title}" + (f" ({note})" if note else ""), keep=False)
        handle.done(note) if ok else handle.fail(note)

    def abort(self) -> None:
        """The build failed: its unfinished steps are marked failed."""
        for token in list(self._steps):
            self.end(token, ok=False)
