"""runtime/facts.py: the JSON-safe form of config values and the interpreter's facts."""
import json
import sys

import pytest

from envrepro.runtime import facts as runtime_facts


def test_json_safe():
    np = pytest.importorskip("numpy")

    class Sched(object):
        def get_config(self):
            return {"rate": np.float32(0.5), "steps": np.int64(10)}

    def fn():
        pass

    out = runtime_facts.json_safe({
        "a": np.float32(0.9), "b": np.int64(3), "c": np.bool_(True), "d": float("nan"),
        "e": (1, 2), "f": {3, 1}, "g": b"x", "h": Sched(), "i": fn, "j": np.arange(3),
        "k": np.zeros((50, 50)), 5: None, "l": object,
    })
    assert out["a"] == 0.9 and out["b"] == 3 and out["c"] is True and out["d"] == "nan"
    assert out["e"] == [1, 2] and out["f"] == [1, 3] and out["g"] == "x"
    assert out["h"]["class_name"] == "Sched" and out["h"]["config"] == {"rate": 0.5, "steps": 10}
    assert out["i"].endswith("test_json_safe.<locals>.fn")
    assert out["j"] == [0, 1, 2] and out["k"].startswith("<array shape=[50, 50]")
    assert out["5"] is None and out["l"] == "builtins.object"
    json.dumps(out, allow_nan=False)


def test_python_facts():
    facts = runtime_facts.python_facts()
    assert facts["version"] == "%d.%d.%d" % sys.version_info[:3]
    assert facts["executable"] == sys.executable and facts["prefix"] == sys.prefix
    if sys.platform.startswith("linux"):
        assert facts["libc"] is None or facts["libc"].startswith(("glibc ", "musl"))
