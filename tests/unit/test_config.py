"""The user's settings (envrepro.config): flag, then environment variable, then config.yaml."""
import pytest

from envrepro import config
from envrepro.errors import EnvreproError


def test_registry_from_env_or_config(monkeypatch, tmp_path):
    assert config.configured_registry() is None
    monkeypatch.setenv("ENVREPRO_REGISTRY", "reg.example:5000/team/")
    assert config.configured_registry() == "reg.example:5000/team"
    assert config.configured_registry("other.example") == "other.example"


def test_probe_timeout_flag_env_config_default(monkeypatch):
    monkeypatch.delenv("ENVREPRO_PROBE_TIMEOUT", raising=False)
    assert config.probe_timeout() == config.DEFAULT_PROBE_TIMEOUT == 900
    config.config_path().parent.mkdir(parents=True)
    config.config_path().write_text("probe_timeout: 1200\n")
    assert config.probe_timeout() == 1200
    monkeypatch.setenv("ENVREPRO_PROBE_TIMEOUT", "60")
    assert config.probe_timeout() == 60
    assert config.probe_timeout(5) == 5


@pytest.mark.parametrize("bad", ["0", "-3", "soon", "inf", "nan"])
def test_a_probe_timeout_that_is_no_duration_is_bad_input(monkeypatch, bad):
    monkeypatch.setenv("ENVREPRO_PROBE_TIMEOUT", bad)
    with pytest.raises(EnvreproError, match="not a positive number of seconds") as err:
        config.probe_timeout()
    assert err.value.path == "ENVREPRO_PROBE_TIMEOUT" and err.value.exit_code == 2
