"""The resume check end to end (runtime/resume.py): a model trained with Adam under Python 3.8 +
tensorflow-cpu 2.4.1, captured with ``--resume-check``, and ``envrepro load`` replaying the
recorded training step in the reproduced environment, in Docker."""
from __future__ import annotations

import os
import subprocess
import textwrap

import pytest

from support import installed_cli as cli  # noqa: E402

from envrepro.fsutil import sha256_tree
from envrepro.sidecar import layout, manifest

pytestmark = pytest.mark.e2e


TRAIN = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    K = tf.keras
    m = K.Sequential([K.Input(shape=(8,)), K.layers.Dense(16, activation="relu"), K.layers.Dropout(0.3),
                      K.layers.Dense(1)])
    m.compile(optimizer=K.optimizers.Adam(1e-3), loss="mse")
    rng = np.random.RandomState(0)
    m.fit(rng.rand(64, 8).astype("float32"), rng.rand(64, 1).astype("float32"), batch_size=8, verbose=0)
    m.save(sys.argv[1])
''')


def test_captured_training_step_replays_identically_in_the_container(py38_tf24, standin_38, tmp_path):
    model = tmp_path / "resumable.h5"
    proc = subprocess.run([py38_tf24, "-c", TRAIN, str(model)], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = sha256_tree(model)
    out = cli("capture", model, "--python", py38_tf24, "--resume-check")
    assert out.returncode == 0, out.stderr[-3000:]
    assert sha256_tree(model) == before
    recorded = manifest.read(layout.sidecar_for(model)).data["resume_check"]
    assert (recorded["iterations_before"], recorded["iterations"]) == (8, 9) and recorded["weights_file"]
    out = cli("load", model)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "TensorFlow 2.4.1" in out.stdout
    assert "training resumes identically (loss " in out.stdout and "iterations 9 vs 9)  OK" in out.stdout
    assert "result: OK - the model loads and reproduces its reference prediction, and training resumes identically" \
        in out.stdout
    assert sha256_tree(model) == before
