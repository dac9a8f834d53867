"""envrepro.capturing.proberunner: the probe under another interpreter (here: this one, --no-load)."""
import sys

import pytest

from envrepro.capturing import proberunner
from envrepro.errors import CaptureError, ProbeError


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
