"""envrepro.engine.relay, run as the engine runs it (``python -I -S -c SOURCE``) on this host: a
TCP port -> unix socket -> TCP port chain around a local HTTP server carries large answers and
concurrent clients byte for byte, passes half-closes on, closes clients while nothing listens, and
keeps its socket to its own user; the ``sh`` wrapper finds the interpreter and isolates it."""
import http.server
import inspect
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from envrepro.engine import relay, services

SOURCE = inspect.getsource(relay)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_relay(*args, env=None):
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", SOURCE, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stderr.readline()          # "envrepro relay: MODE ..." once it listens
    assert line.startswith("envrepro relay: "), line + proc.stderr.read()
    return proc


@pytest.fixture
def short_tmp():
    """A short folder for unix sockets (their paths are limited to ~100 bytes)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rly", dir="/tmp") as d:
        yield d


class Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def chain(tmp_path, short_tmp):
    """An HTTP server on loopback, the inner relay (unix -> tcp) and the outer one (tcp -> unix):
    the published port the outer relay listens on."""
    (tmp_path / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: Files(*a, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sock = os.path.join(short_tmp, "8501.sock")
    outer_port = free_port()
    inner = start_relay("unix-to-tcp", sock, server.server_address[1])
    outer = start_relay("tcp-to-unix", outer_port, sock)
    yield {"port": outer_port, "sock": sock, "data": (tmp_path / "big.bin").read_bytes()}
    for p in (outer, inner):
        p.terminate()
        assert p.wait(10) == 0       # SIGTERM ends it at once, exit 0
    server.shutdown()


def test_the_chain_carries_large_answers_to_concurrent_clients(chain):
    results = []

    def client():
        got = urllib.request.urlopen(f"http://127.0.0.1:{chain['port']}/big.bin", timeout=30).read()
        results.append(got == chain["data"])

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [True] * 12


def test_a_half_close_is_passed_on_and_the_answer_still_comes(chain):
    with socket.create_connection(("127.0.0.1", chain["port"]), timeout=30) as s:
        s.sendall(b"GET /big.bin HTTP/1.0\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and body == chain["data"]


def test_the_socket_is_its_own_users_only(chain):
    mode = os.stat(chain["sock"]).st_mode
    assert stat.S_ISSOCK(mode) and mode & 0o077 == 0


def test_while_nothing_listens_upstream_a_client_is_closed_not_held(short_tmp):
    port = free_port()
    outer = start_relay("tcp-to-unix", port, os.path.join(short_tmp, "none.sock"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            t0 = time.monotonic()
            try:
                assert s.recv(10) == b""
            except ConnectionResetError:
                pass
            assert time.monotonic() - t0 < 5
        with pytest.raises(OSError):       # the proof's client sees an OSError and retries
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
    finally:
        outer.terminate()
        outer.wait(10)


def test_bad_arguments_are_usage_exit_2():
    for args in ([], ["sideways", "1", "x"], ["tcp-to-unix", "1"], ["tcp-to-unix", "notaport", "x"]):
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", SOURCE, *args], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 2 and proc.stderr.startswith("usage: relay"), args


def test_the_wrapper_runs_the_first_python3_found_isolated(tmp_path, monkeypatch):
    """``relay_argv``: the first interpreter of RELAY_PYTHONS that exists, with -I -S, so a
    PYTHONPATH, a sitecustomize or a module shadowing the standard library (what an environment's
    packages could hold) is never read."""
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "sitecustomize.py").write_text("raise SystemExit('sitecustomize ran')\n")
    (evil / "selectors.py").write_text("raise SystemExit('shadowing module ran')\n")
    monkeypatch.setattr(services, "RELAY_PYTHONS", (str(tmp_path / "missing" / "python3"), sys.executable))
    argv = services.relay_argv("sideways", ["1", "x"])
    assert argv[:2] == ["/bin/sh", "-c"] and argv[3] == SOURCE
    env = dict(os.environ, PYTHONPATH=str(evil), PYTHONSTARTUP=str(evil / "sitecustomize.py"))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=str(evil), env=env)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: relay"), proc.stderr
    monkeypatch.setattr(services, "RELAY_PYTHONS", (str(tmp_path / "missing" / "python3"),))
    proc = subprocess.run(services.relay_argv("tcp-to-unix", ["1", "x"]), capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 127 and "no python3 in the image" in proc.stderr


def test_the_relay_is_python_36_syntax_and_standard_library_only():
    import ast

    tree = ast.parse(SOURCE, feature_version=(3, 6))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) and "envrepro" not in imported
