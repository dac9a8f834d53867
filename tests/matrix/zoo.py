"""The fidelity matrix's model zoo: run with a training environment's python, it trains every
model kind briefly and saves it in every format this TensorFlow release writes, once through the
envrepro save hook and once with a plain ``model.save``.

    python tests/matrix/zoo.py OUT --formats h5,savedmodel[,keras] [--addons] [--keras3]
                               [--kinds sequential,functional,...]

Writes ``OUT/hooked/<kind>-<fmt>[.h5|.keras]`` (``envrepro.save``: the capture is made in this
process, ``<model>.envrepro/`` beside it), ``OUT/plain/<kind>-<fmt>...`` (``model.save``: for
``envrepro capture --python`` and ``--infer``), ``OUT/samples/<kind>.npy|.npz`` (a seeded input;
multi-input models get an .npz keyed by input name; text is a ``U`` array, no pickle),
``OUT/predictions/<kind>.npy|.npz`` (this environment's prediction on it; an .npz keyed by output
name for dict outputs) and ``OUT/cells.json``, the list of cells the matrix runner captures and
loads. At the end every plain model is reloaded here with
``tf.keras.models.load_model`` and its prediction compared (``selfcheck`` per cell).

Beside the fields the runner reads, a cell may carry: ``unsafe`` true when this release's
``load_model`` refused it until ``safe_mode=False`` (Lambda in Keras 3 and in the .keras archive);
``known_failure`` when the self-check failed the way a known Keras bug makes it fail (see
KNOWN_FAILURES: the cell is kept, its loads are expected to fail); ``custom_objects_load`` for the
subclassed_nofromconfig SavedModel, what ``load_model(custom_objects=...)`` does (``KeyError:
'layers'`` in TF 2.4 and 2.8, where only revival loads it); ``hooked_seconds``, the time of
``envrepro.save`` (model save and capture). ``seconds`` times each kind (training, saves,
captures) and the self-check. Exit status 1 when a hooked save failed or a self-check failed for
an unknown reason.

The kinds (docs/fidelity.md): sequential, functional, subclassed, subclassed_nofromconfig,
lambda, addons and addons_wn (tensorflow-addons, with ``--addons`` only), schedule, text (string
inputs into an adapted TextVectorization and a StringLookup; no H5, which can't hold the
vocabulary), mixed (trained under the ``mixed_float16`` policy with a LossScaleOptimizer; the
global policy is float32 again after it) and multioutput (two named outputs, a dict).

Python 3.8+ syntax; imports only the standard library, numpy, tensorflow, tensorflow_addons (with
``--addons``), envrepro (the hook) and matrix_models (tests/matrix/src, put on sys.path here).
Everything is seeded, so two runs write the same models.
"""
import argparse
import json
import os
import random
import sys
import time
import warnings
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")
sys.path.insert(0, SRC)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import matrix_models as mm  # noqa: E402

SEED = 1234
KINDS = ("sequential", "functional", "subclassed", "subclassed_nofromconfig", "lambda", "addons",
         "schedule", "text", "mixed", "multioutput", "addons_wn")
ADDONS_KINDS = ("addons", "addons_wn")     # need tensorflow-addons: written with --addons only
FORMATS = ("h5", "savedmodel", "keras")
SUFFIX = {"h5": ".h5", "keras": ".keras", "savedmodel": ""}
USES_MODULE = ("sequential", "functional", "subclassed", "subclassed_nofromconfig", "mixed")
SUBCLASSED = ("subclassed", "subclassed_nofromconfig")
# Multi-input kinds: their samples are dicts (an .npz keyed by input name), fed in this order.
INPUT_ORDER = {"functional": ("a", "b"), "text": ("text", "tags")}
# The text kind: the corpus its TextVectorization is adapted on, and its StringLookup's tags.
TEXT_CORPUS = ("the cat sat on the mat", "a dog ran in the park", "the model reads short text",
               "rain fell on the quiet town", "a bird sang in the old tree",
               "the train left the station late", "she read the book twice",
               "cold wind over the dark sea")
TAGS = ("news", "sport", "science", "music", "film")
ATOL = RTOL = 1e-5

