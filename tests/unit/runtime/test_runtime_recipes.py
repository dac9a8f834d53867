"""The load recipes (envrepro.runtime.recipes) and how the loader uses the recorded one, with a
fake load_model: the order, what is recorded, and old plans that carry no recipe."""
from types import SimpleNamespace

import pytest

from envrepro.runtime import loader as rt
from envrepro.runtime import recipes


def fake_load(fails):
    """A load_model that raises for the given (with custom objects, compile) combinations."""
    calls = []

    def load(path, custom_objects=None, compile=True, **extra):
        calls.append({"custom_objects": custom_objects, "compile": compile, **extra})
        key = (custom_objects is not None, compile)
        if key in fails:
            raise fails[key]
        return SimpleNamespace(path=path, compiled=compile)

    return load, calls


def test_order_and_applicability():
    assert recipes.RECIPE_NAMES == ("custom_objects", "revive", "custom_objects_nocompile",
                                    "revive_nocompile")
    assert recipes.applicable("savedmodel", True) == list(recipes.RECIPE_NAMES)
    # Without custom objects revival is the same call; H5 and .keras have no revival.
    assert recipes.applicable("savedmodel", False) == ["custom_objects", "custom_objects_nocompile"]
    assert recipes.applicable("h5", True) == ["custom_objects", "custom_objects_nocompile"]
    assert recipes.ordered("revive", ["custom_objects", "custom_objects_nocompile"]) == \
        ["revive", "custom_objects", "custom_objects_nocompile"]
    assert recipes.ordered("bogus", ["custom_objects"]) == ["custom_objects"]
    assert recipes.compiles("revive") and not recipes.compiles("revive_nocompile")


def test_first_working_recipe_and_why_the_others_failed():
    load, calls = fake_load({(True, True): KeyError("layers")})
    names = recipes.applicable("savedmodel", True)
    model, name, failed = recipes.try_recipes(load, "/m", names, {"TwoLayer": object})
    assert name == "revive" and model.compiled
    assert failed == [{"recipe": "custom_objects", "error": "KeyError: 'layers'"}]
    assert calls[0]["custom_objects"] == {"TwoLayer": object} and calls[1]["custom_objects"] is None


def test_every_recipe_failing_raises_with_all_failures():
    err = ValueError("Unknown layer: TwoLayer\nmore detail")
    load, _ = fake_load({(c, k): err for c in (True, False) for k in (True, False)})
    with pytest.raises(recipes.RecipesFailed) as info:
        recipes.try_recipes(load, "/m", recipes.applicable("savedmodel", True), {"A": 1})
    assert [f["recipe"] for f in info.value.failed] == list(recipes.RECIPE_NAMES)
    assert info.value.failed[0]["error"] == "ValueError: Unknown layer: TwoLayer"
    assert info.value.last is err


def test_retry_turns_safe_mode_off_once():
    calls = []

    def load(path, **kw):
        calls.append(kw)
        if kw.get("safe_mode") is not False:
            raise ValueError("Requested the deserialization of a lambda; pass safe_mode=False")
        return "model"

    def retry(exc, extra):
        return {"safe_mode": False} if "safe_mode" not in extra else None

    model, name, failed = recipes.try_recipes(load, "/m", ["custom_objects"], {}, retry=retry)
    assert (model, name, failed) == ("model", "custom_objects", [])
    assert len(calls) == 2


def run_with(plan, fails):
    run = rt.Run(dict({"model_path": "/m", "format": "savedmodel"}, **plan))
    load, calls = fake_load(fails)
    kmod = SimpleNamespace(models=SimpleNamespace(load_model=load))
    model = run.load_model(kmod, {"TwoLayer": object} if plan.get("custom_objects") else {})
    return run, model, calls


def test_loader_tries_the_recorded_recipe_first():
    run, model, calls = run_with({"recipe": "revive_nocompile", "custom_objects": {"T": "m:T"}}, {})
    assert calls == [{"custom_objects": None, "compile": False}]
    assert run.report["load"]["recipe"] == "revive_nocompile" and run.compiled is False
    assert run.report["load"]["recorded_recipe"] == "revive_nocompile"


def test_loader_falls_back_in_order():
    run, _, calls = run_with({"recipe": "custom_objects", "custom_objects": {"T": "m:T"}},
                             {(True, True): KeyError("layers")})
    assert run.report["load"]["recipe"] == "revive" and len(calls) == 2
    assert run.report["load"]["recipes_failed"] == [{"recipe": "custom_objects",
                                                     "error": "KeyError: 'layers'"}]


def test_loader_reports_every_failed_recipe_and_raises_the_last():
    run = rt.Run({"model_path": "/m", "format": "savedmodel", "recipe": "custom_objects"})
    load, _ = fake_load({(c, k): KeyError("layers") for c in (True, False) for k in (True, False)})
    with pytest.raises(KeyError):
        run.load_model(SimpleNamespace(models=SimpleNamespace(load_model=load)), {"T": object})
    assert [f["recipe"] for f in run.report["load"]["recipes_failed"]] == list(recipes.RECIPE_NAMES)


def test_old_plan_without_recipe_makes_the_one_call_it_always_made():
    run, _, calls = run_with({"compile": False, "custom_objects": {"T": "m:T"}}, {})
    assert calls == [{"custom_objects": {"TwoLayer": object}, "compile": False}]
    assert run.report["load"]["recipe"] is None and run.compiled is False
    with pytest.raises(KeyError):
        run_with({"custom_objects": {"T": "m:T"}}, {(True, True): KeyError("layers")})
