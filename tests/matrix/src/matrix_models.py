"""The fidelity matrix's custom objects: the user code its models need at load time.

One module for every training environment of the matrix (tests/matrix/envs.py): TF 2.4 to 2.15,
where ``tf.keras`` is Keras 2, and TF 2.21, where it is Keras 3. So it uses only what both offer:
``tensorflow as tf``, ``tf.keras`` base classes, TensorFlow ops inside ``call`` (never on symbolic
tensors outside a layer) and ``tf.keras.utils.register_keras_serializable``, which registers the
objects under the package ``matrix`` (``matrix>ScaledDense``...), so ``load_model`` finds them
without ``custom_objects`` once this module is imported.

``MatrixNetNoFromConfig`` has ``get_config`` but no ``from_config`` on purpose: saved as a
SavedModel in TF 2.4 or 2.8, ``load_model(path, custom_objects={...})`` raises ``KeyError:
'layers'`` (the inherited ``Model.from_config`` expects a functional config) and only revival from
the SavedModel's traced functions, ``load_model(path)``, loads it (docs/failures.md). It is the one
class left unregistered: registered, Keras finds it by its registered name while reviving and
``load_model(path)`` raises the same KeyError. Don't add a ``from_config`` or register it.
"""
import tensorflow as tf

register = tf.keras.utils.register_keras_serializable(package="matrix")


@register
def scaled_tanh(x):
    """The custom activation: LeCun's scaled tanh."""
    return 1.7159 * tf.tanh(0.6666 * x)


@register
def smooth_l1(y_true, y_pred):
    """The custom loss: Huber with delta 1, averaged over the last axis."""
    y_true = tf.cast(y_true, y_pred.dtype)
    diff = tf.abs(y_true - y_pred)
    per_value = tf.where(diff < 1.0, 0.5 * tf.square(diff), diff - 0.5)
    return tf.reduce_mean(per_value, axis=-1)


@register
class ScaledDense(tf.keras.layers.Layer):
    """A dense layer whose output is multiplied by a constant ``scale``: weights of its own
    (``add_weight``), an activation serialized by name, and a complete ``get_config``."""

    def __init__(self, units, scale=1.0, activation=None, **kwargs):
        super(ScaledDense, self).__init__(**kwargs)
        self.units = int(units)
        self.scale = float(scale)
        self.activation = tf.keras.activations.get(activation)

    def build(self, input_shape):
        last = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(last, self.units),
                                      initializer="glorot_uniform", trainable=True)
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros",
                                    trainable=True)
        super(ScaledDense, self).build(input_shape)

    def call(self, inputs):
        out = (tf.matmul(inputs, self.kernel) + self.bias) * self.scale
        return self.activation(out)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super(ScaledDense, self).get_config()
        config.update({"units": self.units, "scale": self.scale,
                       "activation": tf.keras.activations.serialize(self.activation)})
        return config


class _Net(tf.keras.Model):
    """The subclassed models' body: a ScaledDense with the custom activation, then a Dense head."""

    def __init__(self, units=8, **kwargs):
        super(_Net, self).__init__(**kwargs)
        self.units = int(units)
        self.hidden = ScaledDense(self.units, scale=0.5, activation=scaled_tanh)
        self.head = tf.keras.layers.Dense(1)

    def call(self, inputs):
        return self.head(self.hidden(inputs))

    def get_config(self):
        return {"units": self.units, "name": self.name}


@register
class MatrixNet(_Net):
    """A subclassed model with ``get_config`` and ``from_config``: the way Keras asks for it."""

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


class MatrixNetNoFromConfig(_Net):
    """A subclassed model with ``get_config`` but no ``from_config``, not registered (see the
    module docstring): formats other than SavedModel load it with ``custom_objects``."""
