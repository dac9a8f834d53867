"""The model server against hostile and slow clients, over raw sockets to the real server (in
process, a fake numpy model): strict HTTP framing (Content-Length digits only and agreeing,
malformed header lines, Transfer-Encoding, sizes), one deadline for the request line, headers and
body (408), the request deadline counted from the first byte, the bounded connection pool (idle
connections make room, busy ones get 503), the memory budgets (503, 413), and the JSON bounds:
every client mistake a short 4xx, the next request still answered."""
import json
import os
import socket
import sys
import threading
import time

import pytest

from envrepro.runtime.serve import main as serve
from envrepro.runtime.serve.queue import clock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GOOD = json.dumps({"instances": [[1, 2, 3]]}).encode()
PREDICT = b"POST /v1/models/fake:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
INFER = b"POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def connect(s, timeout=10):
    return socket.create_connection(("127.0.0.1", s.port), timeout=timeout)


_PENDING = {}   # bytes received past an answer, by socket (pipelined answers)


def read_answer(sock):
    """One answer from ``sock``: (status, head text, body bytes); (None, "", b"") at EOF."""
    data = _PENDING.pop(sock, b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, "", b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    text = head.decode("latin-1")
    length = int(text.lower().split("content-length:")[1].split("\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    if len(body) > length:
        _PENDING[sock] = body[length:]
    return int(text.split(" ", 2)[1]), text, body[:length]


def exchange(s, data):
    """Send ``data`` on a new connection: (status, head, error message or None, closed after)."""
    sock = connect(s)
    try:
        sock.sendall(data)
        status, head, body = read_answer(sock)
        closed = sock.recv(65536) == b"" if "Connection: close" in head else False
    finally:
        sock.close()
    message = json.loads(body.decode()).get("error") if body else None
    return status, head, message, closed


def predict(head_extra=b"", body=GOOD, length=None):
    length = len(body) if length is None else length
    return PREDICT + head_extra + b"Content-Length: %d\r\n\r\n" % length + body


def assert_still_serves(s):
    status, _, _, _ = exchange(s, predict())
    assert status == 200


# -- framing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [b"+26", b"2_6", b"26 26", b"0x1a", b"-26", b"26;", b"", b"\xd9\xa2\xd9\xa6"])
def test_content_length_is_decimal_digits_only(server, value):
    s = server()
    status, _, message, closed = exchange(s, PREDICT + b"Content-Length: " + value + b"\r\n\r\n" + GOOD)
    assert status == 400 and "Content-Length" in message and closed
    assert_still_serves(s)


def test_repeated_content_lengths_must_agree(server):
    s = server()
    n = b"%d" % len(GOOD)
    status, _, message, closed = exchange(s, PREDICT + b"Content-Length: " + n + b"\r\nContent-Length: 5\r\n\r\n" + GOOD)
    assert status == 400 and "differing" in message and closed
    assert exchange(s, PREDICT + b"Content-Length: " + n + b"\r\nContent-Length: " + n + b"\r\n\r\n" + GOOD)[0] == 200
    assert exchange(s, PREDICT + b"Content-Length: " + n + b", " + n + b"\r\n\r\n" + GOOD)[0] == 200


@pytest.mark.parametrize("fields, status", [
    (b"Transfer-Encoding: chunked\r\n", 411),
    (b"Transfer-Encoding: identity\r\n", 411),
    (b"Transfer-Encoding: chunked\r\nContent-Length: 26\r\n", 400),
    (b"Content-Length: 26\r\nTransfer-Encoding: chunked\r\n", 400),
])
def test_transfer_encoding_is_refused(server, fields, status):
    s = server()
    got, _, message, closed = exchange(s, PREDICT + fields + b"\r\n1a\r\n" + GOOD + b"\r\n0\r\n\r\n")
    assert got == status and ("Transfer-Encoding" in message or "transfer encodings" in message) and closed
    assert_still_serves(s)


@pytest.mark.parametrize("line", [b"Content-Type : application/json", b"No colon here", b" folded: value",
                                  b"\tfolded", b"Sp ace: x", b": empty name", b"X-A: a\x00b", b"X-A: a\rb",
                                  b"X-A: a\x1bb"])
def test_malformed_header_lines_are_400(server, line):
    s = server()
    status, _, message, closed = exchange(s, PREDICT + line + b"\r\n" + b"Content-Length: 26\r\n\r\n" + GOOD)
    assert status == 400 and "malformed header" in message and closed
    assert_still_serves(s)


@pytest.mark.parametrize("data, status", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /v2/health/live HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
    (b"GET /v2/health/live HTTP/1.1\r\nX-A: " + b"b" * 70000 + b"\r\n\r\n", 431),
    (b"GET /v2/health/live HTTP/2.0\r\n\r\n", 505),
    (b"GET /v2/health/live HTTP/1.1 extra\r\n\r\n", 400),
    (b"GET  /v2/health/live HTTP/1.1\r\n\r\n", 400),
    (b"GET v2/health/live HTTP/1.1\r\n\r\n", 400),
    (b"G(T /v2/health/live HTTP/1.1\r\n\r\n", 400),
    (b"GET /v2/health/live HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", 417),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),   # TLS on the plain port
])
def test_request_lines_and_header_sections_out_of_bounds(server, data, status):
    s = server()
    got, _, message, _ = exchange(s, data)
    assert got == status and message and len(message) < 200
    assert_still_serves(s)


def test_pipelined_requests_absolute_form_and_100_continue(server):
    s = server()
    sock = connect(s)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n" + predict()
                 + b"GET http://x:8501/v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
    answers = [read_answer(sock) for _ in range(3)]
    assert [a[0] for a in answers] == [200, 200, 200]
    assert json.loads(answers[1][2].decode()) == {"predictions": [[2.0, 4.0]]}
    sock.sendall(PREDICT + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(GOOD))
    assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(GOOD)
    assert read_answer(sock)[0] == 200
    sock.close()


# -- one deadline for reading, counted from the first byte ----------------------------------------

def _dribble(sock, data, every):
    for i in range(len(data)):
        try:
            sock.sendall(data[i:i + 1])
        except OSError:
            return
        time.sleep(every)


@pytest.mark.parametrize("slow_part", ["head", "body"])
def test_a_byte_at_a_time_gets_408_at_the_deadline(server, slow_part):
    s = server({"ENVREPRO_SERVE_DEADLINE": "0.6"})
    sock = connect(s)
    head = predict(body=b"")
    t = clock()
    if slow_part == "head":
        threading.Thread(target=_dribble, args=(sock, head, 0.1), daemon=True).start()
    else:
        sock.sendall(predict(body=b"", length=len(GOOD)))
        threading.Thread(target=_dribble, args=(sock, GOOD, 0.1), daemon=True).start()
    status, text, body = read_answer(sock)
    waited = clock() - t
    assert status == 408 and "Connection: close" in text and 0.5 <= waited < 2.0, waited
    assert "ENVREPRO_SERVE_DEADLINE" in json.loads(body.decode())["error"]
    sock.close()
    assert_still_serves(s)


def test_the_deadline_counts_from_the_first_byte(server):
    s = server({"ENVREPRO_SERVE_DEADLINE": "1.0"}, delay=0.5)
    assert exchange(s, predict())[0] == 200            # 0.5 s after arrival: in time
    sock = connect(s)
    sock.sendall(predict(body=b"", length=len(GOOD)))
    time.sleep(0.8)                                     # the body 0.8 s later: 0.8 + 0.5 > 1.0
    sock.sendall(GOOD)
    status, _, body = read_answer(sock)
    assert status == 504 and "deadline of 1s" in json.loads(body.decode())["error"]
    sock.close()


# -- the connection pool -------------------------------------------------------------------------

def test_idle_connections_make_room_for_new_ones(server):
    s = server({"ENVREPRO_SERVE_MAX_CONNECTIONS": "2"})
    first = connect(s)
    first.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_answer(first)[0] == 200                 # then idle, kept alive
    time.sleep(0.1)
    second = connect(s)                                 # connected, silent
    time.sleep(0.3)                                     # both idle for listener.MIN_IDLE
    assert exchange(s, predict())[0] == 200             # a third connection: the oldest idle one goes
    assert first.recv(65536) == b""
    second.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_answer(second)[0] == 200
    first.close()
    second.close()


def test_busy_connections_refuse_new_ones_with_503_and_threads_stay_bounded(server):
    s = server({"ENVREPRO_SERVE_MAX_CONNECTIONS": "2", "ENVREPRO_SERVE_DEADLINE": "2"})
    threads_before = threading.active_count()
    slow = [connect(s) for _ in range(2)]
    for sock in slow:
        sock.sendall(b"GET /v2/health/li")           # mid-request: busy until the deadline
    time.sleep(0.1)
    refused = []
    for i in range(5):
        sock = connect(s)
        t = clock()
        if i % 2:   # a request already sent is read and dropped: the 503 is not lost to a reset
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        status, text, body = read_answer(sock)
        refused.append((status, "Retry-After: 1" in text, clock() - t < 1.5))
        assert "ENVREPRO_SERVE_MAX_CONNECTIONS" in json.loads(body.decode())["error"]
        sock.close()
    assert refused == [(503, True, True)] * 5
    assert threading.active_count() <= threads_before + 2
    for sock in slow:                                   # their deadline ends them: 408
        assert read_answer(sock)[0] == 408
        sock.close()
    time.sleep(0.1)
    assert_still_serves(s)
    sock = connect(s)
    sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    text = read_answer(sock)[2].decode()
    sock.close()
    assert "envrepro_connections_refused_total 5" in text


# -- memory --------------------------------------------------------------------------------------

def test_request_memory_full_is_503_then_free_again(server):
    s = server({"ENVREPRO_SERVE_DEADLINE": "0.5"})
    limits = s.app.limits
    for budget in (limits.bodies, limits.parses):
        hold = budget.reserve(budget.total, clock() + 10)   # as if other requests held it all
        t = clock()
        status, text, message, _ = exchange(s, predict())
        assert status == 503 and "Retry-After: 1" in text and "ENVREPRO_SERVE_REQUEST_MEMORY" in message
        assert 0.4 < clock() - t < 2
        hold.release()
        assert_still_serves(s)
    assert limits.bodies.used == 0 and limits.parses.used == 0


def test_json_that_would_take_too_much_memory_is_413(server):
    s = server({"ENVREPRO_SERVE_REQUEST_MEMORY": str(4 << 20), "ENVREPRO_SERVE_MAX_BODY": str(1 << 20)})
    body = b'{"instances": [' + b",".join([b"{}"] * 300000) + b"]}"
    status, _, message, _ = exchange(s, predict(body=body))
    assert status == 413 and "ENVREPRO_SERVE_REQUEST_MEMORY" in message
    assert s.app.limits.bodies.used == 0 and s.app.limits.parses.used == 0
    assert_still_serves(s)


def test_settings_refuse_a_memory_too_small_for_the_body_limit():
    with pytest.raises(serve.UsageError, match="ENVREPRO_SERVE_REQUEST_MEMORY"):
        serve.options([], {"ENVREPRO_SERVE_REQUEST_MEMORY": str(4 << 20), "ENVREPRO_SERVE_MAX_BODY": str(2 << 20)})


# -- JSON bounds: every client mistake a short 4xx ------------------------------------------------

def v2(shape, data, name="x", datatype="FP32"):
    return json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}).encode()


