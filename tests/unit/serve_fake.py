"""A fake model for the model server's tests, numpy only, and a script that serves it.

``FakeServable`` has what the server needs of a servable (serve/model.py Servable): a signature, a
``predict`` over ``{input name: array}``, ``warmup`` and ``info``. It takes the runtime's
serve.tensors module, imported under whichever name the caller uses (``envrepro.runtime`` in
process, ``envrepro_runtime`` in a subprocess). Run as a script (any Python >= 3.6 with numpy):

    python serve_fake.py RUNTIME_DIR [--port 0 ...]      # settings from ENVREPRO_SERVE_*

it serves the fake through the real entry code (serve/main.py: run, signals, drain); FAKE_DELAY
makes each prediction sleep that many seconds, FAKE_MULTI=1 serves the multi-input model and
FAKE_WARM_FAIL=1 makes the warm-up fail.
"""
import os
import sys
import threading
import time

import numpy as np

FAIL_VALUE = 666.0   # a prediction whose first input holds it raises
# ... and these kill the worker thread, as a model calling sys.exit() would
DEATH_VALUES = {777.0: SystemExit, 778.0: KeyboardInterrupt, 779.0: GeneratorExit}


class FakeServable(object):
    """y = 2 * x[:, :2] (x float32 [-1, 3]); the multi model adds int and string inputs and
    outputs. ``gate`` (an Event) holds the warm-up until set; ``warm_fail`` makes it raise."""

    def __init__(self, tensors, delay=0.0, multi=False, gate=None, warm_fail=False):
        spec, sig = tensors.TensorSpec, tensors.Signature
        if multi:
            self.signature = sig([spec("a", "float32", [None, 3]), spec("b", "int64", [None, 2]),
                                  spec("text", "string", [None])],
                                 [spec("y", "float32", [None, 2]), spec("n", "int64", [None]),
                                  spec("echo_bytes", "string", [None])])
        else:
            self.signature = sig([spec("x", "float32", [None, 3])], [spec("y", "float32", [None, 2])])
        self.multi = multi
        self.delay = delay
        self.gate = gate
        self.warm_fail = warm_fail
        self.info = {"tensorflow": "", "keras": ""}
        self.calls = 0
        self._lock = threading.Lock()

    def warmup(self):
        if self.gate is not None:
            self.gate.wait()
        if self.warm_fail:
            raise RuntimeError("warm-up exploded\nsecond line")
        first = self.signature.inputs[0]
        inputs = {first.name: np.zeros((1, 3), "float32")}
        if self.multi:
            inputs.update(b=np.zeros((1, 2), "int64"), text=np.array([b""], dtype=object))
        self.predict(inputs)
        return ["fake warm-up done"]

    def predict(self, inputs):
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        first = inputs[self.signature.inputs[0].name]
        for value, death in DEATH_VALUES.items():
            if (first == value).any():
                raise death(3)
        if (first == FAIL_VALUE).any():
            raise RuntimeError("boom: the fake model failed\nwith a second line")
        y = (first[:, :2] * 2).astype("float32")
        if not self.multi:
            return [("y", y)]
        n = inputs["b"].sum(axis=1).astype("int64")
        echo = np.array([t + b"!" for t in inputs["text"]], dtype=object)
        return [("y", y), ("n", n), ("echo_bytes", echo)]


def in_process(serve, tensors, settings=None, **fake):
    """The real server (``serve``: serve/main.py, ``tensors``: serve/tensors.py, passed in like
    FakeServable's) on a free loopback port of this process, serving a FakeServable(**fake), once
    it is ready; ``.model`` is that fake. ``settings``: ENVREPRO_SERVE_* over the defaults."""
    environ = dict({"ENVREPRO_SERVE_HOST": "127.0.0.1", "ENVREPRO_SERVE_PORT": "0"}, **(settings or {}))
    model = FakeServable(tensors, **fake)
    s = serve.Serving(serve.options([], environ), lambda: model, "fake")
    s.listen()
    s.start_loading()
    end = time.time() + 5
    while not s.state.ready():
        if time.time() > end:
            s.drain(2)
            raise AssertionError("the fake model's server was not ready within 5 s")
        time.sleep(0.01)
    s.model = model
    return s


def _load_runtime(root):
    import importlib.util

    spec = importlib.util.spec_from_file_location("envrepro_runtime", os.path.join(root, "__init__.py"),
                                                  submodule_search_locations=[root])
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    spec.loader.exec_module(package)


def main(argv):
    _load_runtime(argv[0])
    from envrepro_runtime.serve import main as serve
    from envrepro_runtime.serve import tensors as servetensors

    fake = FakeServable(servetensors, delay=float(os.environ.get("FAKE_DELAY") or 0),
                        multi=os.environ.get("FAKE_MULTI") == "1",
                        warm_fail=os.environ.get("FAKE_WARM_FAIL") == "1")
    opts = serve.options(argv[1:], os.environ)
    return serve.run(opts, lambda: fake, opts["name"] or "fake")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
