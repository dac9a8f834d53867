"""Drift without a capture (runtime/drift.py), on real models in a real Python 3.9 + tensorflow-cpu
2.8.4 environment: models saved WITHOUT envrepro, captured with ``envrepro capture --infer`` from a
source tree, then loaded by the loader on the host under the same interpreter. The source tree
as it was at the save gives "loaded, not verified" and exit 0; one edited after the save (an
activation added to a ``call``, a custom activation function changed) gives exit 6 naming the
classes that differ; an H5 file (no traced graphs) says the drift could not be checked."""
import shutil
import textwrap

import pytest

from envrepro.sandbox import report as reports
from envrepro.sidecar import layout, manifest
from support import envrepro_cli  # noqa: E402
from tf_helpers import CUSTOM_LAYERS, run_loader, run_py, write_module

pytestmark = [pytest.mark.tf]

BLOCKS = textwrap.dedent('''
    import tensorflow as tf

    def my_act(x):
        return x * 2.0

    @tf.keras.utils.register_keras_serializable(package="matrix")
    class Inner(tf.keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(name="kernel", shape=(int(input_shape[-1]), 3),
                                     initializer="random_normal")

        def call(self, x):
            return tf.matmul(x, self.w)

    class Outer(tf.keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.d = tf.keras.layers.Dense(4, activation=my_act)
            self.inner = Inner(name="inner")

        def call(self, x):
            return self.inner(self.d(x))
''')

SAVE = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    from custom_layers import MyCustomLayer
    from blocks import Outer
    out = sys.argv[1]
    m = tf.keras.Sequential([tf.keras.Input(shape=(16,)), tf.keras.layers.Dense(8), MyCustomLayer(units=4)])
    m.compile(optimizer="adam", loss="mse")
    m.save(out + "/seq")            # no envrepro: a model saved long before it
    m.save(out + "/seq.h5")
    o = Outer(name="outer")
    o(np.zeros((1, 6), "float32"))
    o.save(out + "/nested")
''')


def _infer(model, src):
    out = envrepro_cli("capture", "--infer", model, "--code-path", src, env={"ENVREPRO_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return manifest.read(layout.sidecar_for(model)), out


@pytest.fixture(scope="module")
def saved(py39_tf28, tmp_path_factory):
    """The models, saved under TF 2.8.4 from ``src/``; ``edited/`` is that source after the save."""
    root = tmp_path_factory.mktemp("drift")
    src, edited = root / "src", root / "edited"
    write_module(src, "custom_layers", CUSTOM_LAYERS)
    write_module(src, "blocks", BLOCKS)
    run_py(py39_tf28, SAVE.replace("sys.argv[1]", repr(str(root))), env={"PYTHONPATH": str(src)})
    new_call = CUSTOM_LAYERS.replace("return tf.matmul(inputs, self.w) + self.b",
                                     "return tf.nn.relu(tf.matmul(inputs, self.w) + self.b)")
    assert new_call != CUSTOM_LAYERS
    write_module(edited, "custom_layers", new_call)
    new_blocks = BLOCKS.replace("return tf.matmul(x, self.w)", "return tf.nn.relu(tf.matmul(x, self.w))")
    write_module(edited, "blocks", new_blocks.replace("return x * 2.0", "return x * 3.0"))
    return root, src, edited


def _copy(root, name, new):
    """A copy of a saved model under another name: one capture per model."""
    if (root / name).is_dir():
        shutil.copytree(root / name, root / new)
    else:
        shutil.copy(root / name, root / new)
    return root / new


def test_unchanged_source_loads_not_verified_exit_0(py39_tf28, saved, tmp_path):
    root, src, _ = saved
    cap, _ = _infer(root / "seq", src)
    assert cap.data["inferred"] is True and cap.data["reference"] is None
    assert cap.data["load"]["custom_objects"] == {"MyCustomLayer": "custom_layers:MyCustomLayer"}
    code, rep = run_loader(py39_tf28, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    drift = rep["drift"]
    assert drift["checked"] and drift["ok"] and drift["model"]["allclose"]
    assert [(e["layer"], e["class"], e["allclose"]) for e in drift["layers"]] == \
        [("my_custom_layer", "MyCustomLayer", True)]
    report = reports.LoadReport(model=str(root / "seq"), capture=str(cap.root), image={}, loader=rep, inferred=True)
    assert reports.exit_code(report) == 0
    d = report.to_dict()
    assert d["verdict"] == "loaded, not verified" and d["verified"] is False
    text = reports.render_report(report)
    assert "reproduces its reference" not in text and "result: LOADED, NOT VERIFIED" in text
    assert "source tree vs the SavedModel's traced graphs: whole model max |diff| 0, 1 layer(s)" in text


def test_layer_edited_after_the_save_is_exit_6_naming_the_class(py39_tf28, saved, tmp_path):
    root, _, edited = saved
    cap, _ = _infer(_copy(root, "seq", "seq_edited"), edited)
    assert "relu" in (cap.root / "snapshot" / "custom_layers.py").read_text()
    code, rep = run_loader(py39_tf28, cap, tmp_path)
    assert code == 6 and rep["error"] is None
    assert rep["drift"]["checked"] and rep["drift"]["ok"] is False
    assert rep["drift"]["model"]["allclose"] is False
    [line] = rep["mismatches"]
    assert line.startswith("the source tree no longer matches the code the model was saved with: "
                           "MyCustomLayer (layer my_custom_layer, max |diff| ")
    report = reports.LoadReport(model="seq_edited", capture=str(cap.root), image={}, loader=rep, inferred=True)
    assert reports.exit_code(report) == 6 and report.to_dict()["verdict"] == "mismatch"
    assert "result: MISMATCH - the model loads but does not reproduce what was saved: " + line in \
        reports.render_report(report)


def test_nested_registered_layer_and_activation_function_are_named(py39_tf28, saved, tmp_path):
    """A subclassed model: its layers are named only in their own SavedModel metadata; the inner
    layer is registered ('matrix>Inner', hidden during revival), the Dense runs a custom function."""
    root, src, edited = saved
    cap, _ = _infer(root / "nested", src)
    assert cap.data["load"]["custom_objects"] == {"Outer": "blocks:Outer", "matrix>Inner": "blocks:Inner",
                                                  "my_act": "blocks:my_act"}
    code, rep = run_loader(py39_tf28, cap, tmp_path)
    assert code == 0 and rep["drift"]["ok"], rep["drift"]
    cap, _ = _infer(_copy(root, "nested", "nested_edited"), edited)
    code, rep = run_loader(py39_tf28, cap, tmp_path)
    assert code == 6, rep["drift"]
    differs = rep["drift"]["differs"]
    assert [d.split(" (")[0] for d in differs] == ["Dense with my_act", "Inner"], differs
    assert "Inner (layer inner, max |diff| " in rep["mismatches"][0]


def test_h5_says_the_drift_could_not_be_checked(py39_tf28, saved, tmp_path):
    root, _, edited = saved
    cap, _ = _infer(root / "seq.h5", edited)
    code, rep = run_loader(py39_tf28, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    assert rep["drift"] == {"checked": False, "reason": "an H5 file stores no traced graph of the custom classes' "
                            "code, only their config and weights: nothing to compare the source tree with"}
    report = reports.LoadReport(model="seq.h5", capture=str(cap.root), image={}, loader=rep, inferred=True)
    text = reports.render_report(report)
    assert "drift        not checked: an H5 file stores no traced graph" in text
    assert "result: LOADED, NOT VERIFIED" in text and report.to_dict()["verdict"] == "loaded, not verified"
