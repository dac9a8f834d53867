"""runtime/reference.py: user samples for the reference prediction."""
import pytest

from envrepro.runtime import comparison, reference


def test_load_sample(tmp_path):
    np = pytest.importorskip("numpy")
    np.save(tmp_path / "one.npy", np.ones((2, 3)))
    np.savez(tmp_path / "list.npz", np.ones(2), np.zeros(3))
    np.savez(tmp_path / "dict.npz", a=np.ones(2), b=np.zeros(3))
    assert reference.load_sample(str(tmp_path / "one.npy")).shape == (2, 3)
    lst = reference.load_sample(str(tmp_path / "list.npz"))
    assert isinstance(lst, list) and [a.shape for a in lst] == [(2,), (3,)]
    dct = reference.load_sample(str(tmp_path / "dict.npz"))
    assert sorted(dct) == ["a", "b"]


# -- the reference of models whatever their inputs (issue 20) -----------------------------------

import json  # noqa: E402

import numpy as np  # noqa: E402

from envrepro.runtime import samples  # noqa: E402
from keras_fakes import Model, StringLookup, Tensor, TextVectorization  # noqa: E402

VOCAB = ["the", "cat", "sat", "on", "mat"]


def _saved(out, ref, key):
    return [np.load(out / "reference" / name, allow_pickle=False) for name in ref[key]]


def _text_model():
    """text -> TextVectorization; outputs: a score per row and the row's first word (text)."""
    text = Tensor("text", [None, 1], "string")
    tv = TextVectorization("tv", VOCAB)
    text.layer.feeds(tv)

    def fn(x):
        rows = [v[0].decode("utf-8") for v in x.tolist()]
        score = np.array([[float(len(r))] for r in rows], "float32")
        first = np.array([r.split()[0].encode("utf-8") for r in rows], dtype=object)
        return {"score": score, "first": first}

    return Model(text, [tv, tv._lookup_layer], fn)


def test_text_inputs_and_outputs_are_saved_without_pickle_and_compared(tmp_path):
    model = _text_model()
    ref, skipped = reference.reference_facts(model, str(tmp_path))
    assert skipped is None and ref["seeded"] is True
    assert ref["vocabularies"] == {"text": "tv (TextVectorization, 5 tokens)"}
    (text,) = _saved(tmp_path, ref, "inputs")
    assert text.dtype.kind == "U" and text.shape == (2, 1)
    assert set(" ".join(text.reshape(-1).tolist()).split()) <= set(VOCAB)
    fed = model.calls[0]
    assert fed.dtype == object and isinstance(fed[0, 0], bytes)          # as a tf.string holds it
    assert ref["output_structure"] == "dict" and ref["output_names"] == ["score", "first"]
    score, first = _saved(tmp_path, ref, "outputs")
    assert first.dtype.kind == "U" and score.dtype == np.float32
    # load side: the saved inputs fed back as bytes, text outputs compared for equality
    x = reference.assemble_inputs(ref["input_structure"], ref["input_names"], [text])
    got = comparison.flatten_outputs(np, model(x), ref)
    result = comparison.compare(np, got, [score, first], 1e-5, 1e-4)
    assert result["allclose"] is True and result["text_differs"] == 0
    got[1] = got[1].copy()
    got[1][0] = b"different"
    result = comparison.compare(np, got, [score, first], 1e-5, 1e-4)
    assert result["allclose"] is False and result["text_differs"] == 1
    assert comparison.mismatch_message(result, 1e-5, 1e-4).endswith(", 1 text value(s) differ)")
    result = comparison.compare(np, [score, np.zeros(2)], [score, first], 1e-5, 1e-4)
    assert result["problem"] == "output dtypes differ from the reference (text against numbers)"


def test_bool_and_dict_inputs_with_named_list_outputs(tmp_path):
    flags, ids = Tensor("flags", [None, 3], "bool"), Tensor("ids", [None, 2], "int32")
    model = Model({"flags": flags, "ids": ids}, [],
                  lambda x: [x["flags"].sum(axis=1, keepdims=True).astype("float32"), x["ids"] * 2],
                  output_names=["count", "double"])
    ref, skipped = reference.reference_facts(model, str(tmp_path))
    assert skipped is None and ref["input_structure"] == "dict" and ref["input_names"] == ["flags", "ids"]
    ins = _saved(tmp_path, ref, "inputs")
    assert ins[0].dtype == np.bool_ and ins[1].dtype == np.int32 and "vocabularies" not in ref
    assert ref["output_structure"] == "list" and ref["output_names"] == ["count", "double"]


