"""envrepro/jsoncache.py, and the index answers packages/indexhashes.py keeps in it."""
import time

from envrepro import jsoncache
from envrepro.packages import indexhashes


def test_round_trip_expiry_and_unreadable_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = jsoncache.JsonCache("things", ttl=60)
    key = jsoncache.key_of({"b": 2, "a": 1})
    assert key == jsoncache.key_of({"a": 1, "b": 2}) and len(key) == 64
    assert cache.get(key) is None
    cache.put(key, {"answer": [1, 2]})
    assert cache.get(key)["value"] == {"answer": [1, 2]}
    assert cache.path(key).parent == tmp_path / "envrepro" / "things"
    assert cache.get(key, now=time.time() + 61) is None          # expired
    assert cache.get(key, now=time.time() - 3600) is None        # from the future: not trusted
    for junk in ("{broken", "[]", '{"created": "yesterday", "value": 1}', '{"created": 1}'):
        cache.path(key).write_text(junk)
        assert cache.get(key) is None


def test_unwritable_cache_costs_nothing(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))     # a file where the folder should be
    cache = jsoncache.JsonCache("things", ttl=60)
    cache.put("k", 1)
    assert cache.get("k") is None


def test_index_answers_round_trip_and_junk_hashes_are_dropped():
    info = indexhashes.IndexInfo(hashes={"sha256:" + "a" * 64}, wheel_ok=True, sdist=False, found=True)
    back = indexhashes._info_from(indexhashes._info_doc(info))
    assert back == info
    forged = indexhashes._info_from({"hashes": ["sha256:" + "a" * 64, "md5:abc", "sha256:../../x", 7],
                                     "wheel_ok": 1})
    assert forged.hashes == {"sha256:" + "a" * 64} and forged.wheel_ok is True and forged.found


def test_index_key_depends_on_what_decides_the_answer():
    tags = {("cp38", "cp38", "manylinux2014_x86_64")}
    base = indexhashes._info_key(["https://pypi.org/simple"], "NumPy", "1.19.5", tags, "3.8.18")
    assert base == indexhashes._info_key(["https://u:p@pypi.org/simple"], "numpy", "1.19.5", tags, "3.8.18")
    assert base != indexhashes._info_key(["https://pypi.org/simple"], "numpy", "1.19.4", tags, "3.8.18")
    assert base != indexhashes._info_key(["https://mirror/simple"], "numpy", "1.19.5", tags, "3.8.18")
    assert base != indexhashes._info_key(["https://pypi.org/simple"], "numpy", "1.19.5", tags, "3.9.18")
