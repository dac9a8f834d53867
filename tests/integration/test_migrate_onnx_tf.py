"""The ``.onnx`` artifact of ``envrepro migrate`` with real TensorFlow 2.21 / Keras 3, tf2onnx and
onnxruntime, no Docker: models trained and captured under an interpreter that has them (this one
when its test extra is installed, else ``$ENVREPRO_TEST_ONNX_PYTHON``), or under TF 2.8; then
``migrate.source`` and ``migrate.target`` run as the containers run them (test_migrate_runtime_tf's
helpers). The ``.onnx`` must be written, verified against the capture's reference with the same
tolerance as the other artifacts, and reproduced by a fresh process running onnxruntime alone;
a different model behind it must be caught, and so must a tampered file by the matrix's
independent check; a text model's string inputs must say why in one line."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import test_migrate_runtime_tf as base
from envrepro.sidecar import layout, manifest
from support import envrepro_cli, need
from tf_helpers import CUSTOM_LAYERS, write_module

pytestmark = pytest.mark.tf

HERE = Path(__file__).resolve().parent
ONNX_IMPORT = "import keras, onnxruntime, tf2onnx.convert; assert keras.__version__.startswith('3.')"


def _has_onnx(python):
    return bool(python) and subprocess.run(
        [python, "-c", ONNX_IMPORT], capture_output=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")).returncode == 0


@pytest.fixture(scope="module")
def onnx_python(tf):
    """An interpreter with TensorFlow >= 2.16 (Keras 3), tf2onnx and onnxruntime."""
    for python in (sys.executable, os.environ.get("ENVREPRO_TEST_ONNX_PYTHON")):
        if _has_onnx(python):
            return python
    need(False, "tf2onnx and onnxruntime are not installed (pip install -e '.[test]', or point "
                "ENVREPRO_TEST_ONNX_PYTHON at an interpreter with TensorFlow, tf2onnx and onnxruntime)")


@pytest.fixture(scope="module")
def tf28(request):
    return base.existing_python("venv39-tf284-*", ["tensorflow"], request, "py39_tf28")


# Keras 3 models (argv: code dir, model path, kind, seed), saved as .keras.
TRAIN = textwrap.dedent('''
    import sys
    import numpy as np
    import keras
    sys.path.insert(0, sys.argv[1])
    from custom_layers import MyCustomLayer
    path, kind, seed = sys.argv[2], sys.argv[3], int(sys.argv[4])
    keras.utils.set_random_seed(seed)
    L = keras.layers
    rng = np.random.RandomState(seed)
    if kind == "sequential":
        model = keras.Sequential([keras.Input(shape=(16,)), L.Dense(8, activation="relu"),
                                  MyCustomLayer(units=4, name="mine"), L.Dense(1)])
        x, y = rng.rand(32, 16).astype("float32"), rng.rand(32, 1).astype("float32")
    elif kind == "multi":       # two named inputs, two named outputs, a convolution, an LSTM
        a, b = keras.Input(shape=(6, 3), name="seq"), keras.Input(shape=(4,), name="side")
        h = L.Concatenate()([L.LSTM(5)(L.Conv1D(4, 2, padding="same")(a)), b])
        model = keras.Model([a, b], {"score": L.Dense(1, name="score")(h),
                                     "probs": L.Dense(3, activation="softmax", name="probs")(h)})
        x = [rng.rand(32, 6, 3).astype("float32"), rng.rand(32, 4).astype("float32")]
        y = {"score": rng.rand(32, 1).astype("float32"),
             "probs": np.eye(3, dtype="float32")[rng.randint(0, 3, 32)]}
    elif kind == "text":
        corpus = ["the cat sat on the mat", "a dog ran in the park", "rain fell on the town"]
        text = keras.Input(shape=(1,), dtype="string", name="text")
        vec = L.TextVectorization(max_tokens=30, output_sequence_length=5)
        vec.adapt(corpus)
        h = L.GlobalAveragePooling1D()(L.Embedding(30, 4)(vec(text)))
        model = keras.Model(text, L.Dense(1)(h))
        import tensorflow as tf      # Keras 3 fits on string tensors, not numpy text
        x, y = tf.constant([[c] for c in corpus * 4]), rng.rand(12, 1).astype("float32")
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(path)
''')


def train_and_capture(python, folder, kind, seed=0):
    code = folder / "code"
    write_module(code, "custom_layers", CUSTOM_LAYERS)
    model = folder / f"{kind}.keras"
    proc = subprocess.run([python, "-c", TRAIN, str(code), str(model), kind, str(seed)],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = envrepro_cli("capture", model, "--python", python, "--code-path", code,
                            "--module", "custom_layers", env={"ENVREPRO_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-4000:]
    return manifest.read(layout.sidecar_for(model))


# A fresh process, onnxruntime and numpy only: the .onnx on the capture's reference inputs, fed
# by the graph's input names (the model's), outputs by the graph's output names.
FRESH = textwrap.dedent('''
    import json, sys
    import numpy as np
    import onnxruntime as ort
    plan = json.loads(sys.argv[2])
    ref = plan["reference"]
    s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    ins = [i.name for i in s.get_inputs()]
    xs = [np.load(p) for p in ref["inputs"]]
    feeds = dict(zip(ins, xs)) if len(xs) == 1 else dict(zip(ref["input_names"], xs))
    outs = s.run(None, feeds)
    wants = [np.load(p) for p in ref["outputs"]]
    print(json.dumps({"inputs": ins, "outputs": [o.name for o in s.get_outputs()],
                      "diffs": {o.name: [float(np.max(np.abs(got - w))) if got.shape == w.shape
                                         else None for w in wants]
                                for o, got in zip(s.get_outputs(), outs)}}))
''')


def fresh_onnx(python, plan, path):
    proc = subprocess.run([python, "-c", FRESH, str(path), json.dumps(plan)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_onnx_verified(tgt, tcode):
    assert tcode == 0, tgt
    arts = base.by_format(tgt)
    onnx = arts["onnx"]
    assert onnx["written"] and onnx["verified"] and onnx["why_not"] is None, onnx
    assert onnx["max_abs_diff"] <= 1e-5 and onnx["compare"]["allclose"]
    assert isinstance(onnx["opset"], int) and onnx["tf2onnx"] and onnx["onnxruntime"]
    assert tgt["agree"]["savedmodel~onnx"] <= 1e-5
    return onnx


def test_keras3_model_to_onnx_verified_and_reproduced_by_onnxruntime_alone(onnx_python, tmp_path):
    cap = train_and_capture(onnx_python, tmp_path, "sequential")
    src, tgt, tcode, plan = base.migrate(onnx_python, onnx_python, cap, tmp_path)
    assert_onnx_verified(tgt, tcode)
    assert base.by_format(tgt)["keras"]["verified"] and base.by_format(tgt)["savedmodel"]["verified"]
    fresh = fresh_onnx(onnx_python, plan, tmp_path / "target" / "m.onnx")
    # The graph's interface is the SavedModel signature's: its input and output names.
    assert fresh["inputs"] == [i["name"] for i in src["savedmodel"]["signature"]["inputs"]]
    assert fresh["outputs"] == src["savedmodel"]["signature"]["outputs"]
    assert max(d for ds in fresh["diffs"].values() for d in ds) <= 1e-5, fresh


def test_two_inputs_two_outputs_conv_and_lstm(onnx_python, tmp_path):
    cap = train_and_capture(onnx_python, tmp_path, "multi")
    src, tgt, tcode, plan = base.migrate(onnx_python, onnx_python, cap, tmp_path)
    assert_onnx_verified(tgt, tcode)
    fresh = fresh_onnx(onnx_python, plan, tmp_path / "target" / "m.onnx")
    assert sorted(fresh["inputs"]) == ["seq", "side"]
    assert sorted(fresh["outputs"]) == ["probs", "score"]
    # Each named output reproduces one of the reference's outputs.
    assert all(min(d for d in ds if d is not None) <= 1e-5 for ds in fresh["diffs"].values()), fresh


def test_tf28_model_to_onnx(tf28, onnx_python, tmp_path):
    """A Keras 2 model of TF 2.8 (an H5 with a custom layer): the source's tf.saved_model.save
    signature converts in the TF 2.21 target."""
    cap, _ = base.train_and_capture(tf28, tmp_path, "functional", "func.h5")
    src, tgt, tcode, plan = base.migrate(tf28, onnx_python, cap, tmp_path)
    assert src["versions"]["tensorflow"] == "2.8.4"
    assert_onnx_verified(tgt, tcode)
    fresh = fresh_onnx(onnx_python, plan, tmp_path / "target" / "m.onnx")
    assert max(d for ds in fresh["diffs"].values() for d in ds) <= 1e-5, fresh


def test_a_different_model_behind_the_onnx_is_caught(onnx_python, tmp_path):
    """The source's SavedModel swapped for another model's of the same signature: the .onnx
    (converted from it) is written but not verified, as the SavedModel; the .keras (from the
    weights) still is."""
    cap = train_and_capture(onnx_python, tmp_path / "a", "sequential", seed=0)
    other = train_and_capture(onnx_python, tmp_path / "b", "sequential", seed=1)
    plan = base.source_plan(cap, tmp_path / "source")
    code, _ = base.run_entry(onnx_python, "migrate.source", plan, tmp_path / "run-source")
    assert code == 0
    other_plan = base.source_plan(other, tmp_path / "other")
    code, _ = base.run_entry(onnx_python, "migrate.source", other_plan, tmp_path / "run-other")
    assert code == 0
    swapped = tmp_path / "source" / "inference.savedmodel"
    shutil.rmtree(swapped)
    shutil.copytree(tmp_path / "other" / "inference.savedmodel", swapped)
    tcode, tgt = base.run_entry(onnx_python, "migrate.target",
                                base.target_plan(plan, tmp_path / "source", tmp_path / "target"),
                                tmp_path / "run-target")
    arts = base.by_format(tgt)
    assert tcode == 0 and arts["keras"]["verified"]
    for fmt in ("savedmodel", "onnx"):
        assert arts[fmt]["written"] and arts[fmt]["verified"] is False, arts[fmt]
        assert arts[fmt]["max_abs_diff"] > 1e-3 and arts[fmt]["why_not"] is None
    assert tgt["agree"]["savedmodel~onnx"] <= 1e-5          # the other model, faithfully


def test_text_model_says_why_no_onnx_in_one_line(onnx_python, tmp_path):
    cap = train_and_capture(onnx_python, tmp_path, "text")
    _, tgt, tcode, _ = base.migrate(onnx_python, onnx_python, cap, tmp_path)
    arts = base.by_format(tgt)
    assert tcode == 0 and arts["savedmodel"]["verified"]
    why = arts["onnx"]["why_not"]
    assert arts["onnx"]["written"] is False and not (tmp_path / "target" / "m.onnx").exists()
    assert why.startswith("not convertible to ONNX: string inputs text:"), why
    assert "\n" not in why and "Traceback" not in why and len(why) < 400


def test_the_matrix_independent_check_catches_a_tampered_onnx(onnx_python, tmp_path):
    """tests/matrix/migratecol's fresh host process: the .onnx the report calls verified
    reproduces there; the same file with one weight changed does not."""
    need(_has_onnx(sys.executable), "the matrix's checker runs under this interpreter, which has "
                                    "no onnxruntime")
    sys.path.insert(0, str(HERE.parent / "matrix"))
    import migratecol

    cap = train_and_capture(onnx_python, tmp_path, "multi")
    _, tgt, tcode, plan = base.migrate(onnx_python, onnx_python, cap, tmp_path)
    assert_onnx_verified(tgt, tcode)
    ref = plan["reference"]
    np.savez(tmp_path / "sample.npz", **dict(zip(ref["input_names"],
                                                 [np.load(p) for p in ref["inputs"]])))
    want = {"score": None, "probs": None}
    for p in ref["outputs"]:        # the reference's outputs by name, matched by shape
        arr = np.load(p)
        want["score" if arr.shape[-1] == 1 else "probs"] = arr
    np.savez(tmp_path / "prediction.npz", **want)
    good = tmp_path / "target" / "m.onnx"
    bad = tmp_path / "tampered.onnx"
    tamper = textwrap.dedent('''
        import sys, numpy as np, onnx
        from onnx import numpy_helper
        m = onnx.load(sys.argv[1])
        init = max(m.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        arr = numpy_helper.to_array(init).copy()
        arr += 0.5
        init.CopyFrom(numpy_helper.from_array(arr, init.name))
        onnx.save(m, sys.argv[2])
    ''')
    subprocess.run([onnx_python, "-c", tamper, str(good), str(bad)], check=True, timeout=120)
    cells = [{"id": "good", "sample": "sample.npz", "prediction": "prediction.npz"},
             {"id": "bad", "sample": "sample.npz", "prediction": "prediction.npz"}]
    recs = {c["id"]: {"exit_code": 0, "message": "", "artifacts": [
        {"format": "onnx", "path": str(good if c["id"] == "good" else bad), "verified": True}]}
        for c in cells}
    migratecol.independent_check(tmp_path, cells, recs)
    for cid in recs:
        migratecol.judge(recs[cid])
    assert recs["good"]["right"], recs["good"]
    assert recs["good"]["artifacts"][0]["independent"]["max_abs_diff"] <= 1e-4
    assert not recs["bad"]["right"] and "onnx" in recs["bad"]["why_wrong"], recs["bad"]
