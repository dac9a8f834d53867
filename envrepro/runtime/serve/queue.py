"""The model server's predictions: a bounded queue in front of a fixed number of worker threads,
with a deadline per request.

A request thread submits a job and waits for it until the request's deadline. Submitting to a full
queue raises QueueFull (503); a job still waiting when its deadline passes is dropped by the worker
that takes it, never run; a job running when its waiter gives up finishes and its result is
discarded (a prediction can't be interrupted). The errors are errors.ServeError: the HTTP layer
answers them as they are.

A worker that dies (the model raised SystemExit, KeyboardInterrupt or another BaseException, or the
thread ended any other way) answers its job 500, fails the queued jobs at once (503) and refuses
new ones, and calls ``on_fatal(message)``: the server then turns readiness off and exits, so the
orchestrator restarts it; no request waits for its deadline. Standard library only, Python 3.6
syntax.
"""
from __future__ import absolute_import, division, print_function

import collections
import threading
import time

from ..facts import short_error
from .errors import GatewayTimeout, InternalError, Overloaded, ServeError, Unavailable

clock = time.monotonic


def rows_of(inputs):
    """The rows of a request's inputs: the first dimension of its first input with one (1 when
    none has)."""
    for arr in (inputs.values() if isinstance(inputs, dict) else ()):
        if getattr(arr, "ndim", 0):
            return int(arr.shape[0])
    return 1


class QueueFull(Overloaded):
    """Every worker is busy and the queue holds its maximum of waiting jobs (503, Retry-After)."""


class DeadlineExceeded(GatewayTimeout):
    """The request's deadline passed before its prediction finished (504; the data plane, which
    knows the setting, says which deadline)."""

    def __init__(self, message="the prediction did not finish within its deadline"):
        GatewayTimeout.__init__(self, message)


class PredictFailed(InternalError):
    """The model raised (500); ``cause`` is its exception."""

    def __init__(self, cause):
        InternalError.__init__(self, "the model failed: %s" % short_error(cause))
        self.cause = cause


class WorkerDied(Unavailable):
    """503 with Retry-After: a prediction worker died; the server is stopping (another replica, or
    this one restarted, answers the retry)."""

    HEADERS = (("Retry-After", "1"),)


class Job(object):
    __slots__ = ("inputs", "deadline", "done", "result", "error", "state", "queued_at")

    def __init__(self, inputs, deadline):
        self.inputs = inputs
        self.deadline = deadline
        self.queued_at = clock()
        self.done = threading.Event()
        self.result = None
        self.error = None
        self.state = "queued"   # -> running -> finished, or -> abandoned / expired


