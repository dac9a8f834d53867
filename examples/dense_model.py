"""Example 1 of the seed article: a plain Dense model, saved and reloaded.

    python examples/dense_model.py OUT_DIR
"""
import numpy as np
import tensorflow as tf

from _common import hook, out_path

hook()
path = out_path("demo-out", "dense_model", "dense_model.keras")
model = tf.keras.Sequential([
    tf.keras.Input(shape=(10,)),
    tf.keras.layers.Dense(32, activation="relu"),
    tf.keras.layers.Dense(1),
])
model.save(path)
reloaded = tf.keras.models.load_model(path)
x = np.random.RandomState(0).rand(4, 10).astype("float32")
print("saved", path, "max |diff| after reload:", float(np.abs(model.predict(x) - reloaded.predict(x)).max()))
