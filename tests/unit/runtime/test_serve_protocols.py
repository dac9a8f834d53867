"""The model server's protocols as pure functions (runtime/serve/tensors.py, v1.py,
v2.py): TF Serving REST v1 rows and columns, multi-input/output, b64, the Open Inference
Protocol's datatypes and shapes, and errors that name the signature without echoing the payload."""
import base64

import numpy as np
import pytest

from envrepro.runtime.serve import v1 as servev1
from envrepro.runtime.serve import v2 as servev2
from envrepro.runtime.serve.tensors import InputError, Signature, TensorSpec, to_array, v1_dtype, v2_dtype

SINGLE = Signature([TensorSpec("x", "float32", [None, 3])], [TensorSpec("y", "float32", [None, 2])])
MULTI = Signature([TensorSpec("a", "float32", [None, 2]), TensorSpec("ids", "int64", [None]),
                   TensorSpec("text", "string", [None])],
                  [TensorSpec("score", "float32", [None, 1]), TensorSpec("label_bytes", "string", [None])])
SECRET = 987654.321   # a value that must never appear in an error message


def error_of(func, *args):
    with pytest.raises(InputError) as info:
        func(*args)
    message = str(info.value)
    assert "987654" not in message and "SECRET" not in message
    return message


# -- v1: rows and columns ---------------------------------------------------------------------

def test_v1_rows_single_input():
    inputs, columnar = servev1.parse_predict({"instances": [[1, 2, 3], [4, 5, 6.5]]}, SINGLE)
    assert not columnar and inputs["x"].dtype == np.float32 and inputs["x"].shape == (2, 3)
    assert inputs["x"][1, 2] == 6.5
    # a single-input row may also be an object keyed by the input name
    inputs, _ = servev1.parse_predict({"instances": [{"x": [1, 2, 3]}]}, SINGLE)
    assert inputs["x"].shape == (1, 3)


def test_v1_columns_single_input_bare_or_named():
    for body in ({"inputs": [[1, 2, 3]]}, {"inputs": {"x": [[1, 2, 3]]}}):
        inputs, columnar = servev1.parse_predict(body, SINGLE)
        assert columnar and inputs["x"].tolist() == [[1.0, 2.0, 3.0]]


def test_v1_multi_input_rows_and_b64():
    raw = b"\xff\x00binary"
    rows = [{"a": [1, 2], "ids": 7, "text": "hello"},
            {"a": [3, 4], "ids": 8, "text": {"b64": base64.b64encode(raw).decode()}}]
    inputs, _ = servev1.parse_predict({"instances": rows, "signature_name": "serving_default"}, MULTI)
    assert inputs["a"].shape == (2, 2) and inputs["ids"].dtype == np.int64 and inputs["ids"].tolist() == [7, 8]
    assert inputs["text"].dtype == object and inputs["text"].tolist() == [b"hello", raw]


def test_v1_multi_input_columns():
    inputs, columnar = servev1.parse_predict({"inputs": {"a": [[1, 2]], "ids": [3], "text": ["t"]}}, MULTI)
    assert columnar and inputs["text"].tolist() == [b"t"]


def test_v1_format_rows_and_columns():
    one = [("y", np.array([[1.5, 2.0], [3.0, 4.0]], "float32"))]
    assert servev1.format_predict(one, False) == {"predictions": [[1.5, 2.0], [3.0, 4.0]]}
    assert servev1.format_predict(one, True) == {"outputs": [[1.5, 2.0], [3.0, 4.0]]}
    two = [("score", np.array([[0.5], [0.25]], "float32")),
           ("label_bytes", np.array([b"a", b"\xff"], dtype=object))]
    rows = servev1.format_predict(two, False)["predictions"]
    assert rows[0] == {"score": [0.5], "label_bytes": {"b64": base64.b64encode(b"a").decode()}}
    assert rows[1]["label_bytes"] == {"b64": base64.b64encode(b"\xff").decode()}
    cols = servev1.format_predict(two, True)["outputs"]
    assert cols["score"] == [[0.5], [0.25]] and len(cols["label_bytes"]) == 2
    # text outputs not named *_bytes are written as text (b64 only when not UTF-8)
    text = [("label", np.array([b"cat", b"\xff"], dtype=object))]
    assert servev1.format_predict(text, True) == {"outputs": ["cat", {"b64": "/w=="}]}


def test_v1_float32_outputs_are_exact():
    y = np.array([[0.1, 1 / 3]], "float32")
    out = servev1.format_predict([("y", y)], True)["outputs"]
    assert np.array(out, "float32").tobytes() == y.tobytes()


