"""The custom layer of the seed article: a Dense-like layer with its own weights.

In TF 2.4, ``add_weight`` needs a ``name=`` or saving fails with
``'NoneType' object has no attribute 'replace'``.
"""
import tensorflow as tf


class MyCustomLayer(tf.keras.layers.Layer):
    def __init__(self, units=64, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(name="kernel", shape=(int(input_shape[-1]), self.units),
                                 initializer="random_normal", trainable=True)
        self.b = self.add_weight(name="bias", shape=(self.units,), initializer="zeros", trainable=True)
        super().build(input_shape)

    def call(self, inputs):
        return tf.matmul(inputs, self.w) + self.b

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config
