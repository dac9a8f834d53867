"""Where the bytes come from (the wheelhouse builder), beside a naive Dockerfile build of the same
lock, measured side by side in one run on the seed model's TF 2.4.1 lock (Python 3.8):

1. cold build: empty wheelhouse, no pip cache, no closure image / naive ``FROM python:3.8-slim``
   + ``pip install --require-hashes -r requirements.lock``, no layer cache. Goal <= 1.0.
2. the same lock again after ``envrepro images prune`` removed its environment image (the
   wheelhouse warm; the closure image stays, it is build cache) / naive cold. Goal <= 0.3. And
   after ``images prune --cache`` (closure image removed too: only the wheelhouse is warm): the
   whole lock installed again from local files, reported.
3. disk the engine uses for one environment (``docker system df``'s layer total before and after
   the build) / the bytes the image adds to its base, for the wheelhouse builder and for the
   Dockerfile builder (which keeps its builder stage as cache). Goal <= 1.05 (wheelhouse).
4. final image size / naive image size. Goal <= 1.0.
5. ``envrepro bundle`` written here, then ``envrepro load FILE.tar`` on an engine without the
   image (nothing else changes) / a cold build followed by the same load. Reported.

Everything it creates is removed at the end (never the base image).

    python benchmarks/build_bench.py [--keep]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import load_bench as lb  # noqa: E402
from envrepro.image import bases, ensure as images, spec  # noqa: E402
from envrepro.packages.pipconfig import host_pip_settings  # noqa: E402
from envrepro.engine.docker import DockerEngine  # noqa: E402
from envrepro.errors import EnvreproError  # noqa: E402
from envrepro.sidecar import layout, manifest  # noqa: E402


def say(msg):
    print(f"[build_bench] {msg}", file=sys.stderr, flush=True)


def layers_bytes(engine):
    return int(engine.api.df().get("LayersSize") or 0)


def df_text():
    out = subprocess.run(["docker", "system", "df"], capture_output=True, text=True).stdout
    return "\n".join("      " + line for line in out.strip().splitlines())


def remove_env(engine, tag, cache=True):
    """What `envrepro images prune` removes for an unused environment: its image; with ``cache``
    (`prune --cache`) also the closure image no other environment stands on."""
    heavy = (((engine.inspect_image(tag) or {}).get("Config") or {}).get("Labels") or {}).get("org.envrepro.heavy")
    engine.remove_image(tag, force=True)
    if heavy and cache:
        engine.remove_image(f"envrepro-heavy:{heavy}", force=True)


def build(engine, cap, variant, cache_home, builder="wheelhouse", nocache=True):
    os.environ["XDG_CACHE_HOME"] = str(cache_home)
    os.environ["ENVREPRO_BUILDER"] = builder
    t0 = time.perf_counter()
    info = images.ensure_image(cap, engine, nocache=nocache, runtime_version=variant, on_progress=lambda line: None)
    secs = time.perf_counter() - t0
    assert info.source == "built", info.source
    return secs, info


def cli(*args, env=None):
    t0 = time.perf_counter()
    proc = subprocess.run(lb.envrepro_cmd() + [str(a) for a in args], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})))
    if proc.returncode != 0:
        raise RuntimeError(f"envrepro {args[0]} failed:\n" + (proc.stdout + proc.stderr)[-3000:])
    return time.perf_counter() - t0, proc.stdout


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    py38 = lb.find_py38()
    if not py38:
        print("\nBuild benchmark skipped: no Python 3.8 + TF 2.4.1 env (`make test` builds it)")
        return 0
    try:
        engine = DockerEngine().connect()
    except EnvreproError as e:
        print(f"\nBuild benchmark skipped: {e.what}")
        return 0
    work = Path(tempfile.mkdtemp(prefix="envrepro-buildbench-"))
    pid = os.getpid()
    made = []
    try:
        seed = lb.save_seed(py38, work / "seed")
        cap = manifest.read(layout.sidecar_for(seed))
        base = bases.resolve_base(cap)
        if not engine.inspect_image(base):
            print(f"\nBuild benchmark skipped: base image {base} not present (`make standins`)")
            return 0
        cert = host_pip_settings().cert or (lb.DEFAULT_CA if os.path.isfile(lb.DEFAULT_CA) else None)
        ca_bytes = Path(cert).read_bytes() if cert else b""
        base_size = lb.image_size(engine, base)
        df_before = df_text()

        # 1 + 3 + 4: cold builds, alternating order; disk measured around the envrepro build alone
        say("cold builds: envrepro (empty wheelhouse) and naive, side by side")
        naive_tag = f"{lb.NAIVE_REPO}:build-{pid}"
        made.append(naive_tag)
        before = layers_bytes(engine)
        t_env, info = build(engine, cap, f"bb-{pid}-w", work / "cache-cold")
        disk_env = layers_bytes(engine) - before
        made.append(info.tag)
        t_naive, _, _ = lb.build_naive(engine, cap, naive_tag, ca_bytes)
        size_env, size_naive = lb.image_size(engine, info.tag), lb.image_size(engine, naive_tag)
        df_after = df_text()

        # 2: the same lock after `images prune` (the closure image stays: build cache), then after
        # `images prune --cache` (only the wheelhouse is warm)
        remove_env(engine, info.tag, cache=False)
        say("the same lock after images prune (closure image kept, wheelhouse warm)")
        t_warm, _ = build(engine, cap, f"bb-{pid}-w", work / "cache-cold", nocache=False)
        remove_env(engine, info.tag, cache=True)
        say("the same lock after images prune --cache (only the wheelhouse warm)")
        t_warm_all, _ = build(engine, cap, f"bb-{pid}-w", work / "cache-cold")

        # 3 (Dockerfile builder, for comparison): its disk per environment
        say("Dockerfile builder, for the disk comparison")
        before = layers_bytes(engine)
        t_dockerfile, info_d = build(engine, cap, f"bb-{pid}-d", work / "cache-df", builder="dockerfile")
        disk_dockerfile = layers_bytes(engine) - before
        size_dockerfile = lb.image_size(engine, info_d.tag)
        made.append(info_d.tag)
        os.environ["ENVREPRO_BUILDER"] = "wheelhouse"

        # 5: bundle, then load it on an engine without the image, vs cold build + load
        say("bundle + load FILE.tar vs cold build + load")
        os.environ["XDG_CACHE_HOME"] = str(work / "cache-real")
        real = spec.image_tag(spec.capture_key(cap, base, cap.lock_path.read_text()))
        remove_env(engine, real)                                   # an earlier run's, if any
        made.append(real)
        t_load_built, _ = cli("load", "--json", seed)             # cold wheelhouse: build + load
        bundle = work / "seed.tar"
        t_bundle, _ = cli("bundle", seed, "-o", bundle)
        remove_env(engine, real)
        t_from_bundle, out = cli("load", bundle, "--json")
        assert json.loads(out)["image"]["bundle"] == str(bundle)
        bundle_mb = bundle.stat().st_size / 1e6

        rows = [
            ("cold build, empty wheelhouse / naive cold", f"{t_env:.1f} s", f"{t_naive:.1f} s", t_env / t_naive, 1.0),
            ("same lock after images prune, wheelhouse warm / naive cold", f"{t_warm:.1f} s",
             f"{t_naive:.1f} s", t_warm / t_naive, 0.3),
            ("same lock after images prune --cache (wheelhouse only) / naive", f"{t_warm_all:.1f} s",
             f"{t_naive:.1f} s", t_warm_all / t_naive, None),
            ("engine disk per environment / its layers", lb.mb(disk_env), lb.mb(size_env - base_size),
             disk_env / max(1, size_env - base_size), 1.05),
            ("final image size / naive image", lb.mb(size_env), lb.mb(size_naive), size_env / size_naive, 1.0),
            ("bundle load (docker load + load) / cold build + load", f"{t_from_bundle:.1f} s",
             f"{t_load_built:.1f} s", t_from_bundle / t_load_built, None),
        ]
        print(f"\nBuild benchmark (seed model, TF {cap.get('frameworks.tensorflow')}, Python "
              f"{cap.get('python.version')}, base {base}; side by side in this run)")
        w = max(len(r[0]) for r in rows)
        print(f"  {'':{w}}  {'envrepro':>9}  {'baseline':>9}  {'ratio':>5}  goal")
        for name, a, b, ratio, goal in rows:
            print(f"  {name.ljust(w)}  {a:>9}  {b:>9}  {ratio:5.2f}  "
                  + (lb.verdict(ratio, goal) if goal is not None else "(reported)"))
        print("\n  details")
        wh = info.wheelhouse or {}
        print(f"    cold wheelhouse: {wh.get('downloaded')} files downloaded, built from source "
              f"{', '.join(wh.get('built_from_source') or []) or 'none'}, {wh.get('seconds')} s of {t_env:.1f} s")
        print(f"    Dockerfile builder (for comparison): cold {t_dockerfile:.1f} s, image {lb.mb(size_dockerfile)}, "
              f"engine disk {lb.mb(disk_dockerfile)} = {disk_dockerfile / max(1, size_dockerfile - base_size):.2f}x "
              "its layers (the builder stage it keeps)")
        print(f"    bundle {bundle_mb:.0f} MB written in {t_bundle:.1f} s")
        print("    docker system df before:\n" + df_before + "\n    after the cold builds:\n" + df_after)
        return 0
    finally:
        if not args.keep:
            for ref in made:
                try:
                    remove_env(engine, ref)
                except EnvreproError:
                    pass
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