def test_v1_status_and_metadata():
    assert servev1.status("AVAILABLE") == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    meta = servev1.metadata("m", MULTI)
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert meta["model_spec"] == {"name": "m", "signature_name": "", "version": "1"}
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["a"]["dtype"] == "DT_FLOAT" and sig["inputs"]["ids"]["dtype"] == "DT_INT64"
    assert sig["inputs"]["text"]["dtype"] == "DT_STRING"
    assert sig["inputs"]["a"]["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}, {"size": "2", "name": ""}],
                                                  "unknown_rank": False}
    assert set(sig["outputs"]) == {"score", "label_bytes"}


@pytest.mark.parametrize("body, words", [
    ([1, 2], "JSON object"),
    ({}, "exactly one of"),
    ({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, "exactly one of"),
    ({"instances": [[1, 2, 3]], "signature_name": "SECRET"}, "serving_default"),
    ({"instances": []}, "non-empty"),
    ({"instances": [[1, 2, SECRET, 4]]}, "expects shape [-1, 3]"),
    ({"instances": [[1, 2, SECRET], [1, 2]]}, "ragged"),
    ({"instances": [["a", "b", "SECRET"]]}, "got strings"),
    ({"instances": [[1, None, SECRET]]}, "regular nested list"),
    ({"inputs": {"SECRET": [[1, 2, 3]]}}, "exactly the inputs x"),
    ({"instances": [{"x": [1, 2, 3]}, [1, 2, SECRET]]}, "mix"),
])
def test_v1_bad_requests_name_the_signature(body, words):
    message = error_of(servev1.parse_predict, body, SINGLE)
    assert words in message and "x float32 [-1, 3]" in message and "y float32 [-1, 2]" in message


def test_v1_multi_input_errors():
    assert "object keyed by input name" in error_of(servev1.parse_predict, {"instances": [[SECRET]]}, MULTI)
    assert "exactly the inputs" in error_of(servev1.parse_predict, {"instances": [{"a": [1, 2]}]}, MULTI)
    assert "different batch sizes" in error_of(
        servev1.parse_predict, {"inputs": {"a": [[1, 2]], "ids": [1, 2], "text": ["x"]}}, MULTI)
    assert "not valid base64" in error_of(
        servev1.parse_predict, {"instances": [{"a": [1, 2], "ids": 1, "text": {"b64": "%%%"}}]}, MULTI)
    assert "expects integers" in error_of(
        servev1.parse_predict, {"instances": [{"a": [1, 2], "ids": 1.5, "text": "t"}]}, MULTI)
    assert "expects strings" in error_of(
        servev1.parse_predict, {"instances": [{"a": [1, 2], "ids": 1, "text": SECRET}]}, MULTI)


def test_to_array_dtypes():
    assert to_array([True, False], TensorSpec("b", "bool", [None]), "x").dtype == np.bool_
    with pytest.raises(InputError):
        to_array([1, 0], TensorSpec("b", "bool", [None]), "x")
    with pytest.raises(InputError, match="out of the range"):
        to_array([300], TensorSpec("u", "uint8", [None]), "x")
    assert to_array([1, 2], TensorSpec("h", "float16", [None]), "x").dtype == np.float16
    assert to_array([[1]], TensorSpec("any", "float32", None), "x").shape == (1, 1)   # unknown rank
    with pytest.raises(InputError, match="regular nested list"):
        to_array([2 ** 80], TensorSpec("i", "int64", [None]), "x")


# -- v2 -----------------------------------------------------------------------------------------

def test_v2_datatypes():
    assert [v2_dtype(d) for d in ("float32", "float64", "float16", "int64", "int32", "uint8", "bool",
                                  "string", "bfloat16")] == \
        ["FP32", "FP64", "FP16", "INT64", "INT32", "UINT8", "BOOL", "BYTES", "BF16"]
    assert v2_dtype(np.dtype(object)) == "BYTES" and v1_dtype("int8") == "DT_INT8"


def test_v2_infer_flat_and_nested_data():
    body = {"id": "req-1", "parameters": {"a": 1},
            "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}
    inputs, requested, rid = servev2.parse_infer(body, SINGLE)
    assert inputs["x"].shape == (2, 3) and inputs["x"][1, 0] == 4 and requested is None and rid == "req-1"
    body["inputs"][0]["data"] = [[1, 2, 3], [4, 5, 6]]
    assert servev2.parse_infer(body, SINGLE)[0]["x"].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_v2_multi_input_bytes_and_output_filter():
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["héllo"]},
                       {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},
                       {"name": "ids", "shape": [1], "datatype": "INT64", "data": [5]}],
            "outputs": [{"name": "label_bytes"}]}
    inputs, requested, rid = servev2.parse_infer(body, MULTI)
    assert inputs["text"].tolist() == ["héllo".encode("utf-8")] and requested == ["label_bytes"] and rid is None
    outputs = [("score", np.array([[0.5]], "float32")), ("label_bytes", np.array([b"ok"], dtype=object))]
    resp = servev2.format_infer("m", outputs, requested, "id-9")
    assert resp == {"model_name": "m", "model_version": "1", "id": "id-9",
                    "outputs": [{"name": "label_bytes", "datatype": "BYTES", "shape": [1], "data": ["ok"]}]}
    full = servev2.format_infer("m", outputs)
    assert [o["name"] for o in full["outputs"]] == ["score", "label_bytes"] and "id" not in full
    assert full["outputs"][0] == {"name": "score", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}
    raw = servev2.format_infer("m", [("b", np.array([b"\xff"], dtype=object))])["outputs"][0]
    assert raw["data"] == ["/w=="] and raw["parameters"] == {"content_type": "base64"}