@pytest.mark.parametrize("path, body, status, words", [
    (PREDICT, b"[" * 200000 + b"]" * 200000, 400, "nested deeper than 64"),
    (PREDICT, b'{"instances": ' + b"[" * 70 + b"1" + b"]" * 70 + b"}", 400, "nested deeper than 64"),
    (PREDICT, b'{"instances": [[1, 2, ' + b"7" * 1600000 + b"]]}", 400, "number is over 100 characters"),
    (PREDICT, b'{"instances": [[1, 2, 1.' + b"0" * 200 + b"]]}", 400, "number is over 100 characters"),
    (PREDICT, b'{"instances": [[1, 2, 3]], "x": [' + b"1," * 300000 + b"1]}", 413, "ENVREPRO_SERVE_MAX_ELEMENTS"),
    (PREDICT, json.dumps({"instances": [[1, 2, 3]] * 9}).encode(), 413, "ENVREPRO_SERVE_MAX_BATCH"),
    (INFER, v2([9, 3], [0] * 27), 413, "ENVREPRO_SERVE_MAX_BATCH"),
    (INFER, v2([1] * 65, [1]), 400, "65 dimensions, over the maximum of 32"),
    (INFER, v2([1] * 5000, [1]), 400, "5000 dimensions"),
    (INFER, v2([2 ** 64, 3], [1]), 400, "over 2^63 - 1"),
    (INFER, v2([1, 3], [[1, 2], [3]]), 400, "ragged"),
    (INFER, b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3], '
            b'"parameters": {"binary_data_size": 12}}]}', 400, "binary tensor data"),
    (PREDICT, b'{"instances": [[1, 2, 3]]}  {"instances": []}', 400, "not valid JSON"),
    (PREDICT, b'{"instances": [[1, 2, "\\ud800"]]}', 400, "x float32"),
    (PREDICT, b"\xef\xbb\xbf" + GOOD, 400, "not valid JSON"),
    (PREDICT, b'{"instances": [[NaN, Infinity, -Infinity]]}', 200, None),
])
def test_json_bounds(server, path, body, status, words):
    s = server({"ENVREPRO_SERVE_MAX_ELEMENTS": "250000", "ENVREPRO_SERVE_MAX_BATCH": "8"})
    t = clock()
    got, _, message, _ = exchange(s, path + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert got == status, message
    assert clock() - t < 3
    if words:
        assert words in message and len(message) < 600, message
        assert "7777777" not in message and "1, 1, 1" not in message
    assert s.app.limits.bodies.used == 0 and s.app.limits.parses.used == 0
    assert_still_serves(s)


def test_string_inputs_lone_surrogates_and_the_binary_extension(server):
    s = server(multi=True)
    body = b'{"instances": [{"a": [1, 2, 3], "b": [1, 2], "text": "\\ud800"}]}'
    status, _, message, _ = exchange(s, PREDICT + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert status == 400 and "lone surrogate" in message and "input 'text'" in message
    body = b'{"instances": [{"a": [1, 2, 3], "b": [1, 2], "text": "\\ud83d\\ude00 [\\"{"}]}'
    status, _, _, _ = exchange(s, PREDICT + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert status == 200
    raw = b'{"inputs": []}' + b"\x00" * 12
    status, _, message, closed = exchange(s, INFER + b"Inference-Header-Content-Length: 14\r\n"
                                          b"Content-Length: %d\r\n\r\n" % len(raw) + raw)
    assert status == 400 and "non-empty list" in message and not closed
    for value in (b"27", b"-1", b"1e3", b"\xc2\xb2", b" "):   # over the body, not digits: body unread
        status, _, message, closed = exchange(s, INFER + b"Inference-Header-Content-Length: " + value +
                                              b"\r\nContent-Length: %d\r\n\r\n" % len(raw) + raw)
        assert status == 400 and "Inference-Header-Content-Length" in message and closed, value
    status, _, message, closed = exchange(s, PREDICT + b"Inference-Header-Content-Length: 14\r\n"
                                          b"Content-Length: %d\r\n\r\n" % len(raw) + raw)
    assert status == 415 and "V2 infer only" in message and closed


def test_a_hostile_barrage_never_gets_a_500(server, capsys):
    s = server()
    bodies = [b"", b"{", b"[]", b"null", b"1", b'"x"', b"{}", b'{"instances": {}}', b'{"instances": [[]]}',
              b'{"instances": [null]}', b'{"instances": [[1, 2, {"b64": 1}]]}', b'{"instances": [[true, 2, 3]]}',
              b'{"inputs": {"x": {"y": 1}}}', b'{"instances": [[1e999, 2, 3]]}', b'{"instances": [[1, 2, 3]],'
              b' "signature_name": ["x"]}', b'{"instances": [[18446744073709551616, 2, 3]]}',
              b'{"inputs": [{"name": "x", "shape": [0, 3], "datatype": "FP32", "data": []}]}',
              b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": "abc"}]}',
              b'{"inputs": [{"name": ["x"], "shape": [1, 3]}]}', b'{"inputs": [{"name": "x", "shape": [-1, 3]}]}',
              b'{"id": 5, "inputs": []}', b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", '
              b'"data": [1, 2, 3]}], "outputs": [{"name": {}}]}', b"\xff" * 10, b'"\\ud800"']
    for body in bodies:
        for path in (PREDICT, INFER):
            status, _, _, _ = exchange(s, path + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            assert status < 500 or body.startswith(b'{"inputs": [{"name": "x", "shape": [0'), (body, status)
    assert "Traceback" not in capsys.readouterr().err
    assert_still_serves(s)
