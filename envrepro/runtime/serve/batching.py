"""Adaptive batching of the model server: concurrent requests merged into one model call, as TF
Serving's batching does (ENVREPRO_SERVE_BATCH_MAX_SIZE rows per call, ENVREPRO_SERVE_BATCH_TIMEOUT_MS
for the first request to wait for others; the queue's bound is ENVREPRO_SERVE_QUEUE's).

A worker that takes a request (queue.PredictQueue) gathers the queued requests with the same input
signature (the same input names, dtypes and shapes but the first dimension), in arrival order,
while their rows fit in the maximum, for at most the timeout (and never past the first request's
deadline); it concatenates their inputs along axis 0, calls the model once and splits each output
back into each request's rows. A request whose rows alone reach the maximum, or whose inputs can't
be concatenated (a scalar input, a fixed first dimension, inputs of different row counts), runs
alone. A gathered request whose deadline passed before the call is dropped unrun (504). When the
merged call raises, or its outputs don't have one row per input row, each request is run alone:
one bad request fails alone, and a model whose outputs aren't per row still answers right.
Off by default (docs/serving.md says why). Standard library only (numpy from the load), Python 3.6
syntax.
"""
from __future__ import absolute_import, division, print_function

from .queue import DeadlineExceeded, PredictQueue, clock, rows_of


def batch_key(inputs, signature):
    """What requests must share to be concatenated: ``((name, dtype, shape[1:]), ...)`` in the
    signature's order; None when the request can't be batched."""
    key = []
    rows = None
    for spec in signature.inputs:
        arr = inputs.get(spec.name)
        if arr is None or not getattr(arr, "ndim", 0):
            return None
        if spec.shape is not None and (not spec.shape or spec.shape[0] is not None):
            return None   # the model's first dimension is not a free batch dimension
        if rows is None:
            rows = arr.shape[0]
        elif arr.shape[0] != rows:
            return None
        key.append((spec.name, arr.dtype.str, tuple(arr.shape[1:])))
    if not key or not rows or len(inputs) != len(key):
        return None
    return tuple(key)


class BatchingQueue(PredictQueue):
    """A PredictQueue whose workers merge compatible queued requests (at most ``max_size`` rows,
    waiting ``timeout`` seconds at most for them) into one call of ``predict``."""

    def __init__(self, predict, signature, max_size, timeout, **kwargs):
        PredictQueue.__init__(self, predict, **kwargs)
        self.signature = signature
        self.max_size = max(1, int(max_size))
        self.timeout = max(0.0, float(timeout))

    def _take(self):
        jobs = PredictQueue._take(self)
        if not jobs:
            return jobs
        first = jobs[0]
        key = batch_key(first.inputs, self.signature)
        rows = rows_of(first.inputs)
        if key is None or rows >= self.max_size:
            return jobs
        end = min(clock() + self.timeout, first.deadline)
        dropped = []
        with self._cond:
            while True:
                rows = self._gather(jobs, key, rows)
                left = end - clock()
                if rows >= self.max_size or left <= 0 or self._stopped:
                    break
                self._cond.wait(left)
            now = clock()
            for job in list(jobs):   # past its deadline while gathered: never run
                if job.state != "running" or now >= job.deadline:
                    jobs.remove(job)
                    dropped.append(job)
                    if job.state == "running":
                        job.state = "expired"
            if not jobs:
                self._busy -= 1
        for job in dropped:
            if self.on_expired is not None:
                self.on_expired()
            job.done.set()
        return jobs or False

    def _gather(self, jobs, key, rows):
        """Move the queued jobs that fit (same key, rows within the maximum, deadline ahead) into
        ``jobs``, in arrival order; the rows gathered. Called with the lock held."""
        now = clock()
        for job in list(self._waiting):
            if rows >= self.max_size:
                break
            more = rows_of(job.inputs)
            if rows + more > self.max_size or now >= job.deadline:
                continue
            if batch_key(job.inputs, self.signature) != key:
                continue
            self._waiting.remove(job)
            job.state = "running"
            jobs.append(job)
            rows += more
        return rows

    def _run(self, jobs):
        if len(jobs) == 1:
            return PredictQueue._run(self, jobs)
        import numpy as np

        counts = [rows_of(job.inputs) for job in jobs]
        total = sum(counts)
        try:
            merged = dict((name, np.concatenate([job.inputs[name] for job in jobs], axis=0))
                          for name in jobs[0].inputs)
        except Exception:   # (the keys agree: not expected) never a dead worker for it
            return self._one_by_one(jobs)
        self._observe(jobs, total)
        try:
            outputs = self.predict(merged)
        except Exception:   # which request? each alone: only the bad one fails
            return self._one_by_one(jobs)
        del merged
        if not all(getattr(arr, "ndim", 0) and arr.shape[0] == total for _, arr in outputs):
            return self._one_by_one(jobs)   # outputs not per row: can't be split
        answers = []
        start = 0
        for count in counts:
            answers.append(([(name, arr[start:start + count]) for name, arr in outputs], None))
            start += count
        return answers

    def _one_by_one(self, jobs):
        answers = []
        for job in jobs:
            if job.state != "running" or clock() >= job.deadline:
                answers.append((None, DeadlineExceeded()))
            else:
                answers.extend(PredictQueue._run(self, [job]))
        return answers


def make_queue(servable, opts, on_expired=None, on_fatal=None, on_run=None):
    """The server's queue: a BatchingQueue when ``opts["batch_max_size"]`` > 0, else a
    PredictQueue (``opts``: main.options)."""
    kwargs = dict(workers=opts["workers"], size=opts["queue"], on_expired=on_expired,
                  on_fatal=on_fatal, on_run=on_run)
    if opts.get("batch_max_size", 0) > 0:
        return BatchingQueue(servable.predict, servable.signature, opts["batch_max_size"],
                             opts.get("batch_timeout_ms", 0) / 1000.0, **kwargs)
    return PredictQueue(servable.predict, **kwargs)


def describe(opts):
    """The batching settings for the ready log line."""
    if opts.get("batch_max_size", 0) > 0:
        return "batching up to %d rows, waiting up to %gms" % (opts["batch_max_size"], opts["batch_timeout_ms"])
    return "batching off"
