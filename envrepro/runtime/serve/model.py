"""What the model server serves: a signature and one predict call over ``{input name: array}``,
made from the Keras model the plan loads (planload.py), and its warm-up.

The prediction is the reference path's (reference.predict: ``model(x, training=False)``) unless
``predict_on_batch`` gives the same outputs (within the reference tolerance) faster: the warm-up
measures both on the warm-up input and keeps the faster. ``model.predict`` is never used for a
request: its per-call setup costs tens of milliseconds. Standard library only, Python 3.6 syntax;
numpy and TensorFlow come from the load.
"""
from __future__ import absolute_import, division, print_function

import os
import time

from ..comparison import compare
from ..reference import DEFAULT_SEED, FLOAT_TOLERANCE, _input_structure, generate_sample
from ..reference import predict as reference_predict
from ..samples import feedable
from ..savedinputs import saved_input_specs
from .tensors import Signature, TensorSpec, normalize_dtype, output_array

TIMING_RUNS = 5


class Servable(object):
    """A signature (tensors.Signature) and ``predict({input name: array}) -> [(output name,
    array)]`` in signature order. ``info`` holds what the metrics' build_info reports."""

    signature = None
    info = {}

    def predict(self, inputs):
        raise NotImplementedError

    def warmup(self):
        """One prediction on seeded inputs; returns log lines. Raises when it fails."""
        self.predict(seeded_inputs(self.signature, 1))
        return []


def seeded_inputs(signature, batch):
    """Seeded inputs for every input of ``signature`` (free dimensions: ``batch`` rows, 1
    elsewhere; empty strings for string inputs), as runtime/reference.py seeds them."""
    import numpy as np

    out = {}
    for spec in signature.inputs:
        shape = list(spec.shape if spec.shape is not None else [None])
        shape = [batch if i == 0 and d is None else (1 if d is None else d) for i, d in enumerate(shape)]
        if spec.dtype == "string":
            arr = np.empty(shape, dtype=object)
            arr.fill(b"")
        else:
            dtype = "float32" if spec.dtype == "bfloat16" else spec.dtype
            arr = generate_sample([(shape, dtype)], DEFAULT_SEED, batch)[0]
        out[spec.name] = arr
    return out


def _layer_name(tensor):
    history = getattr(tensor, "_keras_history", None)
    op = getattr(history, "operation", None) or getattr(history, "layer", None)
    if op is None and isinstance(history, tuple) and history:
        op = history[0]
    return getattr(op, "name", None)


def _shape(shape):
    if shape is None:
        return None
    try:
        return [None if d is None else int(d) for d in (shape.as_list() if hasattr(shape, "as_list") else shape)]
    except (TypeError, ValueError):
        return None


