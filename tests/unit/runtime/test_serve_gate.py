"""The server's gate (runtime/serve/listener.py): requests are read whole without a thread, so slow
clients hold sockets, not threads, and good clients are answered beside them; a body waits for its
memory unread; the head is parsed as it completes, in linear time however it is split. Raw sockets
against the real server in process (the fake numpy model)."""
import json
import socket
import threading
import time

import pytest

from envrepro.runtime.serve import framing, handlers, listener
from envrepro.runtime.serve import http as servehttp
from envrepro.runtime.serve.errors import BadRequest, HeadersTooLarge
from envrepro.runtime.serve.queue import clock

from test_serve_hostile import GOOD, assert_still_serves, connect, exchange, predict, read_answer


def test_slow_clients_hold_no_thread_and_good_clients_are_answered_beside_them(server):
    s = server({"ENVREPRO_SERVE_DEADLINE": "5"})
    assert_still_serves(s)
    threads_before = threading.active_count()
    slow = []
    for i in range(300):   # each began a request, and sends nothing more
        sock = connect(s)
        sock.sendall(predict()[:10 + i % 40])
        slow.append(sock)
    time.sleep(0.3)
    assert s.http.listener.count() >= 300
    assert threading.active_count() <= threads_before + 2, threading.active_count()

    times = []
    for _ in range(50):
        t = clock()
        assert exchange(s, predict())[0] == 200
        times.append(clock() - t)
    assert sorted(times)[len(times) // 2] < 0.05, sorted(times)
    assert s.http.in_flight() >= 300          # the slow ones are requests in flight: the drain waits for them
    for sock in slow:
        sock.close()


def test_a_slow_client_still_gets_its_answer_and_its_deadline(server):
    s = server({"ENVREPRO_SERVE_DEADLINE": "3"})
    sock = connect(s)
    data = predict()
    for i in range(0, len(data), 7):   # in pieces, within the deadline
        sock.sendall(data[i:i + 7])
        time.sleep(0.01)
    status, _, body = read_answer(sock)
    assert status == 200 and json.loads(body.decode()) == {"predictions": [[2.0, 4.0]]}
    sock.sendall(data[:20])                   # the next request on the connection, never finished
    t = clock()
    status, text, body = read_answer(sock)
    assert status == 408 and 2.5 < clock() - t < 4.5 and "Connection: close" in text
    assert sock.recv(10) == b""
    sock.close()


def test_a_body_is_not_read_until_its_memory_is_free(server):
    s = server({"ENVREPRO_SERVE_DEADLINE": "5"})
    bodies = s.app.limits.bodies
    hold = bodies.reserve(bodies.total, clock() + 10)   # as if other requests held it all
    result = []
    t = threading.Thread(target=lambda: result.append(exchange(s, predict())))
    t.start()
    time.sleep(0.5)
    assert not result and t.is_alive()         # waiting, unread, not refused
    assert len(s.http.listener._waiting) == 1
    hold.release()
    t.join(5)
    assert result and result[0][0] == 200
    assert bodies.used == 0


def test_a_pipelined_request_waiting_for_memory_is_answered_once_there_is_room(server):
    s = server({"ENVREPRO_SERVE_DEADLINE": "5"})
    bodies = s.app.limits.bodies
    sock = connect(s)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_answer(sock)[0] == 200
    hold = bodies.reserve(bodies.total, clock() + 10)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n" + predict())   # two at once
    assert read_answer(sock)[0] == 200
    time.sleep(0.3)
    threading.Timer(0.2, hold.release).start()
    status, _, body = read_answer(sock)
    assert status == 200 and json.loads(body.decode()) == {"predictions": [[2.0, 4.0]]}
    sock.close()


def test_expect_100_continue_is_answered_by_the_gate_once_the_body_has_room(server):
    s = server()
    sock = connect(s)
    sock.sendall(predict(b"Expect: 100-continue\r\n", body=b""[:0], length=len(GOOD)))
    assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(GOOD)
    assert read_answer(sock)[0] == 200
    sock.close()


def test_handlers_are_bounded_and_whole_requests_wait_for_one_in_order(server):
    s = server({"ENVREPRO_SERVE_WORKERS": "4", "ENVREPRO_SERVE_QUEUE": "100"}, delay=0.3)
    s.http.listener.handlers.limit = 2
    results = []
    clients = [threading.Thread(target=lambda: results.append(exchange(s, predict())[0])) for _ in range(6)]
    t = clock()
    for c in clients:
        c.start()
    for c in clients:
        c.join(10)
    assert results == [200] * 6
    assert clock() - t >= 0.85                 # two at a time: three rounds of 0.3 s
    assert s.http.listener.handlers.threads <= 2


def test_a_flood_over_the_limit_is_refused_at_once(server):
    s = server({"ENVREPRO_SERVE_MAX_CONNECTIONS": "20", "ENVREPRO_SERVE_DEADLINE": "3"})
    held = [connect(s) for _ in range(20)]
    for sock in held:
        sock.sendall(b"GET /v2/heal")          # mid-request: not idle
    time.sleep(0.1)
    t = clock()
    statuses = [exchange(s, b"GET /v2/health/live HTTP/1.1\r\n\r\n")[0] for _ in range(20)]
    assert statuses == [503] * 20 and clock() - t < 2
    for sock in held:
        sock.close()
    time.sleep(0.2)
    assert_still_serves(s)


def declared_bodies(s, count, length, begun=b""):
    """``count`` connections whose heads declare a body of ``length`` bytes, of which they send
    only ``begun``; 0.3 s later (the gate has read them)."""
    socks = []
    for _ in range(count):
        sock = connect(s)
        sock.sendall(predict(body=b"", length=length) + begun)
        socks.append(sock)
    time.sleep(0.3)
    return socks


# -- the head parsed as it completes ---------------------------------------------------------------

HEAD = b"POST /v1/models/fake:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n"


def test_parse_head_waits_for_the_whole_head_however_it_is_split():
    buf, searched = bytearray(), 0
    for i, byte in enumerate(HEAD + b"abc"):
        buf.append(byte)
        got = framing.parse_head(buf, searched)
        if i < len(HEAD) - 1:
            assert got is None, i
            searched = len(buf)
        else:
            head, size = got
            assert size == len(HEAD) and head.target == "/v1/models/fake:predict"
            assert framing.body_length(head) == 3
            break


def test_parse_head_takes_leading_empty_lines_and_refuses_bad_heads():
    head, size = framing.parse_head(bytearray(b"\r\n\r\n" + HEAD))
    assert size == len(HEAD) + 4 and head.method == "POST"
    with pytest.raises(BadRequest):
        framing.parse_head(bytearray(b"POST /x HTTP/1.1\r\nbad header\r\n\r\n"))
    with pytest.raises(HeadersTooLarge):
        framing.parse_head(bytearray(b"GET / HTTP/1.1\r\nX: " + b"a" * framing.HEAD_LIMIT))
    assert framing.parse_head(bytearray(b"GET / HTTP/1.1\r\nX: " + b"a" * 1000)) is None


def test_parse_head_is_linear_in_bytes_sent_one_at_a_time():
    head = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 500) for i in range(90)) + b"\r\n"
    head = head[:framing.MAX_HEADER_BYTES - 100] + b"\r\n\r\n"
    buf, searched, t = bytearray(), 0, clock()
    for byte in head:
        buf.append(byte)
        if framing.parse_head(buf, searched) is None:
            searched = len(buf)
    assert clock() - t < 2.0   # quadratic (each byte searching all before it) is ~100x this


