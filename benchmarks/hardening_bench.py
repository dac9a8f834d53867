"""The cost of issue 19's hardening: this tree against the commit before it, side by side in one run.

The baseline (``--against REV``, default baeb915, the last commit before the hardening) is checked
out with ``git worktree`` into a temporary folder. Every row runs the SAME scenario with each tree:
envrepro runs as ``python -m envrepro`` under this interpreter (the dev venv has the dependencies)
with ``PYTHONPATH`` naming that tree, from a folder outside both, so the tree alone decides which
code runs (the baseline's ``envrepro.images`` templates are its own: a link in its worktree).
Rows, each ``HEAD / baseline`` (HEAD: the working tree as it is, edits included):

1. cold build: ``envrepro run SMALL -- python -c pass`` where SMALL is a copy of the seed capture
   whose lock is six==1.16.0 (a wheel) + termcolor==1.1.0 (sdist only), with their PyPI sha256
   hashes (tests/e2e/test_build_e2e.py's lock), on the python:3.8-slim stand-in: an empty
   wheelhouse (a fresh XDG_CACHE_HOME per side and run), no image. HEAD builds termcolor in a
   container of its own with dropped capabilities and limits, and installs in hardened containers
   with bounded output. ``run`` is the CLI command that gets an image for a capture and nothing
   more (a sandboxed ``python -c pass``, the same on both sides, ends it).
2. rebuild, wheelhouse warm: the same command again with that side's cache kept and its images
   removed (environment and closure image): the sdist's record is looked up, not rebuilt.
3. warm load: ``envrepro load MODEL`` of the seed model (``examples/custom_layer_model.py`` saved
   and captured under the Python 3.8 + TF 2.4.1 venv the test suite builds; without it, under this
   interpreter's TensorFlow on the python:3.11-slim stand-in), image present. Both sides load the
   same capture, each with its own cache; a side whose image is missing builds it once first (not
   timed; with identical image keys, one build serves both).
4. serve self-check: ``envrepro build --serve MODEL -t TAG`` (serving image built on the present
   environment image, started once, both protocols checked; HEAD serves with no network through a
   relay). The tag is removed after each run, so every run builds and proves. Skipped by --quick
   and --no-serve.

Fairness: runs alternate A/B order (ABBA: HEAD first, then baseline first, ...), medians reported,
both absolute times printed; the machine is shared, so noise is expected and nothing is asserted on
speed. The small lock's builds go on a bench-only tag of the python:3.8-slim image, so their keys
(environment and closure) are this run's alone and removing them touches nothing else; its pip
traffic (PyPI on the host) is the same for both sides.

Everything the bench creates is removed at the end: the worktree, its caches, the small lock's
images, the serving tags, and the seed's environment/closure images only when this run built them
(never a base image, never an image that was there before).

    python benchmarks/hardening_bench.py [--against REV] [--reps N] [--quick] [--no-serve] [--keep]
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import load_bench as lb  # noqa: E402
from envrepro.engine.docker import DockerEngine  # noqa: E402
from envrepro.errors import EnvreproError  # noqa: E402
from envrepro.image import bases, spec  # noqa: E402
from envrepro.sidecar import layout, manifest, writer  # noqa: E402

BASELINE = "baeb915"
# tests/e2e/test_build_e2e.py's lock: a wheel and an sdist-only pin (as in TF 2.4.1's lock)
SMALL_LOCK = ("six==1.16.0 \\\n"
              "    --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254\n"
              "    # via -r requirements.in\n"
              "termcolor==1.1.0 \\\n"
              "    --hash=sha256:1d6d69ce66211143803fbc56652b41d73b4a400a2891d7bf7a1cdf4c02de613b\n"
              "    # via -r requirements.in\n")
SMALL_PYTHON = "3.8.18"
# envrepro settings of the caller's shell that would change what is built or loaded
CLEARED = ("ENVREPRO_BASE_IMAGE", "ENVREPRO_REGISTRY", "ENVREPRO_BUILDER", "ENVREPRO_OFFLINE", "PYTHONPATH")


STEPS = (("Fetching", "fetch into the wheelhouse"), ("Building from source", "sdist builds"),
         ("Installing TensorFlow's closure", "closure install"), ("Installing the rest", "rest install"),
         ("Committing", "commit"))


def say(msg):
    print(f"[hardening_bench] {msg}", file=sys.stderr, flush=True)


def git(*args):
    proc = subprocess.run(["git", "-C", str(ROOT)] + list(args), capture_output=True, text=True, check=True)
    return proc.stdout.strip()


class Side:
    """One tree: runs ``python -m envrepro`` with PYTHONPATH naming it, from ``cwd`` (outside both)."""

    def __init__(self, name, label, tree, cwd):
        self.name, self.label, self.tree, self.cwd = name, label, tree, cwd

    def env(self, cache, extra=None):
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env.update(PYTHONPATH=str(self.tree), XDG_CACHE_HOME=str(cache), TF_CPP_MIN_LOG_LEVEL="2")
        env.update(extra or {})
        return env

    def cli(self, cache, *args, expect=None, extra=None):
        """(seconds, stdout, stderr) of ``envrepro ARGS``; RuntimeError when it fails."""
        argv = [sys.executable, "-m", "envrepro"] + [str(a) for a in args]
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=str(self.cwd), env=self.env(cache, extra), capture_output=True, text=True)
        secs = time.perf_counter() - t0
        if proc.returncode != 0 or (expect and expect not in proc.stdout):
            raise RuntimeError(f"{self.label}: envrepro {' '.join(str(a) for a in args[:1])} failed "
                               f"(exit {proc.returncode}):\n" + (proc.stdout + proc.stderr)[-3000:])
        return secs, proc.stdout, proc.stderr

    def where(self, cache):
        """Where this side's envrepro and its templates come from (a sanity check)."""
        code = ("import envrepro, envrepro.images as i, envrepro.runtime as r; "
                "print(envrepro.__file__); print(i.__file__); print(r.__file__)")
        out = subprocess.run([sys.executable, "-c", code], cwd=str(self.cwd), env=self.env(cache),
                             capture_output=True, text=True, check=True).stdout.split()
        return [Path(p).resolve() for p in out]


