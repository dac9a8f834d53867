"""The user's settings (envrepro.config): flag, then environment variable, then config.yaml."""
from envrepro import config


def test_registry_from_env_or_config(monkeypatch, tmp_path):
    assert config.configured_registry() is None
    monkeypatch.setenv("ENVREPRO_REGISTRY", "reg.example:5000/team/")
    assert config.configured_registry() == "reg.example:5000/team"
    assert config.configured_registry("other.example") == "other.example"
