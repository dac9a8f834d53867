"""The model server's bounds as functions (runtime/serve/limits.py, framing.py): the JSON scan
(depth, values, number length, strings cut out first), its memory estimate against what
json.loads really takes, the budgets, and the framing rules for Content-Length and friends."""
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc

import pytest

from envrepro.runtime import launch
from envrepro.runtime.serve import framing, limits
from envrepro.runtime.serve.errors import BadRequest, PayloadTooLarge, ServeError
from envrepro.runtime.serve.queue import clock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from support import need, pyenv_python  # noqa: E402


def nested(depth, inner=b"1"):
    return b"[" * depth + inner + b"]" * depth


@pytest.mark.parametrize("body, ok", [
    (nested(64), True), (nested(65), False), (nested(64, b"{}"), False), (nested(63, b"{}"), True),
    (b'{"a": ' * 64 + b"1" + b"}" * 64, True), (b'{"a": ' * 65 + b"1" + b"}" * 65, False),
    # depth without a long run of opening brackets: [[], [[], [[], ...]]]
    (b"[[]," * 70 + b"1" + b"]" * 70, False), (b"[[]," * 60 + b"1" + b"]" * 60, True),
    # brackets inside strings (escaped quotes too) don't count
    (b'["' + b"[" * 200 + b'\\"' + b"[" * 200 + b'"]', True),
    (b'["\\\\", ' + b"[" * 70 + b"]" * 70 + b"]", False),
    (b"]]]" + b"[" * 10, True),   # unbalanced: json.loads says so, not the scan
])
def test_depth(body, ok):
    if ok:
        limits.scan(body, 10 ** 9)
    else:
        with pytest.raises(BadRequest, match="nested deeper than 64"):
            limits.scan(body, 10 ** 9)


@pytest.mark.parametrize("body", [
    b'"' + b'\\"' * 1000000,                     # escaped quotes, unterminated: quadratic for a naive pattern
    b'["' + b"x" * 4000000, b'"x' * 1000000, b'"' + b"\\a" * 1000000,
    (b"1" * 100 + b",") * 40000,                    # runs just under the number limit
    (b"[" * 64 + b"]" * 64 + b",") * 30000,          # depth at the limit, many times
])
def test_the_scan_is_linear_on_hostile_bodies(body):
    t = time.perf_counter()
    try:
        limits.scan(body, 10 ** 9)
    except BadRequest:
        pass
    assert time.perf_counter() - t < 1.0


def test_numbers_and_counts():
    limits.scan(b"[" + b"1" * 100 + b", -1.5e-300, " + b"9" * 50 + b"." + b"9" * 49 + b"]", 100)
    for number in (b"1" * 101, b"-" + b"1" * 100, b"1." + b"0" * 99, b"1e" + b"0" * 99):
        with pytest.raises(BadRequest, match="over 100 characters"):
            limits.scan(b"[" + number + b"]", 100)
    found = limits.scan(b'{"n": "' + b"7" * 5000 + b'", "e": "-----------------------------"}', 100)   # strings
    assert found.strings == 4 and found.members == 2 and found.objects == 1
    found = limits.scan(b'[[1, 2], {"a": [3]}, "x,y:[z]", []]', 100)
    assert (found.lists, found.objects, found.members) == (4, 1, 1) and found.values >= 8
    with pytest.raises(PayloadTooLarge, match="ENVREPRO_SERVE_MAX_ELEMENTS"):
        limits.scan(b"[" + b"1," * 100 + b"1]", 100)