def test_undefined_dimensions_get_a_length_then_a_longer_one(tmp_path):
    seq = Tensor("seq", [None, None, 3])

    def needs_16(x):
        if x.shape[1] < 16:
            raise ValueError("sequence too short")
        return x.mean(axis=1)

    model = Model(seq, [], needs_16)
    ref, skipped = reference.reference_facts(model, str(tmp_path))
    assert skipped is None and ref["free_dimension"] == 32
    assert sorted(set(x.shape for x in model.calls)) == [(2, 8, 3), (2, 32, 3)]   # call, then predict
    model = Model(Tensor("seq", [None, None]), [], lambda x: (_ for _ in ()).throw(ValueError("no")))
    ref, skipped = reference.reference_facts(model, str(tmp_path / "2"))
    assert ref is None and skipped.startswith(
        "the prediction on seeded inputs (seq float32 [2, 8], undefined dimensions 8 then 32 long) "
        "failed: ValueError: no; pass one with --sample FILE")


def test_skip_reasons_say_which_input_and_how_to_pass_a_sample(tmp_path):
    model = Model(Tensor("blob", None, "float32"), [], lambda x: x)
    ref, skipped = reference.reference_facts(model, str(tmp_path))
    assert ref is None and skipped == ("input 'blob' (float32) has an unknown rank; pass one with "
                                       "--sample FILE (.npy, .npz or .json) or "
                                       "envrepro.save(..., sample_input=...)")
    unbuilt = Model(None, [], lambda x: x)
    ref, skipped = reference.reference_facts(unbuilt, str(tmp_path))
    assert ref is None and skipped.startswith("the model has no defined inputs") and "--sample" in skipped
    assert not (tmp_path / "reference").exists()


def test_a_user_sample_is_checked_against_the_model_inputs(tmp_path):
    model = _text_model()
    with pytest.raises(samples.SampleMismatch) as exc:
        reference.reference_facts(model, str(tmp_path), sample_input=np.ones((2, 1)),
                                  sample_source="sample s.npy")
    assert exc.value.what == ("sample s.npy, input 'text': the model expects strings (dtype string), "
                              "got numbers (float64)")
    assert not (tmp_path / "reference").exists()
    ref, skipped = reference.reference_facts(model, str(tmp_path),
                                             sample_input=np.array([["the cat"], ["a b c"]]))
    assert skipped is None and ref["seeded"] is False and ref["seed"] is None


def test_json_samples(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"text": [["the cat"], ["sat on"]]}))
    sample = reference.load_sample(str(path))
    assert isinstance(sample, samples.JsonSample)
    model = _text_model()
    ref, skipped = reference.reference_facts(model, str(tmp_path), sample_input=sample)
    assert skipped is None
    assert _saved(tmp_path, ref, "inputs")[0].tolist() == [["the cat"], ["sat on"]]


def test_probe_records_why_and_lets_a_bad_sample_through(tmp_path):
    """collect: the skip reason goes to facts (the capture warns once, capturing/capture.py), not
    to the probe's warnings; a sample that doesn't fit stops it (bad input)."""
    from envrepro.runtime import probe

    model = Model(Tensor("x", None), [], lambda x: x)
    facts = probe.collect(str(tmp_path / "m.keras"), str(tmp_path / "out"), model=model, load=False)
    assert facts["reference"] is None and facts["reference_skipped"].startswith("input 'x' (float32)")
    assert not [w for w in facts["warnings"] if "reference" in w or "sample" in w]
    with pytest.raises(samples.SampleMismatch) as exc:
        probe.collect(str(tmp_path / "m.keras"), str(tmp_path / "out2"), model=_text_model(),
                      load=False, sample_input=np.ones((2, 1), "float32"), sample_source="sample s.npy")
    assert str(exc.value).startswith("sample s.npy, input 'text': the model expects strings")
    assert not (tmp_path / "out2" / "facts.json").exists()
