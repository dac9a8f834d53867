"""Load-time cost of envrepro beside plain Docker, for the seed model (TF 2.4.1, custom layer).

The seed model (``examples/custom_layer_model.py``: a Sequential with ``MyCustomLayer``, saved as
a SavedModel) is saved and captured, with hashes, under the Python 3.8 + tensorflow-cpu 2.4.1
environment the test suite builds (``~/.cache/envrepro-dev/venv38-tf241-*``). Each row is a ratio
of two things measured side by side in this run (no timed assertions, nothing fails on a miss):

1. warm load: ``envrepro load MODEL`` (subprocess, image present) / a bare ``docker run`` of an
   equivalent load-and-predict script in the SAME image (same mounts, read-only, ``--network
   none``, load_model + one predict + allclose). Median of N interleaved runs. Goal <= 1.10.
2. cold build: envrepro's image build with no layer cache / a naive single-stage Dockerfile for
   the same lock (``FROM python:3.8-slim``, ``COPY requirements.lock``, ``pip install``), also
   without layer cache. Goal <= 1.0.
3. second environment: a lock that differs only OUTSIDE TensorFlow's dependency closure
   (``tabulate==0.9.0`` appended to a copy of the capture, manifest rewritten) built with the
   cache warm from row 2 / the naive cold build. Goal <= 0.25.
4. final image size: envrepro image / naive image. Goal <= 1.0.

Fairness:
- Both builds go through the same engine call (Docker SDK, classic builder, ``nocache=True``)
  from the same base; pip never uses its own cache (envrepro: ``--no-cache-dir``; naive:
  ``PIP_NO_CACHE_DIR=1``). The cold builds alternate which side goes first.
- envrepro's side is timed around ``images.ensure_image`` (pip settings, context, build), under a
  bench-only runtime version so its tag is fresh and can be removed afterwards.
- The naive Dockerfile gets the CA bundle envrepro's builder stage gets (the host's pip ``cert``,
  else /etc/ssl/certs/ca-certificates.crt) via ``COPY ca.crt`` + ``PIP_CERT``, and installs the
  lock with the command the lock's header documents, ``pip install --no-deps --require-hashes -r
  requirements.lock``: a plain ``pip install -r`` of it fails, since the lock (pip-tools style)
  leaves out ``wheel``, which astunparse requires, and hash-checking mode refuses an unpinned
  dependency.
- The bare ``docker run`` skips envrepro's sandbox flags (user, read-only root, cap-drop, limits):
  they are part of what envrepro costs.

Everything this creates (naive images, the bench variants, the second environment, the builder
stages they leave behind, the real-key image when it was not there before) is removed at the end,
never the base images.

    python benchmarks/load_bench.py [--quick] [--reps N] [--builds N] [--keep]
"""
import argparse
import glob
import hashlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from envrepro.image import bases, ensure as images, spec  # noqa: E402
from envrepro.packages.pipconfig import host_pip_settings  # noqa: E402
from envrepro.image.templates import VENV  # noqa: E402
from envrepro.sidecar import layout, manifest, writer  # noqa: E402
from envrepro.engine.base import Mount  # noqa: E402
from envrepro.engine.docker import DockerEngine  # noqa: E402
from envrepro.sandbox import loadplan as plans  # noqa: E402
from envrepro.sandbox import policy  # noqa: E402
from envrepro.errors import EnvreproError  # noqa: E402

CACHE = os.environ.get("ENVREPRO_DEV_CACHE", os.path.expanduser("~/.cache/envrepro-dev"))
NAIVE_REPO = "envrepro-bench-naive"
DEFAULT_CA = "/etc/ssl/certs/ca-certificates.crt"
# A small pure-Python pin no one in the TF 2.4.1 closure needs (sha256 of its PyPI files).
EXTRA_PIN = "tabulate==0.9.0"
EXTRA_HASHES = ("sha256:0095b12bf5966de529c0feb1fa08671671b3368eec77d7ef7ab114be2c068b3c",
                "sha256:024ca478df22e9340661486f85298cff5f6dcdba14f3813e8830015b9ed1948f")