# Cells this release writes but cannot load back itself (Keras bugs, not the zoo's): the
# self-check error is kept and the cell gets ``known_failure``, the explanation, when the error
# holds the needle. (kind, format, needle, explanation)
KNOWN_FAILURES = (
    ("functional", "h5", "Unknown activation function: 'function'",
     "Keras 2.15 (not 2.12) writes a registered activation function into H5 in the new "
     "serialization format ({'class_name': 'function', 'config': 'matrix>scaled_tanh'}), which "
     "its own H5 loader does not read, with or without custom_objects"),
    ("addons", "keras", "'AdamW' object has no attribute 'build'",
     "tensorflow-addons' AdamW is a legacy optimizer, which the .keras loader of Keras 2.12 "
     "cannot build (load_model with compile=True)"),
    # Which traced function it misses first varies from run to run (call_fn_N or
    # call_and_return_conditional_losses_N): the needle is their common prefix.
    ("addons_wn", "savedmodel", "KeyError: '__inference_dense_layer_call",
     "TF 2.4 writes a SavedModel of tensorflow-addons' WeightNormalization whose traced "
     "functions its own loader can't find (KeyError: '__inference_dense_layer_call_...'; "
     "tensorflow/addons#1788); TF 2.8 and later load it"),
    ("subclassed", "h5", "Unknown layer: 'MatrixNet'",
     "Keras 3 writes a subclassed model to H5 without complaint, but its H5 loader looks the "
     "class up by its bare name 'MatrixNet', not the registered 'matrix>MatrixNet' (given in "
     "custom_objects, it fails like subclassed_nofromconfig-h5)"),
    ("subclassed_nofromconfig", "h5", "Layer count mismatch when loading weights",
     "Keras 3 writes a subclassed model to H5 without complaint, but the model rebuilt from "
     "the config has no layers yet when the H5 weights are loaded"),
)


def keras_version():
    version = getattr(tf.keras, "__version__", None)
    if not version:
        import keras

        version = keras.__version__
    return version


KERAS_VERSION = keras_version()
KERAS = tuple(int(p) for p in KERAS_VERSION.split(".")[:2])
KERAS3 = KERAS[0] >= 3


def seed_all(seed=SEED):
    """Seed Python, numpy and TensorFlow; reset Keras' name counters so a model's layer names do
    not depend on which kinds were built before it."""
    tf.keras.backend.clear_session()
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


# --- the models -------------------------------------------------------------------------------

# Not the alias "mse": Keras 3.15 can't load an H5 compiled with it ("Could not deserialize
# 'keras.metrics.mse' because it is not a KerasSaveable subclass").
MSE = "mean_squared_error"


def _adam():
    return tf.keras.optimizers.Adam(learning_rate=0.01)