def test_the_listener_constants_keep_threads_far_under_the_pids_limit():
    from envrepro.serving.proof import SERVICE_PIDS

    assert handlers.MAX_HANDLERS * 4 <= SERVICE_PIDS


def test_the_drain_answers_stalled_heads_503_and_waits_for_a_request_on_its_way(server):
    s = server({"ENVREPRO_SERVE_DEADLINE": "20"})
    stalled = connect(s)
    stalled.sendall(b"POST /v1/models/fake:predict HTTP/1.1\r\nHo")   # a head stalled for over a second
    uploading = connect(s)
    uploading.sendall(predict(body=b"", length=len(GOOD)))            # a head whole, its body on its way
    time.sleep(listener.STALLED + 0.2)
    threading.Timer(0.5, lambda: uploading.sendall(GOOD)).start()
    t = clock()
    assert s.drain(10) is True and clock() - t < 3     # not the stalled one's 20 s deadline
    status, text, body = read_answer(stalled)
    assert status == 503 and "stopping" in json.loads(body.decode())["error"]
    status, text, _ = read_answer(uploading)
    assert status == 200 and "Connection: close" in text
    stalled.close()
    uploading.close()


def test_a_large_body_too_slow_for_its_deadline_gives_its_memory_back_early(server):
    s = server({"ENVREPRO_SERVE_DEADLINE": "20", "ENVREPRO_SERVE_REQUEST_MEMORY": str(16 << 20),
                "ENVREPRO_SERVE_MAX_BODY": str(4 << 20)})
    slow, = declared_bodies(s, 1, 3 << 20, b'{"instances": [')   # 3 of the 4 MiB of body memory, trickled
    assert s.app.limits.bodies.used == 3 << 20
    rows = json.dumps({"instances": [[0.123456789012345] * 3] * 21000}).encode()   # 1.2 MB: must wait for room
    assert len(rows) > 1 << 20
    t = clock()
    status, _, _, _ = exchange(s, predict(body=rows))
    assert status == 200                           # waited for the slow one's memory, not its deadline
    assert servehttp.SLOW_GRACE - 0.5 <= clock() - t < servehttp.SLOW_GRACE + 2
    status, text, body = read_answer(slow)
    assert status == 408 and "too slowly" in json.loads(body.decode())["error"]
    slow.close()
    assert s.app.limits.bodies.used == 0


