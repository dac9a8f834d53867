"""Drift without a reference: does the source tree still compute what the model was saved with?

An inferred capture (``capture --infer``) has no reference prediction, and its custom classes come
from a source tree that may have been edited since the save. A SavedModel keeps the traced graph
of every layer's ``call``, and Keras revives a layer from that graph when its class can't be
found. So the loader loads the model a second time with the source tree out of sight (no
``custom_objects``, the user's registrations hidden meanwhile: ``compile=False``) and both models
predict on seeded inputs: the whole model, then each layer that runs Python code in one and its
saved graph in the other (a custom class, or a built-in layer whose activation is a custom
function), on a seeded input of the shape it was built for. A difference beyond the tolerance
means the code changed after the save; the layers that differ name the classes.

H5 and ``.keras`` files keep only configs and weights: there is nothing to compare with.

Standard library only, Python 3.6 syntax: runs in the container beside loader.py.
"""
from __future__ import absolute_import, division, print_function

import json

from .customobjects import is_framework_module, is_revived, registries
from .facts import ProbeFailure, short_error
from .comparison import compare, flatten_outputs
from .reference import assemble_inputs, generate_sample, predict, seeded_inputs, tolerance

MAX_LAYERS = 200   # layers compared one by one; a model with more compares the first ones
ROWS = 8           # rows of a seeded input whose batch dimension is free
SEEDS = 3          # seeded inputs per comparison: one could hide a change (a ReLU of positives)


def applicable(fmt, custom_names):
    """None when the check can run on this model, else why it can't."""
    if fmt != "savedmodel":
        what = {"h5": "an H5 file", "keras": "a .keras file"}.get(fmt, "this model format")
        return ("%s stores no traced graph of the custom classes' code, only their config and "
                "weights: nothing to compare the source tree with" % what)
    if not custom_names:
        return "the model names no custom objects: no code of the source tree runs"
    return None


class HiddenRegistrations(object):
    """Remove the user's objects from every Keras registry for the duration (``with`` block), so
    that ``load_model`` without ``custom_objects`` can't find a registered class either."""

    def __init__(self):
        self.removed = []

    def __enter__(self):
        for reg in registries():
            for name, obj in list(reg.items()):
                if not is_framework_module(getattr(obj, "__module__", None) or ""):
                    self.removed.append((reg, name, reg.pop(name)))
        return self

    def __exit__(self, *exc):
        for reg, name, obj in self.removed:
            reg[name] = obj
        return False


def revive(load, model_path):
    """The model from its saved graphs alone."""
    with HiddenRegistrations():
        return load(model_path, compile=False)


def _children(layer):
    try:
        return list(layer._flatten_layers(include_self=False, recursive=False))
    except Exception:
        return list(getattr(layer, "layers", None) or [])


def layer_pairs(model, traced, prefix=""):
    """``(path, layer, traced layer)`` for every nested layer of ``model`` found by name in
    ``traced``, depth first."""
    by_name = dict((getattr(t, "name", None), t) for t in _children(traced))
    out = []
    for layer in _children(model):
        name = getattr(layer, "name", None)
        other = by_name.get(name)
        if other is None:
            continue
        path = prefix + str(name)
        out.append((path, layer, other))
        out.extend(layer_pairs(layer, other, path + "/"))
    return out


def _call(layer, x):
    try:
        return layer(x, training=False)
    except TypeError:
        return layer(x)


def _shape_of(layer):
    """The input shape a layer was built with (Keras 2 ``_build_input_shape``, Keras 3
    ``_build_shapes_dict``, else its functional ``input_shape``)."""
    shape = getattr(layer, "_build_input_shape", None)
    if shape is None:
        shapes = getattr(layer, "_build_shapes_dict", None) or {}
        if len(shapes) == 1:
            shape = list(shapes.values())[0]
    if shape is None:
        try:
            shape = layer.input_shape
        except Exception:
            shape = None
    return shape


def _dims(shape):
    if hasattr(shape, "as_list"):
        try:
            return shape.as_list()
        except ValueError:
            return None
    if isinstance(shape, (list, tuple)) and all(d is None or isinstance(d, int) for d in shape):
        return list(shape)
    return None


def layer_inputs(layer, seed):
    """Seeded inputs for one layer from its build shape: one array, or a list for a layer
    built on several inputs. ProbeFailure when the shape is unknown."""
    shape = _shape_of(layer)
    if shape is None:
        raise ProbeFailure("input shape unknown")
    single = _dims(shape)
    if single is not None:
        return generate_sample([(single, "float32")], seed, ROWS)[0]
    if isinstance(shape, (list, tuple)):
        many = [_dims(s) for s in shape]
        if many and all(d is not None for d in many):
            return generate_sample([(d, "float32") for d in many], seed, ROWS)
    raise ProbeFailure("input shape %r not understood" % (shape,))


def _worst(np, pairs, atol, rtol):
    """compare() over several (got, expected) pairs: the worst result (a shape problem, then a
    difference beyond the tolerance, then the largest difference)."""
    results = [compare(np, got, expected, atol, rtol) for got, expected in pairs]
    return max(results, key=lambda r: (bool(r.get("problem")) or not r["allclose"],
                                       bool(r.get("problem")), _num(r["max_abs_diff"])))


def _num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("inf")


