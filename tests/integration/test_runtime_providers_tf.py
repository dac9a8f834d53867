"""runtime/providers.py on real models: a tensorflow-addons layer (``Addons>GroupNormalization``)
and optimizer (``Addons>AdamW``) in a model saved without envrepro, under Python 3.8 +
tensorflow-cpu 2.4.1 + tensorflow-addons 0.12.1, captured with ``envrepro capture --python``
and no ``--module``. The H5 used to fail (``Unknown layer: Addons>GroupNormalization``) and the
SavedModel to fall back to compile=False (its optimizer unchecked); now the probe imports
tensorflow_addons for the prefix, says so, records it like a --module, and the loader (on the
host, same interpreter) imports it too and checks the AdamW state."""
import os
import subprocess
import textwrap

import pytest

from envrepro.sidecar import layout, manifest
from support import envrepro_cli
from tf_helpers import run_loader

pytestmark = [pytest.mark.tf]

MAKE = '''
import os, sys
import numpy as np
import tensorflow as tf
import tensorflow_addons as tfa

out = sys.argv[1]
tf.random.set_seed(0)
rng = np.random.RandomState(0)
model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(8),
                             tfa.layers.GroupNormalization(groups=2), tf.keras.layers.Dense(1)])
model.compile(optimizer=tfa.optimizers.AdamW(weight_decay=1e-4, learning_rate=0.01), loss="mse")
model.fit(rng.rand(16, 4).astype("float32"), rng.rand(16, 1).astype("float32"), batch_size=8,
          verbose=0)
model.save(os.path.join(out, "addons.h5"))
model.save(os.path.join(out, "addons_sm"), save_format="tf")
'''

NOTE = ("imported tensorflow_addons (installed: tensorflow-addons 0.12.1) for the registered "
        "prefix Addons> the model's config uses (Addons>AdamW, Addons>GroupNormalization); "
        "the loader imports it too")


@pytest.fixture(scope="module")
def addons_models(py38_tf24_addons, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfa")
    proc = subprocess.run([py38_tf24_addons, "-c", textwrap.dedent(MAKE), str(folder)],
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict((name, (folder / name, envrepro_cli("capture", folder / name, "--python",
                                                    py38_tf24_addons, env={"ENVREPRO_OFFLINE": "1"})))
                for name in ("addons.h5", "addons_sm"))


@pytest.mark.parametrize("name", ["addons.h5", "addons_sm"])
def test_addons_prefix_imports_tensorflow_addons_and_the_optimizer_is_checked(
        py38_tf24_addons, addons_models, name, tmp_path):
    model, run = addons_models[name]
    assert run.returncode == 0, run.stderr[-3000:]
    cap = manifest.read(layout.sidecar_for(model))
    d = cap.data
    assert d["frameworks"]["tensorflow"] == "2.4.1"
    assert d["load"]["recipe"] == "custom_objects" and d["load"]["recipes_failed"] == []
    assert "tensorflow_addons" in d["load"]["modules"]
    assert d["requirement_modules"]["tensorflow_addons"] == "tensorflow-addons"
    assert d["load"]["custom_objects"]["Addons>GroupNormalization"].startswith("tensorflow_addons.")
    assert NOTE in d["warnings"], d["warnings"]
    assert d["optimizer"]["class"] == "AdamW" and d["reference_skipped"] is None
    code, rep = run_loader(py38_tf24_addons, cap, tmp_path)
    assert code == 0, (rep["error"], rep["mismatches"])
    assert rep["load"]["recipe"] == "custom_objects" and rep["load"]["compile"] is True
    assert rep["reference"]["allclose"] and rep["reference"]["max_abs_diff"] == 0
    assert rep["optimizer"]["ok"] is True and rep["optimizer"]["iterations"] == 2
