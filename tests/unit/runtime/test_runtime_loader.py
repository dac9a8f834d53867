"""The in-container loader's pure parts (envrepro/runtime/loader.py), without Docker or TensorFlow."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from envrepro.runtime import launch, loader as rt



def test_loader_compare_and_nan():
    a = np.array([[1.0, np.nan], [3.0, 4.0]], "float32")
    r = rt.compare(np, [a + 1e-7], [a], 1e-5, 1e-4)
    assert r["allclose"] and r["max_abs_diff"] < 1e-6
    r = rt.compare(np, [a + 0.5], [a], 1e-5, 1e-4)
    assert not r["allclose"] and r["max_abs_diff"] == pytest.approx(0.5)
    b = a.copy()
    b[1, 1] = np.nan
    r = rt.compare(np, [b], [a], 1e-5, 1e-4)
    assert not r["allclose"] and r["max_abs_diff"] == "inf"
    r = rt.compare(np, [a[:1]], [a], 1e-5, 1e-4)
    assert not r["allclose"] and r["shapes"] == {"expected": [[2, 2]], "got": [[1, 2]]} and "problem" in r


def test_loader_inputs_and_outputs(tmp_path):
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"in{i}.npy"))
        np.save(paths[-1], np.full((1, 2), i))
    x, _ = rt.build_inputs(np, {"inputs": paths, "input_structure": "dict", "input_names": ["a", "b"]})
    assert sorted(x) == ["a", "b"] and x["b"][0, 0] == 1
    x, _ = rt.build_inputs(np, {"inputs": paths, "input_structure": "list"})
    assert len(x) == 2
    with pytest.raises(rt.PlanError):
        rt.build_inputs(np, {"inputs": paths, "input_structure": "single"})
    out = rt.flatten_outputs(np, {"y": np.ones(1), "z": np.zeros(1)}, {"output_names": ["z", "y"]})
    assert out[0][0] == 0 and out[1][0] == 1
    assert len(rt.flatten_outputs(np, (np.ones(1), np.ones(2)), {})) == 2


def test_loader_optimizer_check():
    class Var:
        def __init__(self, v):
            self.v = v

        def numpy(self):
            return self.v

    class Adam:  # OptimizerV2 style: weights property, variables() method
        iterations = Var(12)
        weights = [1, 2, 3, 4, 5]

        def variables(self):
            return self.weights

    model = SimpleNamespace(optimizer=Adam())
    ok = rt.check_optimizer(model, {"class": "Adam", "iterations": 12, "state_saved": True, "num_weights": 5})
    assert ok["ok"] and ok["restored"] == "Adam" and ok["iterations"] == 12 and ok["weights_restored"] == 5
    assert rt.check_optimizer(model, {"class": "Custom>Adam", "iterations": 12})["ok"]
    bad = rt.check_optimizer(model, {"class": "SGD", "iterations": 3, "state_saved": True, "num_weights": 7})
    assert not bad["ok"] and len(bad["problems"]) == 3
    none = rt.check_optimizer(SimpleNamespace(optimizer=None), {"class": "Adam"})
    assert not none["ok"]


def test_loader_classifies_known_failures():
    assert rt.classify("ValueError: File format not supported: filepath=x")["id"] == "1"
    assert rt.classify("ModuleNotFoundError: No module named 'custom_layers'")["id"] == "import"
    assert rt.classify("ValueError: bad marshal data (unknown type code)")["id"] == "5"
    assert rt.classify("NotFoundError: Op type not registered 'Addons>Mish' in binary")["id"] == "6c"
    assert rt.classify("all fine") is None
    info = rt.error_info(ValueError("first\nsecond"), "load")
    assert info["first_line"] == "first" and info["stage"] == "load" and info["type"] == "ValueError"


def test_loader_read_plan(tmp_path):
    p = tmp_path / "plan.json"
    p.write_text(json.dumps({"model_path": "/m"}))
    assert rt.read_plan(["--plan", str(p)], {})["model_path"] == "/m"
    assert rt.read_plan([], {"ENVREPRO_PLAN": '{"model_path": "/e"}'})["model_path"] == "/e"
    for argv, env in (([], {}), (["--plan"], {}), ([], {"ENVREPRO_PLAN": "{"}), ([], {"ENVREPRO_PLAN": "{}"})):
        with pytest.raises(rt.PlanError):
            rt.read_plan(argv, env)


def test_loader_without_plan_reports_on_stdout_only():
    env = {k: v for k, v in os.environ.items() if k != "ENVREPRO_PLAN"}
    proc = subprocess.run(launch.host_argv(sys.executable, "loader"), capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == rt.EXIT_INTERNAL
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(rt.REPORT_PREFIX)
    rep = json.loads(lines[0][len(rt.REPORT_PREFIX):])
    assert rep["ok"] is False and rep["error"]["type"] == "PlanError" and rep["exit_code"] == 70
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(launch.host_argv(sys.executable, "loader"), capture_output=True, text=True,
                          env=dict(env, ENVREPRO_DEBUG="1"), timeout=60)
    assert "Traceback" in proc.stderr and len(proc.stdout.splitlines()) == 1


def test_loader_network_check_sends_nothing():
    net = rt.network_check()
    assert set(net) == {"interfaces", "non_loopback", "route", "isolated"}
    assert isinstance(net["route"], bool)
