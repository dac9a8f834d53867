"""A subclassed model with ``get_config`` but no ``from_config`` (issue 8).

Saved as a SavedModel in Keras 2 (TF 2.8 here), ``load_model(path, custom_objects={"TwoLayer":
TwoLayer})`` fails with ``KeyError: 'layers'``: Keras calls the inherited ``Model.from_config``,
which expects a functional config. ``load_model(path)`` revives it from the SavedModel instead.
"""
import tensorflow as tf


class TwoLayer(tf.keras.Model):
    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = tf.keras.layers.Dense(units, activation="relu")
        self.head = tf.keras.layers.Dense(1)

    def call(self, inputs):
        return self.head(self.hidden(inputs))

    def get_config(self):
        return {"units": self.units}
