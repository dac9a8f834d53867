"""A prediction against the reference: outputs flattened in the reference's order, compared
(numbers within tolerance, NaN equal to NaN; text element by element), and the loader's one
line when they differ. Used by the loader, the serving warm-up, drift and resume checks.

Standard library only at import (numpy is passed in), Python 3.6 syntax.
"""
from __future__ import absolute_import, division, print_function

import math

from . import samples


def finite(x):
    """JSON has no inf/nan: keep them readable as strings."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return x


def flatten_outputs(np, out, ref):
    """Model output -> list of arrays in the order of the reference outputs."""
    if isinstance(out, dict):
        names = ref.get("output_names") or sorted(out)
        out = [out[n] for n in names]
    elif isinstance(out, (list, tuple)):
        out = list(out)
    else:
        out = [out]
    return [np.asarray(getattr(o, "numpy", lambda: o)()) for o in out]


def _is_text(arr):
    return arr.dtype.kind in "USO"


def compare(np, got, expected, atol, rtol):
    """Max |diff| over the numeric outputs and numpy.allclose per output, NaN equal to NaN; text
    outputs (tf.string) are equal or not, element by element (``text_differs``: how many
    elements differ, over all text outputs; absent without text outputs)."""
    shapes = {"expected": [list(a.shape) for a in expected], "got": [list(a.shape) for a in got]}
    result = {"checked": True, "max_abs_diff": None, "allclose": False, "atol": atol,
              "rtol": rtol, "shapes": shapes, "per_output": []}
    if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected)):
        result["problem"] = "output shapes differ from the reference"
        return result
    if any(_is_text(g) != _is_text(e) for g, e in zip(got, expected)):
        result["problem"] = "output dtypes differ from the reference (text against numbers)"
        return result
    worst = 0.0
    close = True
    for g, e in zip(got, expected):
        if _is_text(e):
            differs = sum(1 for a, b in zip(samples.text_values(g), samples.text_values(e))
                          if a != b)
            result["text_differs"] = result.get("text_differs", 0) + differs
            result["per_output"].append({"text": True, "differs": differs, "allclose": not differs})
            close = close and not differs
            continue
        gf = g.astype("float64")
        ef = e.astype("float64")
        both_nan = np.isnan(gf) & np.isnan(ef)
        diff = np.abs(gf - ef)
        diff[both_nan] = 0.0
        diff[np.isnan(diff)] = np.inf
        m = float(diff.max()) if diff.size else 0.0
        ok = bool(np.allclose(gf, ef, rtol=rtol, atol=atol, equal_nan=True))
        result["per_output"].append({"max_abs_diff": finite(m), "allclose": ok})
        worst = max(worst, m)
        close = close and ok
    result["max_abs_diff"] = finite(worst)
    result["allclose"] = close
    return result


def mismatch_message(result, atol, rtol):
    """The loader's one-line mismatch for a reference comparison that failed."""
    if result.get("problem"):
        return "reference prediction differs: %s" % result["problem"]
    text = result.get("text_differs")
    return "reference prediction differs (max |diff| %s, atol %s, rtol %s%s)" % (
        result["max_abs_diff"], atol, rtol,
        ", %d text value(s) differ" % text if text else "")
