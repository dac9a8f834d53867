"""Lambda functions rebuilt from the capture's recorded source (runtime/migrate/lambdas.py) and
tfa WeightNormalization's kernel (rebuild.weight_norm_arrays): no TensorFlow, numpy only."""
import sys

import numpy as np
import pytest

from envrepro.runtime.migrate import lambdas
from envrepro.runtime.migrate.rebuild import RebuildFailed, weight_norm_arrays


@pytest.fixture()
def fake_keras(monkeypatch):
    """A stand-in ``keras`` whose register_keras_serializable records what it registers."""
    registered = {}

    class Saving:
        @staticmethod
        def register_keras_serializable(package, name):
            def deco(fn):
                registered["%s>%s" % (package, name)] = fn
                return fn
            return deco

    mod = type(sys)("keras")
    mod.saving = Saving
    monkeypatch.setitem(sys.modules, "keras", mod)
    return registered


def rec(layer, source, kind="lambda", **glob):
    return {"layer": layer, "kind": kind, "source": source, "globals": glob}


def test_module_names_are_python_names():
    assert lambdas.module_name("lambda-h5") == "lambda_h5_lambdas"
    assert lambdas.module_name("2model.v1") == "m_2model_v1_lambdas"
    assert lambdas.module_name("---") == "model_lambdas"


def test_functions_are_generated_registered_and_compute_the_same(tmp_path, fake_keras):
    records = [rec("lambda", "lambda t: t * 0.5 + 1.0"),
               rec("scale", "lambda a, b=2: a * b * K", K={"value": 3}),
               rec("trig", "def named(x, y=2.0):\n    return math.tanh(x) * y\n", kind="def",
                   math={"module": "math"}),
               rec("join", "lambda p: path.join(p, 'x')", path={"object": "os.path:join"})]
    text, functions, why_not = lambdas.generate(records, "m", "m_lambdas")
    assert why_not == {}
    assert functions["lambda"] == "fn_lambda" and functions["trig"] == "trig"
    module, path = lambdas.write_and_import(str(tmp_path), "m_lambdas", text)
    assert module.fn_lambda(2.0) == 2.0 and module.scale(2) == 12
    assert module.trig(0.5) == pytest.approx(2.0 * np.tanh(0.5))
    assert set(fake_keras) == {"m_lambdas>fn_lambda", "m_lambdas>scale", "m_lambdas>trig",
                               "m_lambdas>join"}
    assert "code from the capture" in text
    sys.modules.pop("m_lambdas", None)


@pytest.mark.parametrize("record, why", [
    (rec("a", None), "recorded no source"),
    ({"layer": "a", "why_not": "it uses o"}, "it uses o"),
    (rec("a", "os.system('x')"), "not a lambda expression"),
    (rec("a", "lambda x: (", ), "does not parse here"),
    (rec("a", "x = 1\ndef f(): pass", kind="def"), "not one def statement"),
    (rec("a", "lambda x: x", kind="eval"), "unknown kind"),
    (rec("a", "lambda x: x + y", y={"module": "os; import evil"}), "no form envrepro takes"),
    (rec("a", "lambda x: x + y", y={"value": [1]}), "no form envrepro takes"),
    (rec("a", "lambda x: x + y", y={"value": float("nan")}), "not a finite number"),
    (rec("a", "lambda x: x", **{"import": {"value": 1}}), "not a Python name"),
])
def test_untrusted_records_are_refused_one_line_each(record, why):
    text, functions, why_not = lambdas.generate([record], "m", "m_lambdas")
    assert functions == {} and why in why_not["a"]
    assert "evil" not in text


def test_two_lambdas_disagreeing_on_a_global_keep_the_first(fake_keras):
    text, functions, why_not = lambdas.generate(
        [rec("a", "lambda x: x * K", K={"value": 1}), rec("b", "lambda x: x * K", K={"value": 2})],
        "m", "m_lambdas")
    assert list(functions) == ["a"] and "differs from another Lambda's" in why_not["b"]


def test_weight_norm_kernel_is_tfas():
    rng = np.random.RandomState(0)
    g, v, b = rng.rand(3).astype("float32"), rng.randn(4, 3).astype("float32"), \
        rng.rand(3).astype("float32")
    names = [{"name": "wn/g:0"}, {"name": "wn/kernel:0"}, {"name": "wn/bias:0"},
             {"name": "wn/initialized:0"}, {"name": "wn/data_dep_init/kernel:0"},
             {"name": "wn/data_dep_init/bias:0"}]
    lines = []
    kernel, bias = weight_norm_arrays("wn", names, [g, v, b, np.array(True), v * 0, b * 0], lines)
    want = v / np.sqrt((v.astype("float64") ** 2).sum(axis=0, keepdims=True)) * g
    np.testing.assert_allclose(kernel, want, rtol=1e-6)
    assert kernel.dtype == np.float32 and bias is b and lines
    with pytest.raises(RebuildFailed, match="never ran"):
        weight_norm_arrays("wn", names, [g, v, b, np.array(False), v, b], [])
    conv = rng.randn(3, 3, 2, 5).astype("float32")
    (k,) = weight_norm_arrays("c", names[:2], [np.ones(5, "float32"), conv], [])
    np.testing.assert_allclose((k.astype("float64") ** 2).sum(axis=(0, 1, 2)), np.ones(5), rtol=1e-5)


def test_layers_whose_names_clean_up_alike_get_functions_of_their_own(fake_keras):
    text, functions, why_not = lambdas.generate(
        [rec("a-b", "lambda x: x + 1"), rec("a_b", "lambda x: x + 2")], "m", "m_lambdas")
    assert why_not == {} and functions == {"a-b": "a_b", "a_b": "a_b_1"}
