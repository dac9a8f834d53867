"""Example 2 of the seed article: a Sequential with MyCustomLayer(units=64), saved as a SavedModel
folder (TF <= 2.15) or .keras (Keras 3).

    python examples/custom_layer_model.py OUT_DIR
"""
import tensorflow as tf

from _common import hook, out_path
from custom_layers import MyCustomLayer

hook()
path = out_path("demo-out", "custom_model", "custom_model.keras")
model = tf.keras.Sequential([
    tf.keras.Input(shape=(16,)),
    tf.keras.layers.Dense(32, activation="relu"),
    MyCustomLayer(units=64),
    tf.keras.layers.Dense(1),
])
model.save(path)
print("saved", path)
