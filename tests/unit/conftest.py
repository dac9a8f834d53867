"""Unit tests never read or write the developer's home, config, cache or registry settings."""
import pytest


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("ENVREPRO_BASE_IMAGE", "ENVREPRO_REGISTRY"):
        monkeypatch.delenv(var, raising=False)
