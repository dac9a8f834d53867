"""What a request may cost the model server, decided before the work: the memory its body and its
parsed JSON may take (ENVREPRO_SERVE_REQUEST_MEMORY), and bounds on the JSON checked before
``json.loads`` sees it (nesting, values, number length), so that memory and CPU stay bounded
whatever clients send.

The memory is two budgets (Budget): a quarter of ENVREPRO_SERVE_REQUEST_MEMORY for the bodies
held (from before a body is read until its answer is made; bodies of LARGE_BODY bytes or more
leave an eighth of it to smaller ones, unless nothing else is held), the rest for parsing (each request's
parse is estimated from its scan, reserved before ``json.loads``, and shrunk to the size of its
input tensors once they are made; they are held until the answer is made). A request waits for room
until its deadline (then 503, Retry-After); one that could never fit is 413. Waiting in two
budgets taken in one order (bodies, then parses) can't deadlock: a parse, once reserved, waits for
nothing but a worker.

The scan (``scan``) works at C speed and in linear time on the body's bytes: escapes, then
strings cut out with regular expressions that can't backtrack far, then counts, literal searches
and a running sum of brackets over what is left. It refuses (before ``json.loads``):
nesting deeper than MAX_DEPTH (400), a number literal over MAX_NUMBER characters (400: CPython
< 3.11 converts a long integer in quadratic time: 1.6 million digits take 10 seconds on Python
3.6, 32 MiB of them over an hour), more values than ENVREPRO_SERVE_MAX_ELEMENTS (413). Standard
library only, Python 3.6 syntax.

``raise_descriptor_limit``: the process's open-files limit raised for the connections it keeps
open (listener.py).
"""
from __future__ import absolute_import, division, print_function

import array
import itertools
import json
import re
import threading

from . import config

try:
    import resource
except ImportError:   # not a Unix
    resource = None
from .errors import BadRequest, Busy, PayloadTooLarge
from .queue import clock

MAX_DEPTH = 64          # nesting of JSON arrays and objects; deeper -> 400
MAX_NUMBER = 100        # characters of one number literal; longer -> 400
MIB = 1 << 20
LARGE_BODY = MIB        # bodies from this size leave an eighth of the bodies' memory to smaller ones

# The memory estimate of a parse, in bytes (measured with tracemalloc on CPython 3.6 and 3.11, and
# rounded up): each value (a pointer, a float object, its share of the list's spare room, its
# element in the input arrays), each array, object (an empty dict is 240 bytes on 3.6), member,
# and string (the str and the bytes made of it), plus the decoded text and the strings' characters.
PER_VALUE = 56
PER_LIST = 72
PER_OBJECT = 256
PER_MEMBER = 48
PER_STRING = 112

# Escapes first, then strings: one pattern for both (``"(?:[^"\\]|\\.)*"``) backtracks in
# quadratic time over an unterminated string of escaped quotes (400 KB took minutes).
_ESCAPE = re.compile(br"\\.", re.S)
_STRING = re.compile(br'"[^"]*"')
_LONG_NUMBER = re.compile(b"0" * (MAX_NUMBER + 1))   # a literal: searched in linear time
_ALL = bytes(bytearray(range(256)))
_NOT_MARKS = _ALL.translate(None, b"[]{},:")
_NUMBERISH = bytes(bytearray(48 if chr(i) in "+-.eE0123456789" else 32 for i in range(256)))
_SIGNS = bytes(bytearray(1 if i in (91, 123) else 255 if i in (93, 125) else 0 for i in range(256)))   # +1, -1
_ASCII = _ALL[:128]
_ASTRAL = re.compile(b"[\xf0-\xff]")


class Scan(object):
    """What the scan of a body found: ``values`` (an upper bound), ``lists``, ``objects``,
    ``members``, ``strings``, ``string_bytes``, and ``estimate`` (bytes its parse takes)."""

    def __init__(self, **counts):
        self.__dict__.update(counts)


def depth(marks):
    """How deep brackets (``[]{}``, with ``,`` and ``:`` among them) nest: the highest running
    count, +1 per opening bracket and -1 per closing one, summed at C speed."""
    signs = marks.translate(_SIGNS, b",:")
    return max(itertools.accumulate(array.array("b", signs))) if signs else 0


