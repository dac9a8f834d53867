"""The migration target's lock and ONNX (envrepro.migrating.targets): tf2onnx and onnxruntime are
resolved beside the target's TensorFlow with every version of its own lock pinned, added only when
nothing moves, else left out with the reason the report gives (a fake resolver stands in for pip;
tests/integration/test_migrate_onnx_tf.py converts and runs for real)."""
import dataclasses
import json

import pytest

from envrepro import errors
from envrepro.migrating import targets

BASE = {"tensorflow-cpu": "2.21.0", "keras": "3.12.0", "numpy": "2.2.6", "protobuf": "6.31.1",
        "ml-dtypes": "0.5.1"}
ONNX = {"tf2onnx": "1.17.0", "onnxruntime": "1.32.0", "onnx": "1.23.2"}


def _dists(versions):
    return [{"name": n, "version": v, "requires": []} for n, v in versions.items()]


class FakeResolver:
    """``resolution.resolve``: the target's own lock, then (asked for tf2onnx) ``onnx``: the
    versions it returns, or an exception it raises; every plan kept."""

    def __init__(self, monkeypatch, base=None, onnx=None, notes=()):
        from envrepro.packages import resolution

        self.plans, self.base, self.notes = [], dict(base or BASE), list(notes)
        self.onnx = onnx if onnx is not None else dict(self.base, **ONNX)
        monkeypatch.setattr(resolution, "resolve", self)
        monkeypatch.setattr("envrepro.packages.indexhashes.hashes_wanted", lambda: False)

    def __call__(self, plan, interp, warnings):
        self.plans.append(plan)
        if not any(r.startswith("tf2onnx") for r in plan.requirements):
            return _dists(self.base), "fake"
        if isinstance(self.onnx, Exception):
            raise self.onnx
        warnings.extend(self.notes)
        return _dists(self.onnx), "fake"


def _pins(cap):
    return dict(line.split(" ", 1)[0].split("==") for line in cap.lock_path.read_text().splitlines()
                if "==" in line and not line.lstrip().startswith("#"))


def test_a_to_target_asks_for_onnx_and_its_lock_key_says_so():
    t = targets.to_version("2.21")
    assert t.onnx == list(targets.ONNX_REQUIREMENTS)
    assert all(r.split(">=")[0] in targets.ONNX_PACKAGES for r in t.onnx)
    assert t.key() != dataclasses.replace(t, onnx=[]).key()       # an older lock is not reused
    assert t.key() == targets.to_version("2.21").key()
    assert t.to_dict()["onnx"] is None                            # not resolved yet


def test_onnx_is_added_beside_tensorflow_with_every_version_of_the_lock_pinned(monkeypatch):
    fake = FakeResolver(monkeypatch)
    said = []
    t = targets.to_version("2.21.0")
    cap = targets.target_capture(t, say=said.append)
    base_plan, onnx_plan = fake.plans
    assert not any("onnx" in r for r in base_plan.requirements)
    assert onnx_plan.requirements == base_plan.requirements + list(targets.ONNX_REQUIREMENTS)
    assert sorted(onnx_plan.constraints) == sorted(f"{n}=={v}" for n, v in BASE.items())
    pins = _pins(cap)
    assert {n: pins[n] for n in BASE} == BASE
    assert pins["tf2onnx"] == "1.17.0" and pins["onnxruntime"] == "1.32.0"
    facts = t.to_dict()["onnx"]
    assert facts["included"] and facts["why_not"] is None
    assert facts["added"] == ["onnx==1.23.2", "onnxruntime==1.32.0", "tf2onnx==1.17.0"]
    assert cap.data["target"]["onnx"] == facts
    assert any("tf2onnx" in s for s in said)

    again = targets.to_version("2.21.0")           # read back: no resolution, the same facts
    assert targets.target_capture(again).root == cap.root and len(fake.plans) == 2
    assert again.to_dict()["onnx"] == facts


def test_a_conflict_leaves_onnx_out_says_why_and_the_target_still_resolves(monkeypatch):
    pip = ("could not resolve an environment for tensorflow-cpu==2.21.0 tf2onnx>=1.16 with ...:\n"
           "[pip of /usr/bin/python3.12 (Python 3.12, --dry-run --report)]\n"
           "The conflict is caused by:\n    The user requested protobuf==6.31.1\n"
           "    tf2onnx 1.16.1 depends on protobuf~=3.20\n"
           "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/...")
    FakeResolver(monkeypatch, onnx=errors.CaptureError(pip))
    t = targets.to_version("2.21.0")
    cap = targets.target_capture(t)
    pins = _pins(cap)
    assert "tf2onnx" not in pins and "onnxruntime" not in pins and pins["numpy"] == "2.2.6"
    why = t.to_dict()["onnx"]["why_not"]
    assert t.to_dict()["onnx"]["included"] is False
    assert why.startswith("tf2onnx/onnxruntime can't be installed beside TensorFlow 2.21.0 on Python 3.12")
    assert "tf2onnx 1.16.1 depends on protobuf~=3.20" in why and "\n" not in why