def build(kind):
    """The compiled, untrained model of ``kind``."""
    layers = tf.keras.layers
    if kind == "sequential":
        model = tf.keras.Sequential([tf.keras.Input(shape=(4,)),
                                     mm.ScaledDense(8, scale=0.5, activation="relu"),
                                     layers.Dense(1)], name="sequential_model")
        model.compile(optimizer=_adam(), loss=MSE)
    elif kind == "functional":
        a = tf.keras.Input(shape=(4,), name="a")
        b = tf.keras.Input(shape=(3,), name="b")
        h = layers.Concatenate()([a, b])
        h = layers.Dense(8, activation=mm.scaled_tanh)(h)
        h = mm.ScaledDense(4, scale=2.0)(h)
        model = tf.keras.Model([a, b], layers.Dense(1)(h), name="functional_model")
        model.compile(optimizer=_adam(), loss=mm.smooth_l1)
    elif kind == "subclassed":
        model = mm.MatrixNet(units=8)
        model.compile(optimizer=_adam(), loss=MSE)
    elif kind == "subclassed_nofromconfig":
        model = mm.MatrixNetNoFromConfig(units=8)
        model.compile(optimizer=_adam(), loss=MSE)
    elif kind == "lambda":
        model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), layers.Dense(8),
                                     layers.Lambda(lambda t: t * 0.5 + 1.0),
                                     layers.Dense(1)], name="lambda_model")
        model.compile(optimizer=_adam(), loss=MSE)
    elif kind == "addons":
        import tensorflow_addons as tfa

        model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), layers.Dense(8),
                                     tfa.layers.GroupNormalization(groups=2),
                                     layers.Dense(1)], name="addons_model")
        model.compile(optimizer=tfa.optimizers.AdamW(weight_decay=1e-4, learning_rate=0.01),
                      loss=MSE)
    elif kind == "schedule":
        schedule = tf.keras.optimizers.schedules.ExponentialDecay(
            initial_learning_rate=0.01, decay_steps=10, decay_rate=0.9)
        model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), layers.Dense(8, activation="relu"),
                                     layers.Dense(1)], name="schedule_model")
        model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=schedule), loss=MSE)
    elif kind == "text":
        model = _text_model()
    elif kind == "mixed":
        # Built under the mixed_float16 policy (train sets it): float16 compute, float32
        # variables and a float32 output; the LossScaleOptimizer keeps the loss scale's state.
        model = tf.keras.Sequential([tf.keras.Input(shape=(4,)),
                                     mm.ScaledDense(8, scale=0.5, activation="relu"),
                                     layers.Dense(1),
                                     layers.Activation("linear", dtype="float32")],
                                    name="mixed_model")
        model.compile(optimizer=tf.keras.mixed_precision.LossScaleOptimizer(_adam()), loss=MSE)
    elif kind == "multioutput":
        x = tf.keras.Input(shape=(4,), name="x")
        h = layers.Dense(8, activation="relu")(x)
        outputs = {"score": layers.Dense(1, name="score")(h),
                   "probs": layers.Dense(3, activation="softmax", name="probs")(h)}
        model = tf.keras.Model(x, outputs, name="multioutput_model")
        model.compile(optimizer=_adam(), loss={"score": MSE, "probs": "categorical_crossentropy"})
    elif kind == "addons_wn":
        import tensorflow_addons as tfa

        model = tf.keras.Sequential([tf.keras.Input(shape=(4,)),
                                     tfa.layers.WeightNormalization(
                                         layers.Dense(8, activation="relu")),
                                     layers.Dense(1)], name="addons_wn_model")
        model.compile(optimizer=_adam(), loss=MSE)
    else:
        raise ValueError("unknown kind %s" % kind)
    return model


def _preprocessing(name):
    """A preprocessing layer class: ``tf.keras.layers.X`` from TF 2.6, before that only under
    ``tf.keras.layers.experimental.preprocessing``."""
    cls = getattr(tf.keras.layers, name, None)
    if cls is None:
        cls = getattr(tf.keras.layers.experimental.preprocessing, name)
    return cls


def _text_model():
    """Text into an adapted TextVectorization, and tags into a StringLookup with a given
    vocabulary: Embedding and pooling each, then a Dense head. String inputs only."""
    layers = tf.keras.layers
    vectorize = _preprocessing("TextVectorization")(max_tokens=32, output_sequence_length=6,
                                                    name="vectorize")
    vectorize.adapt(tf.data.Dataset.from_tensor_slices(list(TEXT_CORPUS)).batch(4))
    lookup = _preprocessing("StringLookup")(vocabulary=list(TAGS), name="tag_lookup")
    text = tf.keras.Input(shape=(1,), dtype=tf.string, name="text")
    tags = tf.keras.Input(shape=(2,), dtype=tf.string, name="tags")
    words = layers.Embedding(len(vectorize.get_vocabulary()), 8)(vectorize(text))
    h_text = layers.GlobalAveragePooling1D()(words)
    h_tags = layers.Flatten()(layers.Embedding(len(lookup.get_vocabulary()), 4)(lookup(tags)))
    h = layers.Concatenate()([h_text, h_tags])
    model = tf.keras.Model([text, tags], layers.Dense(1)(h), name="text_model")
    model.compile(optimizer=_adam(), loss=MSE)
    return model


def set_policy(name):
    """The global dtype policy: ``mixed_float16`` for the mixed kind (set after ``seed_all``, as
    Keras 3's ``clear_session`` forgets it), ``float32`` again after that kind is written."""
    tf.keras.mixed_precision.set_global_policy(name)


def data(kind, rows, seed):
    """Seeded inputs of ``kind``'s model: one array, or a dict keyed by input name. Text is a
    fixed-width unicode (``U``) array, which ``np.save`` writes without pickle."""
    rng = np.random.RandomState(seed)
    if kind == "functional":
        return {"a": rng.standard_normal((rows, 4)).astype("float32"),
                "b": rng.standard_normal((rows, 3)).astype("float32")}
    if kind == "text":
        words = sorted(set(" ".join(TEXT_CORPUS).split())) + ["zebra"]  # one out of vocabulary
        texts = [" ".join(rng.choice(words, size=rng.randint(2, 7))) for _ in range(rows)]
        return {"text": np.array(texts, dtype="U").reshape(rows, 1),
                "tags": rng.choice(list(TAGS) + ["other"], size=(rows, 2)).astype("U")}
    return rng.standard_normal((rows, 4)).astype("float32")