def scan(body, max_values):
    """Scan the body (bytes) before it is parsed: Scan, or BadRequest / PayloadTooLarge."""
    rest = _STRING.sub(b"", _ESCAPE.sub(b"", body) if b"\\" in body else body)
    string_bytes = len(body) - len(rest)
    if _LONG_NUMBER.search(rest.translate(_NUMBERISH)):
        raise BadRequest("a number is over %d characters long" % MAX_NUMBER)
    marks = rest.translate(None, _NOT_MARKS)
    del rest
    lists, objects, members = marks.count(b"["), marks.count(b"{"), marks.count(b":")
    values = marks.count(b",") + lists + objects + 1
    if values > max_values:
        raise PayloadTooLarge("the body has about %d JSON values, over the limit of %d "
                              "(ENVREPRO_SERVE_MAX_ELEMENTS)" % (values, max_values))
    if lists + objects > MAX_DEPTH and depth(marks) > MAX_DEPTH:
        raise BadRequest("the JSON is nested deeper than %d levels" % MAX_DEPTH)
    wide = body.translate(None, _ASCII)
    text_width = 1 if not wide else 4 if _ASTRAL.search(wide) else 2
    string_width = 4 if b"\\u" in body else text_width
    strings = body.count(b'"') // 2
    estimate = (text_width * len(body) + (string_width + 1) * string_bytes + PER_STRING * strings
                + PER_VALUE * values + PER_LIST * lists + PER_OBJECT * objects + PER_MEMBER * members)
    return Scan(values=values, lists=lists, objects=objects, members=members, strings=strings,
                string_bytes=string_bytes, estimate=estimate)


class Hold(object):
    """Bytes held in a Budget: ``shrink(n)`` gives back all but ``n``, ``release()`` all."""

    def __init__(self, budget, size):
        self.budget, self.size = budget, size

    def shrink(self, size):
        if size < self.size:
            self.budget.give(self.size - size)
            self.size = size

    def release(self):
        self.shrink(0)


class Budget(object):
    """``total`` bytes shared by the requests."""

    def __init__(self, total):
        self.total = int(total)
        self.used = 0
        self._cond = threading.Condition()

    def reserve(self, size, deadline, keep=0):
        """A Hold of ``size`` bytes, once there is room (waiting until ``deadline`` at most: None
        then). ``keep``: bytes it must leave free for others, unless nothing else is held."""
        with self._cond:
            while self.used + size > self.total or (self.used and self.used + size > self.total - keep):
                left = deadline - clock()
                if left <= 0:
                    return None
                self._cond.wait(left)
            self.used += size
        return Hold(self, size)

    def give(self, size):
        with self._cond:
            self.used -= size
            self._cond.notify_all()


def _mib(size):
    return "%.0f MiB" % (size / MIB) if size >= MIB else "%d bytes" % size


def body_busy():
    """Busy (503): no room for a body until its request's deadline."""
    return Busy("the server is busy: the memory for request bodies (a quarter of "
                "ENVREPRO_SERVE_REQUEST_MEMORY) stayed full until the request's deadline")


