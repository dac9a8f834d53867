"""envrepro.serving.foreground (``envrepro serve``) with the fake engine: the server's container is
started with no network and the sandbox of the self-check, its port published where asked, its
log followed, and it is stopped with the drain's grace. Run for real in tests/e2e/test_serve_e2e.py."""
import pytest

from envrepro import errors
from envrepro.serving import foreground
from envrepro.serving import image as serving
from envrepro.serving.proof import Proof

try:
    from .fakes import FakeEngine, cache_home, make_capture
except ImportError:
    from fakes import FakeEngine, cache_home, make_capture


def built(tag="envrepro-serve:k", verdict="verified"):
    return serving.ServeBuild(tag, "sha256:i", "k", "my_model", "envrepro-env:e", "local",
                              proof=Proof(verdict))


def test_serve_runs_the_model_with_no_network_and_its_port_published(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(serving, "build", lambda *a, **k: built())
    eng = FakeEngine()
    eng.service_logs = ["ready"]
    said = []
    code = foreground.serve(make_capture(tmp_path), eng, port=8080, host="0.0.0.0", memory="2g", say=said.append)
    assert code == 0
    (started,) = eng.started
    assert started["image"] == "envrepro-serve:k" and started["ports"] == {8501: ("0.0.0.0", 8080)}
    assert started["network_disabled"] is True
    assert started["user"] == "10001:10001" and started["read_only"] and started["cap_drop"] == ["ALL"]
    assert started["mem_limit"] == "2g"
    assert "http://127.0.0.1:8080/v1/models/my_model" in capsys.readouterr().out
    assert any("no network" in line for line in said) and "ready" in said
    assert eng.stopped == [("ctr1", 30)]


def test_serve_refuses_an_image_that_failed_its_self_check(tmp_path, monkeypatch):
    monkeypatch.setattr(serving, "build", lambda *a, **k: built(tag=None, verdict="mismatch"))
    eng = FakeEngine()
    with pytest.raises(errors.EnvreproError) as e:
        foreground.serve(make_capture(tmp_path), eng)
    assert "did not pass its self-check (mismatch" in str(e.value)
    assert getattr(eng, "started", []) == []
