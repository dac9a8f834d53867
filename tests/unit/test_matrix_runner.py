"""tests/matrix/runner.py: how the fidelity matrix judges a cell's verdict and prints the table
(the matrix itself runs with `make matrix`)."""
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "matrix"))

import envs  # noqa: E402
import migratecol  # noqa: E402
import runner  # noqa: E402

ENV = envs.BY_NAME["tf2.4-py3.8"]


def _judged(mode, verdict, cell=None, **kw):
    o = runner.Outcome(env=ENV.name, cell="sequential-h5", mode=mode, verdict=verdict, **kw)
    runner.judge(o, dict({"selfcheck": "ok", "optimizer_vars": 9}, **(cell or {})), ENV)
    return o


def test_captured_cells_must_reproduce_with_a_right_optimizer_verdict():
    assert _judged("hooked", "OK", exit_code=0, optimizer="OK").right
    assert _judged("python", "OK", exit_code=0, optimizer="not checked (compile=False)").right
    false_alarm = _judged("python", "OK", exit_code=0, optimizer="MISMATCH: 7 restored, expected 1")
    assert not false_alarm.right and "optimizer mismatch" in false_alarm.why_wrong
    unchecked = _judged("hooked", "OK", exit_code=0, optimizer="-")
    assert not unchecked.right and "not checked" in unchecked.why_wrong
    assert not _judged("hooked", "NOT-VERIFIED", exit_code=0, optimizer="OK").right
    assert not _judged("python", "FAILED", exit_code=5, optimizer="-").right


def test_inferred_cells_must_load_and_never_claim_a_reference():
    assert _judged("infer", "NOT-VERIFIED", exit_code=0).right
    assert not _judged("infer", "OK", exit_code=0).right
    assert not _judged("infer", "FAILED", exit_code=5).right


def test_a_file_its_own_env_cannot_load_must_be_refused_with_a_reason():
    broken = {"selfcheck": "TypeError: Unknown activation function: 'function'"}
    assert _judged("python", "CAPTURE-FAILED", broken, exit_code=2, message="cannot load ...").right
    assert _judged("infer", "FAILED", broken, exit_code=5, message="TypeError: ...").right
    assert not _judged("hooked", "OK", broken, exit_code=0, optimizer="OK").right
    assert not _judged("hooked", "FAILED", broken, exit_code=5, message="").right
    # loaded by a recipe the report names (compile=False: the optimizer can't be rebuilt): right
    assert _judged("python", "OK", broken, exit_code=0, recipe="custom_objects_nocompile",
                   optimizer="not checked (loaded with compile=False)").right
    assert not _judged("python", "OK", broken, exit_code=0, recipe="custom_objects", optimizer="OK").right


def test_table_counts_right_verdicts_and_lists_the_wrong_ones():
    outs = [_judged("hooked", "OK", exit_code=0, optimizer="OK", max_abs_diff=0.0, seconds=3.0),
            _judged("python", "OK", exit_code=0, optimizer="MISMATCH: x", max_abs_diff=0.0, seconds=3.0),
            _judged("infer", "NOT-VERIFIED", exit_code=0, seconds=2.0,
                    extra={"reproduces": {"allclose": True, "max_abs_diff": 0.0}})]
    text = runner.table([{"env": ENV.name, "skipped": [], "seconds": 9.0,
                          "outcomes": [asdict(o) for o in outs]}])
    assert "right verdicts: 2 of 3" in text
    assert "matches the training env's (checked by the matrix, not by envrepro): 1" in text
    assert "WRONG tf2.4-py3.8 sequential-h5 python" in text
    row = next(line for line in text.splitlines() if line.startswith("tf2.4-py3.8"))
    assert "OK 0 opt 3s" in row and "loaded =train 2s" in row and "✗" in row


def test_the_issue20_kinds_run_with_the_hook_and_infer_only():
    for kind in ("text", "mixed", "multioutput", "addons_wn"):
        assert runner.cell_modes({"kind": kind}) == ("hooked", "infer")
    assert runner.cell_modes({"kind": "sequential"}) == runner.MODES
    assert all(m in runner.MODES for modes in runner.KIND_MODES.values() for m in modes)


