"""Example 3 of the seed article: compiled with Adam(learning_rate=0.001), fitted one epoch and
saved with its optimizer state (H5).

    python examples/adam_model.py OUT_DIR
"""
import numpy as np
import tensorflow as tf

from _common import hook, out_path

hook()
path = out_path("demo-out", "adam_model.h5", "adam_model.h5")
rng = np.random.RandomState(42)
x, y = rng.rand(256, 8).astype("float32"), rng.rand(256, 1).astype("float32")
model = tf.keras.Sequential([
    tf.keras.Input(shape=(8,)),
    tf.keras.layers.Dense(16, activation="relu"),
    tf.keras.layers.Dense(1),
])
model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=0.001), loss="mse")
model.fit(x, y, epochs=1, batch_size=32, verbose=0)
model.save(path)
print("saved", path, "optimizer iterations:", int(model.optimizer.iterations.numpy()))
