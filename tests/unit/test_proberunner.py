"""envrepro.proberunner: the probe under another interpreter (this one, --no-load), and
fake probes (fake_probes.py) that crash, hang, are killed or write garbage: one ProbeError each."""
import sys
import time

import pytest

from envrepro import proberunner
from envrepro.errors import CaptureError, ProbeError
from fake_probes import alive, fake_probe


def model(tmp_path):
    m = tmp_path / "m.h5"
    m.write_bytes(b"\x89HDF\r\n\x1a\n" + b"0" * 32)
    return m


def test_run_probe_reads_the_facts(tmp_path):
    (tmp_path / "out").mkdir()
    run = proberunner.run_probe(sys.executable, model(tmp_path), tmp_path / "out", ["--no-load"])
    assert run.returncode == 0 and run.facts is not None
    assert run.facts["python"]["version"].startswith("%d.%d." % sys.version_info[:2])


def test_failed_probe_has_no_facts_and_says_why(tmp_path):
    (tmp_path / "out").mkdir()
    run = proberunner.run_probe(sys.executable, tmp_path / "missing.h5", tmp_path / "out", ["--no-load"])
    assert run.facts is None and run.returncode != 0 and run.stderr.strip()
    with pytest.raises(ProbeError, match=f"probe failed under {sys.executable}"):
        proberunner.capture_facts(sys.executable, tmp_path / "missing.h5", tmp_path / "out", [], [])


def test_capture_facts_needs_an_interpreter(tmp_path):
    with pytest.raises(CaptureError, match="interpreter not found"):
        proberunner.capture_facts(str(tmp_path / "nope"), model(tmp_path), tmp_path, [], [])


# --- fake probes (fake_probes.py), run by the real proberunner in place of Python -------------

def failure(tmp_path, python, **kw):
    (tmp_path / "out").mkdir(exist_ok=True)
    with pytest.raises(ProbeError) as err:
        proberunner.capture_facts(python, model(tmp_path), tmp_path / "out", [], [], **kw)
    return err.value


def test_crash_with_a_traceback_names_its_last_meaningful_line(tmp_path):
    python = fake_probe(tmp_path, (
        "import atexit\n"
        "atexit.register(lambda: sys.stderr.write('2024-05-01 10:00:00.123456: W tensorflow/core/"
        "util.cc:1] noise\\n'))\n"
        "raise ModuleNotFoundError(\"No module named 'foo'\")\n"))
    err = failure(tmp_path, python)
    assert err.path == str(tmp_path / "m.h5")
    assert err.what == f"the capture probe failed under {python}: ModuleNotFoundError: No module named 'foo'"
    assert "--debug" in err.fix and "Traceback (most recent call last)" in err.detail
    assert err.exit_code == 2


def test_the_real_probe_failing_on_a_module_gives_its_own_cause_and_fix(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "broken_layers.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "out").mkdir()
    with pytest.raises(ProbeError) as err:
        proberunner.capture_facts(sys.executable, model(tmp_path), tmp_path / "out",
                                  ["broken_layers"], [str(tmp_path / "code")])
    assert err.value.what.endswith(
        "cannot import module broken_layers: RuntimeError: boom at import")
    assert err.value.fix.startswith("check --module and add its folder with --code-path; ")
    (tmp_path / "out2").mkdir()
    with pytest.raises(ProbeError, match="No module named 'no_such_module'"):
        proberunner.capture_facts(sys.executable, model(tmp_path), tmp_path / "out2",
                                  ["no_such_module"], [])


def test_a_probe_killed_by_a_signal_says_which(tmp_path):
    err = failure(tmp_path, fake_probe(tmp_path, "os.kill(os.getpid(), signal.SIGKILL)\n"))
    assert err.what.endswith("was killed by SIGKILL") and "out-of-memory" in err.fix
    err = failure(tmp_path, fake_probe(tmp_path, "os.kill(os.getpid(), signal.SIGSEGV)\n", "segv"))
    assert err.what.endswith("was killed by SIGSEGV") and "--debug" in err.fix


def test_a_hanging_probe_is_stopped_with_its_whole_process_group(tmp_path):
    python = fake_probe(tmp_path, (
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "open(os.path.join(out, 'child.pid'), 'w').write(str(child.pid))\n"
        "sys.stderr.write('importing tensorflow\\n'); sys.stderr.flush()\n"
        "time.sleep(120)\n"))
    t = time.monotonic()
    err = failure(tmp_path, python, timeout=2)
    assert time.monotonic() - t < 30
    assert err.what == (f"the capture probe under {python} gave no answer after 2 s and was "
                        "stopped with every process it started")
    assert "--timeout" in err.fix and "importing tensorflow" in err.detail
    pid = int((tmp_path / "out" / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid)


def test_the_timeout_setting_applies_when_none_is_passed(tmp_path, monkeypatch):
    monkeypatch.setenv("ENVREPRO_PROBE_TIMEOUT", "1.5")
    err = failure(tmp_path, fake_probe(tmp_path, "time.sleep(60)\n"))
    assert "no answer after 1.5 s" in err.what


@pytest.mark.parametrize("facts, problem", [
    (None, "wrote no facts.json"),
    ("not json", "its facts.json is not JSON: Expecting value"),
    ("[1, 2]", "its facts.json is not a JSON object"),
    ('{"probe_version": 1, "python": "3.8", "distributions": []}', "no valid 'python'"),
    ('{"probe_version": 1, "python": {}, "distributions": [], '
     '"reference": {"inputs": ["../../etc/passwd"], "outputs": []}}',
     "names reference inputs it did not write"),
])
def test_garbage_instead_of_facts_is_a_probe_failure(tmp_path, facts, problem):
    write = "" if facts is None else f"open(os.path.join(out, 'facts.json'), 'w').write({facts!r})\n"
    err = failure(tmp_path, fake_probe(tmp_path, write + "sys.exit(0)\n"))
    assert "exited 0 but " in err.what and problem in err.what
    assert err.fix.startswith("pass the training environment's python")


def test_last_meaningful_line_skips_logging_and_blanks():
    stderr = ("Traceback (most recent call last):\n  File \"x\", line 1\nValueError: bad\n\n"
              "W0000 00:00:1714550400.000000  123 cc.cc:1] absl noise\nWARNING:absl:noise\n")
    assert proberunner.last_meaningful_line(stderr) == "ValueError: bad"
    assert proberunner.last_meaningful_line("\n\n") is None
