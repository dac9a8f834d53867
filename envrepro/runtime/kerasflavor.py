"""Which Keras a model and an environment use: ``tf.keras`` (Keras 2 inside or next to
TensorFlow), ``keras3`` or ``tf_keras``; the probe records it and the loader picks the same one.
"""
from __future__ import absolute_import, division, print_function

import os
import sys

from .facts import canonical_name, json_safe, truthy, version_tuple


def _flavor_of_module(mod):
    if mod.startswith("tf_keras"):
        return "tf_keras"
    if mod.startswith("tensorflow"):
        return "tf.keras"
    if mod == "keras" or mod.startswith("keras."):
        kmod = sys.modules.get("keras")
        ver = getattr(kmod, "__version__", "") if kmod else ""
        return "keras3" if version_tuple(ver)[:1] >= (3,) else "tf.keras"
    return None


def model_flavor(model):
    """Which Keras implementation made ``model``: ``tf.keras`` (Keras 2 inside or next to TF),
    ``keras3`` or ``tf_keras``, decided from the module of its first framework class (a
    subclassed model's own class lives in user code)."""
    for klass in type(model).__mro__:
        flavor = _flavor_of_module(klass.__module__ or "")
        if flavor:
            return flavor
    return None


def env_flavor(tf_version, dists):
    """The Keras that ``tf.keras`` / ``load_model`` resolves to here, without importing it."""
    tfv = version_tuple(tf_version)
    if tfv and tfv < (2, 16):
        return "tf.keras"
    if tfv and truthy(os.environ.get("TF_USE_LEGACY_KERAS")) and dists.get("tf-keras"):
        return "tf_keras"
    keras_dist = dists.get("keras")
    if keras_dist and version_tuple(keras_dist["version"])[:1] < (3,):
        return "tf.keras"
    return "keras3"


def framework_facts(dists, model=None, import_tf=False):
    """Versions of TensorFlow and of the Keras in use. TensorFlow is only imported when it
    already is (in-process) or ``import_tf`` asks for it (script mode)."""
    facts = {"tensorflow": None, "tensorflow_distribution": None, "keras": None,
             "keras_flavor": None, "tf_keras": None, "keras_package": None,
             "git_version": None, "build": {}}
    tf = sys.modules.get("tensorflow")
    if tf is None and import_tf:
        try:
            import tensorflow as tf  # noqa: F811
        except Exception:
            tf = None
    if tf is not None:
        facts["tensorflow"] = getattr(tf, "__version__", None)
        try:
            facts["git_version"] = tf.version.GIT_VERSION
        except Exception:
            pass
        try:
            facts["build"] = json_safe(dict(tf.sysconfig.get_build_info()))
        except Exception:
            facts["build"] = {}
        owner = None
        tf_file = getattr(tf, "__file__", None)
        candidates = [d for d in dists.items if "tensorflow" in (d["top_level"] or [])]
        if len(candidates) == 1:
            owner = candidates[0]
        elif tf_file:
            owner = dists.for_file(tf_file)
        if owner:
            facts["tensorflow_distribution"] = canonical_name(owner["name"])
    else:
        # Not imported (--no-load): the version of the installed distribution, no build info.
        owners = [d for d in dists.items if "tensorflow" in (d["top_level"] or [])]
        if len(owners) == 1:
            facts["tensorflow"] = owners[0]["version"]
            facts["tensorflow_distribution"] = canonical_name(owners[0]["name"])
    tfk = dists.get("tf-keras")
    facts["tf_keras"] = tfk["version"] if tfk else None
    kd = dists.get("keras")
    facts["keras_package"] = kd["version"] if kd else None
    flavor = model_flavor(model) if model is not None else None
    if flavor is None:
        flavor = env_flavor(facts["tensorflow"], dists)
    facts["keras_flavor"] = flavor
    if flavor == "tf_keras":
        mod = sys.modules.get("tf_keras")
        facts["keras"] = getattr(mod, "__version__", None) or facts["tf_keras"]
    elif flavor == "keras3":
        mod = sys.modules.get("keras")
        facts["keras"] = getattr(mod, "__version__", None) or facts["keras_package"]
    else:
        builtin = sys.modules.get("tensorflow.python.keras")
        if version_tuple(facts["tensorflow"] or "") >= (2, 6) or builtin is None:
            facts["keras"] = facts["keras_package"] or getattr(builtin, "__version__", None)
        else:
            facts["keras"] = getattr(builtin, "__version__", None)
        if facts["keras"] is None and tf is not None:
            try:
                facts["keras"] = tf.keras.__version__
            except Exception:
                pass
    return facts



def pick_keras(tf, flavor):
    """The Keras that saved the model: Keras 3, tf_keras (legacy Keras 2) or TF's own tf.keras."""
    if flavor == "keras3":
        import keras

        return keras, "keras"
    if flavor == "tf_keras":
        try:
            import tf_keras

            return tf_keras, "tf_keras"
        except ImportError:
            pass
    return tf.keras, "tf.keras"


def keras_version(kmod, tf):
    """Version of the Keras module in use (tf.keras in TF <= 2.5 has none of its own)."""
    v = getattr(kmod, "__version__", None)
    if v:
        return str(v)
    try:
        import keras

        return str(getattr(keras, "__version__", "")) or None
    except Exception:
        return getattr(getattr(tf, "keras", None), "__version__", None)
