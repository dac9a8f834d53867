"""diagnose/checks.py: framework and package comparisons, custom-code drift classification."""
from envrepro.diagnose import checks
from envrepro.diagnose.catalogue import Env
from envrepro.diagnose.findings import INFO, WARNING

from test_doctor import LAYER_V1


def test_code_change_classification():
    assert checks.code_change(LAYER_V1, LAYER_V1) == ("same", [])
    cosmetic = LAYER_V1.replace("# double", "# times two").replace('"""A layer."""', '"""Doubles."""')
    assert checks.code_change(LAYER_V1, cosmetic) == ("cosmetic", [])
    reformatted = LAYER_V1.replace("return x * 2", "return (x *\n                2)")
    assert checks.code_change(LAYER_V1, reformatted)[0] == "cosmetic"
    kind, changed = checks.code_change(LAYER_V1, LAYER_V1.replace("x * 2", "tf.nn.relu(x * 2)"))
    assert kind == "code" and changed == ["MyLayer.call"]
    kind, changed = checks.code_change(LAYER_V1, LAYER_V1 + "\nSCALE = 3\n")
    assert kind == "code" and changed == ["(module or class-level code)"]
    assert checks.code_change(LAYER_V1, "def broken(:\n")[0] == "code"


def test_origin_root():
    assert checks.origin_root({"origin": "/src/pkg/sub/mod.py", "path": "snapshot/pkg/sub/mod.py"}) == "/src"
    assert checks.origin_root({"origin": "/src/mylayers.py", "path": "snapshot/mylayers.py"}) == "/src"


def test_compare_frameworks_across_minors_and_flavours():
    saved = Env(python="3.8.18", tensorflow="2.4.1", keras="2.4.0", keras_flavor="tf.keras")
    target = Env(python="3.8.10", tensorflow="2.21.0", keras="3.15.1", keras_flavor="keras3")
    found = {(f.kind, f.severity) for f in checks.compare_frameworks(saved, target, inferred=False)}
    assert found == {("python", INFO), ("framework", WARNING)}
    (tf,) = [f for f in checks.compare_frameworks(saved, target, False) if "TensorFlow" in f.what]
    assert "docs/failures.md class 8d" in tf.why and "tensorflow-cpu==2.4.1" in tf.fix
    assert checks.compare_frameworks(saved, saved, inferred=False) == []
