"""envrepro.serving.proof and image.build: the self-check against a stand-in server on loopback
(the real server and image are exercised end to end in tests/e2e/test_serve_e2e.py)."""
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from envrepro.serving import image as serving
from envrepro.serving import proof

try:
    from .fakes import FakeEngine, cache_home, make_capture
except ImportError:
    from fakes import FakeEngine, cache_home, make_capture


class StandIn(BaseHTTPRequestHandler):
    """Answers like the model server would for the fake capture (output = zeros(2, 1));
    ``cut``: that many connections first are closed unanswered (as the engine's relay closes
    them while the server does not listen yet)."""
    offset = 0.0
    seen = []
    cut = 0

    def handle(self):
        if StandIn.cut > 0:
            StandIn.cut -= 1
            return
        super().handle()

    def log_message(self, *args):
        pass

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200 if self.path == "/v2/health/ready" else 404, {})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StandIn.seen.append((self.path, body))
        out = (np.zeros((2, 1)) + StandIn.offset).tolist()
        if self.path == "/v1/models/my_model:predict":
            self._send(200, {"predictions": out})
        elif self.path == "/v2/models/my_model/infer":
            self._send(200, {"id": body.get("id"), "model_name": "my_model",
                             "outputs": [{"name": "y", "shape": [2, 1], "datatype": "FP32",
                                          "data": [v for row in out for v in row]}]})
        else:
            self._send(404, {"error": "no such model"})


@pytest.fixture
def stand_in():
    StandIn.offset, StandIn.seen, StandIn.cut = 0.0, [], 0
    srv = HTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


def test_requests_carry_the_reference_in_both_protocols(tmp_path):
    ref = proof.reference(make_capture(tmp_path))
    assert proof.v1_request(ref) == {"instances": np.zeros((2, 3)).tolist()}
    v2 = proof.v2_request(ref)
    assert v2["inputs"] == [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [0.0] * 6}]
    multi = dict(ref, inputs=[np.ones((2, 1)), np.zeros((2, 2))], input_names=["a", "b"], input_structure="dict")
    assert proof.v1_request(multi)["instances"] == [{"a": [1.0], "b": [0.0, 0.0]}] * 2


def test_prove_verified_and_mismatch(tmp_path, stand_in):
    cap = make_capture(tmp_path)
    eng = FakeEngine()
    eng.service_port = stand_in
    p = proof.prove(eng, "img", cap, "my_model", lambda line: None, timeout=10)
    assert p.verdict == "verified" and p.v1.ok and p.v2.ok and p.v1.max_abs_diff == 0.0
    assert p.exit_code == 0 and eng.stopped and eng.started[0]["ports"] == {8501: ("127.0.0.1", 0)}
    assert eng.started[0]["read_only"] and eng.started[0]["cap_drop"] == ["ALL"]
    assert eng.started[0]["user"] == "10001:10001"
    assert eng.started[0]["network_disabled"] is True       # --network none, as envrepro load
    StandIn.offset = 0.5
    p = proof.prove(eng, "img", cap, "my_model", lambda line: None, timeout=10)
    assert p.verdict == "mismatch" and not p.v1.ok and p.v1.max_abs_diff == 0.5


def test_a_server_that_dies_before_ready_fails_with_its_exit(tmp_path):
    cap = make_capture(tmp_path)
    eng = FakeEngine()
    eng.service_port = 9
    eng.service_state = {"running": False, "exit_code": 3, "oom_killed": True}
    p = proof.prove(eng, "img", cap, "my_model", lambda line: None, timeout=5)
    assert p.verdict == "failed" and "exited with code 3" in p.error and "out of memory" in p.error


def test_build_tags_only_a_proven_image(tmp_path, stand_in, monkeypatch):
    """Verified: the requested tag gets a label layer with the verdict. Mismatch: no tag, exit 6,
    the candidate stays for inspection."""
    from envrepro.image import ensure as images
    from envrepro.image.ensure import ImageInfo

    cap = make_capture(tmp_path)
    monkeypatch.setattr(images, "ensure_image", lambda *a, **k: ImageInfo("envrepro-env:k", "k" * 32, "sha256:e", "local", "python:3.8-slim", "", {}))
    eng = FakeEngine()
    eng.service_port = stand_in
    res = serving.build(cap, eng, tag="team/model:1")
    assert res.tag == "team/model:1" and res.exit_code == 0 and res.proof.verdict == "verified"
    assert [t for _, t in eng.builds][-1] == "team/model:1"
    label_df = eng.builds[-1][0]
    assert b'org.envrepro.serve.verdict=\\"verified\\"' in label_df or b"verified" in label_df
    again = serving.build(cap, eng, tag="team/model:1")
    assert again.source == "local"                 # a self-checked image of this key is reused
    StandIn.offset = 1.0
    (cap.model_path / "saved_model.pb").write_bytes(b"pb2")   # a new key (the model changed)
    bad = serving.build(cap, eng, tag="team/model:2")
    assert bad.tag is None and bad.exit_code == 6 and "-unverified" in bad.warnings[0]
    assert eng.inspect_image("team/model:2") is None