def test_v2_metadata():
    assert servev2.server_metadata("0.1.0") == {"name": "envrepro", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
    meta = servev2.model_metadata("m", MULTI)
    assert meta["name"] == "m" and meta["versions"] == ["1"] and meta["platform"] == "tensorflow_keras"
    assert meta["inputs"][0] == {"name": "a", "datatype": "FP32", "shape": [-1, 2]}
    assert meta["inputs"][2] == {"name": "text", "datatype": "BYTES", "shape": [-1]}
    assert meta["outputs"][1] == {"name": "label_bytes", "datatype": "BYTES", "shape": [-1]}


def v2_input(**changes):
    tensor = {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, SECRET]}
    tensor.update(changes)
    return {"inputs": [tensor]}


@pytest.mark.parametrize("body, words", [
    ([], "JSON object"),
    ({"inputs": []}, "non-empty list"),
    ({"inputs": [{"name": "SECRET", "shape": [1], "datatype": "FP32", "data": [1]}]}, "names no input"),
    (v2_input(datatype="INT64"), "expects datatype FP32"),
    (v2_input(shape=[1, 4]), "has 3 values but shape [1, 4] holds 4"),
    (v2_input(shape=[3, 1]), "expects shape [-1, 3]"),
    (v2_input(shape="1x3"), "list of non-negative integers"),
    (v2_input(data=["a", "b", "SECRET"]), "got strings"),
    (dict(v2_input(), id=5), "\"id\" must be a string"),
    (dict(v2_input(), outputs=[{"name": "SECRET"}]), "names no output"),
    (v2_input(parameters={"binary_data_size": 12}), "binary tensor data extension"),
    ({"inputs": v2_input()["inputs"] * 2}, "given twice"),
])
def test_v2_bad_requests_name_the_signature(body, words):
    message = error_of(servev2.parse_infer, body, SINGLE)
    assert words in message and "x FP32 [-1, 3]" in message


def test_v2_missing_input():
    body = {"inputs": [{"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    assert "missing input(s): ids, text" in error_of(servev2.parse_infer, body, MULTI)


# -- numeric outputs written as JSON text (tensors.raw_json, app.dumps) ------------------
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32", "int64", "uint8"])
@pytest.mark.parametrize("shape", [(32, 64), (4, 5, 6), (17,)])
def test_raw_json_round_trips_exactly_in_the_declared_dtype(dtype, shape):
    import json

    import numpy as np

    from envrepro.runtime.serve import app as serveapp, tensors as servetensors

    rng = np.random.RandomState(0)
    arr = (rng.standard_normal(shape) * 1000).astype(dtype)
    for flat in (False, True):
        raw = servetensors.raw_json(arr, flat=flat)
        assert raw is not None
        back = np.asarray(json.loads(serveapp.dumps({"x": raw}))["x"], dtype=dtype)
        want = arr.reshape(-1) if flat else arr
        assert back.shape == want.shape and np.array_equal(back, want)
        assert json.loads(serveapp.dumps({"x": raw}))["x"] == json.loads(json.dumps({"x": want.tolist()}))["x"] \
            or dtype.startswith("float")    # ints identical; floats equal once read as their dtype


def test_raw_json_falls_back_where_it_does_not_apply():
    import numpy as np

    from envrepro.runtime.serve import tensors as servetensors

    assert servetensors.raw_json(np.array([np.nan] * 20, "float32")) is None      # JSON has no NaN
    assert servetensors.raw_json(np.ones(4, "float32")) is None                   # small: not worth it
    assert servetensors.raw_json(np.array([b"a"] * 20, dtype=object)) is None
    assert servetensors.raw_json(np.ones(20, bool)) is None


def test_dumps_splices_only_its_own_markers():
    import json

    import numpy as np

    from envrepro.runtime.serve import app as serveapp, tensors as servetensors

    raw = servetensors.raw_json(np.arange(20, dtype="int64"))
    lookalike = "\x00deadbeefdeadbeef-0\x00"
    out = json.loads(serveapp.dumps({"a": raw, "b": lookalike, "c": [raw]}))
    assert out == {"a": list(range(20)), "b": lookalike, "c": [list(range(20))]}