class KerasServable(Servable):
    """The loaded Keras model: its input structure (single, list or dict), names and specs, and
    output names taken from its outputs (dict keys, ``output_names``, output layer names)."""

    def __init__(self, model, plan, versions=None):
        self.model = model
        self.plan = plan
        self.structure, names, specs = _input_structure(model)
        if self.structure is None and os.path.isfile(os.path.join(plan["model_path"], "saved_model.pb")):
            self.structure, names, specs = saved_input_specs(plan["model_path"]) or (None, None, None)
        if self.structure is None:
            raise ValueError("the model has no defined inputs (subclassed and not built): "
                             "nothing says what to serve")
        inputs = [TensorSpec(n, d, _shape(s)) for n, (s, d) in zip(names, specs)]
        self.signature = Signature(inputs, [])
        self.call_name = "call"
        self._call = self._direct
        versions = versions or {}
        self.info = {"tensorflow": versions.get("tensorflow") or "",
                     "keras": versions.get("keras") or ""}

    def _direct(self, x):
        return reference_predict(self.model, x)

    def _assemble(self, inputs):
        names = self.signature.input_names()
        if self.structure == "dict":
            return dict((n, inputs[n]) for n in names)
        if self.structure == "list":
            return [inputs[n] for n in names]
        return inputs[names[0]]

    def _split(self, raw):
        """The model's output as ``[(name, array)]``."""
        if isinstance(raw, dict):
            return [(str(k), output_array(v)) for k, v in raw.items()]
        values = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        names = self._output_names(len(values))
        return [(n, output_array(v)) for n, v in zip(names, values)]

    def _output_names(self, count):
        names = None
        try:
            names = list(getattr(self.model, "output_names", None) or [])
        except Exception:
            names = None
        if not names or len(names) != count:
            try:
                names = [_layer_name(t) for t in self.model.outputs]
            except Exception:
                names = None
        if not names or len(names) != count or any(not n for n in names) or len(set(names)) != count:
            names = ["output_%d" % i for i in range(count)]
        return [str(n) for n in names]

    def predict(self, inputs):
        outputs = self._split(self._call(self._assemble(inputs)))
        if self.signature.outputs:
            by_name = dict(outputs)
            return [(n, by_name[n]) for n in self.signature.output_names() if n in by_name]
        return outputs

    def _output_specs(self, outputs):
        """Output specs from a prediction's arrays, with the model's own shapes when it has them
        (None where a dimension is free), else -1 for the batch dimension."""
        declared = {}
        try:
            tensors = list(self.model.outputs or [])
            names = self._output_names(len(tensors))
            declared = dict((n, _shape(t.shape)) for n, t in zip(names, tensors))
        except Exception:
            declared = {}
        specs = []
        for name, arr in outputs:
            shape = declared.get(name)
            if shape is None or len(shape) != arr.ndim:
                shape = [None] + list(arr.shape[1:]) if arr.ndim else []
            specs.append(TensorSpec(name, normalize_dtype(arr.dtype), shape))
        return specs

    def warmup(self):
        """Predict the reference inputs (or seeded ones), compare with the capture's outputs,
        pick the faster of the equal call paths, and trace batch sizes 1 and 2."""
        import numpy as np

        lines = []
        ref = self.plan.get("reference") or {}
        x = reference_inputs(np, ref, self.signature) if ref.get("inputs") else None
        if x is None:
            x = seeded_inputs(self.signature, 1)
        assembled = self._assemble(x)
        baseline = self._split(self._direct(assembled))
        self.signature.outputs = self._output_specs(baseline)
        tol = dict(FLOAT_TOLERANCE, **dict((k, float(ref[k])) for k in ("atol", "rtol") if k in ref))
        if ref.get("inputs") and ref.get("outputs"):
            expected = [np.load(p, allow_pickle=False) for p in ref["outputs"]]
            got = _reference_order(baseline, ref, len(expected))
            result = compare(np, got, expected, tol["atol"], tol["rtol"])
            if result["allclose"]:
                lines.append("warm-up: the capture's reference prediction matches (max |diff| %s)"
                             % result["max_abs_diff"])
            else:
                lines.append("WARNING: the capture's reference prediction differs (max |diff| %s, "
                             "atol %s, rtol %s%s)" % (result["max_abs_diff"], tol["atol"],
                                                      tol["rtol"], ", " + result["problem"]
                                                      if result.get("problem") else ""))
        lines.append(self._choose_call(np, assembled, baseline, tol))
        for batch in (1, 2):
            self.predict(_rows(np, x, batch, self.signature))
        return lines

    def _choose_call(self, np, x, baseline, tol):
        timings = {"call": _timed(lambda: self._direct(x))}
        pob = getattr(self.model, "predict_on_batch", None)
        note = ""
        if pob is not None:
            try:
                out = self._split(pob(x))
                same = compare(np, [a for _, a in out], [a for _, a in baseline], tol["atol"], tol["rtol"])
                if [n for n, _ in out] == [n for n, _ in baseline] and same["allclose"]:
                    timings["predict_on_batch"] = _timed(lambda: pob(x))
                else:
                    note = "; predict_on_batch differs, not used"
            except Exception as exc:
                note = "; predict_on_batch fails (%s), not used" % type(exc).__name__
        best = min(timings, key=timings.get)
        if best == "predict_on_batch":
            self._call, self.call_name = pob, best
        self.info["call"] = self.call_name
        return "predict call: %s (%s)%s" % (
            "model(x, training=False)" if best == "call" else best,
            ", ".join("%s %.2f ms" % (k, v * 1e3) for k, v in sorted(timings.items())), note)


def _timed(func):
    func()
    runs = []
    for _ in range(TIMING_RUNS):
        t = time.perf_counter()
        func()
        runs.append(time.perf_counter() - t)
    return sorted(runs)[len(runs) // 2]


def reference_inputs(np, ref, signature):
    """The capture's reference inputs keyed by the served input names, or None when they don't
    line up with the signature. Text (saved as ``U``/``S`` arrays) as bytes, as requests give it."""
    arrays = [feedable(np.load(p, allow_pickle=False)) for p in ref.get("inputs") or []]
    names = signature.input_names()
    if len(arrays) != len(names):
        return None
    if (ref.get("input_structure") or "single") == "dict":
        ref_names = list(ref.get("input_names") or [])
        if sorted(ref_names) != sorted(names):
            return None
        return dict(zip(ref_names, arrays))
    return dict(zip(names, arrays))


def _reference_order(outputs, ref, count):
    by_name = dict(outputs)
    names = ref.get("output_names") or []
    if len(names) == count and all(n in by_name for n in names):
        return [by_name[n] for n in names]
    return [a for _, a in outputs]


def _rows(np, x, batch, signature):
    """``batch`` copies of the first row of each input (inputs with a free batch dimension)."""
    out = {}
    for spec in signature.inputs:
        arr = x[spec.name]
        if arr.ndim and spec.shape and spec.shape[0] is None:
            arr = np.concatenate([arr[:1]] * batch, axis=0)
        out[spec.name] = arr
    return out
