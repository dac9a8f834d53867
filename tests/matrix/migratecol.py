"""The matrix's migrate column (issue 21): every cell's hooked capture migrated with
``envrepro migrate --python <this host's TF 2.21 interpreter>``, then every artifact the report
calls verified checked independently: one fresh host process per environment loads each file
with plain Keras / ``tf.saved_model.load`` / onnxruntime (no envrepro) and compares its prediction
on the zoo's sample with the training environment's own prediction.

A cell is right when everything the report calls verified reproduces independently, and either
something is verified or the migration says why not (a refusal with a reason, or a reason per
artifact). It is wrong when anything called verified does not reproduce, or when a migration
fails without a reason.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List

from support import envrepro_cli  # noqa: E402

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
# Which environments get the column: unset or "1" every one, "0" none, else their names
# (comma-separated; .ci/run names some of them to keep CI under an hour).
SETTING = os.environ.get("ENVREPRO_MATRIX_MIGRATE", "1").strip()


def wanted(env_name: str, setting: str = "") -> bool:
    setting = setting or SETTING
    if setting in ("", "1"):
        return True
    if setting == "0":
        return False
    return env_name in {s.strip() for s in setting.split(",")}
LETTERS = {"keras": "K", "savedmodel": "S", "onnx": "O"}

# One fresh host process per environment: {cell: {format: {"max_abs_diff", "allclose"} | {"error"}}}.
CHECK = r"""
import importlib, json, sys
import numpy as np
import tensorflow as tf
import keras
sys.path.insert(0, sys.argv[2])
def arrays(path):
    data = np.load(path, allow_pickle=False)
    return {k: data[k] for k in data.files} if hasattr(data, "files") else data
def feed(a):
    return tf.constant(a) if a.dtype.kind in "US" else a
def flat(v):
    if isinstance(v, dict):
        v = [v[k] for k in sorted(v)]
    if isinstance(v, (list, tuple)):
        return np.concatenate([np.ravel(np.asarray(g, dtype="float64")) for g in v])
    return np.ravel(np.asarray(v, dtype="float64"))
def attr(spec):
    mod, name = spec.split(":", 1)
    obj = importlib.import_module(mod)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj
def keras_pred(path, art, x):
    if art.get("code"):     # NAME_lambdas.py beside it: the Lambda functions rebuilt from source
        sys.path.insert(0, art["code"].rsplit("/", 1)[0])
    custom = {k: attr(v) for k, v in (art.get("custom_objects") or {}).items()}
    return keras.models.load_model(path, custom_objects=custom, safe_mode=True).predict(x, verbose=0)
def savedmodel_pred(path, art, x):
    fn = tf.saved_model.load(path).signatures["serving_default"]
    names = sorted(fn.structured_input_signature[1])
    feed_ = x if isinstance(x, dict) else {names[0]: x}
    return fn(**{k: tf.constant(v) for k, v in feed_.items()})
ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
             "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool", "tensor(string)": object}
def onnx_pred(path, art, x):
    # onnxruntime only (no tf2onnx, no TensorFlow in the loop): the graph's inputs and outputs
    # are named like the SavedModel signature's (a trailing ":0" of older converters dropped).
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("onnxruntime is not installed in the checking interpreter: the .onnx "
                           "called verified can't be checked")
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    bare = lambda n: n[:-2] if n.endswith(":0") else n
    ins = s.get_inputs()
    if isinstance(x, dict) and not (len(ins) == 1 and len(x) == 1):
        given = {i.name: x[bare(i.name)] for i in ins}
    else:
        given = {ins[0].name: next(iter(x.values())) if isinstance(x, dict) else x}
    feeds = {}
    for i in ins:
        a, want = np.asarray(given[i.name]), ORT_TYPES.get(i.type)
        feeds[i.name] = a.astype(object) if want is object or a.dtype.kind in "US" else \
            a.astype(want) if want and str(a.dtype) != want else a
    outs = s.run(None, feeds)
    names = [bare(o.name) for o in s.get_outputs()]
    return dict(zip(names, outs)) if len(outs) > 1 else outs[0]
results = {}
for job in json.loads(open(sys.argv[1]).read()):
    x = arrays(job["sample"])
    want = flat(arrays(job["prediction"]))
    xs = {k: feed(v) for k, v in x.items()} if isinstance(x, dict) else feed(x)
    res = results.setdefault(job["cell"], {})
    for art in job["artifacts"]:
        try:
            pred = {"keras": keras_pred, "savedmodel": savedmodel_pred, "onnx": onnx_pred}[art["format"]]
            got = flat(pred(art["path"], art, x if art["format"] == "onnx" else xs))
            if got.shape != want.shape:
                res[art["format"]] = {"error": "%d values, expected %d" % (got.size, want.size)}
                continue
            res[art["format"]] = {"max_abs_diff": float(np.max(np.abs(got - want))),
                                  "allclose": bool(np.allclose(got, want, atol=1e-4, rtol=1e-3))}
        except Exception as e:
            res[art["format"]] = {"error": ("%s: %s" % (type(e).__name__, e))[:300]}
print("MATRIX-MIGRATE " + json.dumps(results))
"""


def migrate_cell(zoo_out: Path, cell: Dict[str, Any]) -> Dict[str, Any]:
    """``envrepro migrate`` of the cell's hooked capture; what its report says."""
    model = zoo_out / cell["hooked"]
    out = zoo_out / "migrated" / cell["id"]
    out.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    unsafe = ["--unsafe"] if cell.get("unsafe") else []     # Lambda cells: loaded with --unsafe too
    proc = envrepro_cli("migrate", model, "--python", sys.executable, "-o", out, "--json", *unsafe,
                        timeout=3600)
    rec: Dict[str, Any] = {"exit_code": proc.returncode, "seconds": round(time.perf_counter() - t, 1)}
    try:
        rep = json.loads(proc.stdout)
    except ValueError:
        rec["message"] = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        rec["artifacts"] = []
        return rec
    rec["message"] = rep.get("error") or ""
    rec["artifacts"] = [{k: a.get(k) for k in ("format", "path", "written", "verified", "max_abs_diff",
                                                "why_not", "custom_objects", "replaced", "translated", "code")}
                        for a in rep.get("artifacts") or []]
    return rec