NAIVE_DOCKERFILE = """\
FROM {base}
{ca}ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-deps --require-hashes -r /tmp/requirements.lock
"""
# What the bare `docker run` executes: load_model with the capture's custom objects, one predict.
BARE_SCRIPT = """\
import importlib, sys
import numpy as np
import tensorflow as tf
custom = {}
for name, spec in %(custom)r.items():
    mod, attr = spec.split(":", 1)
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    custom[name] = obj
model = tf.keras.models.load_model(%(model)r, custom_objects=custom, compile=%(compile)r)
x = [np.load(p) for p in %(inputs)r]
y = model.predict(x[0] if len(x) == 1 else x)
ys = y if isinstance(y, (list, tuple)) else [y]
for got, path in zip(ys, %(outputs)r):
    assert np.allclose(got, np.load(path), atol=%(atol)r, rtol=%(rtol)r), path
print("BARE-OK")
"""


def say(msg):
    print(f"[load_bench] {msg}", file=sys.stderr, flush=True)


def mb(n):
    return f"{n / 1e6:.0f} MB"


# -- builds ------------------------------------------------------------------------------------
class Recorder:
    """Build output lines with timestamps: per-step durations and the images a build left."""

    def __init__(self):
        self.lines = []

    def __call__(self, line):
        self.lines.append((time.perf_counter(), line.rstrip()))

    def steps(self, end):
        """[(step text, seconds, cached)] from the ``Step k/n : ...`` lines."""
        out = []
        marks = [(t, ln, i) for i, (t, ln) in enumerate(self.lines) if ln.startswith("Step ")]
        for j, (t, ln, i) in enumerate(marks):
            t_next = marks[j + 1][0] if j + 1 < len(marks) else end
            nxt = marks[j + 1][2] if j + 1 < len(marks) else len(self.lines)
            cached = any("Using cache" in x for _, x in self.lines[i:nxt])
            out.append((ln.split(" : ", 1)[-1], t_next - t, cached))
        return out

    def stage_tips(self):
        """Image ids that ended a non-final stage (untagged leftovers of a multi-stage build)."""
        tips, last = [], None
        seen_from = False
        for _, ln in self.lines:
            m = re.match(r"^\s*---> ([0-9a-f]{12})\s*$", ln)
            if m:
                last = m.group(1)
            elif re.match(r"^Step \d+/\d+ : FROM ", ln, re.I):
                if seen_from and last:
                    tips.append(last)
                seen_from = True
        return tips


def naive_context(lock_text, base, ca_bytes):
    ca = "COPY ca.crt /etc/pip-ca.crt\nENV PIP_CERT=/etc/pip-ca.crt\n" if ca_bytes else ""
    files = {"Dockerfile": NAIVE_DOCKERFILE.format(base=base, ca=ca).encode(),
             "requirements.lock": lock_text.encode()}
    if ca_bytes:
        files["ca.crt"] = ca_bytes
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def build_naive(engine, cap, tag, ca_bytes):
    rec = Recorder()
    ctx = naive_context(cap.lock_path.read_text(encoding="utf-8"), bases.resolve_base(cap), ca_bytes)
    t0 = time.perf_counter()
    engine.build(ctx, tag, on_line=rec, nocache=True)
    end = time.perf_counter()
    return end - t0, rec.steps(end), rec


def build_envrepro(engine, cap, variant, nocache):
    rec = Recorder()
    t0 = time.perf_counter()
    info = images.ensure_image(cap, engine, nocache=nocache, runtime_version=variant, on_progress=rec)
    end = time.perf_counter()
    if info.source != "built":
        raise RuntimeError(f"{info.tag} was not built (source {info.source}): pick another variant")
    return end - t0, rec.steps(end), rec, info


def image_size(engine, tag):
    return int((engine.inspect_image(tag) or {}).get("Size") or 0)


def added_bytes(engine, first, second):
    """Bytes the layers of ``second`` add beside ``first`` (layers both hold count once)."""
    h1 = {e["Id"] for e in engine.api.history(first) if e.get("Id") not in (None, "<missing>")}
    return sum(int(e.get("Size") or 0) for e in engine.api.history(second)
               if e.get("Id") not in (None, "<missing>") and e["Id"] not in h1)


# -- the captures ------------------------------------------------------------------------------
def find_py38():
    found = sorted(glob.glob(os.path.join(CACHE, "venv38-tf241-*", "bin", "python")))
    return found[0] if found else None