def build_steps(stderr):
    """{step: seconds} from the ``[ ok ] STEP ... (X s)`` lines a build prints on stderr."""
    out = {}
    for line in stderr.splitlines():
        m = re.match(r"^\[ ok \] (.*) \((\d+(?:\.\d+)?) s\)$", line.strip())
        if m:
            name = next((short for prefix, short in STEPS if m.group(1).startswith(prefix)), m.group(1)[:40])
            out[name] = out.get(name, 0.0) + float(m.group(2))
    return out


def built_tag(stderr, side):
    """The environment image a run built (``Building envrepro-env:KEY ...`` on stderr): each tree
    computes its own key (the same one when the templates and the key's fields did not change)."""
    m = re.search(r"^Building (%s:[0-9a-f]+) " % re.escape(spec.IMAGE_REPO), stderr, re.M)
    if not m:
        raise RuntimeError(f"{side.label}: `envrepro run` built no image (it was there already?):\n{stderr[-2000:]}")
    return m.group(1)


def abba(i, sides):
    """Rep ``i``'s order: A B, then B A, ..."""
    return sides if i % 2 == 0 else sides[::-1]


def med(xs):
    return statistics.median(xs) if xs else float("nan")


# -- the captures ------------------------------------------------------------------------------
def save_model(work):
    """The seed model, saved and captured (with hashes) by this tree's envrepro: under the Python
    3.8 + TF 2.4.1 venv when the tests made it, else under this interpreter's TensorFlow."""
    py = lb.find_py38() or sys.executable
    out = work / "seed"
    env = {k: v for k, v in os.environ.items() if k not in ("ENVREPRO_OFFLINE",)}
    # this tree's envrepro whatever the venv's own editable install points at
    env.update(PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([py, "custom_layer_model.py", str(out)], cwd=str(ROOT / "examples"), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = [p for p in (out / "custom_model", out / "custom_model.keras") if layout.sidecar_for(p).is_dir()]
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"saving the seed model under {py} failed:\n" + proc.stdout[-3000:])
    return found[0], py


def small_capture(model, dest):
    """A copy of ``model``'s capture whose lock is SMALL_LOCK, for Python SMALL_PYTHON."""
    dest.mkdir(parents=True)
    copy = dest / model.name
    (shutil.copytree if model.is_dir() else shutil.copy2)(model, copy)
    side = layout.sidecar_for(copy)
    shutil.copytree(layout.sidecar_for(model), side)
    cap = manifest.read(side)
    cap.lock_path.write_text(SMALL_LOCK, encoding="utf-8")
    data = dict(cap.data)
    data["python"] = dict(data.get("python") or {}, version=SMALL_PYTHON, implementation_version=SMALL_PYTHON)
    data["lock"] = dict(data.get("lock") or {}, sha256=hashlib.sha256(SMALL_LOCK.encode()).hexdigest(),
                        distributions=2, sdist_only=["termcolor"], top_level=["six", "termcolor"],
                        missing_hashes=[])
    writer.write_manifest(side, data)
    return copy, manifest.read(side)      # verifies the rewritten file hashes


# -- images ------------------------------------------------------------------------------------
def heavy_of(engine, tag):
    labels = ((engine.inspect_image(tag) or {}).get("Config") or {}).get("Labels") or {}
    heavy = labels.get(spec.HEAVY_LABEL)
    return f"envrepro-heavy:{heavy}" if heavy else None


def remove(engine, ref, leftovers=None):
    try:
        engine.remove_image(ref, force=True)
    except EnvreproError as e:
        if leftovers is not None:
            leftovers.append(f"{ref} ({e.what.splitlines()[0][:80]})")


def remove_env(engine, tag, leftovers=None):
    """The environment image and the closure image it stands on (this run's own: unique keys);
    the closure image's tag, if any."""
    heavy = heavy_of(engine, tag)
    remove(engine, tag, leftovers)
    if heavy:
        remove(engine, heavy, leftovers)
    return heavy


# -- main --------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", default=BASELINE, help=f"baseline revision (default {BASELINE})")
    ap.add_argument("--reps", type=int, help="builds and serve self-checks per side (default 3, --quick 1); "
                                             "warm loads per side: twice that, at least 3")
    ap.add_argument("--quick", action="store_true", help="1 build per side, 3 loads, no serve row")
    ap.add_argument("--no-serve", action="store_true", help="skip the serve self-check row")
    ap.add_argument("--keep", action="store_true", help="keep the worktree, caches and images it made")
    args = ap.parse_args(argv)
    reps = args.reps or (1 if args.quick else 3)
    loads = max(3, 2 * reps)
    serve_row = not (args.quick or args.no_serve)

    try:
        engine = DockerEngine().connect()
    except EnvreproError as e:
        print(f"\nHardening benchmark skipped: {e.what}")
        return 0
    try:
        base_rev = git("rev-parse", "--verify", "--short", f"{args.against}^{{commit}}")
    except subprocess.CalledProcessError:
        print(f"\nHardening benchmark skipped: {args.against} is not a commit of this repository")
        return 0
    head_rev = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--", "envrepro", "images"))

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="envrepro-hardeningbench-"))
    pid = os.getpid()
    tree = work / "baseline"
    made, leftovers = [], []          # image refs this run made, removed at the end
    small_heavy = set()               # the small lock's closure images (removed with its image)
    small_tags = set()                # the small lock's environment images (this tree's key, the other's)
    bench_base = None
    try:
        say(f"worktree of {base_rev} in {tree}")
        git("worktree", "add", "--detach", str(tree), base_rev)
        # the baseline's templates: `envrepro.images` is the top-level images/ folder, which the
        # dev venv's editable install maps to THIS checkout; a link makes it the baseline's own
        (tree / "envrepro" / "images").symlink_to("../images", target_is_directory=True)
        run_dir = work / "cwd"
        run_dir.mkdir()
        head = Side("head", f"HEAD {head_rev}" + (" + edits" if dirty else ""), ROOT, run_dir)
        base = Side("base", f"baseline {base_rev}", tree, run_dir)
        sides = (head, base)
        for s in sides:
            where = s.where(work / "xdg-where")
            if not all(str(p).startswith(str(s.tree.resolve()) + os.sep) for p in where):
                raise RuntimeError(f"{s.label}: envrepro does not come from {s.tree} alone: {where}")

        say(f"saving + capturing the seed model (hashes from the index) with {head.label}")
        t = time.perf_counter()
        seed, seed_python = save_model(work)
        t_seed = time.perf_counter() - t
        cap = manifest.read(layout.sidecar_for(seed))
        seed_base = bases.resolve_base(cap)
        for b in {seed_base, f"python:{bases.python_xy(SMALL_PYTHON)}-slim"}:
            if not engine.inspect_image(b):
                print(f"\nHardening benchmark skipped: base image {b} not present "
                      "(`make standins` builds a local stand-in)")
                return 0
        small, small_cap = small_capture(seed, work / "small")
        # a bench-only tag of the stand-in: the small lock's keys are this run's alone
        bench_base = f"envrepro-bench-base:hardening-{pid}"
        engine.api.tag(f"python:{bases.python_xy(SMALL_PYTHON)}-slim", *bench_base.split(":"))
        small_tag = spec.image_tag(spec.capture_key(small_cap, bench_base, small_cap.lock))
        small_env = {"ENVREPRO_BASE_IMAGE": bench_base}
        small_tags.add(small_tag)

        def built(err, s):
            tag = built_tag(err, s)
            small_tags.add(tag)
            return tag

        # -- 1 + 2: cold build, then rebuild with the wheelhouse warm ---------------------------
        cold = {s.name: [] for s in sides}
        warm = {s.name: [] for s in sides}
        steps = {(row, s.name): [] for row in ("cold", "warm") for s in sides}
        rebuilt = {s.name: [] for s in sides}   # did a warm rebuild build the sdist again?
        for i in range(reps):
            for s in abba(i, sides):
                cache = work / f"xdg-{s.name}-build-{i}"
                for tag in small_tags:                   # nothing left from a failed run
                    remove_env(engine, tag)
                say(f"build #{i + 1}, {s.label}: cold (empty wheelhouse, no image)")
                secs, _, err = s.cli(cache, "run", small, "--", "python", "-c", "pass", extra=small_env)
                steps["cold", s.name].append(build_steps(err))
                cold[s.name].append(secs)
                small_heavy.add(remove_env(engine, built(err, s), leftovers))
                say(f"build #{i + 1}, {s.label}: again, wheelhouse warm, no image")
                secs, _, err = s.cli(cache, "run", small, "--", "python", "-c", "pass", extra=small_env)
                steps["warm", s.name].append(build_steps(err))
                rebuilt[s.name].append("sdist builds" in steps["warm", s.name][-1])
                warm[s.name].append(secs)
                small_heavy.add(remove_env(engine, built(err, s), leftovers))
                if not args.keep:
                    shutil.rmtree(cache, ignore_errors=True)

        # -- 3: warm load -------------------------------------------------------------------------
        heavy_before = {t for img in engine.api.images(name="envrepro-heavy") for t in img.get("RepoTags") or []}
        first, rebuilt_seed = {}, []

        def untimed_load(s):
            """``load --json`` (builds the image when missing); the images it built join ``made``."""
            secs, out, _ = s.cli(work / f"xdg-{s.name}-warm", "load", "--json", seed)
            report = json.loads(out)
            tag, source = report["image"]["tag"], report["image"]["source"]
            if source == "built":
                made.append(tag)
                heavy = heavy_of(engine, tag)
                if heavy and heavy not in heavy_before and heavy not in made:
                    made.append(heavy)
            return secs, tag, source

        for s in sides:
            say(f"first load, {s.label} (not timed: builds the seed's image if it is missing)")
            first[s.name] = untimed_load(s)
        load_t = {s.name: [] for s in sides}
        for i in range(loads):
            for s in abba(i, sides):
                if not engine.inspect_image(first[s.name][1]):    # removed meanwhile (shared engine)
                    rebuilt_seed.append(f"{s.label}: {first[s.name][1]} gone before load #{i + 1}, "
                                        f"{untimed_load(s)[2]} again (not timed)")
                load_t[s.name].append(s.cli(work / f"xdg-{s.name}-warm", "load", seed, expect="result: OK")[0])

        # -- 4: serve self-check ------------------------------------------------------------------
        serve_t = {s.name: [] for s in sides}
        verdicts = {s.name: [] for s in sides}
        if serve_row:
            for i in range(reps):
                for s in abba(i, sides):
                    tag = f"envrepro-serve:hardening-bench-{pid}-{s.name}-{i}"
                    made.append(tag)
                    say(f"serve self-check #{i + 1}, {s.label}")
                    secs, out, _ = s.cli(work / f"xdg-{s.name}-warm", "build", "--serve", seed, "-t", tag, "--json")
                    result = json.loads(out)
                    if result.get("tag") != tag:
                        raise RuntimeError(f"{s.label}: the serving image was not verified: {out[-2000:]}")
                    serve_t[s.name].append(secs)
                    verdicts[s.name].append(((result.get("proof") or {}).get("verdict")) or "?")
                    remove(engine, tag)
        wall = time.perf_counter() - t_start

        # -- the table ----------------------------------------------------------------------------
        def row(name, d, digits):
            h, b = med(d["head"]), med(d["base"])
            return (name, f"{h:.{digits}f} s", f"{b:.{digits}f} s", h / b)

        rows = [row(f"cold build, empty wheelhouse (median of {reps})", cold, 1),
                row(f"rebuild, wheelhouse warm, no image (median of {reps})", warm, 1),
                row(f"warm load, image present (median of {loads})", load_t, 2)]
        if serve_row:
            rows.append(row(f"serve self-check, build --serve (median of {reps})", serve_t, 1))
        print(f"\nHardening benchmark: {head.label} / {base.label} (issue 19), side by side in this run, "
              "ABBA order")
        print(f"  rows 1-2: six (wheel) + termcolor (sdist) on python:{bases.python_xy(SMALL_PYTHON)}-slim; "
              f"rows 3-4: seed model, TF {cap.get('frameworks.tensorflow')}, Python "
              f"{cap.get('python.version')}, base {seed_base}")
        w = max(len(r[0]) for r in rows)
        hw = max(9, len(head.label.split()[0] + " " + head_rev))
        print(f"  {'':{w}}  {'HEAD':>{hw}}  {'baseline':>9}  {'ratio':>5}")
        for name, a, b, ratio in rows:
            print(f"  {name.ljust(w)}  {a:>{hw}}  {b:>9}  {ratio:5.2f}")
        print("  ratio: HEAD / baseline (reported; no goal)")
        print("\n  details")
        for title, d in (("cold builds", cold), ("warm rebuilds", warm), ("warm loads", load_t),
                         ("serve self-checks", serve_t)):
            if d["head"]:
                print(f"    {title}: HEAD " + ", ".join(f"{x:.2f}" for x in d["head"])
                      + " s; baseline " + ", ".join(f"{x:.2f}" for x in d["base"]) + " s")
        for row in ("cold", "warm"):
            names = [n for _, n in STEPS if any(n in d for s in sides for d in steps[row, s.name])]
            print(f"    {row} build steps, median HEAD / baseline: " + "; ".join(
                f"{n} {med([d.get(n, 0.0) for d in steps[row, 'head']]):.1f} / "
                f"{med([d.get(n, 0.0) for d in steps[row, 'base']]):.1f} s" for n in names))
        print("    warm rebuilds that built termcolor again: " + ", ".join(
            f"{s.label.split()[0]} {sum(rebuilt[s.name])} of {len(rebuilt[s.name])}" for s in sides))
        for line in rebuilt_seed:
            print("    " + line)
        if serve_row:
            print("    serve self-check verdicts: " + "; ".join(
                f"{s.label.split()[0]} {', '.join(verdicts[s.name])}" for s in sides))
        for s in sides:
            secs, tag, source = first[s.name]
            print(f"    first load ({s.label}, not timed): {secs:.1f} s, image {tag} {source}")
        print(f"    seed saved + captured under {seed_python} in {t_seed:.1f} s; whole benchmark "
              f"{wall:.0f} s (before cleanup)")
        return 0
    finally:
        if args.keep:
            say(f"kept {work} (worktree {tree}), images {', '.join(made)}")
        else:
            for tag in sorted(small_tags):
                small_heavy.add(remove_env(engine, tag, leftovers))
            # environment images before the closure images they stand on
            for ref in made + sorted(h for h in small_heavy if h):
                if engine.inspect_image(ref):
                    remove(engine, ref, leftovers)
            if bench_base:
                try:
                    engine.api.remove_image(bench_base)      # the tag only: the stand-in stays
                except Exception as e:  # noqa: BLE001 - reported, never fatal
                    leftovers.append(f"{bench_base} ({e})")
            try:
                git("worktree", "remove", "--force", str(tree))
            except subprocess.CalledProcessError:
                pass
            git("worktree", "prune")
            shutil.rmtree(work, ignore_errors=True)
            if leftovers:
                say("could not remove: " + "; ".join(leftovers))


if __name__ == "__main__":
    sys.exit(main())
