"""The fidelity matrix: real models from real training environments, captured three ways and
loaded by ``envrepro load`` in Docker from this (TF 2.21) host.

For each training env (envs.py) the zoo (zoo.py, run by the env's own interpreter) trains and
saves every model kind in every format that release writes, once through the save hook and once
plainly. Then each cell is captured

- ``hooked``: by the save hook inside the training env (done by the zoo),
- ``python``: by ``envrepro capture --python ENVPY`` from outside, on a copy of the plain save,
- ``infer``: by ``envrepro capture --infer`` from the files and the source tree, on another copy,

and loaded with ``envrepro load --json`` (the kinds in KIND_MODES by fewer modes). A cell's verdict comes from the load report only (what a
user sees), and is checked against what the cell should say (:func:`judge`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from support import REPO, envrepro_cli  # noqa: E402

import envs as envs_mod  # noqa: E402
import migratecol  # noqa: E402

SRC = HERE / "src"
MODES = ("hooked", "python", "infer")
# Kinds captured by fewer modes, to keep the CI run under an hour: the kinds issue 20 added run
# with the hook and --infer, not --python (which captures the same env from outside, as the older
# kinds check). They share their env's image: they need no package the env's lock lacks.
KIND_MODES: Dict[str, tuple] = {kind: ("hooked", "infer")
                                for kind in ("text", "mixed", "multioutput", "addons_wn")}
OUT = Path(os.environ.get("ENVREPRO_MATRIX_OUT", REPO / "matrix-out"))
WORKERS = int(os.environ.get("ENVREPRO_MATRIX_WORKERS", "2"))
# Only these kinds (comma-separated, e.g. "text,mixed"): a developer's shorter run; unset, all.
KINDS = os.environ.get("ENVREPRO_MATRIX_KINDS", "")
# Cells that can't be reproduced for a reason outside envrepro: (env, cell id, mode) -> the reason
# the load report must give (a substring of its error or verdict).
LEGITIMATE: Dict[tuple, str] = {}


@dataclass
class Outcome:
    """One (cell, mode): what the capture and the load said, and whether that is right."""

    env: str
    cell: str
    mode: str
    kind: str = ""                       # the zoo's model kind (runner.KIND_MODES)
    stage: str = "load"                  # capture | load
    exit_code: Optional[int] = None
    verdict: str = ""                    # OK | NOT-VERIFIED | MISMATCH | FAILED | CAPTURE-FAILED
    max_abs_diff: Optional[float] = None
    optimizer: str = ""                  # OK | MISMATCH | not checked (...) | -
    recipe: str = ""
    seconds: float = 0.0
    capture_seconds: float = 0.0
    message: str = ""
    right: bool = False
    why_wrong: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)


def cell_modes(cell: Dict[str, Any]) -> tuple:
    """The capture modes a cell runs: every mode but where KIND_MODES restricts its kind."""
    return KIND_MODES.get(cell["kind"], MODES)


def run_zoo(env: envs_mod.TrainingEnv, py: str, out: Path) -> Dict[str, Any]:
    """Train and save every kind in ``env`` (the zoo, under the env's interpreter)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    args = [py, str(HERE / "zoo.py"), str(out), "--formats", ",".join(env.formats)]
    if env.addons:
        args.append("--addons")
    if env.keras3:
        args.append("--keras3")
    if KINDS:
        args += ["--kinds", KINDS]
    t = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=1800,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO)))
    if proc.returncode:
        raise RuntimeError(f"the zoo failed in {env.name} (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    cells = json.loads((out / "cells.json").read_text())
    cells["zoo_seconds"] = round(time.perf_counter() - t, 1)
    return cells


def _copy_model(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
    return dst


def _capture(env_py: str, cell: Dict[str, Any], mode: str, model: Path) -> subprocess.CompletedProcess:
    if mode == "python":
        args = ["capture", model, "--python", env_py, "--code-path", SRC]
        for m in cell.get("modules") or []:
            args += ["--module", m]
    else:
        args = ["capture", model, "--infer", "--code-path", SRC]
    return envrepro_cli(*args, timeout=1800)


def _summarize_load(o: Outcome, proc: subprocess.CompletedProcess) -> None:
    o.exit_code = proc.returncode
    try:
        rep = json.loads(proc.stdout)
    except ValueError:
        o.verdict = "FAILED"
        o.message = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return
    loader = rep.get("loader") or {}
    ref = loader.get("reference") or {}
    opt = loader.get("optimizer") or {}
    load = loader.get("load") or {}
    err = loader.get("error") or {}
    o.max_abs_diff = ref.get("max_abs_diff")
    o.recipe = load.get("recipe") or ""
    if not opt:
        o.optimizer = "-"
    elif opt.get("skipped"):
        o.optimizer = f"not checked ({opt['skipped']})"
    else:
        o.optimizer = "OK" if opt.get("ok") else "MISMATCH: " + "; ".join(opt.get("problems") or [])
    if proc.returncode == 0:
        o.verdict = "OK" if ref.get("allclose") else "NOT-VERIFIED"
    elif proc.returncode == 6:
        o.verdict = "MISMATCH"
        o.message = "; ".join(loader.get("mismatches") or [])[:300]
    else:
        o.verdict = "FAILED"
        o.message = f"{err.get('type')}: {err.get('first_line')}"[:300] if err else \
            (proc.stderr.strip().splitlines() or [""])[-1][:300]
    o.extra = {"verified": loader.get("verified"), "drift": loader.get("drift"),
               "python": (loader.get("versions") or {}).get("python"),
               "tensorflow": (loader.get("versions") or {}).get("tensorflow")}


# Run by ``envrepro run`` inside an inferred capture's environment: load the model as a user
# would and print how far its prediction on the zoo's sample is from the training env's.
_REPRODUCES = r"""
import base64, io, json, os, sys
import numpy as np
import tensorflow as tf
try:
    import matrix_models  # registers the custom objects; on PYTHONPATH from the snapshot
    custom = {"MatrixNetNoFromConfig": matrix_models.MatrixNetNoFromConfig}  # the unregistered one
except ImportError:
    custom = {}
try:
    import tensorflow_addons  # noqa: F401  (registers Addons> objects, as envrepro's loader does)
except ImportError:
    pass
def arrays(b64):  # an .npy array, or an .npz as a dict by name
    data = np.load(io.BytesIO(base64.b64decode(b64)), allow_pickle=False)
    return {k: data[k] for k in data.files} if hasattr(data, "files") else data
def feed(a):  # text (U/S arrays) as tf.string: Keras 3's predict takes no numpy text
    return tf.constant(a) if a.dtype.kind in "US" else a
def flat(v):  # outputs as one vector: dicts in name order (as tf.nest flattens them), lists in order
    if isinstance(v, dict):
        v = [v[k] for k in sorted(v)]
    if isinstance(v, (list, tuple)):
        return np.concatenate([np.ravel(np.asarray(g)) for g in v])
    return np.ravel(np.asarray(v))
sample = arrays(sys.argv[1])
sample = {k: feed(v) for k, v in sample.items()} if isinstance(sample, dict) else feed(sample)
want = flat(arrays(sys.argv[2]))
kw = {"safe_mode": False} if sys.argv[3] == "1" else {}
kw["custom_objects"] = custom
path = os.environ["ENVREPRO_MODEL"]
model = None
for attempt in (dict(kw), dict(kw, compile=False), {k: v for k, v in kw.items() if k != "custom_objects"}):
    try:
        model = tf.keras.models.load_model(path, **attempt)  # the recipes a user would try, in order
        break
    except Exception:
        if attempt.get("custom_objects") is None and "compile" not in attempt:
            raise
got = flat(model.predict(sample, verbose=0))
if got.shape != want.shape:
    print("MATRIX-REPRODUCES " + json.dumps({"error": "%d values predicted, %d expected" % (got.size, want.size),
                                           "allclose": False}))
else:
    print("MATRIX-REPRODUCES " + json.dumps({"max_abs_diff": float(np.max(np.abs(got - want))),
                                           "allclose": bool(np.allclose(got, want, atol=1e-5, rtol=1e-4))}))
"""


def reproduces(zoo_out: Path, cell: Dict[str, Any], model: Path) -> Dict[str, Any]:
    """The runner's own check of an inferred capture (envrepro has no reference for it): the
    training env's prediction on the zoo's sample, recomputed with ``envrepro run``."""
    import base64

    enc = [base64.b64encode((zoo_out / cell[k]).read_bytes()).decode() for k in ("sample", "prediction")]
    proc = envrepro_cli("run", model, *(["--unsafe"] if cell.get("unsafe") else []), "--", "python", "-c",
                        _REPRODUCES, enc[0], enc[1], "1" if cell.get("unsafe") else "0", timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith("MATRIX-REPRODUCES "):
            return json.loads(line.split(" ", 1)[1])
    return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200]}


def judge(o: Outcome, cell: Dict[str, Any], env: envs_mod.TrainingEnv) -> None:
    """Is the verdict the right one? Captured cells must reproduce their reference exactly enough
    and give the right optimizer verdict; inferred cells must load and never claim a reference."""
    legit = LEGITIMATE.get((o.env, o.cell, o.mode))
    if cell.get("selfcheck") not in (None, "ok"):
        # Not even the training environment's plain load_model loads this file back (a Keras bug,
        # zoo.KNOWN_FAILURES): right is a refusal that says why, or a load by another recipe that
        # the report names (e.g. compile=False when the optimizer can't be rebuilt), never a
        # silent OK by the plain call.
        refused = o.verdict in ("FAILED", "CAPTURE-FAILED") and bool(o.message.strip())
        other_recipe = o.exit_code == 0 and o.recipe not in ("", "custom_objects")
        o.right = refused or other_recipe
        o.why_wrong = "" if o.right else (
            f"the training env itself can't load it ({cell['selfcheck']}); expected a clear refusal "
            "or a load by a recipe the report names")
        o.extra["known_failure"] = cell.get("known_failure") or cell["selfcheck"]
        return
    if legit:
        o.right = o.verdict in ("FAILED", "MISMATCH", "CAPTURE-FAILED") and legit in o.message
        o.why_wrong = "" if o.right else f"expected a refusal saying {legit!r}"
        return
    if o.mode == "infer":
        o.right = o.verdict == "NOT-VERIFIED" and o.exit_code == 0
        o.why_wrong = "" if o.right else "an inferred capture must load and say it is not verified"
        return
    problems = []
    if o.verdict != "OK":
        problems.append(f"verdict {o.verdict}")
    if o.optimizer.startswith("MISMATCH"):
        problems.append("optimizer mismatch on a correct reproduction")
    if cell.get("optimizer_vars") and o.optimizer in ("-", ""):
        problems.append("optimizer state saved but not checked")
    o.right = not problems
    o.why_wrong = "; ".join(problems)


def run_cell_mode(env: envs_mod.TrainingEnv, env_py: str, zoo_out: Path, cell: Dict[str, Any],
                  mode: str) -> Outcome:
    o = Outcome(env=env.name, cell=cell["id"], mode=mode, kind=cell["kind"])
    if mode == "hooked":
        if not cell.get("hooked"):
            o.stage, o.verdict = "capture", "CAPTURE-FAILED"
            o.message = str(cell.get("hooked_error"))[:300]
            judge(o, cell, env)
            _progress(o)
            return o
        model = zoo_out / cell["hooked"]
    else:
        src = zoo_out / cell["plain"]
        model = _copy_model(src, zoo_out / mode / src.name)
        t = time.perf_counter()
        cap = _capture(env_py, cell, mode, model)
        o.capture_seconds = round(time.perf_counter() - t, 1)
        if cap.returncode:
            o.stage, o.verdict, o.exit_code = "capture", "CAPTURE-FAILED", cap.returncode
            o.message = (cap.stderr.strip().splitlines() or ["no output"])[-1][:300]
            judge(o, cell, env)
            _progress(o)
            return o
    t = time.perf_counter()
    args = ["load", model, "--json"] + (["--unsafe"] if cell.get("unsafe") else [])
    proc = envrepro_cli(*args, timeout=3600)
    o.seconds = round(time.perf_counter() - t, 1)
    _summarize_load(o, proc)
    if mode == "infer" and o.exit_code == 0:
        o.extra["reproduces"] = reproduces(zoo_out, cell, model)
    judge(o, cell, env)
    _progress(o)
    return o


def _progress(o: Outcome) -> None:
    print(f"[matrix] {o.env} {o.cell} {o.mode}: {o.verdict} exit {o.exit_code} capture "
          f"{o.capture_seconds:.0f} s load {o.seconds:.0f} s{'' if o.right else ' WRONG: ' + o.why_wrong}",
          file=sys.stderr, flush=True)


def run_env(env: envs_mod.TrainingEnv) -> Dict[str, Any]:
    """The zoo, then every (cell, mode) of one env. Loads that share an image run one after the
    other (the first builds it); the groups run side by side."""
    t0 = time.perf_counter()
    py = envs_mod.ensure_env(env)
    env_seconds = time.perf_counter() - t0
    zoo_out = OUT / env.name
    cells = run_zoo(env, py, zoo_out)

    def group(mode_set):
        return [run_cell_mode(env, py, zoo_out, c, m) for m in mode_set for c in cells["cells"]
                if m in cell_modes(c)]

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = [pool.submit(group, ("hooked", "python")), pool.submit(group, ("infer",))]
        outcomes = [o for f in futures for o in f.result()]
    migrated = migratecol.run_migrations(zoo_out, cells["cells"], WORKERS) if migratecol.wanted(env.name) else {}
    result = {"env": env.name, "tensorflow": env.tensorflow, "python": cells.get("python"),
              "skipped": cells.get("skipped") or [], "env_seconds": round(env_seconds, 1),
              "zoo_seconds": cells.get("zoo_seconds"),
              "seconds": round(time.perf_counter() - t0, 1),
              "outcomes": [asdict(o) for o in outcomes], "migrate": migrated}
    (OUT / f"{env.name}.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def _cell_text(o: Dict[str, Any]) -> str:
    if not o:
        return "-"
    v = o["verdict"]
    diff = o.get("max_abs_diff")
    text = {"OK": "OK", "NOT-VERIFIED": "loaded", "MISMATCH": "MISMATCH", "FAILED": "FAILED",
            "CAPTURE-FAILED": "CAPTURE-FAILED"}.get(v, v)
    if diff is not None:
        text += f" {diff:.0e}" if diff else " 0"
    if o.get("optimizer") == "OK":
        text += " opt"
    extra = o.get("extra") or {}
    drift = extra.get("drift")
    if isinstance(drift, dict):
        text += " drift " + ("ok" if drift.get("ok") else "DIFFERS") if drift.get("checked") else ""
    rep = extra.get("reproduces")
    if isinstance(rep, dict):
        text += " =train" if rep.get("allclose") else " ≠train"
    text += f" {o.get('seconds') or o.get('capture_seconds') or 0:.0f}s"
    return text + ("" if o.get("right") else " ✗")


def table(results: List[Dict[str, Any]]) -> str:
    """The matrix: one row per (env, cell), one column per capture mode."""
    rows = [("env", "cell", "hooked", "--python", "--infer", "migrate")]
    right = total = 0
    for r in results:
        by = {}
        for o in r["outcomes"]:
            by.setdefault(o["cell"], {})[o["mode"]] = o
            total += 1
            right += bool(o["right"])
        mig = r.get("migrate") or {}
        for cell in sorted(by):
            rows.append((r["env"], cell) + tuple(_cell_text(by[cell].get(m)) for m in MODES)
                        + (migratecol.text(mig.get(cell) or {}),))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    infer = [o for r in results for o in r["outcomes"] if o["mode"] == "infer"]
    lines.append("")
    repro = sum(bool(((o.get("extra") or {}).get("reproduces") or {}).get("allclose")) for o in infer)
    lines.append(f"right verdicts: {right} of {total}; inferred captures that load: "
                 f"{sum(o['exit_code'] == 0 for o in infer)} of {len(infer)}, whose prediction "
                 f"matches the training env's (checked by the matrix, not by envrepro): {repro}")
    fewer = sorted(KIND_MODES)
    if fewer:
        lines.append("not captured with --python (CI time; '-' in the table): the kinds " +
                     ", ".join(f"{k} ({'/'.join(KIND_MODES[k])} only)" for k in fewer))
    for r in results:
        for s in r["skipped"]:
            lines.append(f"not written by {r['env']}: {s['kind']}-{s['format']} ({s['reason']})")
    known = {(o["env"], o["cell"]): (o.get("extra") or {}).get("known_failure")
             for r in results for o in r["outcomes"] if (o.get("extra") or {}).get("known_failure")}
    for (env, cell), why in sorted(known.items()):
        lines.append(f"its own env can't load {env} {cell} back (a Keras bug): {str(why)[:160]}")
    lines.extend(migratecol.summary(results))
    wrong = [o for r in results for o in r["outcomes"] if not o["right"]]
    for o in wrong:
        lines.append(f"WRONG {o['env']} {o['cell']} {o['mode']}: {o['why_wrong']} "
                     f"[{o['verdict']} exit {o['exit_code']}: {o['message']}]")
    secs = sum(r["seconds"] for r in results)
    lines.append(f"matrix time: {secs:.0f} s (" + ", ".join(
        f"{r['env']} {r['seconds']:.0f} s" for r in results) + ")")
    return "\n".join(lines)


# Base images the matrix's loads need: each training env's Python, and 3.12, which --infer picks
# for TF 2.21 models (compat.yaml's likeliest Python for that release; nothing in a .keras file
# says which Python wrote it).
STANDIN_PYTHONS = sorted({e.python for e in envs_mod.ENVS} | {"3.12"})


def ensure_standins() -> None:
    """Local stand-ins for python:X.Y-slim (no registry is reachable here): tests/e2e/standins.py."""
    sys.path.insert(0, str(HERE.parent / "e2e"))
    import standins

    for minor in STANDIN_PYTHONS:
        standins.ensure_standin(f"python:{minor}-slim")


def main(argv: List[str]) -> int:
    chosen = [envs_mod.BY_NAME[n] for n in argv] or list(envs_mod.ENVS)
    ensure_standins()
    results = [run_env(e) for e in chosen]
    print(table(results))
    return 0 if all(o["right"] for r in results for o in r["outcomes"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
