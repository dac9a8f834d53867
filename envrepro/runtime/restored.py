"""What the training environment's OWN ``load_model`` restores of the optimizer, recorded at
capture (the manifest's ``optimizer.restored``) so the loader compares like with like.

Why: what a model file holds is not always what loading it brings back. TF 2.12 saves a
``LossScaleOptimizer`` (``mixed_float16``) into H5 with its iteration count, and its own
``load_model`` starts that optimizer afresh ("Error in loading the saved optimizer state"):
iterations 0 of the 2 the file holds. A reproduction that does exactly the same is faithful; the
loader must compare it with what the training environment restores, not with the file.

Where the copy comes from:

* ``envrepro capture --python`` (script mode): the probe loaded the model from its file in the
  training interpreter; that copy is read, after the reference prediction, with the loader's own
  steps (optimizer.restored_facts).
* The save hook and ``envrepro.save`` (in-process): the training model is live, never reloaded
  for anything else but a SavedModel's recipe. A copy is loaded from the saved file when it is
  small (``ENVREPRO_RESTORED_MAX_BYTES``, 64 MiB by default; 0 turns it off), with Python's,
  numpy's and TensorFlow's random states put back afterwards (building the copy draws initial
  weights), and dropped. Above the bound nothing is loaded: ``restored_skipped`` says so and the
  loader compares with what the file holds, as before.

Standard library only, Python 3.6 syntax; numpy and TensorFlow are only touched when imported.
"""
from __future__ import absolute_import, division, print_function

import contextlib
import gc
import os
import random
import sys

from .facts import short_error
from .optimizer import restored_facts

MAX_RELOAD_BYTES = 64 * 1024 * 1024


def max_reload_bytes():
    """The largest saved model the in-process capture loads a copy of."""
    try:
        return int(os.environ.get("ENVREPRO_RESTORED_MAX_BYTES", MAX_RELOAD_BYTES))
    except ValueError:
        return MAX_RELOAD_BYTES


def saved_size(model_path):
    """Bytes of the saved file, or of every file in a SavedModel folder."""
    if os.path.isfile(model_path):
        return os.path.getsize(model_path)
    total = 0
    for root, _dirs, files in os.walk(model_path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


@contextlib.contextmanager
def random_state_kept():
    """Python's and numpy's random states, and TensorFlow's op-seed sequence, as they were: the
    training run's later draws don't depend on whether a copy was loaded."""
    py_state = random.getstate()
    np = sys.modules.get("numpy")
    np_state = np.random.get_state() if np is not None else None
    tf_rng = None
    if "tensorflow" in sys.modules:  # never imported here
        try:
            from tensorflow.python.eager import context

            tf_rng = getattr(context.context(), "_rng", None)
        except Exception:
            tf_rng = None
    tf_state = tf_rng.getstate() if tf_rng is not None else None
    try:
        yield
    finally:
        random.setstate(py_state)
        if np_state is not None:
            np.random.set_state(np_state)
        if tf_state is not None:
            tf_rng.setstate(tf_state)


def capture_restored(model, loaded_by_probe, facts, model_path, fmt, load_copy):
    """``(restored, skipped)`` for the optimizer facts ``facts``: what this environment's load
    restores (optimizer.restored_facts), or None and why not. ``model`` is the probe's own copy
    when ``loaded_by_probe``; otherwise ``load_copy()`` loads one, within the size bound."""
    if not facts:
        return None, None
    if loaded_by_probe:
        return restored_facts(model, facts, model_path, fmt), None
    if not os.path.exists(model_path):
        return None, "the saved file is not there to load"
    size, limit = saved_size(model_path), max_reload_bytes()
    if limit <= 0:
        return None, ("ENVREPRO_RESTORED_MAX_BYTES=%s: no copy is loaded in the training process; "
                      "the loader compares with what the file holds" % limit)
    if size > limit:
        return None, ("the saved model takes {:,} bytes, above the {:,} a copy is loaded for in "
                      "the training process (ENVREPRO_RESTORED_MAX_BYTES): the loader compares "
                      "with what the file holds; envrepro capture --python records it"
                      .format(size, limit))
    copy = None
    try:
        with random_state_kept():
            copy = load_copy()
            restored = restored_facts(copy, facts, model_path, fmt)
    except Exception as exc:
        return None, "a copy of the model can't be loaded from its file here: %s" % short_error(exc)
    finally:
        del copy
        gc.collect()
    if restored is None:
        return None, "the copy loaded from the file has no optimizer (it loads only with compile=False)"
    return restored, None
