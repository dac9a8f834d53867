"""Small stand-ins for Keras objects, enough for runtime/reference.py and textinputs.py: symbolic
inputs with a history, layers with outbound nodes and vocabularies, and a model that is called
with numpy arrays (no TensorFlow). Layer classes are matched by name, as the runtime matches
them."""
import numpy as np


class Node:
    def __init__(self, operation):
        self.operation = operation


class History:
    def __init__(self, operation):
        self.operation = operation


class Layer:
    def __init__(self, name):
        self.name = name
        self._outbound_nodes = []

    def feeds(self, *layers):
        self._outbound_nodes.extend(Node(layer) for layer in layers)
        return self


class InputLayer(Layer):
    pass


class Dense(Layer):
    pass


class TextVectorization(Layer):
    def __init__(self, name, tokens, split="whitespace", standardize="lower_and_strip_punctuation"):
        super().__init__(name)
        self.tokens, self.split, self.standardize = list(tokens), split, standardize
        self._lookup_layer = StringLookup(name + "_lookup", tokens)

    def get_vocabulary(self):
        return ["", "[UNK]"] + [np.str_(t) for t in self.tokens]

    def get_config(self):
        return {"name": self.name, "split": self.split, "standardize": self.standardize}


class StringLookup(Layer):
    oov_token, mask_token = "[UNK]", None

    def __init__(self, name, tokens):
        super().__init__(name)
        self.tokens = list(tokens)

    def get_vocabulary(self):
        return ["[UNK]"] + list(self.tokens)


class IntegerLookup(Layer):
    oov_token, mask_token = -1, None

    def __init__(self, name, tokens):
        super().__init__(name)
        self.tokens = list(tokens)

    def get_vocabulary(self):
        return [-1] + [np.int64(t) for t in self.tokens]


class Tensor:
    """A symbolic input: shape (None for the batch), dtype name, and the layer that made it."""

    def __init__(self, name, shape, dtype="float32"):
        self.name, self.shape, self.dtype = name, shape, dtype
        self.layer = InputLayer(name)
        self._keras_history = History(self.layer)


class Model:
    """Inputs in a structure (one Tensor, a list or a dict), the layers it holds, and ``fn``
    computing the outputs from what the model is called with."""

    def __init__(self, inputs, layers, fn, output_names=None):
        self._inputs_struct = inputs
        self._layers = list(layers)
        self.fn = fn
        self.calls = []
        if output_names:
            self.output_names = output_names

    @property
    def inputs(self):
        s = self._inputs_struct
        return list(s.values()) if isinstance(s, dict) else list(s) if isinstance(s, list) else [s]

    def _flatten_layers(self, include_self=True, recursive=True):
        return list(self._layers)

    def __call__(self, x, training=False):
        self.calls.append(x)
        return self.fn(x)

    def predict(self, x, verbose=0):
        return self(x)
