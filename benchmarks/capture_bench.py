"""Capture cost beside model.save, for the custom-layer example, offline (no hashing).

Goal (issue: capture): the capture adds at most 0.5 s and at most 25% of the save time.
Measured side by side in one run, interleaved, median of N.
"""
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["ENVREPRO_OFFLINE"] = "1"
os.environ["ENVREPRO_QUIET"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import tensorflow as tf  # noqa: E402

import envrepro  # noqa: E402
from custom_layers import MyCustomLayer  # noqa: E402


def build():
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(16,)),
        tf.keras.layers.Dense(32, activation="relu"),
        MyCustomLayer(units=64),
        tf.keras.layers.Dense(1),
    ])
    model.compile(optimizer="adam", loss="mse")
    return model


def main(reps=7):
    model = build()
    ext = ".keras" if tf.keras.__version__.startswith("3") else ""
    work = Path(tempfile.mkdtemp(prefix="envrepro-bench-"))
    saves, captures = [], []
    try:
        for i in range(reps + 1):
            path = work / f"m{i}{ext}"
            t = time.perf_counter()
            model.save(str(path))
            t_save = time.perf_counter() - t
            t = time.perf_counter()
            envrepro.capture(str(path), model=model)
            t_cap = time.perf_counter() - t
            if i:  # the first round warms caches (imports, graph tracing)
                saves.append(t_save)
                captures.append(t_cap)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s, c = statistics.median(saves), statistics.median(captures)
    rows = [
        ("model.save (custom-layer example)", f"{s:.3f} s", ""),
        ("envrepro capture, offline", f"{c:.3f} s", ""),
        ("capture / save", f"{c / s:.2f}", "goal <= 0.25 " + ("OK" if c / s <= 0.25 else "MISSED")),
        ("capture added", f"{c:.3f} s", "goal <= 0.5 s " + ("OK" if c <= 0.5 else "MISSED")),
    ]
    print(f"\nCapture benchmark (TF {tf.__version__}, Python {sys.version.split()[0]}, median of {reps})")
    w = max(len(r[0]) for r in rows)
    for name, val, goal in rows:
        print(f"  {name.ljust(w)}  {val:>9}  {goal}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
