"""The globals a Keras 2 Lambda's bytecode expects in the training script's module
(runtime/lambdaglobals.py), given to the loader's ``__main__``: the recorded ones, else a usual
alias guessed from the NameError, and the load retried."""
import sys
import types

import pytest

from envrepro.runtime import lambdaglobals, planload
from envrepro.runtime.planload import resolve_attr


@pytest.fixture()
def main(monkeypatch):
    fake = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", fake)
    return fake


def test_recorded_names_are_given_where_main_lacks_them(main):
    main.keep = "mine"
    given, problems = lambdaglobals.provide(
        {"m": {"module": "math"}, "j": {"object": "os.path:join"}, "K": {"value": 3},
         "keep": {"value": "theirs"}, "bad": {"module": "no_such_module_xyz"}}, resolve_attr)
    import math
    import os

    assert main.m is math and main.j is os.path.join and main.K == 3 and main.keep == "mine"
    assert given == ["K", "j", "m"] and len(problems) == 1 and problems[0].startswith("bad: ")


def test_a_name_error_for_a_usual_alias_names_its_module(main):
    assert lambdaglobals.alias_for(NameError("name 'np' is not defined")) == ("np", "numpy")
    assert lambdaglobals.alias_for(NameError("name 'helper' is not defined")) is None
    assert lambdaglobals.alias_for(ValueError("name 'np' is not defined")) is None
    main.np = object()
    assert lambdaglobals.alias_for(NameError("name 'np' is not defined")) is None


def test_the_load_is_retried_with_the_guessed_alias_and_the_report_says_so(main):
    calls = []

    class Run(planload.PlanLoad):
        def load_model(self, kmod, custom):
            calls.append(1)
            if not hasattr(sys.modules["__main__"], "math"):
                raise NameError("name 'math' is not defined")
            return "model"

    run = Run({"model_path": "m.h5"})
    assert run.load_with_aliases(None, {}) == "model" and len(calls) == 2
    assert run.state["load"]["lambda_globals_guessed"] == ["math = math"]


def test_an_unknown_name_is_not_guessed(main):
    class Run(planload.PlanLoad):
        def load_model(self, kmod, custom):
            raise NameError("name 'helper' is not defined")

    with pytest.raises(NameError):
        Run({"model_path": "m.h5"}).load_with_aliases(None, {})