@pytest.mark.parametrize("make", [
    lambda n: json.dumps([0.123456789] * n), lambda n: json.dumps(list(range(n))),
    lambda n: json.dumps([[]] * n), lambda n: json.dumps([{}] * n), lambda n: json.dumps([{"a": 1}] * n),
    lambda n: json.dumps([[0.5, 0.25, 0.125]] * n), lambda n: json.dumps(["abcdefghij%d" % i for i in range(n)]),
    lambda n: json.dumps(["h\u00e9llo w\u00f6rld %d" % i for i in range(n)], ensure_ascii=False),
    lambda n: json.dumps(["\U0001f600 %d" % i for i in range(n)], ensure_ascii=False),
    lambda n: json.dumps(["\U0001f600 %d" % i for i in range(n)]),
    lambda n: json.dumps({"k%d" % i: i for i in range(n)}),
])
def test_the_estimate_covers_what_json_loads_takes(make):
    body = make(20000).encode("utf-8")
    found = limits.scan(body, 10 ** 9)
    tracemalloc.start()
    try:
        value = limits.decode(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del value
    assert peak <= found.estimate, (peak, found.estimate)
    assert found.estimate < 12 * peak + 8 * len(body), (peak, found.estimate)   # and not absurdly over


# The same check under Python 3.6 (bigger dicts), with the runtime package loaded as the server
# loads it; and the scan's worst cases there (its regular expressions and searches are 3.6's).
ESTIMATE_36 = """
import importlib.util, json, sys, time, tracemalloc
root = sys.argv[1]
spec = importlib.util.spec_from_file_location('envrepro_runtime', root + '/__init__.py', submodule_search_locations=[root])
pkg = importlib.util.module_from_spec(spec); sys.modules[spec.name] = pkg; spec.loader.exec_module(pkg)
from envrepro_runtime.serve import limits
n = 20000
for text in (json.dumps([{} for _ in range(n)]), json.dumps([{"a": i} for i in range(n)]),
             json.dumps([[0.5, 0.25, 0.125] for _ in range(n)]), json.dumps(["abcdefghij%d" % i for i in range(n)]),
             json.dumps(["\\U0001f600 %d" % i for i in range(n)], ensure_ascii=False)):
    body = text.encode("utf-8")
    found = limits.scan(body, 10 ** 9)
    tracemalloc.start(); value = limits.decode(body); peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    assert peak <= found.estimate, (text[:20], peak, found.estimate)
for body in (b'"' + b'\\\\"' * 1000000, (b"1" * 100 + b",") * 40000, (b"[" * 64 + b"]" * 64 + b",") * 30000):
    t = time.time()
    try:
        limits.scan(body, 10 ** 9)
    except limits.BadRequest:
        pass
    assert time.time() - t < 1.0, time.time() - t
print("ok")
"""


def test_the_estimate_and_the_scan_under_python36():
    python = pyenv_python("3.6")
    need(python, "no Python 3.6 interpreter (pyenv's build)")
    proc = subprocess.run([python, "-B", "-c", ESTIMATE_36, launch.HOST_DIR], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_decode_errors():
    with pytest.raises(BadRequest, match="not UTF-8 JSON.*HINT"):
        limits.decode(b"\xed\xa0\x80", " HINT")        # an encoded surrogate is not UTF-8
    with pytest.raises(BadRequest, match="not valid JSON: Extra data"):
        limits.decode(b"{} {}")
    with pytest.raises(BadRequest, match="nested too deeply"):
        limits.decode(nested(100000))                  # the scan's backstop
    assert limits.decode(bytearray(b'{"a": [1]}')) == {"a": [1]}


def test_budget_waits_shrinks_and_times_out():
    budget = limits.Budget(100)
    first = budget.reserve(80, clock() + 1)
    assert budget.reserve(30, clock() + 0.1) is None            # no room until the deadline
    got = []
    t = threading.Thread(target=lambda: got.append(budget.reserve(30, clock() + 5)))
    t.start()
    time.sleep(0.1)
    assert not got
    first.shrink(50)                                            # room made: the waiter gets it
    t.join(5)
    assert got[0].size == 30 and budget.used == 80
    first.release()
    got[0].release()
    got[0].release()
    assert budget.used == 0


def test_limits_hold_bodies_and_refuse_parses_that_never_fit():
    lim = limits.Limits({"memory": 4 << 20, "max_body": 1 << 20})
    assert (lim.bodies.total, lim.parses.total) == (1 << 20, 3 << 20)
    hold = lim.hold_body(1 << 20, clock() + 1)
    with pytest.raises(ServeError) as info:
        lim.hold_body(10, clock() + 0.05)
    assert info.value.status == 503 and ("Retry-After", "1") in info.value.headers
    hold.release()
    with pytest.raises(PayloadTooLarge, match="parsed requests"):
        lim.parse(b"[" + b"{}," * 100000 + b"{}]", clock() + 1)
    value, hold, found = lim.parse(b'{"instances": [[1, 2, 3]]}', clock() + 1)
    assert value == {"instances": [[1, 2, 3]]} and lim.parses.used == found.estimate
    hold.release()
    assert lim.parses.used == 0


class Head(framing.Head):
    def __init__(self, *fields, **kw):
        framing.Head.__init__(self, "POST", "/", kw.get("version", "HTTP/1.1"),
                              [(k.lower(), v) for k, v in fields])


def test_framing_rules():
    assert framing.body_length(Head()) is None
    assert framing.body_length(Head(("Content-Length", "0024"))) == 24
    assert framing.body_length(Head(("Content-Length", "24"), ("content-length", "24, 24"))) == 24
    assert framing.body_length(Head(("Content-Length", "9" * 40))) == framing.HUGE
    for bad in ("+24", "2_4", "24 ", " ", "٢٤", "1e3"):
        with pytest.raises(BadRequest):
            framing.body_length(Head(("Content-Length", bad.strip(" \t") if bad != "24 " else "2 4")))
    with pytest.raises(ServeError) as info:
        framing.body_length(Head(("Transfer-Encoding", "chunked")))
    assert info.value.status == 411
    assert framing.keep_alive(Head()) and not framing.keep_alive(Head(("Connection", "Close")))
    assert not framing.keep_alive(Head(version="HTTP/1.0"))
    assert framing.keep_alive(Head(("Connection", "foo, Keep-Alive"), version="HTTP/1.0"))
    assert framing.expects_continue(Head(("Expect", "100-Continue")))
    assert not framing.expects_continue(Head(("Expect", "100-continue"), version="HTTP/1.0"))
    with pytest.raises(ServeError) as info:
        framing.expects_continue(Head(("Expect", "something")))
    assert info.value.status == 417
