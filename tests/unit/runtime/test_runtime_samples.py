"""runtime/samples.py: a user's sample read from .npy/.npz/.json and checked against the model's
inputs (count, names, kind of dtype, shape) in one line naming the input; text stored without
pickle and fed back as bytes."""
import json

import numpy as np
import pytest

from envrepro.runtime import samples

TEXT = ([None, 1], "string")
IDS = ([None, 4], "int32")
X = ([None, 3], "float32")


def _mismatch(sample, structure, names, specs, **kw):
    with pytest.raises(samples.SampleMismatch) as exc:
        samples.resolve(sample, structure, names, specs, "sample s.json", **kw)
    return exc.value.what


def test_count_names_kind_and_shape_are_checked():
    assert _mismatch([np.ones((2, 3))], "list", ["a", "b"], [X, X]) == \
        "sample s.json holds 1 input(s), the model takes 2 (a, b)"
    assert _mismatch(np.ones((2, 3)), "list", ["a", "b"], [X, X]) == \
        "sample s.json holds one input, the model takes 2 (a, b)"
    assert _mismatch({"a": np.ones((2, 3)), "c": np.ones((2, 3))}, "dict", ["a", "b"], [X, X]) == \
        "sample s.json holds inputs a, c, the model's are a, b"
    assert _mismatch(np.array([[1.5]]), "single", ["text"], [TEXT]) == \
        "sample s.json, input 'text': the model expects strings (dtype string), got numbers (float64)"
    assert _mismatch(np.ones((2, 4)), "single", ["ids"], [IDS]) == \
        "sample s.json, input 'ids': the model expects integers (dtype int32), got numbers (float64)"
    assert _mismatch(np.array([True]), "single", ["x"], [X]).endswith("got booleans (bool)")
    assert _mismatch([[1.0, 2.0, 3.0], [1.0]], "single", ["x"], [X]) == \
        "sample s.json, input 'x' is ragged (rows of different lengths); expected a regular array"
    assert _mismatch(np.array(["a", "b"]), "single", ["text"], [TEXT]) == \
        "sample s.json, input 'text': the model expects shape [None, 1] (None: any size), got [2]"
    assert _mismatch(np.ones((2, 5)), "single", ["x"], [X]).endswith("expects shape [None, 3] "
                                                                     "(None: any size), got [2, 5]")
    # a guessed float32 (subclassed model): the shape is checked, not the kind
    assert samples.resolve(np.array([["a"]]), "single", ["input"], [TEXT], dtypes_known=False)[2][0].shape == (1, 1)


def test_what_fits_is_put_in_the_model_structure():
    ints = np.ones((2, 3), "int64")           # integers for a float input: fine, as given
    structure, names, arrays = samples.resolve({"b": ints, "a": np.zeros((2, 3))}, "list", ["a", "b"], [X, X])
    assert structure == "list" and names == ["a", "b"] and arrays[1].dtype == np.int64
    structure, names, arrays = samples.resolve([np.zeros((1, 3)), ints], "dict", ["a", "b"], [X, X])
    assert structure == "dict" and [a.shape for a in arrays] == [(1, 3), (2, 3)]
    structure, names, arrays = samples.resolve([np.zeros((1, 3))], "single", ["x"], [X])
    assert structure == "single" and arrays[0].shape == (1, 3)
    obj = np.array([[b"caf\xc3\xa9"], ["tea"]], dtype=object)          # bytes and str: text
    arrays = samples.resolve(obj, "single", ["text"], [TEXT])[2]
    assert arrays[0].dtype.kind == "U" and arrays[0].tolist() == [["café"], ["tea"]]
    # a model whose inputs are unknown takes the sample as given
    assert samples.resolve({"q": np.ones(2)}, None, None, None)[:2] == ("dict", ["q"])


def test_json_samples_take_the_model_s_dtypes(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps([[1, 2, 3, 4], [5, 6, 7, 8]]))
    sample = samples.load_sample(str(path))
    arr = samples.resolve(sample, "single", ["ids"], [IDS])[2][0]
    assert arr.dtype == np.int32 and arr.shape == (2, 4)           # one input: the list is it
    path.write_text(json.dumps([[["a"]], [[1, 2, 3]]]))            # two inputs: one entry each
    arrays = samples.resolve(samples.load_sample(str(path)), "list", ["t", "x"], [TEXT, X])[2]
    assert arrays[0].dtype.kind == "U" and arrays[1].dtype == np.float32
    path.write_text(json.dumps({"t": [["a"], [1]], "x": [[1, 2, 3]]}))
    assert _mismatch(samples.load_sample(str(path)), "dict", ["t", "x"], [TEXT, X]) == \
        "sample s.json, input 't' is ragged or mixes strings, numbers and nulls; expected a regular nested list"
    path.write_text(json.dumps([[1.5, 2, 3, 4]]))
    assert "expects integers (dtype int32), got numbers (float64)" in \
        _mismatch(samples.load_sample(str(path)), "single", ["ids"], [IDS])
    for bad in ("3", "[]", "{"):
        path.write_text(bad)
        with pytest.raises(ValueError):
            samples.load_sample(str(path))


def test_npy_and_npz_samples(tmp_path):
    np.save(tmp_path / "one.npy", np.array([["a b"]]))
    np.savez(tmp_path / "list.npz", np.ones(2), np.zeros(3))
    np.savez(tmp_path / "dict.npz", text=np.array([["x"]]), x=np.zeros((1, 3)))
    assert samples.load_sample(str(tmp_path / "one.npy")).dtype.kind == "U"
    assert [a.shape for a in samples.load_sample(str(tmp_path / "list.npz"))] == [(2,), (3,)]
    dct = samples.load_sample(str(tmp_path / "dict.npz"))
    assert samples.resolve(dct, "dict", ["text", "x"], [TEXT, X])[1] == ["text", "x"]


def test_text_is_stored_without_pickle_and_fed_as_bytes(tmp_path):
    utf8 = samples.storable(np.array([b"caf\xc3\xa9", "tea"], dtype=object))
    raw = samples.storable(np.array([b"\xff\x00a", b"b"], dtype=object))
    assert utf8.dtype.kind == "U" and raw.dtype.kind == "S"
    for arr in (utf8, raw):
        np.save(tmp_path / "a.npy", arr, allow_pickle=False)
    with pytest.raises(ValueError):
        samples.storable(np.array([{"a": 1}], dtype=object))
    fed = samples.feedable(utf8)
    assert fed.dtype == object and fed.tolist() == ["café".encode(), b"tea"]
    assert samples.feedable(np.ones(2)).dtype == np.float64
    assert samples.text_values(raw) == [b"\xff\x00a", b"b"]
    assert samples.text_values(fed) == samples.text_values(utf8)
