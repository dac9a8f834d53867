"""A reference prediction for models whatever their inputs, with real TensorFlow (issue 20): text
into an adapted TextVectorization, booleans, a dict of text / IntegerLookup ids / numbers with a
dict of outputs (one of them text), a free sequence length; captured by the hook and by
``envrepro capture --python``, then compared by the loader run on the host. The user's case, a
TF 2.8 SavedModel with a text input captured with --python, is run under Python 3.9 + TF 2.8.4.
A ``--sample`` that doesn't fit the model is one line, exit 2, nothing written."""
import json
import sys
import warnings

import numpy as np
import pytest

import envrepro
from envrepro.sidecar import layout, manifest

from support import envrepro_cli
from tf_helpers import run_loader, run_py, write_module

pytestmark = pytest.mark.tf

OFFLINE = {"ENVREPRO_OFFLINE": "1"}
SENTENCES = ["the cat sat on the mat", "a dog ran far away", "The Cat, purred!", "birds sing at dawn"]
BOOL_LAYERS = '''
import keras


@keras.saving.register_keras_serializable(package="h20")
class ToFloat(keras.layers.Layer):
    def call(self, x):
        return keras.ops.cast(x, "float32")
'''


@pytest.fixture
def keras(tf, monkeypatch):
    monkeypatch.setenv("ENVREPRO_OFFLINE", "1")
    monkeypatch.setenv("ENVREPRO_QUIET", "1")
    import keras as k

    return k


def text_model(keras):
    tv = keras.layers.TextVectorization(max_tokens=40, output_sequence_length=6, name="tv")
    tv.adapt(np.array(SENTENCES))
    inp = keras.Input(shape=(1,), dtype="string", name="text")
    x = keras.layers.Embedding(40, 4, name="emb")(tv(inp))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(2, name="head")(x)), tv


def dict_model(keras):
    words = keras.Input(shape=(2,), dtype="string", name="words")
    codes = keras.Input(shape=(2,), dtype="int64", name="codes")
    x = keras.Input(shape=(3,), name="x")
    word_ids = keras.layers.StringLookup(vocabulary=["red", "green", "blue"], name="colours")(words)
    code_ids = keras.layers.IntegerLookup(vocabulary=[10, 20, 30], name="codebook")(codes)
    feats = keras.layers.Concatenate()([
        keras.layers.Flatten()(keras.layers.Embedding(5, 2)(word_ids)),
        keras.layers.Flatten()(keras.layers.Embedding(5, 2)(code_ids)), x])
    label = keras.layers.StringLookup(vocabulary=["ten", "twenty", "thirty"], invert=True,
                                      name="label")(code_ids)
    outputs = {"score": keras.layers.Dense(1, name="score")(feats), "label": label}
    return keras.Model({"words": words, "codes": codes, "x": x}, outputs)


def _reference(cap):
    ref = cap.data["reference"]
    assert ref is not None, cap.data.get("reference_skipped")
    ins = [np.load(cap.root / p, allow_pickle=False) for p in ref["inputs"]]
    outs = [np.load(cap.root / p, allow_pickle=False) for p in ref["outputs"]]
    return ref, dict(zip(ref["input_names"], ins)), outs


def _loaded(cap, folder, python=sys.executable):
    folder.mkdir(parents=True, exist_ok=True)
    return run_loader(python, cap, folder)


def _verified(cap, folder, python=sys.executable):
    code, rep = _loaded(cap, folder, python)
    assert code == 0, (rep["error"], rep["mismatches"])
    assert rep["reference"]["allclose"] is True and rep["reference"]["checked"] is True
    return rep