def names_in_config(layer, custom_names):
    """The custom objects a built-in layer's config names (e.g. its activation function)."""
    try:
        text = json.dumps(layer.get_config(), default=str)
    except Exception:
        return []
    wanted = set(custom_names) | set(n.split(">")[-1] for n in custom_names)
    return sorted(n for n in wanted if '"%s"' % n in text)


def _outputs(np, value):
    return flatten_outputs(np, value, {})


def compare_layers(np, model, traced, custom_names, seed, atol, rtol):
    """One entry per layer that runs Python in ``model`` and its saved graph in ``traced``."""
    results = []
    for path, layer, other in layer_pairs(model, traced)[:MAX_LAYERS]:
        if is_revived(type(layer)):
            continue   # the saved graph on both sides: nothing to learn
        if not is_revived(type(other)):
            if not is_framework_module(type(other).__module__ or ""):
                results.append({"layer": path, "class": type(layer).__name__, "uses": [],
                                "skipped": "revived with the source tree's class all the same (a "
                                           "registration the check could not hide)"})
            continue   # otherwise the framework's own layer on both sides
        klass = type(layer)
        entry = {"layer": path, "class": klass.__name__,
                 "uses": names_in_config(layer, custom_names)
                 if is_framework_module(klass.__module__ or "") else []}
        try:
            pairs = []
            for s in range(seed, seed + SEEDS):
                x = layer_inputs(layer, s)
                pairs.append((_outputs(np, _call(other, x)), _outputs(np, _call(layer, x))))
        except ProbeFailure as exc:
            entry["skipped"] = exc.what
        except Exception as exc:
            entry["skipped"] = short_error(exc)
        else:
            res = _worst(np, pairs, atol, rtol)
            entry.update(max_abs_diff=res["max_abs_diff"], allclose=res["allclose"],
                         problem=res.get("problem"))
        results.append(entry)
    return results


def compare_models(np, model, traced, seed):
    """The whole model and its revived twin on the same seeded inputs."""
    pairs = []
    try:
        for s in range(seed, seed + SEEDS):
            x = assemble_inputs(*seeded_inputs(model, s, ROWS))
            pairs.append((_outputs(np, predict(traced, x)), _outputs(np, predict(model, x))))
    except ProbeFailure as exc:
        return {"skipped": exc.what}
    except Exception as exc:
        return {"skipped": short_error(exc)}
    tol = tolerance(model, pairs[0][1])
    return _worst(np, pairs, tol["atol"], tol["rtol"])


def runs_source(model):
    """Whether the model's own class is the source tree's (not revived, not the framework's): its
    ``call`` may then be Python of the source tree even when no layer is."""
    klass = type(model)
    return not is_revived(klass) and not is_framework_module(klass.__module__ or "")


def differing(result):
    """``["Scale (layer scale, max |diff| 0.09)", ...]``: what the verdict names."""
    out = []
    for entry in result.get("layers") or []:
        if entry.get("allclose") is False:
            who = entry["class"] + (" with " + ", ".join(entry["uses"]) if entry.get("uses") else "")
            diff = entry.get("max_abs_diff")
            diff = "%.3g" % diff if isinstance(diff, float) else str(entry.get("problem") or diff)
            out.append("%s (layer %s, max |diff| %s)" % (who, entry["layer"], diff))
    return out


def check(np, load, model, model_path, fmt, custom_names, seed):
    """The drift section of the load report: ``checked`` (bool), ``reason`` when not,
    else ``ok``, ``model`` (whole-model comparison), ``layers``, ``differs`` (what to name)."""
    reason = applicable(fmt, custom_names)
    if reason:
        return {"checked": False, "reason": reason}
    try:
        traced = revive(load, model_path)
    except Exception as exc:
        return {"checked": False, "reason": "the SavedModel could not be revived without the source "
                                            "tree's classes (%s)" % short_error(exc)}
    whole = compare_models(np, model, traced, seed)
    tol = {"atol": whole.get("atol", 1e-5), "rtol": whole.get("rtol", 1e-4)}
    layers = compare_layers(np, model, traced, custom_names, seed, tol["atol"], tol["rtol"])
    if not layers and not runs_source(model):
        return {"checked": False, "model": whole, "layers": layers,
                "reason": "the loaded model runs none of the source tree's code (its custom layers "
                          "were revived from the SavedModel's traced graphs, or the custom objects are "
                          "outside the prediction: losses, metrics): nothing to compare"}
    compared = [e for e in layers if "allclose" in e]
    if "skipped" in whole and not compared:
        return {"checked": False, "model": whole, "layers": layers,
                "reason": "nothing could be compared (model: %s; %d layer(s) skipped)"
                          % (whole["skipped"], len(layers))}
    result = {"checked": True, "model": whole, "layers": layers, "atol": tol["atol"], "rtol": tol["rtol"]}
    result["differs"] = differing(result)
    model_ok = whole.get("allclose", True) if "skipped" not in whole else True
    result["ok"] = bool(model_ok and not result["differs"])
    if not result["ok"] and not result["differs"]:
        # The whole model differs but no single layer does: the model's own call (a subclassed
        # model) or code no layer comparison reached. Name what the model runs of the source.
        result["differs"] = ["the model's custom objects " + ", ".join(sorted(custom_names))]
    return result


def message(result):
    """The loader's mismatch line for drift found."""
    return ("the source tree no longer matches the code the model was saved with: "
            + "; ".join(result.get("differs") or []))