def test_a_large_body_that_keeps_pace_is_not_cut(server):
    s = server({"ENVREPRO_SERVE_DEADLINE": "6", "ENVREPRO_SERVE_MAX_BODY": str(4 << 20)})
    rows = json.dumps({"instances": [[1.0, 2.0, 3.0]] * 60000}).encode()   # ~1.1 MB
    sock = connect(s)
    sock.sendall(predict(body=b"", length=len(rows)))
    step = len(rows) // 10
    for i in range(0, len(rows), step):       # ~3 s in all: slower than the grace, in pace with the deadline
        sock.sendall(rows[i:i + step])
        time.sleep(0.3)
    status, _, body = read_answer(sock)
    assert status == 200 and len(json.loads(body.decode())["predictions"]) == 60000
    sock.close()


def test_large_bodies_leave_an_eighth_of_the_body_memory_to_small_ones(server):
    from envrepro.runtime.serve.limits import LARGE_BODY

    s = server({"ENVREPRO_SERVE_DEADLINE": "20", "ENVREPRO_SERVE_REQUEST_MEMORY": str(32 << 20),
                "ENVREPRO_SERVE_MAX_BODY": str(4 << 20)})
    bodies = s.app.limits.bodies                        # 8 MiB
    slow = declared_bodies(s, 3, 4 << 20)               # 4 MiB each: one fits alone, a second would eat the reserve
    assert bodies.used == 4 << 20 and len(s.http.listener._waiting) == 2
    t = clock()
    assert exchange(s, predict())[0] == 200             # small: answered at once from the reserve
    assert clock() - t < 0.5
    assert s.app.limits.try_hold_body(LARGE_BODY) is not None          # 5 of 8 MiB: within 7
    assert s.app.limits.try_hold_body(LARGE_BODY + (2 << 20)) is None   # 8 of 8 MiB: into the eighth kept
    for sock in slow:
        sock.close()


def test_a_bug_reading_a_request_is_a_500_and_the_gate_goes_on(server, monkeypatch):
    s = server()

    def broken(buf, searched=0):
        raise KeyError("a bug")

    monkeypatch.setattr(framing, "parse_head", broken)
    status, _, message, _ = exchange(s, predict())
    assert status == 500 and "KeyError" in message
    monkeypatch.undo()
    assert_still_serves(s)


# -- what a review of the gate found -------------------------------------------------------------

LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"


def test_clients_that_never_read_their_answers_hold_no_handler(server):
    s = server({"ENVREPRO_SERVE_DEADLINE": "20"})
    s.http.listener.handlers.limit = 2
    readers = []
    for _ in range(4):                                 # more than the handlers, each pipelining MBs of GETs
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.settimeout(0.3)
        sock.connect(("127.0.0.1", s.port))
        try:
            for _ in range(2000):
                sock.send(LIVE * 1000)
        except socket.timeout:                         # the server stopped reading: its answers pile up
            pass
        readers.append(sock)
    time.sleep(0.3)
    t = clock()
    assert exchange(s, LIVE)[0] == 200 and clock() - t < 2.0   # a blocked handler would hold it 60 s
    for sock in readers:
        sock.close()


def test_a_get_with_a_body_is_answered_and_lingers_instead_of_resetting(server):
    s = server()
    sock = connect(s)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n" + b"x" * 300000)
    status, text, _ = read_answer(sock)
    assert status == 200 and "Connection: close" in text
    sock.close()


def test_a_burst_of_whole_requests_starts_handlers_for_all_of_them(server):
    s = server({"ENVREPRO_SERVE_WORKERS": "4", "ENVREPRO_SERVE_QUEUE": "100"}, delay=0.5)
    assert exchange(s, predict())[0] == 200            # one handler, idle now
    socks = [connect(s) for _ in range(4)]
    t = clock()
    for sock in socks:
        sock.sendall(predict())
    assert [read_answer(sock)[0] for sock in socks] == [200] * 4
    assert clock() - t < 1.2                           # side by side, not one after the other (2 s)
    for sock in socks:
        sock.close()


def test_small_silent_bodies_give_their_memory_back_when_others_wait(server):
    s = server({"ENVREPRO_SERVE_DEADLINE": "8", "ENVREPRO_SERVE_REQUEST_MEMORY": str(4 << 20),
                "ENVREPRO_SERVE_MAX_BODY": str(1 << 20)})
    bodies = s.app.limits.bodies                       # 1 MiB
    silent = declared_bodies(s, 2, (1 << 19) - 8)      # declared, never sent: all the body memory
    assert bodies.used >= bodies.total - 16
    t = clock()
    assert exchange(s, predict())[0] == 200            # waits for the pace rule, not the 8 s deadline
    assert clock() - t < servehttp.SLOW_GRACE + 2
    for sock in silent:   # cut for their pace while the good one waited, or (once it no longer
        assert read_answer(sock)[0] == 408             # waits, a busy host's later sweep) at the deadline
        sock.close()


def test_accepting_pauses_without_spinning_and_resumes(server):
    s = server()
    gate = s.http.listener
    gate._pause_accepting()                            # as when the process is out of descriptors
    t = clock()
    assert exchange(s, LIVE)[0] == 200                 # waited in the backlog, then accepted
    assert listener.ACCEPT_PAUSE - 0.05 <= clock() - t < 1.0
