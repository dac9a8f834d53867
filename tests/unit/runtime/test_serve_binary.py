"""The Open Inference Protocol's binary tensor data extension (serve/binary.py): raw little-endian
inputs after a JSON header of Inference-Header-Content-Length bytes, outputs answered raw when
asked, BYTES length-prefixed, the sizes adding up exactly (else 400 naming the input), and the
limits still applying. Through the real server (the fake numpy model) and over binary.py."""
import json
import os
import struct
import sys

import numpy as np
import pytest

from envrepro.runtime.serve import binary
from envrepro.runtime.serve import tensors as servetensors
from envrepro.runtime.serve.tensors import InputError, TensorSpec

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support import http_json  # noqa: E402


def strings(values):
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def infer(s, header, raw=b"", binary_header=True):
    """POST a binary infer request: (status, response headers, JSON header, raw tail)."""
    head = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream" if binary_header else "application/json"}
    if binary_header:
        headers[binary.HEADER] = str(len(head))
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    c.request("POST", "/v2/models/fake/infer", body=head + raw, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    n = r.getheader(binary.HEADER)
    cut = int(n) if n is not None else len(data)
    return r.status, r, json.loads(data[:cut].decode()), data[cut:]


def test_binary_inputs_json_outputs(server):
    s = server()
    x = np.array([[1.5, -2, 3], [4, 5, 6]], "float32")
    status, r, got, tail = infer(s, {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                                                 "parameters": {"binary_data_size": 24}}]}, x.tobytes())
    assert status == 200 and tail == b"" and r.getheader(binary.HEADER) is None
    assert got["outputs"][0]["data"] == [3.0, -4.0, 8.0, 10.0]


def test_every_output_binary(server):
    s = server()
    x = np.arange(9, dtype="float32").reshape(3, 3)
    status, r, got, tail = infer(s, {"id": "7", "parameters": {"binary_data_output": True},
                                     "inputs": [{"name": "x", "shape": [3, 3], "datatype": "FP32",
                                                 "parameters": {"binary_data_size": 36}}]}, x.tobytes())
    assert status == 200 and r.getheader("Content-Type") == binary.CONTENT_TYPE and got["id"] == "7"
    out = got["outputs"][0]
    assert out == {"name": "y", "datatype": "FP32", "shape": [3, 2], "parameters": {"binary_data_size": 24}}
    assert np.frombuffer(tail, "<f4").reshape(3, 2).tolist() == (x[:, :2] * 2).tolist()


def test_mixed_inputs_and_outputs_with_bytes(server):
    s = server(multi=True)
    a = np.array([[1, 2, 3]], "float32")
    text = strings([b"hi\xff"])
    header = {"inputs": [{"name": "a", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}},
                         {"name": "b", "shape": [1, 2], "datatype": "INT64", "data": [5, -7]},
                         {"name": "text", "shape": [1], "datatype": "BYTES",
                          "parameters": {"binary_data_size": len(text)}}],
              "outputs": [{"name": "echo_bytes", "parameters": {"binary_data": True}}, {"name": "n"},
                          {"name": "y", "parameters": {"binary_data": True}}]}
    status, _, got, tail = infer(s, header, a.tobytes() + text)
    assert status == 200, got
    echo, n, y = got["outputs"]
    assert n["data"] == [-2] and "parameters" not in n
    size = echo["parameters"]["binary_data_size"]
    assert tail[:size] == strings([b"hi\xff!"]) and y["parameters"]["binary_data_size"] == 8
    assert np.frombuffer(tail[size:], "<f4").tolist() == [2, 4]


@pytest.mark.parametrize("header, raw, words", [
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}]},
     b"\x00" * 8, "input 'x': binary_data_size 12 is more than the 8 bytes"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}]},
     b"\x00" * 16, "the binary data is 16 bytes but the inputs' binary_data_size add up to 12"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]},
     b"\x00" * 8, "input 'x': binary_data_size is 8 bytes but shape [1, 3] of FP32 takes 12"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": -1}}]},
     b"", "binary_data_size\" must be a non-negative integer"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3],
                  "parameters": {"binary_data_size": 12}}]}, b"\x00" * 12, "both \"data\" and"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "parameters": {"binary_data_size": 24}}]},
     b"\x00" * 24, "expects datatype FP32"),
    ({"inputs": [{"name": "x", "shape": [1] * 40, "datatype": "FP32", "parameters": {"binary_data_size": 4}}]},
     b"\x00" * 4, "40 dimensions"),
    ({"inputs": [{"name": "x", "shape": [9, 3], "datatype": "FP32", "parameters": {"binary_data_size": 108}}]},
     b"\x00" * 108, "ENVREPRO_SERVE_MAX_BATCH"),
])
def test_binary_mistakes_are_400_naming_the_input(server, header, raw, words):
    s = server({"ENVREPRO_SERVE_MAX_BATCH": "8"})
    status, _, got, _ = infer(s, header, raw)
    assert status in (400, 413) and words in got["error"], got
    assert s.app.limits.bodies.used == 0 and s.app.limits.parses.used == 0