def test_text_model_reference_is_drawn_from_its_vocabulary_hook_and_cli(keras, tmp_path):
    model, tv = text_model(keras)
    vocab = set(str(t) for t in tv.get_vocabulary()) - {"", "[UNK]"}
    path = tmp_path / "hook" / "text.keras"
    path.parent.mkdir()
    result = envrepro.save(model, str(path))
    assert not [w for w in result.warnings if "reference" in w], result.warnings
    cap = manifest.read(layout.sidecar_for(path), verify=True)
    ref, ins, outs = _reference(cap)
    text = ins["text"]
    assert text.dtype.kind == "U" and text.shape == (2, 1)
    words = " ".join(text.reshape(-1).tolist()).split()
    assert words and set(words) <= vocab, (words, vocab)
    assert ref["vocabularies"] == {"text": f"tv (TextVectorization, {len(vocab)} tokens)"}
    # the lookup is exercised: token ids past the OOV index
    assert (np.asarray(tv(text.reshape(-1))) > 1).sum() >= len(words)
    assert outs[0].shape == (2, 2)
    rep = _verified(cap, tmp_path / "load1")
    assert rep["reference"]["max_abs_diff"] <= 1e-6

    # the same model through the CLI, the probe under this interpreter
    cli_path = tmp_path / "cli" / "text.keras"
    cli_path.parent.mkdir()
    model.save(cli_path)
    out = envrepro_cli("capture", cli_path, "--python", sys.executable, "--no-hashes", env=OFFLINE)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "no reference prediction" not in out.stderr
    cap2 = manifest.read(layout.sidecar_for(cli_path), verify=True)
    _, ins2, _ = _reference(cap2)
    np.testing.assert_array_equal(ins2["text"], text)      # seeded: the same text
    _verified(cap2, tmp_path / "load2")


@pytest.fixture
def bool_layers(keras, tmp_path, monkeypatch):
    """The module of a registered layer, imported from a folder of this test's, and forgotten
    after it (sys.modules and Keras' registry): later tests in this process see neither."""
    src = tmp_path / "src"
    write_module(src, "bool_layers", BOOL_LAYERS)
    monkeypatch.syspath_prepend(str(src))
    sys.modules.pop("bool_layers", None)
    import bool_layers as module

    yield module
    sys.modules.pop("bool_layers", None)
    registry = keras.saving.get_custom_objects()
    for name in [k for k, v in registry.items() if getattr(v, "__module__", None) == "bool_layers"]:
        registry.pop(name, None)
    names = getattr(sys.modules.get("keras.src.saving.object_registration"), "GLOBAL_CUSTOM_NAMES", {})
    for cls in [c for c in names if getattr(c, "__module__", None) == "bool_layers"]:
        names.pop(cls, None)


def test_bool_input_model(keras, tmp_path, bool_layers):

    inp = keras.Input(shape=(3,), dtype="bool", name="flags")
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(bool_layers.ToFloat()(inp)))
    path = tmp_path / "m" / "flags.keras"
    path.parent.mkdir()
    envrepro.save(model, str(path))
    cap = manifest.read(layout.sidecar_for(path), verify=True)
    _, ins, outs = _reference(cap)
    assert ins["flags"].dtype == np.bool_ and ins["flags"].shape == (2, 3)
    assert outs[0].dtype == np.float32
    _verified(cap, tmp_path / "load")


def test_dict_inputs_and_named_outputs_one_of_them_text(keras, tmp_path):
    model = dict_model(keras)
    path = tmp_path / "m" / "multi.keras"
    path.parent.mkdir()
    envrepro.save(model, str(path))
    cap = manifest.read(layout.sidecar_for(path), verify=True)
    ref, ins, outs = _reference(cap)
    assert ref["input_structure"] == "dict" and sorted(ins) == ["codes", "words", "x"]
    assert set(ins["words"].reshape(-1).tolist()) <= {"red", "green", "blue"}
    assert ins["codes"].dtype == np.int64 and set(ins["codes"].reshape(-1).tolist()) <= {10, 20, 30}
    assert ref["vocabularies"]["words"].startswith("colours (StringLookup, 3 tokens)")
    assert ref["vocabularies"]["codes"].startswith("codebook (IntegerLookup, 3 tokens)")
    assert ref["output_structure"] == "dict" and sorted(ref["output_names"]) == ["label", "score"]
    label = outs[ref["output_names"].index("label")]
    assert label.dtype.kind == "U" and set(label.reshape(-1).tolist()) <= {"ten", "twenty", "thirty"}
    rep = _verified(cap, tmp_path / "load")
    assert rep["reference"]["text_differs"] == 0

    # a tampered text output is a mismatch (exit 6), said as text values that differ
    bad = label.copy()
    bad.reshape(-1)[0] = "eleven"
    target = cap.root / ref["outputs"][ref["output_names"].index("label")]
    target.chmod(0o644)
    np.save(target, bad, allow_pickle=False)
    code, rep = _loaded(cap, tmp_path / "tampered")
    assert code == 6 and rep["reference"]["text_differs"] == 1
    assert "1 text value(s) differ" in rep["mismatches"][0]