def test_a_kind_without_python_mode_shows_a_dash_and_the_reason():
    o = runner.Outcome(env=ENV.name, cell="text-savedmodel", mode="hooked", kind="text",
                       verdict="OK", exit_code=0, optimizer="OK", max_abs_diff=0.0, seconds=4.0)
    runner.judge(o, {"selfcheck": "ok", "optimizer_vars": 5}, ENV)
    text = runner.table([{"env": ENV.name, "skipped": [], "seconds": 4.0, "outcomes": [asdict(o)]}])
    row = next(line for line in text.splitlines() if line.startswith("tf2.4-py3.8"))
    assert row.split()[2:] == ["OK", "0", "opt", "4s", "-", "-", "-"]   # no --python, no --infer, no migrate
    assert "not captured with --python" in text and "text (hooked/infer only)" in text


def _migrated(exit_code=0, message="", **arts):
    rec = {"exit_code": exit_code, "message": message, "seconds": 20.0,
           "artifacts": [dict({"format": f}, **a) for f, a in arts.items()]}
    migratecol.judge(rec)
    return rec


def test_a_migrate_cell_is_right_only_when_what_it_calls_verified_reproduces_independently():
    ok = {"verified": True, "independent": {"allclose": True, "max_abs_diff": 0.0}}
    right = _migrated(keras=ok, savedmodel=ok, onnx={"verified": False, "why_not": "no tf2onnx"})
    assert right["right"] and migratecol.text(right) == "KS 20s"
    false_claim = _migrated(keras={"verified": True, "independent": {"allclose": False, "max_abs_diff": 0.3}},
                            savedmodel=ok)
    assert not false_claim["right"] and "keras" in false_claim["why_wrong"] and migratecol.text(false_claim).endswith("✗")
    unchecked = _migrated(keras={"verified": True})       # the checker gave no answer: not proven
    assert not unchecked["right"]
    refused = _migrated(exit_code=5, message="the source environment can't load the model: KeyError")
    assert refused["right"] and migratecol.text(refused) == "exit 5 20s"
    misused = _migrated(exit_code=2, message="envrepro: error: the output's folder does not exist")
    assert not misused["right"] and "bad input" in misused["why_wrong"]
    silent = _migrated(exit_code=6, keras={"verified": False}, savedmodel={"verified": False})
    assert not silent["right"] and "no reason" in silent["why_wrong"]


def test_the_table_has_a_migrate_column_and_its_goals():
    o = runner.Outcome(env=ENV.name, cell="sequential-h5", mode="hooked", kind="sequential",
                       verdict="OK", exit_code=0, optimizer="OK", max_abs_diff=0.0, seconds=10.0)
    runner.judge(o, {"selfcheck": "ok", "optimizer_vars": 5}, ENV)
    ok = {"verified": True, "independent": {"allclose": True}}
    mig = {"sequential-h5": _migrated(keras=ok, savedmodel=ok)}
    text = runner.table([{"env": ENV.name, "skipped": [], "seconds": 30.0, "outcomes": [asdict(o)], "migrate": mig}])
    assert text.splitlines()[0].split()[-1] == "migrate"
    row = next(line for line in text.splitlines() if line.startswith("tf2.4-py3.8"))
    assert row.split()[-2:] == ["KS", "20s"]
    assert "a verified .keras for 1 (100%)" in text and "median 2.0x" in text


def test_the_migrate_column_runs_in_the_environments_named():
    assert migratecol.wanted("tf2.4-py3.8", "1") and not migratecol.wanted("tf2.4-py3.8", "0")
    assert migratecol.wanted("tf2.4-py3.8", "tf2.4-py3.8, tf2.21-py3.11")
    assert not migratecol.wanted("tf2.12-py3.10", "tf2.4-py3.8,tf2.21-py3.11")
    assert all(e.name in {x.name for x in envs.ENVS} for e in envs.ENVS)