@pytest.mark.parametrize("moved,said", [({"numpy": "2.3.0"}, "numpy 2.2.6 -> 2.3.0"),
                                        ({"keras": "3.13.0"}, "keras 3.12.0 -> 3.13.0"),
                                        ({"tensorflow-cpu": "2.20.0"}, "tensorflow-cpu 2.21.0 -> 2.20.0")])
def test_onnx_that_would_move_tensorflow_keras_or_numpy_is_left_out(monkeypatch, moved, said):
    FakeResolver(monkeypatch, onnx=dict(BASE, **ONNX, **moved))
    t = targets.to_version("2.21.0")
    pins = _pins(targets.target_capture(t))
    assert {n: pins[n] for n in BASE} == BASE and "tf2onnx" not in pins
    facts = t.to_dict()["onnx"]
    assert facts["included"] is False and said in facts["why_not"]
    assert "resolved without them" in facts["why_not"]


def test_onnx_without_a_wheel_for_the_target_python_is_left_out(monkeypatch):
    note = ("onnxruntime==1.32.0: the index has only source distributions; resolved without "
            "reading their dependencies")
    FakeResolver(monkeypatch, notes=[note])
    t = targets.to_version("2.21.0")
    assert "onnxruntime" not in _pins(targets.target_capture(t))
    assert "onnxruntime: no wheel for Python 3.12" in t.to_dict()["onnx"]["why_not"]


def test_onnx_1_19_is_kept_out_beside_an_ml_dtypes_older_than_it_imports(monkeypatch):
    fake = FakeResolver(monkeypatch, base=dict(BASE, **{"ml-dtypes": "0.3.2"}))
    targets.target_capture(targets.to_version("2.15.1"))
    assert "onnx<1.19" in fake.plans[-1].constraints
    fake = FakeResolver(monkeypatch)
    targets.target_capture(targets.to_version("2.21.0"))
    assert "onnx<1.19" not in fake.plans[-1].constraints


def _fake_python(tmp_path, versions, imports=True):
    """A stand-in interpreter: prints the versions; the ONNX import check fails unless
    ``imports``."""
    script = tmp_path / "python"
    failing = '' if imports else ('case "$*" in *tf2onnx.convert*) echo "ImportError: numpy.core.'
                                  'multiarray failed to import" >&2; exit 1;; esac\n')
    script.write_text("#!/bin/sh\n%secho '%s'\n" % (failing, json.dumps(
        {"python": "3.11.2", "versions": versions})))
    script.chmod(0o755)
    return str(script)


TF = {"tensorflow": "2.21.0", "keras": "3.12.0", "numpy": "2.2.6"}


def test_a_python_target_pins_the_tf2onnx_and_onnxruntime_it_has(tmp_path, monkeypatch):
    py = _fake_python(tmp_path, dict(TF, tf2onnx="1.17.0", onnxruntime="1.31.0"))
    t = targets.choose(python=py)
    assert t.onnx == ["tf2onnx==1.17.0", "onnxruntime==1.31.0"]
    assert t.requirements == ["tensorflow-cpu==2.21.0", "keras==3.12.0", "numpy==2.2.6"]
    fake = FakeResolver(monkeypatch, onnx=dict(BASE, **dict(ONNX, onnxruntime="1.31.0")))
    pins = _pins(targets.target_capture(t))
    assert fake.plans[-1].requirements[-2:] == t.onnx and pins["onnxruntime"] == "1.31.0"
    assert t.to_dict()["onnx"]["included"]


@pytest.mark.parametrize("versions,imports,said", [
    (dict(TF), True, "tf2onnx and onnxruntime are not installed in"),
    (dict(TF, tf2onnx="1.17.0"), True, "onnxruntime is not installed in"),
    (dict(TF, tf2onnx="1.17.0", onnxruntime="1.32.0"), False,
     "tf2onnx/onnxruntime don't import in"),
])
def test_a_python_target_without_working_onnx_gets_none_and_says_why(tmp_path, monkeypatch, versions,
                                                                      imports, said):
    t = targets.choose(python=_fake_python(tmp_path, versions, imports))
    assert t.onnx == [] and t.key() == dataclasses.replace(t, onnx_facts={}).key()
    facts = t.to_dict()["onnx"]
    assert facts["included"] is False and said in facts["why_not"]
    if not imports:
        assert "numpy.core.multiarray failed to import" in facts["why_not"]
    fake = FakeResolver(monkeypatch)
    pins = _pins(targets.target_capture(t))
    assert len(fake.plans) == 1 and "tf2onnx" not in pins          # one resolution, as before
    assert t.to_dict()["onnx"] == facts


def test_conflict_lines_become_one_line():
    assert targets.conflict("a\nERROR: Could not find a version that satisfies the requirement "
                            "onnxruntime>=1.16 (from versions: none)\nERROR: No matching "
                            "distribution found for onnxruntime>=1.16") == (
        "ERROR: Could not find a version that satisfies the requirement onnxruntime>=1.16 "
        "(from versions: none); ERROR: No matching distribution found for onnxruntime>=1.16")
    assert targets.conflict("just this") == "just this"
    assert len(targets.conflict("ERROR: " + "x" * 1000)) == 400