def test_the_self_check_runs_the_server_with_no_network(tmp_path, stand_in):
    """The capture's code runs in the server: its container gets no network (the engine carries
    the loopback port), whatever else the sandbox says."""
    assert proof.service_args()["network_disabled"] is True
    assert proof.service_args("8g")["mem_limit"] == "8g"
    eng = FakeEngine()
    eng.service_port = stand_in
    said = []
    p = proof.prove(eng, "img", make_capture(tmp_path), "my_model", said.append, timeout=10)
    assert p.verdict == "verified"
    (started,) = eng.started
    assert started["network_disabled"] is True and started["ports"] == {8501: ("127.0.0.1", 0)}
    assert any("with no network" in line for line in said)


def test_connections_cut_before_the_server_listens_are_retried(tmp_path, stand_in):
    """Until the server listens, the relay accepts and closes: the check waits on, it doesn't
    fail (and a cut answer to a check is that protocol's failure, not a crash)."""
    StandIn.cut = 3
    eng = FakeEngine()
    eng.service_port = stand_in
    p = proof.prove(eng, "img", make_capture(tmp_path), "my_model", lambda line: None, timeout=20)
    assert p.verdict == "verified" and StandIn.cut == 0
    ref = proof.reference(make_capture(tmp_path / "again"))

    def cut():
        import http.client
        raise http.client.IncompleteRead(b"{", 10)

    check = proof._check(cut, lambda a: proof.v1_outputs(ref, a), ref)
    assert not check.ok and check.error.startswith("IncompleteRead")


def test_text_references_go_through_both_protocols_of_the_real_server():
    """Requests built from a reference with text inputs are what the server's parsers (v1 rows,
    V2 BYTES) accept as the same text; its answers with text outputs (UTF-8, and bytes that
    aren't: b64 objects in v1, base64 content in V2) compare equal to the reference."""
    from envrepro.runtime.serve import v1, v2
    from envrepro.runtime.serve.tensors import Signature, TensorSpec

    ref = {"inputs": [np.array([["the cat"], ["a dög"]]), np.zeros((2, 3), "float32")],
           "input_names": ["text", "x"], "input_structure": "dict",
           "outputs": [np.array(["cat", "dög"]), np.zeros((2, 1), "float32"), np.array([b"\xff", b"ok"])],
           "output_names": ["word", "score", "raw"], "atol": 1e-5, "rtol": 1e-4}
    sig = Signature([TensorSpec("text", "string", [None, 1]), TensorSpec("x", "float32", [None, 3])], [])
    want = [["the cat".encode()], ["a dög".encode()]]
    assert v1.parse_predict(json.loads(json.dumps(proof.v1_request(ref))), sig)[0]["text"].tolist() == want
    v2_req = json.loads(json.dumps(proof.v2_request(ref)))
    assert v2_req["inputs"][0]["datatype"] == "BYTES"
    assert v2.parse_infer(v2_req, sig)[0]["text"].tolist() == want
    outs = [("word", np.array([b"cat", "dög".encode()], dtype=object)), ("score", np.zeros((2, 1), "float32")),
            ("raw", np.array([b"\xff", b"ok"], dtype=object))]
    v1_answer = json.loads(json.dumps(v1.format_predict(outs, False)))
    v2_answer = json.loads(json.dumps(v2.format_infer("m", outs, None, "envrepro-proof")))
    assert v2_answer["outputs"][2]["parameters"] == {"content_type": "base64"}
    assert proof.compare(ref, proof.v1_outputs(ref, v1_answer)) == (True, 0.0)
    assert proof.compare(ref, proof.v2_outputs(ref, v2_answer)) == (True, 0.0)
    outs[0] = ("word", np.array([b"cat", b"dog"], dtype=object))
    assert proof.compare(ref, proof.v1_outputs(ref, json.loads(json.dumps(v1.format_predict(outs, False)))))[0] is False
    assert proof.compare(ref, proof.v2_outputs(ref, json.loads(json.dumps(
        v2.format_infer("m", outs, None, "envrepro-proof")))))[0] is False


def test_a_capture_without_a_reference_serves_not_verified_and_says_why(tmp_path, stand_in):
    reason = "input 'blob' (float32) has an unknown rank; pass one with --sample FILE"
    cap = make_capture(tmp_path, reference=None, reference_skipped=reason)
    eng = FakeEngine()
    eng.service_port = stand_in
    p = proof.prove(eng, "img", cap, "my_model", lambda line: None, timeout=10)
    assert p.verdict == "not verified" and p.error == f"the capture has no reference prediction ({reason})"
