"""Self-proof of a serving image: start it, send the capture's reference input over HTTP through
both protocols, and compare the answers with the reference prediction recorded at save time.

The check runs the image as ``envrepro serve`` runs it (its own entrypoint, non-root, read-only
root filesystem, no network: ``--network none``, as ``envrepro load``; its port published on
loopback only, carried by the engine's relay), waits for readiness (which the server gives only
after a warm-up prediction), then stops it with SIGTERM and records how it exited. The capture's
code (custom layers, Lambda bytecode) runs in that container, so it reaches nothing: not the
internet, the LAN, cloud metadata or the host's own services.
"""
from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from http.client import HTTPException
from typing import Any, Callable, Dict, List, Optional, Tuple

from envrepro.image.templates import USER_UID
from envrepro.engine.base import ContainerEngine
from envrepro.runtime.serve import config as serveconfig
from envrepro.sidecar import manifest

Say = Callable[[str], None]
READY_TIMEOUT = 600.0        # seconds: importing TF and loading a large model take a while
SERVICE_TMPFS = {"/tmp": "rw,nosuid,nodev,size=1g"}
SERVICE_PIDS = 512


def service_args(memory: str = "4g") -> Dict[str, Any]:
    """The sandbox of a serving container: the load sandbox's (no network, non-root, read-only,
    no capabilities); only its port is reached, through the engine (``ContainerEngine.start``)."""
    return {"user": f"{USER_UID}:{USER_UID}", "read_only": True, "tmpfs": dict(SERVICE_TMPFS),
            "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"], "mem_limit": memory,
            "pids_limit": SERVICE_PIDS, "network_disabled": True}


# What a request may raise besides a status: the connection refused or cut (the relay closes a
# connection the server does not take yet) or an answer cut short.
REQUEST_ERRORS = (OSError, HTTPException)


@dataclass
class ProtocolCheck:
    ok: bool
    status: Optional[int] = None
    max_abs_diff: Optional[float] = None
    error: Optional[str] = None


