"""packages/resolution.py: the resolution commands and the resolution cache (no network)."""
import time

from envrepro.capturing import infer
from envrepro.packages import resolution
from envrepro.modelfiles.read import ModelFileInfo


def _plan(tf="2.4.1"):
    return infer.plan(ModelFileInfo(path="/sm", tensorflow_version=tf))


def test_resolve_commands_without_an_interpreter(tmp_path):
    cmds = resolution.resolve_commands(_plan(), "r.in", "c.txt", "rep.json", None, str(tmp_path))
    assert len(cmds) == 1
    how, argv = cmds[0]
    assert "--python-version" in argv and "3.8" in argv and "--only-binary=:all:" in argv and "--dry-run" in argv


def test_cache_key_follows_what_decides_the_resolution(monkeypatch):
    p = _plan()
    key = resolution.cache_key(p, "3.8.18")
    assert key == resolution.cache_key(_plan(), "3.8.18")
    assert key != resolution.cache_key(p, "3.8.17") and key != resolution.cache_key(p, None)
    assert key != resolution.cache_key(_plan("2.4.0"), "3.8.18")
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    assert key != resolution.cache_key(p, "3.8.18")


def test_the_same_requirements_resolve_once(monkeypatch):
    """Many models from one training environment: the second capture reuses the first resolution,
    warnings included; an expired entry is resolved again."""
    calls = []

    def fake_resolve(p, target, warnings):
        calls.append(target)
        warnings.append("lock resolved by this pip for Python 3.8 with --python-version/--platform")
        return [{"name": "tensorflow-cpu", "version": "2.4.1", "requires": []}], "pip of /py3.8"

    monkeypatch.setattr(resolution, "_resolve", fake_resolve)
    first, second = [], []
    dists, how = resolution.resolve(_plan(), ("/py3.8", "3.8.18"), first)
    assert calls == ["/py3.8"] and how == "pip of /py3.8" and dists[0]["version"] == "2.4.1"
    dists2, how2 = resolution.resolve(_plan(), ("/py3.8", "3.8.18"), second)
    assert calls == ["/py3.8"] and dists2 == dists and how2.startswith("pip of /py3.8 (cached 0 min ago")
    assert second == first
    key = resolution.cache_key(_plan(), "3.8.18")
    assert resolution.cached(key) is not None
    assert resolution.cached(key, now=time.time() + resolution.CACHE_TTL + 1) is None
    resolution.CACHE.path(key).write_text("{broken")
    resolution.resolve(_plan(), ("/py3.8", "3.8.18"), [])
    assert len(calls) == 2
