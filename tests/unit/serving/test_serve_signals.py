"""How ``envrepro serve`` stops on a signal (envrepro.serving.stopping, serving.foreground), with
the fake engine and real signals sent to this process: the first SIGINT/SIGTERM/SIGHUP in any
phase (the sweep, the build and self-check, the container starting, its log followed) ends in one
orderly stop, exit 0, nothing of this process's left; a second one cuts the drain short; a stop
that can't finish exits at the deadline. Run against Docker in tests/e2e/test_serve_stop_e2e.py."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from envrepro import errors
from envrepro.serving import foreground, orphans, stopping
from envrepro.serving import image as serving
from envrepro.serving.proof import Proof

try:
    from .fakes import FakeEngine, cache_home, make_capture  # noqa: F401 - cache_home: an autouse fixture
except ImportError:
    from fakes import FakeEngine, cache_home, make_capture  # noqa: F401

GRACE = 7


@pytest.fixture(autouse=True)
def grace(monkeypatch):
    monkeypatch.setenv("ENVREPRO_SERVE_GRACE", str(GRACE))


class Exits:
    """The deadline's way out, recorded instead of ending the test run."""

    def __init__(self):
        self.codes = []
        self.called = threading.Event()

    def __call__(self, code):
        self.codes.append(code)
        self.called.set()


def send(sig, signum=signal.SIGTERM):
    """A real signal to this process, once ``sig``'s handler is the one installed (a stray
    SIGTERM would end the test run)."""
    assert signal.getsignal(signum) == sig.handle
    signal.raise_signal(signum)


def built(tag="envrepro-serve:k"):
    return serving.ServeBuild(tag, "sha256:i", "k", "my_model", "envrepro-env:e", "local", proof=Proof("verified"))


def run(tmp_path, monkeypatch, eng, sig=None, build=None, **kw):
    """``foreground.serve`` with the fake engine: (exit code, messages, the Signals used)."""
    monkeypatch.setattr(serving, "build", build or (lambda *a, **k: built()))
    sig = sig or stopping.Signals(GRACE, exit=Exits())
    said = []
    code = foreground.serve(make_capture(tmp_path), eng, say=said.append, signals=sig, **kw)
    return code, said, sig


def mine(eng):
    """The containers this process started that are still there."""
    return [c["id"] for c in eng.services(f"{orphans.PID}={os.getpid()}")]


# --- Signals ---------------------------------------------------------------------------------

def test_the_first_signal_raises_the_second_hurries_later_ones_are_counted():
    sig = stopping.Signals(GRACE, exit=Exits())
    with sig:
        sig.handle(signal.SIGINT)                 # not armed yet: counted, raised at arm()
        with pytest.raises(stopping.Stopped) as first:
            sig.arm()
        assert first.value.signum == signal.SIGINT and not first.value.hurry and first.value.name == "SIGINT"
        with pytest.raises(stopping.Stopped) as second:
            sig.handle(signal.SIGTERM)
        assert second.value.hurry and sig.hurry
        sig.handle(signal.SIGTERM)                # the third: counted only
        assert sig.count == 3 and sig.first == signal.SIGINT
    assert isinstance(first.value, KeyboardInterrupt)   # code that cleans up on Ctrl-C does on it too


def test_signals_are_only_counted_while_deferred():
    sig = stopping.Signals(GRACE, exit=Exits())
    with sig:
        sig.arm()
        with sig.deferred():
            sig.handle(signal.SIGTERM)
            sig.handle(signal.SIGTERM)
        assert sig.count == 2 and sig.hurry