def save_seed(py38, out_dir):
    """Save + capture (with hashes: no ENVREPRO_OFFLINE) the seed model under TF 2.4.1."""
    env = {k: v for k, v in os.environ.items() if k != "ENVREPRO_OFFLINE"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([py38, "custom_layer_model.py", str(out_dir)], cwd=str(ROOT / "examples"),
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    model = out_dir / "custom_model"
    if proc.returncode != 0 or not layout.sidecar_for(model).is_dir():
        raise RuntimeError("saving the seed model failed:\n" + proc.stdout[-3000:])
    return model


def second_capture(seed_model, dest):
    """A copy of the seed capture whose lock also pins tabulate (outside TF's closure)."""
    dest.mkdir(parents=True)
    model = dest / seed_model.name
    shutil.copytree(seed_model, model)
    side = layout.sidecar_for(model)
    shutil.copytree(layout.sidecar_for(seed_model), side)
    cap = manifest.read(side)
    text = cap.lock_path.read_text(encoding="utf-8").rstrip("\n") + "\n"
    if cap.get("lock.hashes"):
        text += " \\\n".join([EXTRA_PIN] + [f"    --hash={h}" for h in EXTRA_HASHES]) + "\n"
    else:
        text += EXTRA_PIN + "\n"
    cap.lock_path.write_text(text, encoding="utf-8")
    data = dict(cap.data)
    lock = dict(data.get("lock") or {})
    lock["sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if isinstance(lock.get("distributions"), int):
        lock["distributions"] += 1
    data["lock"] = lock
    writer.write_manifest(side, data)
    return manifest.read(side)  # verifies the rewritten file hashes


# -- warm load ---------------------------------------------------------------------------------
def envrepro_cmd():
    exe = Path(sys.executable).with_name("envrepro")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "envrepro"]


def bare_argv(cap, tag, python):
    paths = plans.container_paths(cap)
    ref = cap.get("reference") or {}
    tol = ref.get("tolerance") or {}
    script = BARE_SCRIPT % {
        "custom": dict(manifest.model_custom_objects(cap)), "model": paths.model,
        "compile": bool(cap.get("load.compile", True)),
        "inputs": [paths.in_capture(p) for p in ref.get("inputs") or []],
        "outputs": [paths.in_capture(p) for p in ref.get("outputs") or []],
        "atol": float(tol.get("atol", 1e-5)), "rtol": float(tol.get("rtol", 1e-4))}
    argv = ["docker", "run", "--rm", "--network", "none"]
    for m in (Mount(str(cap.model_path), paths.model), Mount(str(cap.root), paths.capture)):
        argv += ["--mount", policy.mount_cli(m)]
    argv += ["-e", "TF_CPP_MIN_LOG_LEVEL=2", "-e", f"PYTHONPATH={paths.snapshot}", "-e", "HOME=/tmp"]
    return argv + [tag, python, "-c", script]


def timed(argv, expect):
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    secs = time.perf_counter() - t0
    if proc.returncode != 0 or expect not in proc.stdout:
        raise RuntimeError(f"{argv[0]} {argv[1]} failed (exit {proc.returncode}):\n"
                           + (proc.stdout + proc.stderr)[-3000:])
    return secs, proc.stdout


# -- main --------------------------------------------------------------------------------------
def verdict(ratio, goal):
    return f"<= {goal:.2f} " + ("OK" if ratio <= goal else "MISSED")


def print_steps(title, secs, steps):
    print(f"    {title}: {secs:.1f} s")
    for text, s, cached in steps:
        if s >= 0.5 or not cached:
            text = re.sub(r"\s+", " ", text)
            print(f"      {s:6.1f} s  {'(cache) ' if cached else ''}{text[:88]}")


def where_time_went(steps):
    """Seconds per kind of step: venv creation, pip installs, COPY --from, the rest."""
    kinds = {"venv": 0.0, "pip install": 0.0, "COPY --from": 0.0, "other": 0.0}
    for text, s, _ in steps:
        kind = ("venv" if " -m venv" in text else "pip install" if "pip install" in text
                else "COPY --from" if text.startswith("COPY --from") else "other")
        kinds[kind] += s
    return ", ".join(f"{k} {v:.1f} s" for k, v in kinds.items() if v >= 0.05)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 warm-load reps, 1 cold build per side")
    ap.add_argument("--reps", type=int, help="warm-load reps per side (default 5, --quick 3)")
    ap.add_argument("--builds", type=int, help="cold builds per side (default 2, --quick 1)")
    ap.add_argument("--keep", action="store_true", help="keep the images and files it made")
    args = ap.parse_args(argv)
    reps = args.reps or (3 if args.quick else 5)
    nbuilds = args.builds or (1 if args.quick else 2)

    py38 = find_py38()
    if not py38:
        print("\nLoad benchmark skipped: no Python 3.8 + TF 2.4.1 env under "
              f"{CACHE} (`make test` builds it)")
        return 0
    try:
        engine = DockerEngine().connect()
    except EnvreproError as e:
        print(f"\nLoad benchmark skipped: {e.what}")
        return 0

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="envrepro-loadbench-"))
    pid = os.getpid()
    made_tags, made_tips = [], []
    real_tag, real_existed = None, True
    try:
        say(f"saving + capturing the seed model under {py38} (hashes from the index)")
        t = time.perf_counter()
        seed = save_seed(py38, work / "seed")
        t_seed = time.perf_counter() - t
        cap = manifest.read(layout.sidecar_for(seed))
        # Build logs and the images index of the loads below go to the work folder, not the
        # user's ~/.cache/envrepro (the temporary captures would linger in `envrepro images`).
        os.environ["XDG_CACHE_HOME"] = str(work / "xdg-cache")
        base = bases.resolve_base(cap)
        if not engine.inspect_image(base):
            print(f"\nLoad benchmark skipped: base image {base} not present "
                  "(`make standins` builds a local stand-in)")
            return 0
        key = spec.capture_key(cap, base, cap.lock_path.read_text(encoding="utf-8"))
        real_tag = spec.image_tag(key)
        real_existed = engine.inspect_image(real_tag) is not None
        cert = host_pip_settings().cert or (DEFAULT_CA if os.path.isfile(DEFAULT_CA) else None)
        ca_bytes = Path(cert).read_bytes() if cert else b""

        # -- 2. cold builds, alternating which side goes first -------------------------------
        env_cold, naive_cold = [], []
        env_info = None
        naive_tag = None
        builder_bytes = 0
        for i in range(nbuilds):
            order = ("envrepro", "naive") if i % 2 == 0 else ("naive", "envrepro")
            for side in order:
                if side == "envrepro":
                    variant = f"bench-{pid}-{i}"
                    # cold: an empty wheelhouse (pip's own cache is never used: --no-cache-dir)
                    os.environ["XDG_CACHE_HOME"] = str(work / f"xdg-cache-{i}")
                    say(f"cold build #{i + 1}, envrepro (runtime variant {variant}, nocache, empty wheelhouse)")
                    secs, steps, rec, info = build_envrepro(engine, cap, variant, nocache=True)
                    made_tags.append(info.tag)
                    tips = rec.stage_tips()
                    made_tips.extend(tips)
                    env_cold.append((secs, steps))
                    builder_bytes = added_bytes(engine, base, tips[-1]) if tips else 0
                    env_info = env_info or info
                else:
                    tag = f"{NAIVE_REPO}:{pid}-{i}"
                    say(f"cold build #{i + 1}, naive (nocache)")
                    made_tags.append(tag)
                    secs, steps, _ = build_naive(engine, cap, tag, ca_bytes)
                    naive_cold.append((secs, steps))
                    naive_tag = naive_tag or tag
        t_env_cold = statistics.median(s for s, _ in env_cold)
        t_naive_cold = statistics.median(s for s, _ in naive_cold)

        # -- 3. second environment, cache warm from the cold build ---------------------------
        say(f"second environment ({EXTRA_PIN} appended), cache warm")
        cap2 = second_capture(seed, work / "second")
        t_second, steps2, rec2, info2 = build_envrepro(engine, cap2, f"bench-{pid}-0", nocache=False)
        made_tags.append(info2.tag)
        made_tips[:0] = rec2.stage_tips()   # removed first: it hangs off the cold build's layers
        heavy_cached = any(c for text, _, c in steps2 if "heavy.lock" in text and text.startswith("RUN"))

        # -- 4. sizes ----------------------------------------------------------------------------
        size_env, size_naive = image_size(engine, env_info.tag), image_size(engine, naive_tag)
        size_second_added = added_bytes(engine, env_info.tag, info2.tag)

        # -- 1. warm load ------------------------------------------------------------------------
        say("warm load: first `envrepro load --json` (gets the real-key image, from cache if absent)")
        t = time.perf_counter()
        out = subprocess.run(envrepro_cmd() + ["load", "--json", str(seed)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        t_first = time.perf_counter() - t
        if out.returncode != 0:
            raise RuntimeError("envrepro load failed:\n" + (out.stdout + out.stderr)[-3000:])
        report = json.loads(out.stdout)
        if report["image"]["tag"] != real_tag:   # the key is computed differently now: keep it
            real_tag, real_existed = report["image"]["tag"], True
        bare = bare_argv(cap, real_tag, VENV + "/bin/python")
        timed(bare, "BARE-OK")  # warms the page cache for the bare side too
        t_env, t_bare = [], []
        for i in range(reps):
            for side in (("envrepro", "bare") if i % 2 == 0 else ("bare", "envrepro")):
                if side == "envrepro":
                    t_env.append(timed(envrepro_cmd() + ["load", str(seed)], "result: OK")[0])
                else:
                    t_bare.append(timed(bare, "BARE-OK")[0])
        m_env, m_bare = statistics.median(t_env), statistics.median(t_bare)
        t = time.perf_counter()
        subprocess.run(envrepro_cmd() + ["--version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_cli = time.perf_counter() - t

        # -- the table ---------------------------------------------------------------------------
        rows = [
            (f"warm load (median of {reps})", f"{m_env:.2f} s", f"{m_bare:.2f} s", m_env / m_bare, 1.10),
            (f"cold build, no layer cache (median of {nbuilds})", f"{t_env_cold:.1f} s",
             f"{t_naive_cold:.1f} s", t_env_cold / t_naive_cold, 1.0),
            ("second environment, cache warm / naive cold", f"{t_second:.1f} s", f"{t_naive_cold:.1f} s",
             t_second / t_naive_cold, 0.25),
            ("final image size", mb(size_env), mb(size_naive), size_env / size_naive, 1.0),
        ]
        v = cap.get("python.version")
        print(f"\nLoad benchmark (seed model, TF {cap.get('frameworks.tensorflow')}, Python {v}, "
              f"base {base}; envrepro vs baseline, side by side in this run)")
        w = max(len(r[0]) for r in rows)
        print(f"  {'':{w}}  {'envrepro':>9}  {'baseline':>9}  {'ratio':>5}  goal")
        for name, a, b, ratio, goal in rows:
            print(f"  {name.ljust(w)}  {a:>9}  {b:>9}  {ratio:5.2f}  {verdict(ratio, goal)}")
        print("  baselines: bare `docker run` (same image, mounts read-only, --network none); naive "
              "FROM+COPY lock+`pip install --no-deps --require-hashes` (CA via COPY ca.crt + PIP_CERT)")
        print("\n  details")
        lt = report.get("timings") or {}
        lt = {**(report.get("loader") or {}).get("timings", {}), **{k: x for k, x in lt.items() if x is not None}}
        print(f"    envrepro load runs: {', '.join(f'{x:.2f}' for x in t_env)} s; bare: "
              f"{', '.join(f'{x:.2f}' for x in t_bare)} s; `envrepro --version` {t_cli:.2f} s")
        print("    first load (--json): " + f"{t_first:.1f} s wall, image "
              f"{report['image']['source']} ({report['image']['tag']}), "
              + ", ".join(f"{k} {float(x):.2f} s" for k, x in sorted(lt.items())
                          if isinstance(x, (int, float))))
        for i, (secs, steps) in enumerate(env_cold):
            print_steps(f"envrepro cold build #{i + 1} ({where_time_went(steps)})", secs, steps)
        for i, (secs, steps) in enumerate(naive_cold):
            print_steps(f"naive cold build #{i + 1}", secs, steps)
        print_steps(f"envrepro second environment (heavy layer from cache: {'yes' if heavy_cached else 'NO'})",
                    t_second, steps2)
        print(f"    second environment image {mb(image_size(engine, info2.tag))}, of which "
              f"{mb(size_second_added)} in layers the first environment's image does not share")
        if builder_bytes:
            print(f"    each envrepro build also leaves its untagged builder stage behind: "
                  f"{mb(builder_bytes)} beside the base (cold build; `envrepro images prune` leaves it)")
        print(f"    seed save + capture with hashes {t_seed:.1f} s; whole benchmark "
              f"{time.perf_counter() - t_start:.0f} s (before cleanup)")
        return 0
    finally:
        if args.keep:
            say(f"kept {work} and images {', '.join(made_tags)} (+ builder stages {', '.join(made_tips)})")
        else:
            leftovers = []
            if real_tag and not real_existed:
                made_tags.append(real_tag)
            for ref in made_tags + made_tips:
                try:
                    engine.remove_image(ref)
                except EnvreproError as e:
                    leftovers.append(f"{ref} ({e.what.splitlines()[0][:80]})")
            shutil.rmtree(work, ignore_errors=True)
            if leftovers:
                say("could not remove: " + "; ".join(leftovers))


if __name__ == "__main__":
    sys.exit(main())