def targets(kind, rows, seed):
    """Seeded targets: one column, or a dict by output name for the multi-output kind."""
    rng = np.random.RandomState(seed)
    if kind == "multioutput":
        return {"score": rng.standard_normal((rows, 1)).astype("float32"),
                "probs": np.eye(3, dtype="float32")[rng.randint(0, 3, size=rows)]}
    return rng.standard_normal((rows, 1)).astype("float32")


def as_model_input(x, kind):
    """Dicts fed as a list in the model's input order (Keras 2 and 3 agree on lists); text as
    tf.string tensors (Keras 3's predict doesn't take numpy ``U`` arrays)."""
    arrays = [x[name] for name in INPUT_ORDER[kind]] if isinstance(x, dict) else [x]
    arrays = [tf.constant(a) if a.dtype.kind in "US" else a for a in arrays]
    return arrays if isinstance(x, dict) else arrays[0]


def predict(model, x, kind):
    """The model's prediction: one array, or a dict of arrays by output name."""
    out = model.predict(as_model_input(x, kind), verbose=0)
    if isinstance(out, dict):
        return {str(k): np.asarray(v) for k, v in out.items()}
    return np.asarray(out)


def train(kind):
    """Build ``kind`` and fit it for two steps, so its optimizer has state."""
    seed_all()
    if kind == "mixed":
        set_policy("mixed_float16")
    model = build(kind)
    x = data(kind, 16, SEED + 1)
    y = targets(kind, 16, SEED + 2)
    model.fit(as_model_input(x, kind), y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return model


def optimizer_vars(model):
    variables = model.optimizer.variables
    return len(variables() if callable(variables) else variables)


# --- saving -----------------------------------------------------------------------------------

def cannot_write(kind, fmt):
    """Why this release can't write ``kind`` in ``fmt`` (known before trying), or None."""
    if fmt == "keras" and not KERAS3 and KERAS < (2, 12):
        return "Keras %s has no .keras format (Keras 2.12 added it)" % KERAS_VERSION
    if fmt == "savedmodel" and KERAS3:
        return ("Keras %s writes no SavedModel that load_model reads (model.export() is "
                "inference-only)" % KERAS_VERSION)
    if kind in ADDONS_KINDS and KERAS3:
        return "tensorflow-addons supports Keras 2 only"
    if kind == "text" and fmt == "h5":
        return ("H5 can't hold TextVectorization's vocabulary (an adapted lookup table, not a "
                "weight): saved as SavedModel and .keras only")
    return None


def model_path(out, which, kind, fmt):
    return os.path.join(out, which, "%s-%s%s" % (kind, fmt, SUFFIX[fmt]))


def save_kwargs(fmt):
    """Keras 2 writes a SavedModel with ``save_format="tf"``; Keras 2.12 writes HDF5 to a
    ``.keras`` path unless told ``save_format="keras_v3"`` (Keras 2.13 made the archive the
    default for the extension)."""
    if fmt == "savedmodel" and not KERAS3:
        return {"save_format": "tf"}
    if fmt == "keras" and KERAS < (2, 13):
        return {"save_format": "keras_v3"}
    return {}


def short(exc):
    text = "%s: %s" % (type(exc).__name__, exc)
    return text if len(text) < 2000 else text[:2000] + "..."


def hooked_save(model, path, fmt):
    """``envrepro.save`` and what came of the capture: (error or None, envrepro's warnings)."""
    import envrepro
    from envrepro.sidecar import layout

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = envrepro.save(model, path, **save_kwargs(fmt))
        except Exception as exc:  # the save itself failed: the hook must never do that
            return "envrepro.save raised %s" % short(exc), []
    texts = [str(w.message) for w in caught if str(w.message).startswith("envrepro")]
    error = None
    if result is None:
        failed = [t for t in texts if "was not captured" in t]
        error = failed[0] if failed else "envrepro.save returned None"
    manifest = os.path.join(str(layout.sidecar_for(path)), layout.MANIFEST)
    if not os.path.exists(manifest):
        error = error or "no %s after envrepro.save" % manifest
    return error, [t for t in texts if t != error]


def save_arrays(out, sub, kind, value):
    """``OUT/<sub>/<kind>.npy`` (one array) or ``.npz`` (a dict by name); the relative path."""
    rel = os.path.join(sub, kind + (".npz" if isinstance(value, dict) else ".npy"))
    if isinstance(value, dict):
        np.savez(os.path.join(out, rel), **value)
    else:
        np.save(os.path.join(out, rel), value)
    return rel


def write_kind(out, kind, formats, cells, skipped):
    """Train ``kind`` once, save it in every format (plain, then hooked), add its cells."""
    try:
        _write_kind(out, kind, formats, cells, skipped)
    finally:
        if kind == "mixed":
            set_policy("float32")   # the kinds after it are float32


def _write_kind(out, kind, formats, cells, skipped):
    model = train(kind)
    sample = data(kind, 3, SEED + 3)
    sample_rel = save_arrays(out, "samples", kind, sample)
    pred_rel = save_arrays(out, "predictions", kind, predict(model, sample, kind))
    n_opt = optimizer_vars(model)
    for fmt in formats:
        reason = cannot_write(kind, fmt)
        plain = model_path(out, "plain", kind, fmt)
        if reason is None:
            try:
                model.save(plain, **save_kwargs(fmt))
            except Exception as exc:
                if not (kind in SUBCLASSED and fmt == "h5"):
                    raise
                reason = short(exc)
        if fmt == "keras" and reason is None and not zipfile.is_zipfile(plain):
            raise RuntimeError("%s is not a .keras archive" % plain)
        if reason is not None:
            skipped.append({"kind": kind, "format": fmt, "reason": reason})
            continue
        hooked = model_path(out, "hooked", kind, fmt)
        t = time.perf_counter()
        error, notes = hooked_save(model, hooked, fmt)
        hooked_seconds = round(time.perf_counter() - t, 2)
        cells.append({
            "id": "%s-%s" % (kind, fmt), "kind": kind, "format": fmt,
            "hooked": os.path.relpath(hooked, out) if os.path.exists(hooked) else None,
            "hooked_error": error, "hooked_warnings": notes, "hooked_seconds": hooked_seconds,
            "plain": os.path.relpath(plain, out),
            "modules": ["matrix_models"] if kind in USES_MODULE else [],
            "unsafe": False,    # set by the self-check when load_model asks for safe_mode
            "optimizer_vars": n_opt, "sample": sample_rel, "prediction": pred_rel,
        })


# --- the self-check ---------------------------------------------------------------------------

def load_sample(path):
    """An array (.npy) or a dict of arrays (.npz), read without pickle."""
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return np.load(path, allow_pickle=False)


def compare(got, want):
    """``"ok"``, or how the prediction ``got`` differs from ``want`` (arrays, or dicts by output
    name: the names must agree)."""
    if isinstance(want, dict) or isinstance(got, dict):
        if not (isinstance(want, dict) and isinstance(got, dict)):
            return "prediction is %s, expected %s" % (
                "outputs %s" % sorted(got) if isinstance(got, dict) else "one array",
                "outputs %s" % sorted(want) if isinstance(want, dict) else "one array")
        if sorted(got) != sorted(want):
            return "prediction has outputs %s, expected %s" % (sorted(got), sorted(want))
        for name in sorted(want):
            problem = compare(got[name], want[name])
            if problem != "ok":
                return "output %s: %s" % (name, problem)
        return "ok"
    if got.shape != want.shape:
        return "prediction shape %s, expected %s" % (got.shape, want.shape)
    if not np.allclose(got, want, atol=ATOL, rtol=RTOL):
        return "prediction differs by %.3g" % float(np.abs(got - want).max())
    return "ok"


def _load(out, cell, custom_objects=None):
    """``load_model`` on the plain model; a refused Lambda (Keras 3, and the .keras archive of
    Keras 2.12+) is retried with ``safe_mode=False`` and the cell marked ``unsafe``."""
    kwargs = {"custom_objects": custom_objects} if custom_objects else {}
    if cell["unsafe"]:
        kwargs["safe_mode"] = False
    path = os.path.join(out, cell["plain"])
    try:
        return tf.keras.models.load_model(path, **kwargs)
    except Exception as exc:
        if cell["unsafe"] or "safe_mode=False" not in str(exc):
            raise
    cell["unsafe"] = True
    return tf.keras.models.load_model(path, safe_mode=False, **kwargs)


def selfcheck(out, cell):
    """Reload the plain model here, as a user would, and compare its prediction.

    Registered objects need no ``custom_objects``. The unregistered MatrixNetNoFromConfig is
    revived from a SavedModel (plain ``load_model``) and needs ``custom_objects`` elsewhere.
    """
    custom = None
    if cell["kind"] == "subclassed_nofromconfig" and cell["format"] != "savedmodel":
        custom = {"MatrixNetNoFromConfig": mm.MatrixNetNoFromConfig}
    try:
        got = predict(_load(out, cell, custom), load_sample(os.path.join(out, cell["sample"])),
                      cell["kind"])
    except Exception as exc:
        return short(exc)
    return compare(got, load_sample(os.path.join(out, cell["prediction"])))


def custom_objects_load(out, cell):
    """What ``load_model(custom_objects=...)`` does with the revival-only SavedModel: "ok" or
    the error (``KeyError: 'layers'`` where only revival works)."""
    try:
        _load(out, cell, {"MatrixNetNoFromConfig": mm.MatrixNetNoFromConfig})
    except Exception as exc:
        return short(exc)
    return "ok"


def known_failure(cell):
    if cell["selfcheck"] == "ok":
        return None
    for kind, fmt, needle, why in KNOWN_FAILURES:
        if (cell["kind"], cell["format"]) == (kind, fmt) and needle in cell["selfcheck"]:
            return why
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--formats", required=True, help="comma-separated: h5,savedmodel,keras")
    ap.add_argument("--addons", action="store_true",
                    help="add the tensorflow-addons kinds (addons, addons_wn)")
    ap.add_argument("--keras3", action="store_true", help="this env's tf.keras is Keras 3")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of kinds")
    args = ap.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        ap.error("unknown formats %s (known: %s)" % (unknown, ",".join(FORMATS)))
    if args.keras3 != KERAS3:
        ap.error("--keras3 is %s but tf.keras is Keras %s" % (args.keras3, KERAS_VERSION))
    if hasattr(tf.config.experimental, "enable_op_determinism"):
        tf.config.experimental.enable_op_determinism()

    out = os.path.abspath(args.out)
    for sub in ("hooked", "plain", "samples", "predictions"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    wanted = set(k.strip() for k in args.kinds.split(","))
    if wanted - set(KINDS):
        ap.error("unknown kinds %s (known: %s)" % (sorted(wanted - set(KINDS)), ",".join(KINDS)))
    kinds = [k for k in KINDS if k in wanted and (k not in ADDONS_KINDS or args.addons)]
    cells, skipped, seconds = [], [], {}
    t0 = time.perf_counter()
    for kind in kinds:
        t = time.perf_counter()
        write_kind(out, kind, formats, cells, skipped)
        seconds[kind] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    for cell in cells:
        cell["selfcheck"] = selfcheck(out, cell)
        if cell["kind"] == "subclassed_nofromconfig" and cell["format"] == "savedmodel":
            cell["custom_objects_load"] = custom_objects_load(out, cell)
        known = known_failure(cell)
        if known:
            cell["known_failure"] = known
    seconds["selfcheck"] = round(time.perf_counter() - t, 2)
    seconds["total"] = round(time.perf_counter() - t0, 2)
    report = {"env_tf": tf.__version__, "keras": KERAS_VERSION,
              "python": "%d.%d.%d" % sys.version_info[:3], "cells": cells, "skipped": skipped,
              "seconds": seconds}
    with open(os.path.join(out, "cells.json"), "w") as fh:
        json.dump(report, fh, indent=2)
        fh.write("\n")
    known = [c["id"] for c in cells if c.get("known_failure")]
    bad = [c["id"] for c in cells
           if (c["selfcheck"] != "ok" and not c.get("known_failure")) or c["hooked_error"]]
    print("%d cells, %d skipped, %.1fs; known failures: %s; not ok: %s" % (
        len(cells), len(skipped), seconds["total"], known or "none", bad or "none"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
