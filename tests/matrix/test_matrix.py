"""One test per training environment: every cell it writes, captured three ways (the kinds in
runner.KIND_MODES fewer) and loaded from this host with ``envrepro load``, gets the right verdict
(runner.judge)."""
import pytest

import conftest
import envs
import runner

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("env", envs.ENVS, ids=lambda e: e.name)
def test_matrix(env, engine):
    result = runner.run_env(env)
    conftest.RESULTS.append(result)
    outcomes = result["outcomes"]
    ran = {(o["cell"], o["mode"]) for o in outcomes}
    cells = {o["cell"]: o["kind"] for o in outcomes}
    assert cells, f"the zoo wrote no model in {env.name}"
    assert ran == {(c, m) for c, kind in cells.items() for m in runner.cell_modes({"kind": kind})}
    wrong = [f"{o['cell']} {o['mode']}: {o['why_wrong']} [{o['verdict']} exit {o['exit_code']}: {o['message']}]"
             for o in outcomes if not o["right"]]
    wrong += [f"{cell} migrate: {m['why_wrong']} [exit {m['exit_code']}: {m.get('message')}]"
              for cell, m in (result.get("migrate") or {}).items() if not m["right"]]
    assert not wrong, f"{len(wrong)} wrong verdict(s) in {env.name}:\n" + "\n".join(wrong)
