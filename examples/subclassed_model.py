"""The issue-8 model: TwoLayer (two_layer.py) trained with Adam and saved as a SavedModel folder,
with its optimizer (OUT/two_layer) and without it (OUT/two_layer_noopt). No hook: this is the model
a user saved without envrepro and captures with ``envrepro capture --python``. Prints, as JSON,
what this environment's own load_model does with it: the custom-objects call and revival.

    python examples/subclassed_model.py OUT_DIR      # Keras 2 only (TF <= 2.15)
    python examples/subclassed_model.py OUT_DIR --hook

With ``--hook`` the trained model is saved once, as OUT/two_layer, through ``envrepro.save`` (the
capture is made in this process), and the script prints ``{"captured": true|false}``.
"""
import json
import os
import sys

import numpy as np
import tensorflow as tf

from two_layer import TwoLayer

hook = "--hook" in sys.argv[1:]
args = [a for a in sys.argv[1:] if a != "--hook"]
out_dir = args[0] if args else "demo-out"
path = os.path.join(out_dir, "two_layer")
tf.random.set_seed(0)
model = TwoLayer(units=8)
model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="mse")
rng = np.random.RandomState(0)
model.fit(rng.rand(32, 4).astype("float32"), rng.rand(32, 1).astype("float32"), epochs=2,
          batch_size=8, verbose=0)
if hook:
    import envrepro

    print(json.dumps({"captured": envrepro.save(model, path, save_format="tf") is not None}))
    sys.exit(0)
model.save(path)
model.save(path + "_noopt", include_optimizer=False)
x = rng.rand(3, 4).astype("float32")
try:
    tf.keras.models.load_model(path, custom_objects={"TwoLayer": TwoLayer})
    custom = "loaded"
except Exception as exc:
    custom = "%s: %s" % (type(exc).__name__, exc)
revived = tf.keras.models.load_model(path)
diff = float(np.abs(revived.predict(x) - model.predict(x)).max())
print(json.dumps({"custom_objects": custom, "revived_max_diff": diff}))