class Limits(object):
    """The bounds of one server, from its settings (``max_body``, ``max_elements``, ``max_batch``,
    ``memory``; defaults where missing)."""

    def __init__(self, settings):
        memory = int(settings.get("memory") or config.SETTINGS["ENVREPRO_SERVE_REQUEST_MEMORY"])
        self.max_values = int(settings.get("max_elements") or config.SETTINGS["ENVREPRO_SERVE_MAX_ELEMENTS"])
        self.max_batch = int(settings.get("max_batch") or config.SETTINGS["ENVREPRO_SERVE_MAX_BATCH"])
        self.bodies = Budget(memory // 4)
        self.parses = Budget(memory - memory // 4)
        self._scanning = threading.Lock()   # one scan at a time: its copies are a body's size

    def hold_body(self, length, deadline):
        """The Hold of a body of ``length`` bytes, taken before it is read; Busy (503) when the
        bodies held leave no room for it until ``deadline``."""
        hold = self.try_hold_body(length) or self.bodies.reserve(length, deadline, self._keep(length))
        if hold is None:
            raise body_busy()
        return hold

    def try_hold_body(self, length):
        """The Hold of a body of ``length`` bytes if there is room now, else None;
        PayloadTooLarge when there never can be."""
        if length > self.bodies.total:
            raise PayloadTooLarge("the body is %d bytes, over the %s for request bodies (a quarter of "
                                  "ENVREPRO_SERVE_REQUEST_MEMORY)" % (length, _mib(self.bodies.total)))
        return self.bodies.reserve(length, clock(), self._keep(length))

    def _keep(self, length):
        """What a body of ``length`` bytes leaves free in the bodies' budget: an eighth of it for
        small bodies when it is LARGE_BODY or more, so that large bodies coming slowly (each cut
        for its pace in seconds, and back) never keep small requests waiting."""
        return self.bodies.total // 8 if length >= LARGE_BODY else 0

    def parse(self, body, deadline, hint=""):
        """``body`` (bytes) scanned then decoded as UTF-8 JSON: ``(value, hold, scan)``, ``hold``
        the parse's estimated memory (the caller shrinks it to the inputs made of the value, and
        releases it once answered). ``hint`` ends the messages of a 400."""
        if not self._scanning.acquire(timeout=max(0.0, deadline - clock())):
            raise Busy("the server is busy: the request's deadline passed before its body was scanned")
        try:
            found = scan(body, self.max_values)
        except BadRequest as err:
            raise type(err)(err.message + hint)
        finally:
            self._scanning.release()
        if found.estimate > self.parses.total:
            raise PayloadTooLarge("parsing the body would take about %s, over the %s for parsed requests "
                                  "(three quarters of ENVREPRO_SERVE_REQUEST_MEMORY)"
                                  % (_mib(found.estimate), _mib(self.parses.total)))
        hold = self.parses.reserve(found.estimate, deadline)
        if hold is None:
            raise Busy("the server is busy: the memory for parsed requests (ENVREPRO_SERVE_REQUEST_MEMORY) "
                       "stayed full until the request's deadline")
        try:
            return decode(body, hint), hold, found
        except BaseException:
            hold.release()
            raise

    def grow(self, hold, size, deadline):
        """Grow a parse's ``hold`` to ``size`` bytes (what its inputs will take): PayloadTooLarge
        when that could never fit, Busy when no room was made until ``deadline``."""
        if size > self.parses.total:
            raise PayloadTooLarge("the request's tensors would take about %s, over the %s for parsed "
                                  "requests (three quarters of ENVREPRO_SERVE_REQUEST_MEMORY)"
                                  % (_mib(size), _mib(self.parses.total)))
        if size > hold.size:
            if self.parses.reserve(size - hold.size, deadline) is None:
                raise Busy("the server is busy: the memory for parsed requests "
                           "(ENVREPRO_SERVE_REQUEST_MEMORY) stayed full until the request's deadline")
            hold.size = size

    def check_batch(self, inputs, signature):
        """PayloadTooLarge when an input with a free first dimension has more rows than
        ENVREPRO_SERVE_MAX_BATCH."""
        for spec in signature.inputs:
            arr = inputs.get(spec.name)
            free = spec.shape is None or (len(spec.shape) > 0 and spec.shape[0] is None)
            if free and arr is not None and arr.ndim and arr.shape[0] > self.max_batch:
                raise PayloadTooLarge("input '%s' has a batch of %d rows, over the limit of %d "
                                      "(ENVREPRO_SERVE_MAX_BATCH)" % (spec.name, arr.shape[0], self.max_batch))


def decode(body, hint=""):
    """The body's JSON value: BadRequest (with ``hint``) unless it is UTF-8 JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 JSON" + hint)
    try:
        return json.loads(text)
    except RecursionError:
        raise BadRequest("the JSON is nested too deeply" + hint)
    except ValueError as exc:
        raise BadRequest("the body is not valid JSON: %s%s" % (str(exc).splitlines()[0][:200], hint))


def tensor_bytes(inputs, found):
    """What the inputs made of a parse hold: their arrays, plus the strings of object arrays."""
    size = sum(int(a.nbytes) for a in inputs.values())
    if any(a.dtype.kind == "O" for a in inputs.values()):
        size += found.string_bytes + PER_STRING * found.strings
    return size


_DESCRIPTORS = 64    # descriptors kept beyond the connections (the model's files, pipes, the gate's own)


def raise_descriptor_limit(connections):
    """Raise this process's soft limit of open files toward its hard limit, for ``connections``
    open at once (Python's default soft limit is often 1024); the connections it allows."""
    if resource is None:
        return connections
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = connections + _DESCRIPTORS
        if soft != resource.RLIM_INFINITY and soft < want:
            soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        if soft == resource.RLIM_INFINITY:
            return connections
        return max(1, min(connections, soft - _DESCRIPTORS))
    except (ValueError, OSError):
        return connections