@dataclass
class Proof:
    verdict: str                          # verified | mismatch | failed | not verified
    ready_seconds: Optional[float] = None
    v1: Optional[ProtocolCheck] = None
    v2: Optional[ProtocolCheck] = None
    exit_code: Optional[int] = None       # after SIGTERM (0: drained and exited cleanly)
    error: Optional[str] = None
    logs: str = ""
    checks: List[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.verdict == "verified"

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["verified"] = self.verified
        return d


def http(method: str, url: str, body: Optional[Dict[str, Any]] = None, timeout: float = 60.0
         ) -> Tuple[int, Any]:
    """(status, parsed JSON or text) of one request; network errors raise OSError."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw.decode("utf-8"))
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def reference(capture: manifest.Capture) -> Optional[Dict[str, Any]]:
    """The reference input and output arrays with their structure and tolerance, or None."""
    import numpy as np

    ref = capture.get("reference")
    if capture.get("inferred") or not isinstance(ref, dict) or not ref.get("inputs"):
        return None
    tol = ref.get("tolerance") or {}
    return {"inputs": [np.load(capture.root / p, allow_pickle=False) for p in ref["inputs"]],
            "outputs": [np.load(capture.root / p, allow_pickle=False) for p in ref["outputs"]],
            "input_names": list(ref.get("input_names") or []),
            "input_structure": ref.get("input_structure") or "single",
            "output_names": list(ref.get("output_names") or []),
            "atol": float(tol.get("atol", 1e-5)), "rtol": float(tol.get("rtol", 1e-4))}


V2_TYPES = {"float16": "FP16", "float32": "FP32", "float64": "FP64", "int8": "INT8", "int16": "INT16",
            "int32": "INT32", "int64": "INT64", "uint8": "UINT8", "bool": "BOOL"}


def _is_text(arr: Any) -> bool:
    return arr.dtype.kind in "USO"


def _text_leaf(value: Any) -> Any:
    """One text element for JSON: the string, or ``{"b64": ...}`` for bytes that aren't UTF-8
    (reference text is saved as ``U``, as ``S`` only then)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def _nested(value: Any, leaf: Callable[[Any], Any]) -> Any:
    if isinstance(value, list):
        return [_nested(v, leaf) for v in value]
    return leaf(value)


def to_json(arr: Any) -> Any:
    """An array as JSON values: numbers as they are, text as strings (b64 objects for bytes)."""
    return _nested(arr.tolist(), _text_leaf) if _is_text(arr) else arr.tolist()


def v2_datatype(arr: Any) -> str:
    return "BYTES" if _is_text(arr) else V2_TYPES.get(str(arr.dtype), "FP32")


def v1_request(ref: Dict[str, Any]) -> Dict[str, Any]:
    xs, names = ref["inputs"], ref["input_names"]
    if ref["input_structure"] == "single" or len(xs) == 1:
        return {"instances": to_json(xs[0])}
    return {"instances": [{n: to_json(x[i]) for n, x in zip(names, xs)} for i in range(len(xs[0]))]}


def v2_request(ref: Dict[str, Any]) -> Dict[str, Any]:
    names = ref["input_names"] or [f"input_{i}" for i in range(len(ref["inputs"]))]
    return {"id": "envrepro-proof", "inputs": [
        {"name": n, "shape": list(x.shape), "datatype": v2_datatype(x), "data": to_json(x.reshape(-1))}
        for n, x in zip(names, ref["inputs"])]}


def v1_outputs(ref: Dict[str, Any], answer: Any) -> List[Any]:
    preds = answer.get("predictions") if isinstance(answer, dict) else None
    if preds is None:
        raise ValueError(f"no 'predictions' in the answer: {str(answer)[:200]}")
    if len(ref["outputs"]) == 1:
        return [preds]
    names = ref["output_names"]
    return [[row[n] for row in preds] for n in names]


def v2_outputs(ref: Dict[str, Any], answer: Any) -> List[Any]:
    outs = answer.get("outputs") if isinstance(answer, dict) else None
    if not isinstance(outs, list) or len(outs) != len(ref["outputs"]):
        raise ValueError(f"expected {len(ref['outputs'])} output(s): {str(answer)[:200]}")
    if answer.get("id") != "envrepro-proof":
        raise ValueError("the request id was not echoed")
    by_name = {o.get("name"): o for o in outs}
    names = ref["output_names"]
    ordered = [by_name[n] for n in names] if names and all(n in by_name for n in names) else outs
    return [_v2_array(o) for o in ordered]


def _v2_array(out: Dict[str, Any]) -> Any:
    """A V2 output tensor as an array; BYTES data as bytes (base64-decoded when the server says
    ``content_type: base64``)."""
    import numpy as np

    if out.get("datatype") != "BYTES":
        return np.asarray(out["data"]).reshape(out["shape"])
    b64 = (out.get("parameters") or {}).get("content_type") == "base64"
    flat = [base64.b64decode(v) if b64 else str(v).encode("utf-8") for v in out["data"]]
    arr = np.empty(len(flat), dtype=object)
    arr[:] = flat
    return arr.reshape(out["shape"])


def _answer_bytes(value: Any) -> bytes:
    """One text element of an answer (a string, ``{"b64": ...}`` or bytes) as bytes."""
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"])
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ValueError(f"expected text in the answer, got {type(value).__name__}")


def compare(ref: Dict[str, Any], got: List[Any]) -> Tuple[bool, float]:
    """Numbers within the reference's tolerance (max |diff| over them), text equal."""
    import numpy as np

    from envrepro.runtime.samples import text_values

    ok, worst = True, 0.0
    for expected, value in zip(ref["outputs"], got):
        if _is_text(expected):
            arr = np.asarray(value.tolist() if hasattr(value, "tolist") else value, dtype=object)
            flat = [_answer_bytes(v).rstrip(b"\0") for v in arr.reshape(-1).tolist()]
            if arr.shape != expected.shape or flat != text_values(expected):
                return False, worst
            continue
        # read as the output's own dtype first, as a client of a FP32 output does: JSON's decimal
        # text of a float32 is exact in float32, not in float64
        arr = np.asarray(value, dtype=expected.dtype).astype(np.float64)
        exp = np.asarray(expected, dtype=np.float64)
        if arr.shape != exp.shape:
            return False, float("inf")
        worst = max(worst, float(np.max(np.abs(arr - exp))) if arr.size else 0.0)
        ok = ok and bool(np.allclose(arr, exp, atol=ref["atol"], rtol=ref["rtol"]))
    return ok, worst


def _check(fn: Callable[[], Tuple[int, Any]], parse: Callable[[Any], List[Any]], ref: Dict[str, Any]) -> ProtocolCheck:
    try:
        status, answer = fn()
        if status != 200:
            return ProtocolCheck(False, status, error=str(answer)[:300])
        ok, diff = compare(ref, parse(answer))
        return ProtocolCheck(ok, status, diff, None if ok else "differs from the reference prediction")
    except REQUEST_ERRORS + (ValueError, KeyError, TypeError) as e:
        return ProtocolCheck(False, error=f"{type(e).__name__}: {e}"[:300])


def with_served_names(ref: Dict[str, Any], base: str, name: str) -> Dict[str, Any]:
    """The reference with the input and output names the server's V2 metadata gives (what a
    client reads before calling), in order; the recorded names when the counts differ."""
    try:
        status, meta = http("GET", f"{base}/v2/models/{name}", timeout=30)
    except REQUEST_ERRORS:
        return ref
    if status != 200 or not isinstance(meta, dict):
        return ref
    ins = [str(i.get("name")) for i in meta.get("inputs") or [] if isinstance(i, dict)]
    outs = [str(o.get("name")) for o in meta.get("outputs") or [] if isinstance(o, dict)]
    new = dict(ref)
    if len(ins) == len(ref["inputs"]):
        new["input_names"] = ins
    if len(outs) == len(ref["outputs"]):
        new["output_names"] = outs
    return new


def wait_ready(base: str, name: str, engine: ContainerEngine, cid: str, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        state = engine.container_state(cid)
        if not state.get("running"):
            raise RuntimeError(f"the server exited with code {state.get('exit_code')} before it was ready"
                               + (" (out of memory)" if state.get("oom_killed") else ""))
        try:
            if http("GET", f"{base}{serveconfig.READY_PATH}", timeout=5)[0] == 200:
                return time.monotonic() - t0
        except REQUEST_ERRORS:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready within {timeout:.0f} s")


def prove(engine: ContainerEngine, image: str, capture: manifest.Capture, name: str,
          say: Say, memory: str = "4g", timeout: float = READY_TIMEOUT) -> Proof:
    """Start ``image``, check both protocols against the capture's reference, stop it."""
    ref = reference(capture)
    cid = engine.start(image, ports={serveconfig.PORT: ("127.0.0.1", 0)}, **service_args(memory))
    proof = Proof("failed")
    try:
        port = engine.host_port(cid, serveconfig.PORT)
        base = f"http://127.0.0.1:{port}"
        say(f"Self-check: started the image with no network, waiting for readiness on {base}")
        proof.ready_seconds = round(wait_ready(base, name, engine, cid, timeout), 2)
        if ref is None:
            proof.verdict = "not verified"
            why = ("an inferred capture never has one" if capture.get("inferred") else
                   capture.get("reference_skipped") or "none was recorded")
            proof.error = f"the capture has no reference prediction ({' '.join(str(why).split())})"
        else:
            ref = with_served_names(ref, base, name)
            proof.v1 = _check(lambda: http("POST", f"{base}/v1/models/{name}:predict", v1_request(ref)),
                              lambda a: v1_outputs(ref, a), ref)
            proof.v2 = _check(lambda: http("POST", f"{base}/v2/models/{name}/infer", v2_request(ref)),
                              lambda a: v2_outputs(ref, a), ref)
            proof.verdict = "verified" if proof.v1.ok and proof.v2.ok else "mismatch"
    except (RuntimeError,) + REQUEST_ERRORS as e:
        proof.error = str(e)
    finally:
        proof.logs = engine.container_logs(cid, tail=40)
        proof.exit_code = engine.stop(cid, timeout=int(serveconfig.setting("ENVREPRO_SERVE_GRACE")) + 10)
    if proof.exit_code not in (0, None) and proof.verdict == "verified":
        proof.verdict = "failed"
        proof.error = f"the server did not exit cleanly on SIGTERM (exit {proof.exit_code})"
    return proof
