"""envrepro: make a saved TensorFlow/Keras model loadable anywhere, years later.

Import cost matters: this module is imported by the save hook inside training jobs, so it pulls
in neither TensorFlow, the Docker SDK, typer nor pip-tools. The heavy parts load lazily.
"""
from envrepro.version import __version__

__all__ = ["__version__", "save", "capture", "install_hook", "uninstall_hook"]


def save(model, path, sample_input=None, resume_check=False, **save_kwargs):
    """``model.save(path, **save_kwargs)``, then capture its environment beside it;
    ``resume_check=True`` also records one training step on a copy loaded from ``path``."""
    from envrepro.capturing.hook import save as _save

    return _save(model, path, sample_input=sample_input, resume_check=resume_check, **save_kwargs)


def capture(path, model=None, sample_input=None, modules=(), code_paths=(), resume_check=False):
    """Capture the environment of the model saved at ``path`` (sidecar ``<path>.envrepro/``)."""
    from envrepro.capturing.capture import capture as _capture

    return _capture(path, model=model, sample_input=sample_input, modules=modules,
                    code_paths=code_paths, resume_check=resume_check)


def install_hook():
    """Make every ``Model.save`` (tf.keras, Keras 3, tf_keras, ModelCheckpoint) capture too."""
    from envrepro.capturing.hook import install_hook as _install

    return _install()


def uninstall_hook():
    from envrepro.capturing.hook import uninstall_hook as _uninstall

    return _uninstall()
