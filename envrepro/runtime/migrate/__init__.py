"""``envrepro migrate``, the half that runs inside the environments (docs/migrate.md).

Two entry points, started like the loader (launch.py): ``migrate.source`` in the capture's own
environment writes the model's architecture, weights, optimizer state, an inference SavedModel
and a sample with its prediction; ``migrate.target`` in the target environment rebuilds them
into ``NAME.keras``, ``NAME.savedmodel`` and ``NAME.onnx`` and proves each one on the sample.
Each prints one line, ``ENVREPRO-MIGRATE {json}``. Standard library, numpy and TensorFlow only,
Python 3.6 syntax, like the rest of the runtime; translate.py, addons.py and optconfig.py are
pure functions over dicts.
"""