def test_free_sequence_length_gets_a_length(keras, tmp_path):
    inp = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(10, 3)(inp))
    model = keras.Model(inp, keras.layers.Dense(1)(x))
    path = tmp_path / "m" / "seq.keras"
    path.parent.mkdir()
    envrepro.save(model, str(path))
    cap = manifest.read(layout.sidecar_for(path), verify=True)
    ref, ins, _ = _reference(cap)
    assert ref["free_dimension"] == 8 and ins["ids"].shape == (2, 8)
    _verified(cap, tmp_path / "load")


def test_json_sample_and_samples_that_do_not_fit(keras, tmp_path):
    model, _ = text_model(keras)
    path = tmp_path / "m" / "text.keras"
    path.parent.mkdir()
    model.save(path)
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps([["the cat sat"], ["birds sing"], ["unknown words here"]]))
    out = envrepro_cli("capture", path, "--python", sys.executable, "--no-hashes", "--sample", sample,
                       env=OFFLINE)
    assert out.returncode == 0, out.stderr[-3000:]
    cap = manifest.read(layout.sidecar_for(path), verify=True)
    ref, ins, _ = _reference(cap)
    assert ref["seeded"] is False and ins["text"].tolist() == [["the cat sat"], ["birds sing"],
                                                               ["unknown words here"]]
    before = sorted(p.name for p in cap.root.rglob("*"))
    for content, what in [
            ([[1.5], [2.0]], "input 'text': the model expects strings (dtype string), got numbers"),
            (["the cat", "a dog"], "input 'text': the model expects shape [None, 1] (None: any size), "
                                   "got [2]"),
            ({"text": [["a"]], "extra": [1]}, "holds inputs extra, text, the model's are text")]:
        sample.write_text(json.dumps(content))
        out = envrepro_cli("capture", path, "--python", sys.executable, "--no-hashes", "--sample",
                           sample, env=OFFLINE)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
        assert lines[0].startswith(f"envrepro: error: {path}: sample {sample}") and what in lines[0], lines[0]
        assert "capture probe failed" not in lines[0]
        assert sorted(p.name for p in cap.root.rglob("*")) == before       # the capture untouched

    # the hook's sample_input is checked the same way: a warning, and nothing written
    other = tmp_path / "m2" / "text.keras"
    other.parent.mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        envrepro.save(model, str(other), sample_input=np.ones((2, 1), "float32"))
    ours = [str(w.message) for w in caught if str(w.message).startswith("envrepro:")]
    assert len(ours) == 1 and "input 'text': the model expects strings" in ours[0], ours
    assert not layout.sidecar_for(other).exists()


SAVE_TF28 = '''
import sys
import numpy as np
import tensorflow as tf

tv = tf.keras.layers.TextVectorization(max_tokens=40, output_sequence_length=6, name="tv")
tv.adapt(np.array(%r))
inp = tf.keras.Input(shape=(1,), dtype=tf.string, name="text")
x = tf.keras.layers.Embedding(40, 4)(tv(inp))
x = tf.keras.layers.GlobalAveragePooling1D()(x)
model = tf.keras.Model(inp, tf.keras.layers.Dense(2)(x))
model.save(sys.argv[1] + "/text_savedmodel")
print([str(t) for t in tv.get_vocabulary()])
''' % (SENTENCES,)


def test_tf28_text_savedmodel_captured_with_python_is_verified(py39_tf28, tmp_path):
    """The issue's case: TF 2.8, text into an adapted TextVectorization, saved as a SavedModel,
    captured with --python: a reference of vocabulary words, verified by the loader under TF 2.8."""
    proc = run_py(py39_tf28, SAVE_TF28.replace("sys.argv[1]", repr(str(tmp_path))))
    vocab = set(eval(proc.stdout.strip().splitlines()[-1])) - {"", "[UNK]"}
    path = tmp_path / "text_savedmodel"
    out = envrepro_cli("capture", path, "--python", py39_tf28, "--no-hashes", env=OFFLINE)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "no reference prediction" not in out.stderr
    cap = manifest.read(layout.sidecar_for(path), verify=True)
    ref, ins, outs = _reference(cap)
    words = " ".join(ins["text"].reshape(-1).tolist()).split()
    assert words and set(words) <= vocab
    assert ref["vocabularies"]["text"].startswith("tv (TextVectorization")
    _verified(cap, tmp_path / "load", python=py39_tf28)
