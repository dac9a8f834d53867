"""``--gpus`` on a tensorflow-cpu capture: the image holds TensorFlow's GPU build, and it still runs
on a machine without a GPU, with a real Docker engine and a real re-resolution of the lock.

The variant is the cheapest real one. The seed's Adam model (H5) is trained and saved with the hook
under tensorflow-cpu 2.4.1 / Python 3.8. Its GPU lock (``tensorflow==2.4.1``, the rest of the
capture as constraints, resolved with pip-tools and hashed from the index) is built on the local
``python:3.8-slim`` stand-in passed as ``--base-image``. The test machines reach no registry, so
the CUDA base of 2.4 can't be pulled. The 2.14+ variant, ``tensorflow[and-cuda]`` on
``python:3.11-slim``, was left out on purpose: its nvidia wheels are about 2.5 GB to download
(about 5 GB installed, twice over in the build's stages) on every CI run without a warm Docker
cache. Its lock is resolved for real in tests/integration/test_gpu_pypi.py, and its Dockerfile
has a golden in tests/unit/packages/test_gpu.py. This machine has no GPU, so the engine below runs
containers without ``--gpus all``; the run arguments with GPUs are unit-tested in
tests/unit/sandbox/test_run_gpus.py.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from envrepro import commands
from envrepro.image import spec
from envrepro.sandbox import report as reports
from envrepro.sidecar import layout, lockfile, manifest

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INSIDE = """
import json
from importlib import metadata
import tensorflow as tf
print(json.dumps({"dists": sorted(d.metadata["Name"].lower() for d in metadata.distributions()),
                  "cuda": tf.test.is_built_with_cuda(),
                  "gpus": len(tf.config.list_physical_devices("GPU"))}))
"""


class WithoutGpus:
    """The real engine, but containers run without ``--gpus all``: this machine has no GPU."""

    def __init__(self, engine):
        self.engine = engine

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def run(self, image, command=None, **kwargs):
        kwargs.pop("gpus", None)
        return self.engine.run(image, command, **kwargs)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """The GPU lock is resolved for real on every run (cached images stay Docker's business)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("ENVREPRO_BASE_IMAGE", "ENVREPRO_REGISTRY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def adam_model(py38_tf24, standin_38, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-seed")
    proc = subprocess.run([py38_tf24, str(EXAMPLES / "adam_model.py"), str(out)], cwd=str(EXAMPLES),
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "adam_model.h5"


def test_gpu_image_of_a_tensorflow_cpu_capture_loads_on_the_cpu(adam_model, engine, standin_38):
    cap = manifest.read(layout.sidecar_for(adam_model))
    captured = cap.lock_path.read_text()
    assert {e.name for e in lockfile.parse_lock(captured)} >= {"tensorflow-cpu"}

    report = commands.load(str(adam_model), base_image=standin_38, gpus="all", quiet=True,
                           engine_factory=lambda: WithoutGpus(engine))
    img, loader = report.image, report.loader
    assert loader["ok"] and loader["load"]["ok"], report.stderr_tail
    assert loader["versions"]["tensorflow"] == "2.4.1"
    assert loader["reference"]["allclose"] and loader["optimizer"]["ok"]
    # the lock differs from the capture's in TensorFlow only, and the report says so
    t = img["translation"]
    assert t["for"] == "Linux with GPUs" and t["from"] == "Linux"
    assert t["changes"] == ["tensorflow-cpu 2.4.1 -> tensorflow 2.4.1 (GPU build of the same version, "
                            "CUDA and cuDNN from the base image)"], t
    text = reports.render_report(report)
    assert "translated   for Linux with GPUs from a Linux capture: 1 package(s) differ" in text
    assert img["key"] != spec.capture_key(cap, standin_38, captured)     # never the CPU image
    # inside: TensorFlow's GPU build (CUDA kernels), no tensorflow-cpu, no GPU on this machine
    code, out, err = engine.run(img["tag"], ["/opt/envrepro/venv/bin/python", "-c", INSIDE],
                                environment={"TF_CPP_MIN_LOG_LEVEL": "3"}, tmpfs={"/tmp": "size=64m"},
                                stream=False)
    assert code == 0, err[-2000:]
    inside = json.loads(out.strip().splitlines()[-1])
    assert "tensorflow" in inside["dists"] and "tensorflow-cpu" not in inside["dists"]
    assert inside["cuda"] is True and inside["gpus"] == 0