class PredictQueue(object):
    """``workers`` threads calling ``predict(inputs)``; at most ``size`` jobs wait for them.
    ``on_expired`` is called for each job dropped unrun, ``on_fatal(message)`` once when a worker
    dies (``dead`` is that message from then on), ``on_run(rows, waits)`` before each model call
    (the rows it predicts, and the seconds each of its requests waited in the queue)."""

    def __init__(self, predict, workers=1, size=32, on_expired=None, on_fatal=None, on_run=None):
        self.predict = predict
        self.workers = max(1, int(workers))
        self.size = max(0, int(size))
        self.on_expired = on_expired
        self.on_fatal = on_fatal
        self.on_run = on_run
        self.dead = None
        self._cond = threading.Condition()
        self._waiting = collections.deque()
        self._idle = 0
        self._busy = 0
        self._stopped = False
        self._threads = []

    def start(self):
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name="envrepro-predict-%d" % i)
            t.daemon = True
            t.start()
            self._threads.append(t)

    def depth(self):
        """Jobs waiting for a worker."""
        with self._cond:
            return max(0, len(self._waiting) - self._idle)

    def busy(self):
        """Workers running a prediction now."""
        with self._cond:
            return self._busy

    def submit(self, inputs, deadline):
        """Queue a prediction due by ``deadline`` (a ``clock()`` time); QueueFull when full."""
        job = Job(inputs, deadline)
        with self._cond:
            if self.dead is not None:
                raise WorkerDied("the server is stopping: %s" % self.dead)
            if self._stopped or len(self._waiting) + 1 - self._idle > self.size:
                raise QueueFull("the server is busy: the queue of %d requests is full" % self.size)
            self._waiting.append(job)
            self._cond.notify_all()   # idle workers, and one gathering a batch
        return job

    def wait(self, job):
        """The job's outputs; DeadlineExceeded or PredictFailed."""
        job.done.wait(max(0.0, job.deadline - clock()))
        dropped = False
        with self._cond:
            if job.state == "finished":
                if isinstance(job.error, ServeError):   # already the answer (WorkerDied...)
                    raise job.error
                if job.error is not None:
                    raise PredictFailed(job.error)
                return job.result
            if job.state == "queued":     # still waiting: dropped here, never run
                self._waiting.remove(job)
                job.state = "expired"
                dropped = True
            elif job.state == "running":  # its result will be discarded
                job.state = "abandoned"
        if dropped and self.on_expired is not None:
            self.on_expired()
        raise DeadlineExceeded()

    def stop(self):
        """Workers exit once the queue is empty; jobs submitted from now on are refused."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _take(self):
        with self._cond:
            self._idle += 1
            while not self._waiting and not self._stopped:
                self._cond.wait()
            self._idle -= 1
            if not self._waiting:
                return None
            job = self._waiting.popleft()
            if clock() >= job.deadline:
                job.state = "expired"
                expired = True
            else:
                job.state = "running"
                self._busy += 1
                expired = False
        if expired:
            if self.on_expired is not None:
                self.on_expired()
            job.done.set()
            return False
        return [job]

    def alive(self):
        """False once a worker died or a worker thread is gone while the queue runs."""
        if self.dead is not None:
            return False
        return self._stopped or all(t.is_alive() for t in self._threads)

    def _work(self):
        reason = "a prediction worker died: its thread ended"
        try:
            while True:
                jobs = self._take()
                if jobs is None:
                    reason = None      # stopped: the normal end
                    return
                if jobs is False:
                    continue
                try:
                    answers = self._run(jobs)
                except BaseException as exc:   # SystemExit, KeyboardInterrupt...: this worker dies
                    reason = "a prediction worker died: %s" % short_error(exc)
                    self._finish(jobs, [(None, PredictFailed(exc))] * len(jobs))
                    return
                self._finish(jobs, answers)
        except BaseException as exc:   # a bug in the queue itself
            reason = "a prediction worker died: %s" % short_error(exc)
        finally:
            if reason is not None:
                self.die(reason)

    def _observe(self, jobs, rows=None):
        if self.on_run is not None:
            now = clock()
            self.on_run(rows_of(jobs[0].inputs) if rows is None else rows,
                        [now - job.queued_at for job in jobs])

    def _run(self, jobs):
        """``[(result, error)]`` for the jobs taken (one here; batching.py takes several): the
        model's Exception is the error; a BaseException kills the worker."""
        job = jobs[0]
        self._observe(jobs)
        try:
            return [(self.predict(job.inputs), None)]
        except Exception as exc:  # the model's error, answered 500 by the waiter
            return [(None, exc)]

    def _finish(self, jobs, answers):
        with self._cond:
            self._busy -= 1
            for job, (result, error) in zip(jobs, answers):
                if job.state == "running":
                    job.state = "finished"
                    job.result, job.error = result, error
        for job in jobs:
            job.done.set()

    def die(self, reason):
        """A worker is gone: every queued job is answered 503 now, new ones are refused, and
        ``on_fatal`` is told (once)."""
        with self._cond:
            first = self.dead is None
            if first:
                self.dead = reason
            failed = list(self._waiting)
            self._waiting.clear()
            for job in failed:
                job.state = "finished"
                job.error = WorkerDied("the server is stopping: %s" % reason)
            self._stopped = True
            self._cond.notify_all()
        for job in failed:
            job.done.set()
        if first and self.on_fatal is not None:
            try:
                self.on_fatal(reason)
            except Exception:
                pass
