"""``envrepro migrate`` end to end (issue 21): the seed story's TF 2.4.1 / Python 3.8 models (a
SavedModel with a custom layer, an H5 with Adam state), captured by the save hook, migrated with
the wheel-installed CLI to this host's TensorFlow 2.21 / Keras 3 (``--python``: its versions, built
as an image on the python:3.11-slim stand-in). The source runs in the capture's image, the target
in its own, both sandboxed. Each artifact the report calls verified is then checked independently
here: a fresh process on the host loads the file with plain Keras / ``tf.saved_model.load`` and
reproduces the capture's reference prediction."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from support import installed_cli as cli  # noqa: E402

from envrepro.fsutil import sha256_tree
from envrepro.sidecar import layout, manifest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

# A fresh host process, plain Keras 3 and TensorFlow, nothing of envrepro: prints the max |diff|
# between each artifact's prediction and the capture's reference output.
CHECK = textwrap.dedent('''
    import json, sys
    import numpy as np
    import keras
    import tensorflow as tf
    sys.path.insert(0, sys.argv[4])
    import custom_layers  # registers nothing by itself: passed as custom objects
    x = np.load(sys.argv[2]); y = np.load(sys.argv[3])
    out = {}
    m = keras.models.load_model(sys.argv[1] + ".keras", safe_mode=True,
                                custom_objects={"MyCustomLayer": custom_layers.MyCustomLayer})
    out["keras"] = float(np.max(np.abs(np.asarray(m.predict(x, verbose=0)).reshape(y.shape) - y)))
    sm = tf.saved_model.load(sys.argv[1] + ".savedmodel")
    fn = sm.signatures["serving_default"]
    name = list(fn.structured_input_signature[1].keys())[0]
    got = list(fn(**{name: tf.constant(x)}).values())[0].numpy()
    out["savedmodel"] = float(np.max(np.abs(got.reshape(y.shape) - y)))
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def seeds(py38_tf24, standin_38, standin_311, tmp_path_factory):
    out = tmp_path_factory.mktemp("seed")
    for script in ("custom_layer_model.py", "adam_model.py"):
        proc = subprocess.run([py38_tf24, str(EXAMPLES / script), str(out)], cwd=str(EXAMPLES), capture_output=True,
                              text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return {"custom": out / "custom_model", "adam": out / "adam_model.h5"}


@pytest.mark.parametrize("which", ["custom", "adam"])
def test_a_tf24_model_migrates_to_keras3_verified_and_independently_reproduced(seeds, which, tf):
    model = seeds[which]
    before = (sha256_tree(model), sha256_tree(layout.sidecar_for(model)))
    out = cli("migrate", model, "--python", sys.executable, "--json")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    report = json.loads(out.stdout)
    assert report["verdict"] == "MIGRATED" and report["source"]["tensorflow"] == "2.4.1"
    assert report["target"]["tensorflow"].startswith("2.21") and report["target"]["keras"].startswith("3.")
    arts = {a["format"]: a for a in report["artifacts"]}
    assert arts["keras"]["verified"] and arts["savedmodel"]["verified"], arts
    if which == "custom":
        assert arts["keras"]["custom_objects"] == {"MyCustomLayer": "custom_layers:MyCustomLayer"}
    out_dir = Path(report["out"])
    assert out_dir == model.parent / (model.name + ".migrated")
    assert json.loads((out_dir / "migration.json").read_text())["exit_code"] == 0
    assert (sha256_tree(model), sha256_tree(layout.sidecar_for(model))) == before

    cap = manifest.read(layout.sidecar_for(model))
    ref = cap.data["reference"]
    name = out_dir / (model.name[:-3] if model.name.endswith(".h5") else model.name)
    proc = subprocess.run([sys.executable, "-c", CHECK, str(name), str(cap.root / ref["inputs"][0]),
                           str(cap.root / ref["outputs"][0]), str(EXAMPLES)], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    diffs = json.loads(proc.stdout.strip().splitlines()[-1])
    atol = float(ref["tolerance"]["atol"]) + float(ref["tolerance"]["rtol"]) * float(
        np.max(np.abs(np.load(cap.root / ref["outputs"][0]))))
    assert diffs["keras"] <= atol and diffs["savedmodel"] <= atol, diffs

    # Again into the same OUT: an earlier migration of this model is replaced, not refused.
    again = cli("migrate", model, "--python", sys.executable, "-o", out_dir)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "VERIFIED" in again.stdout


def test_bad_migrate_input_is_one_line_exit_2_and_writes_nothing(seeds, tmp_path):
    model = seeds["adam"]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    plain = tmp_path / "plain-python"
    plain.write_text("#!/bin/sh\necho '{\"python\": \"3.11.2\", \"versions\": {}}'\n")
    plain.chmod(0o755)
    for args, said in (((model, "--to", "9.1"), "unknown TensorFlow version"),
                       ((model, "-o", busy, "--python", sys.executable), "holds something else"),
                       ((model, "--python", plain), "has no TensorFlow")):
        out = cli("migrate", *args)
        assert out.returncode == 2, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and said in out.stderr, out.stderr
    assert (busy / "keep.txt").read_text() == "mine" and sorted(p.name for p in busy.iterdir()) == ["keep.txt"]


LAMBDA_TRAIN = textwrap.dedent('''
    import os, sys
    import numpy as np
    import tensorflow as tf
    import envrepro
    envrepro.install_hook()
    rng = np.random.RandomState(3)
    model = tf.keras.Sequential([tf.keras.Input(shape=(6,)), tf.keras.layers.Dense(5),
                                 tf.keras.layers.Lambda(lambda t: tf.math.tanh(t) * 0.5 + 1.0),
                                 tf.keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(rng.rand(32, 6).astype("float32"), rng.rand(32, 1).astype("float32"), epochs=1, verbose=0)
    for name in sys.argv[2:]:
        model.save(os.path.join(sys.argv[1], name))
''')

LAMBDA_CHECK = textwrap.dedent('''
    import sys
    import numpy as np
    import keras
    sys.path.insert(0, sys.argv[1])
    import lam_lambdas   # the functions rebuilt from the recorded source, registered by name
    m = keras.models.load_model(sys.argv[2], safe_mode=True)
    y = np.load(sys.argv[4])
    print(float(np.max(np.abs(np.asarray(m.predict(np.load(sys.argv[3]), verbose=0)).reshape(y.shape) - y))))
''')


def test_a_tf24_lambda_migrates_from_its_recorded_source_and_an_inferred_capture_is_not_verified(
        py38_tf24, standin_38, standin_311, tf, tmp_path):
    """A Python 3.8 Lambda (bytecode no Keras 3 process loads): the hook recorded its source, so
    the .keras holds a registered function of lam_lambdas.py instead; a fresh host process loads it
    with safe_mode=True and reproduces the capture's reference. The same file captured --infer has
    no reference and no recorded source: MIGRATED, NOT VERIFIED, its SavedModel matching the model
    run in its reproduced environment, the .keras refused with the reason."""
    script = tmp_path / "train_lambda.py"
    script.write_text(LAMBDA_TRAIN)
    hooked, inferred = tmp_path / "hooked", tmp_path / "inferred"
    for d in (hooked, inferred):
        d.mkdir()
    proc = subprocess.run([py38_tf24, str(script), str(hooked), "lam.h5"], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=900, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = hooked / "lam.h5"
    cap = manifest.read(layout.sidecar_for(model))
    (record,) = cap.get("load.lambdas")
    assert record["source"] == "lambda t: tf.math.tanh(t) * 0.5 + 1.0", record
    assert record["globals"] == {"tf": {"module": "tensorflow"}} and record["python"] == "3.8"

    out = cli("migrate", model, "--python", sys.executable, "--json")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    report = json.loads(out.stdout)
    k = {a["format"]: a for a in report["artifacts"]}["keras"]
    assert k["verified"] and k["code"] == str(model.parent / "lam.h5.migrated" / "lam_lambdas.py"), k
    assert k["custom_objects"] == {"lam_lambdas>fn_lambda": "lam_lambdas:fn_lambda"}
    ref = cap.data["reference"]
    proc = subprocess.run([sys.executable, "-c", LAMBDA_CHECK, str(Path(k["code"]).parent), k["path"],
                           str(cap.root / ref["inputs"][0]), str(cap.root / ref["outputs"][0])],
                          capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) <= 1e-5

    plain = inferred / "lam.h5"
    plain.write_bytes(model.read_bytes())
    out = cli("capture", plain, "--infer")
    assert out.returncode == 0, out.stderr[-3000:]
    out = cli("migrate", plain, "--python", sys.executable, "--json")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    report = json.loads(out.stdout)
    assert report["verdict"] == "MIGRATED, NOT VERIFIED" and report["reference"] == "source-prediction"
    arts = {a["format"]: a for a in report["artifacts"]}
    assert arts["savedmodel"]["matches_source"] and not arts["savedmodel"]["verified"]
    assert not arts["keras"]["written"] and "recorded no source" in arts["keras"]["why_not"]
    text = cli("migrate", plain, "--python", sys.executable, "-o", inferred / "again")
    assert text.returncode == 0 and "migrated, not verified" in text.stdout, text.stdout


ONNX_CHECK = textwrap.dedent('''
    import sys
    import numpy as np
    import onnxruntime as ort
    s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    x, y = np.load(sys.argv[2]), np.load(sys.argv[3])
    got = s.run(None, {s.get_inputs()[0].name: x.astype("float32")})[0]
    print(float(np.max(np.abs(np.asarray(got).reshape(y.shape) - y))))
''')


def test_to_221_builds_its_own_target_image_and_writes_a_verified_onnx(seeds, standin_312, tmp_path):
    """``--to 2.21``: TensorFlow 2.21 on the Python most of its users have (3.12), resolved with
    tf2onnx and onnxruntime beside it and built like any environment image; the TF 2.4 H5 becomes
    a .keras, a SavedModel and an .onnx, each verified in that image; onnxruntime alone, in a
    fresh host process, reproduces the capture's reference from the .onnx."""
    model = seeds["adam"]
    out_dir = tmp_path / "to221"
    out = cli("migrate", model, "--to", "2.21", "-o", out_dir, "--json")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    report = json.loads(out.stdout)
    assert report["target"]["tensorflow"] == "2.21.0" and report["target"]["python"].startswith("3.12")
    assert report["target"]["how"] == "--to 2.21"
    arts = {a["format"]: a for a in report["artifacts"]}
    assert all(arts[f]["verified"] for f in ("keras", "savedmodel", "onnx")), arts
    cap = manifest.read(layout.sidecar_for(model))
    ref = cap.data["reference"]
    proc = subprocess.run([sys.executable, "-c", ONNX_CHECK, arts["onnx"]["path"],
                           str(cap.root / ref["inputs"][0]), str(cap.root / ref["outputs"][0])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) <= 1e-5
