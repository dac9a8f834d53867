"""`make bench`: every benchmark, each printing its table of ratios measured side by side.

The capture benchmark runs under this interpreter (the dev venv's TensorFlow) and, when the
test suite has built it, under the Python 3.8 + TF 2.4.1 environment of the seed article.
"""
import glob
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
cache = os.environ.get("ENVREPRO_DEV_CACHE", os.path.expanduser("~/.cache/envrepro-dev"))
pythons = [sys.executable] + sorted(glob.glob(os.path.join(cache, "venv38-tf241-*", "bin", "python")))[:1]

rc = 0
for py in pythons:
    rc |= subprocess.call([py, str(HERE / "capture_bench.py")])
if (HERE / "load_bench.py").exists():
    rc |= subprocess.call([sys.executable, str(HERE / "load_bench.py")] + sys.argv[1:])
rc |= subprocess.call([sys.executable, str(HERE / "build_bench.py")])
rc |= subprocess.call([sys.executable, str(HERE / "hardening_bench.py")])
rc |= subprocess.call([sys.executable, str(HERE / "serve_bench.py")])
sys.exit(rc)