def test_real_signals_reach_the_handler_even_when_sigint_was_ignored_and_are_restored_after(monkeypatch):
    """``cmd &`` in a script starts it with SIGINT ignored: envrepro serve is still stopped by
    SIGINT. ``nohup`` ignores SIGHUP: that stays ignored. The previous handlers come back."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        sig = stopping.Signals(GRACE, exit=Exits())
        with sig:
            sig.arm()
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            for signum in (signal.SIGINT, signal.SIGTERM):
                with pytest.raises(stopping.Stopped) as e:
                    send(sig, signum)
                assert e.value.signum == signum
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def test_the_deadline_exits_128_plus_the_signal_unless_the_command_finished():
    exits = Exits()
    sig = stopping.Signals(0, margin=0.2, exit=exits)
    with sig:
        with sig.deferred():
            sig.handle(signal.SIGTERM)
        assert exits.called.wait(10)
    assert exits.codes == [128 + signal.SIGTERM]
    exits = Exits()
    sig = stopping.Signals(0, margin=0.3, exit=exits)
    with sig:
        with sig.deferred():
            sig.handle(signal.SIGINT)
        sig.finished()
    assert not exits.called.wait(0.6) and exits.codes == []


# --- envrepro serve, phase by phase ----------------------------------------------------------

def test_a_signal_while_the_log_is_followed_drains_and_removes_everything(tmp_path, monkeypatch, capsys):
    eng = FakeEngine()
    eng.service_logs = ["listening"]
    sig = stopping.Signals(GRACE, exit=Exits())
    eng.on_follow = lambda cid: send(sig, signal.SIGTERM)
    code, said, _ = run(tmp_path, monkeypatch, eng, sig)
    assert code == 0
    (started,) = eng.started
    labels = started["labels"]
    assert labels[orphans.PID] == str(os.getpid()) and labels[orphans.ROLE] == "serve"
    assert labels[orphans.STARTED] == orphans.Owner.current().started
    assert started["environment"] == {"ENVREPRO_SERVE_GRACE": str(GRACE)}   # the server drains as long
    assert eng.stopped == [("ctr1", GRACE + orphans.STOP_MARGIN)]            # drained, once
    assert mine(eng) == []
    assert any(line.startswith("Stopping (SIGTERM): draining") for line in said)
    assert "Serving my_model" in capsys.readouterr().out


def test_a_second_signal_cuts_the_drain_short(tmp_path, monkeypatch):
    eng = FakeEngine()
    sig = stopping.Signals(GRACE, exit=Exits())
    eng.on_follow = lambda cid: send(sig, signal.SIGINT)

    def second(cid, timeout):
        if timeout:                                # the drain: interrupted
            send(sig, signal.SIGINT)

    eng.on_stop = second
    code, said, _ = run(tmp_path, monkeypatch, eng, sig)
    assert code == 0 and eng.stopped == [("ctr1", GRACE + orphans.STOP_MARGIN), ("ctr1", 0)]
    assert mine(eng) == [] and "Stopping at once: the requests in flight are cut short" in said


def test_a_signal_while_the_container_starts_removes_it(tmp_path, monkeypatch):
    eng = FakeEngine()
    sig = stopping.Signals(GRACE, exit=Exits())
    eng.on_start = lambda cid: send(sig, signal.SIGTERM)     # created, start() not returned yet
    code, said, _ = run(tmp_path, monkeypatch, eng, sig)
    assert code == 0 and eng.stopped == [("ctr1", 0)] and mine(eng) == []
    assert "Stopping (SIGTERM): the server was not started yet" in said


def test_a_signal_during_the_self_check_removes_its_container(tmp_path, monkeypatch):
    """The self-check's container (started by proof.prove inside build) is labelled too: when a
    second signal cuts its own stop short, the clean-up still removes it."""
    eng = FakeEngine()
    sig = stopping.Signals(GRACE, exit=Exits())

    def build(*a, **k):                            # as proof.prove does it
        cid = eng.start("envrepro-serve:k-unverified", ports={8501: ("127.0.0.1", 0)})
        try:
            send(sig, signal.SIGINT)               # the first signal: the self-check unwinds
        finally:
            eng.stop(cid, timeout=30)              # its own stop, cut short by a second one

    eng.on_stop = lambda cid, timeout: send(sig, signal.SIGINT) if timeout == 30 else None
    code, said, _ = run(tmp_path, monkeypatch, eng, sig, build=build)
    assert code == 0 and eng.started[0]["labels"][orphans.ROLE] == "self-check"
    assert eng.stopped == [("ctr1", 30), ("ctr1", 0)] and mine(eng) == []
    assert len(eng.started) == 1                   # the server never started


def test_a_signal_before_the_handlers_were_armed_stops_before_anything_starts(tmp_path, monkeypatch):
    eng = FakeEngine()
    sig = stopping.Signals(GRACE, exit=Exits())
    sig.handle(signal.SIGHUP)
    code, said, _ = run(tmp_path, monkeypatch, eng, sig)
    assert code == 0 and getattr(eng, "started", []) == []
    assert "Stopping (SIGHUP): the server was not started yet" in said


def test_the_server_exiting_by_itself_gives_its_code_and_nothing_is_left(tmp_path, monkeypatch):
    eng = FakeEngine()
    eng.stop_code = 5
    code, said, sig = run(tmp_path, monkeypatch, eng)
    assert code == 5 and eng.stopped == [("ctr1", GRACE + orphans.STOP_MARGIN)] and mine(eng) == []
    assert sig.count == 0


def test_a_drain_that_ends_badly_is_its_exit_code(tmp_path, monkeypatch):
    eng = FakeEngine()
    sig = stopping.Signals(GRACE, exit=Exits())
    eng.on_follow = lambda cid: send(sig, signal.SIGTERM)
    eng.stop_code = 75
    code, said, _ = run(tmp_path, monkeypatch, eng, sig)
    assert code == 75 and "The server exited with code 75 while draining" in said


def test_a_stop_that_hangs_ends_at_the_deadline(tmp_path, monkeypatch):
    monkeypatch.setenv("ENVREPRO_SERVE_GRACE", "0")
    eng = FakeEngine()
    exits = Exits()
    sig = stopping.Signals(0, margin=0.3, exit=exits)
    eng.on_follow = lambda cid: send(sig, signal.SIGTERM)
    eng.on_stop = lambda cid, timeout: exits.called.wait(10)      # an engine that stopped answering
    run(tmp_path, monkeypatch, eng, sig)
    assert exits.codes[:1] == [128 + signal.SIGTERM]


def test_the_watcher_is_labelled_and_let_go(tmp_path, monkeypatch):
    class Watch:
        pid = 4242
        closed = False

        def close(self):
            Watch.closed = True

    eng = FakeEngine()
    code, _, _ = run(tmp_path, monkeypatch, eng, watch=lambda owner, grace: Watch())
    assert code == 0 and eng.started[0]["labels"][orphans.WATCHER] == "4242" and Watch.closed


def test_a_bad_grace_is_one_line(monkeypatch):
    monkeypatch.setenv("ENVREPRO_SERVE_GRACE", "soon")
    with pytest.raises(errors.EnvreproError) as e:
        foreground.grace_seconds()
    assert "ENVREPRO_SERVE_GRACE='soon'" in str(e.value)


def test_a_serve_started_in_a_script_s_background_stops_on_sigint(tmp_path):
    """The issue-22 race, in a process of its own: started as ``cmd &`` is in a script (SIGINT
    ignored), the old serve never saw the test's SIGINT. Now it stops (exit 0)."""
    code = (
        "import signal, sys, time\n"
        "sys.path[:0] = [%r, %r]\n"
        "from fakes import FakeEngine, make_capture\n"
        "from pathlib import Path\n"
        "from envrepro.serving import foreground, image as serving\n"
        "from envrepro.serving.proof import Proof\n"
        "serving.build = lambda *a, **k: serving.ServeBuild('envrepro-serve:k', 'sha256:i', 'k', 'm', 'e', 'local', proof=Proof('verified'))\n"
        "eng = FakeEngine()\n"
        "def follow(cid):\n"
        "    print('following', flush=True)\n"
        "    time.sleep(30)\n"
        "eng.on_follow = follow\n"
        "sys.exit(foreground.serve(make_capture(Path(sys.argv[1])), eng))\n"
    ) % (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        for line in proc.stdout:
            if line.strip() == "following":
                break
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0 and time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