def test_binary_data_size_without_the_header_and_bytes_memory(server):
    s = server({"ENVREPRO_SERVE_REQUEST_MEMORY": str(4 << 20), "ENVREPRO_SERVE_MAX_BODY": str(1 << 20)}, multi=True)
    header = {"inputs": [{"name": "a", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}]}
    status, _, got, _ = infer(s, header, b"", binary_header=False)
    assert status == 400 and "needs the binary tensor data extension" in got["error"]
    n = 30000          # 30000 empty strings: 120 KB of body, ~3.5 MB once decoded: over the 3 MiB for parses
    header = {"inputs": [{"name": "a", "shape": [n, 3], "datatype": "FP32", "data": [0] * 3},
                         {"name": "text", "shape": [n], "datatype": "BYTES", "parameters": {"binary_data_size": 4 * n}}]}
    status, _, got, _ = infer(s, header, strings([b""] * n))
    assert status == 413 and "ENVREPRO_SERVE_REQUEST_MEMORY" in got["error"]
    assert s.app.limits.parses.used == 0


@pytest.mark.parametrize("datatype, values", [
    ("BOOL", [True, False, True]), ("UINT8", [0, 255, 7]), ("UINT64", [0, 2 ** 64 - 1, 3]), ("INT8", [-128, 0, 127]),
    ("INT16", [-3, 0, 3]), ("INT32", [-2 ** 31, 0, 1]), ("INT64", [-2 ** 63, 0, 1]), ("UINT16", [1, 2, 65535]),
    ("UINT32", [1, 2, 2 ** 32 - 1]), ("FP16", [0.5, -1, 65504]), ("FP64", [1e300, -0.0, 3.25]),
])
def test_every_numeric_datatype_round_trips(datatype, values):
    name = servetensors.V2_DTYPES[datatype]
    spec = TensorSpec("v", name, [None])
    little = np.array(values, dtype=np.dtype(name).newbyteorder("<"))
    raw = little.tobytes()
    tensor = {"name": "v", "shape": [3], "datatype": datatype, "parameters": {"binary_data_size": len(raw)}}
    tail = binary.Tail(raw, 0)
    arr = binary.to_array(tensor, spec, tail, "inputs[0]")
    tail.check_used()
    assert arr.dtype == np.dtype(name) and arr.tolist() == values
    assert binary.output_bytes(arr) == raw


def test_bf16_and_broken_bytes_are_refused():
    with pytest.raises(InputError, match="binary form of BF16 is not supported"):
        binary.to_array({"shape": [1], "datatype": "BF16", "parameters": {"binary_data_size": 2}},
                        TensorSpec("v", "bfloat16", [None]), binary.Tail(b"\x00\x00", 0), "inputs[0]")
    for raw, shape in ((strings([b"ab"])[:-1], [1]), (strings([b"a", b"b"]), [1]), (b"\x01\x00", [1]),
                       (strings([b"a"]), [2 ** 40, 2 ** 20]), (b"", [3])):
        with pytest.raises(InputError, match="4-byte little-endian length"):
            binary.to_array({"shape": shape, "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}},
                            TensorSpec("v", "string", None), binary.Tail(raw, 0), "inputs[0]")
    arr = binary.to_array({"shape": [2, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 13}},
                          TensorSpec("v", "string", [None, 1]), binary.Tail(strings([b"", b"\x00ok\xff\n"]), 0), "i")
    assert arr.shape == (2, 1) and arr.ravel().tolist() == [b"", b"\x00ok\xff\n"]


def test_json_answers_are_unchanged(server):
    s = server()
    status, _, got = http_json(s.port, "POST", "/v2/models/fake/infer",
                               {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
    assert status == 200 and got["outputs"][0]["data"] == [2.0, 4.0]