def independent_check(zoo_out: Path, cells: List[Dict[str, Any]], recs: Dict[str, Dict[str, Any]]) -> None:
    """One host process loads every verified artifact of the env; its answers go into ``recs``."""
    jobs = []
    for c in cells:
        rec = recs.get(c["id"])
        arts = [a for a in (rec or {}).get("artifacts") or [] if a.get("verified")]
        if arts:
            jobs.append({"cell": c["id"], "sample": str(zoo_out / c["sample"]),
                         "prediction": str(zoo_out / c["prediction"]), "artifacts": arts})
    if not jobs:
        return
    job_file = zoo_out / "migrate-check.json"
    job_file.write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, "-c", CHECK, str(job_file), str(SRC)], capture_output=True, text=True,
                          timeout=3600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("MATRIX-MIGRATE ")), None)
    found = json.loads(line.split(" ", 1)[1]) if line else {}
    for job in jobs:
        checked = found.get(job["cell"]) or {}
        for a in recs[job["cell"]]["artifacts"]:
            if a.get("verified"):
                a["independent"] = checked.get(a["format"]) or {
                    "error": "the checker gave no answer: " + (proc.stderr.strip().splitlines() or [""])[-1][:200]}


def judge(rec: Dict[str, Any]) -> None:
    verified = [a for a in rec["artifacts"] if a.get("verified")]
    false_claims = [a["format"] for a in verified if not (a.get("independent") or {}).get("allclose")]
    reasons = bool(rec.get("message")) or any(a.get("why_not") for a in rec["artifacts"])
    # 2 is bad input: the matrix asked wrongly, never an honest refusal of the model.
    rec["right"] = not false_claims and (bool(verified) or (rec["exit_code"] in (5, 6) and reasons))
    rec["why_wrong"] = ("called verified but not reproduced independently: " + ", ".join(
        f"{f} ({next(a for a in verified if a['format'] == f).get('independent')})" for f in false_claims)
        if false_claims else "" if rec["right"] else
        "bad input (exit 2): " + str(rec.get("message"))[:200] if rec["exit_code"] == 2 else
        "no verified artifact and no reason given")


def text(rec: Dict[str, Any]) -> str:
    if not rec:
        return "-"
    letters = "".join(LETTERS[a["format"]] for a in rec["artifacts"] if a.get("verified") and a["format"] in LETTERS)
    t = (letters or f"exit {rec['exit_code']}") + f" {rec.get('seconds', 0):.0f}s"
    return t + ("" if rec.get("right") else " ✗")


def run_migrations(zoo_out: Path, cells: List[Dict[str, Any]], workers: int = 2) -> Dict[str, Dict[str, Any]]:
    """The migrate column (py) for every cell with a hooked capture: the first alone
    (it builds the target image), the rest side by side; then the independent check."""
    todo = [c for c in cells if c.get("hooked")]
    recs: Dict[str, Dict[str, Any]] = {}
    if not todo:
        return recs
    recs[todo[0]["id"]] = migrate_cell(zoo_out, todo[0])
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for c, rec in zip(todo[1:], pool.map(lambda c: migrate_cell(zoo_out, c), todo[1:])):
            recs[c["id"]] = rec
    independent_check(zoo_out, todo, recs)
    for cid, rec in recs.items():
        judge(rec)
        print(f"[matrix] migrate {cid}: {text(rec)}"
              f"{'' if rec['right'] else ' WRONG: ' + rec['why_wrong']}", file=sys.stderr, flush=True)
    return recs


def summary(results: List[Dict[str, Any]]) -> List[str]:
    """The migrate column's goals: verified .keras share, false claims, time against a load."""
    recs = [(r["env"], c, m) for r in results for c, m in (r.get("migrate") or {}).items()]
    if not recs:
        return []
    keras = sum(any(a["format"] == "keras" and a.get("verified") for a in m["artifacts"]) for _, _, m in recs)
    anyv = sum(any(a.get("verified") for a in m["artifacts"]) for _, _, m in recs)
    loads = {(r["env"], o["cell"]): o["seconds"] for r in results for o in r["outcomes"] if o["mode"] == "hooked"}
    ratio = [m["seconds"] / loads[(e, c)] for e, c, m in recs if loads.get((e, c))]
    lines = [f"migrate: {len(recs)} cells, a verified .keras for {keras} ({100 * keras / len(recs):.0f}%), "
             f"a verified artifact for {anyv}, right {sum(m['right'] for _, _, m in recs)} of {len(recs)}; "
             f"K .keras, S SavedModel, O ONNX verified and reproduced by a fresh host process"
             + (f"; migrate time / load time of the same cell: median {sorted(ratio)[len(ratio) // 2]:.1f}x"
                if ratio else "")]
    for e, c, m in sorted(recs, key=lambda x: (x[0], x[1])):
        if not any(a.get("verified") for a in m["artifacts"]):
            why = m.get("message") or "; ".join(f"{a['format']}: {a.get('why_not')}" for a in m["artifacts"])
            lines.append(f"not migrated {e} {c}: {str(why)[:200]}")
        if not m["right"]:
            lines.append(f"WRONG migrate {e} {c}: {m['why_wrong']}")
    return lines
