"""diagnose/checks.py: framework and package comparisons."""
from envrepro.diagnose import checks
from envrepro.diagnose.catalogue import Env
from envrepro.diagnose.findings import INFO, WARNING


def test_compare_frameworks_across_minors_and_flavours():
    saved = Env(python="3.8.18", tensorflow="2.4.1", keras="2.4.0", keras_flavor="tf.keras")
    target = Env(python="3.8.10", tensorflow="2.21.0", keras="3.15.1", keras_flavor="keras3")
    found = {(f.kind, f.severity) for f in checks.compare_frameworks(saved, target, inferred=False)}
    assert found == {("python", INFO), ("framework", WARNING)}
    (tf,) = [f for f in checks.compare_frameworks(saved, target, False) if "TensorFlow" in f.what]
    assert "docs/failures.md class 8d" in tf.why and "tensorflow-cpu==2.4.1" in tf.fix
    assert checks.compare_frameworks(saved, saved, inferred=False) == []
