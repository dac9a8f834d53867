"""runtime/migrate/toonnx.py without TensorFlow: why there is no .onnx, in one line (tf2onnx or
onnxruntime absent, or failing to import), and which ops make a converted graph unusable (the
conversion itself: tests/integration/test_migrate_onnx_tf.py)."""
import builtins
from types import SimpleNamespace as NS

import pytest

from envrepro.runtime.migrate import toonnx


@pytest.fixture
def imports(monkeypatch):
    """``imports(name=exception)``: importing ``name`` raises that; tf2onnx and onnxruntime
    import as empty modules otherwise."""
    real = builtins.__import__

    def install(**failing):
        def fake(name, *args, **kwargs):
            top = name.split(".")[0]
            if top in failing:
                raise failing[top]
            if top in ("tf2onnx", "onnxruntime"):
                return NS(__version__="1.0")
            return real(name, *args, **kwargs)
        monkeypatch.setattr(builtins, "__import__", fake)
    return install


def _missing(name):
    e = ModuleNotFoundError("No module named '%s'" % name)
    e.name = name
    return e


def test_missing_says_which_is_absent_or_why_it_does_not_import(imports):
    imports()
    assert toonnx.missing() is None
    imports(onnxruntime=_missing("onnxruntime"), tf2onnx=_missing("tf2onnx"))
    assert toonnx.missing() == toonnx.NOT_THERE
    imports(onnxruntime=_missing("onnxruntime"))
    assert toonnx.missing() == "onnxruntime is not in the target environment"
    broken = _missing("onnx")                       # tf2onnx there, its dependency not
    imports(tf2onnx=broken)
    assert toonnx.missing() == ("tf2onnx doesn't import in the target environment: "
                                "ModuleNotFoundError: No module named 'onnx'")
    imports(tf2onnx=AttributeError("module 'ml_dtypes' has no attribute 'float4_e2m1fn'\nmore"))
    why = toonnx.missing()
    assert "AttributeError: module 'ml_dtypes' has no attribute 'float4_e2m1fn'" in why
    assert "\n" not in why


def _node(op, domain="", *subgraphs):
    attrs = [NS(HasField=lambda f, g=g: True, g=g, graphs=[]) for g in subgraphs]
    return NS(op_type=op, domain=domain, attribute=attrs)


def test_unmapped_ops_are_the_unknown_standard_ones_and_extensions_ones():
    known = {("", "MatMul"), ("", "Loop"), ("ai.onnx.ml", "LabelEncoder")}
    onnx = NS(defs=NS(has=lambda op, domain="": (domain, op) in known))
    body = NS(node=[_node("StringSplitV2")])
    model = NS(graph=NS(node=[_node("MatMul"), _node("Loop", "", body),
                              _node("LabelEncoder", "ai.onnx.ml"), _node("StaticRegexReplace"),
                              _node("FusedMatMul", "com.microsoft"),
                              _node("StringLower", "ai.onnx.contrib")]))
    assert toonnx.unmapped_ops(onnx, model) == [
        "StaticRegexReplace", "StringLower (domain ai.onnx.contrib)", "StringSplitV2"]
