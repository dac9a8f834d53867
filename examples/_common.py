"""Shared by the examples: where to save, and turning the envrepro hook on when installed."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def out_path(default_dir, legacy_name, keras3_name):
    """SavedModel dir / .h5 on Keras 2; .keras on Keras 3 (which can't write SavedModel dirs)."""
    import tensorflow as tf

    out_dir = sys.argv[1] if len(sys.argv) > 1 else default_dir
    os.makedirs(out_dir, exist_ok=True)
    keras3 = tf.keras.__version__.startswith("3") if hasattr(tf.keras, "__version__") else False
    return os.path.join(out_dir, keras3_name if keras3 else legacy_name)


def hook():
    try:
        import envrepro
    except ImportError:
        print("envrepro not installed here: saving without a capture (use `envrepro capture --python`)")
        return
    envrepro.install_hook()
