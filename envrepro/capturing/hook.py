"""Patch ``Model.save`` so every save (also from ModelCheckpoint) captures the environment.

Covered: tf.keras in TF 2.x (``tensorflow.python.keras`` up to 2.5, ``keras`` 2.6-2.15),
Keras 3 (``keras.src.models.Model``) and tf_keras. Only classes whose modules are already
importable are patched; nothing here imports the Docker SDK, typer or pip-tools. ``envrepro.save``
(save, then capture, never breaking the save) is here too.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

# (module, attribute) of the Model classes whose ``save`` we wrap, most specific first.
_TARGETS: Tuple[Tuple[str, str], ...] = (
    ("keras.src.models.model", "Model"),           # Keras 3
    ("keras.src.engine.training", "Model"),        # Keras 2.13-2.15
    ("keras.engine.training", "Model"),            # Keras 2.6-2.12
    ("tf_keras.src.engine.training", "Model"),     # tf_keras (TF >= 2.16 legacy)
    ("tensorflow.python.keras.engine.training", "Model"),  # TF <= 2.5
)
_ORIGINALS: Dict[Tuple[str, str], Callable[..., Any]] = {}
_state = threading.local()
_MARK = "__envrepro_wrapped__"


@contextlib.contextmanager
def capture_guard() -> Iterator[None]:
    """Inside this block, wrapped saves don't capture (avoids nested and double captures)."""
    prev = getattr(_state, "busy", False)
    _state.busy = True
    try:
        yield
    finally:
        _state.busy = prev


def _wrap(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def save(self: Any, filepath: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(_state, "busy", False):
            return orig(self, filepath, *args, **kwargs)
        with capture_guard():
            result = orig(self, filepath, *args, **kwargs)
            if _is_path(filepath):
                from envrepro.capturing.capture import safe_capture

                safe_capture(str(filepath), model=self)
        return result

    setattr(save, _MARK, orig)
    return save


def _is_path(filepath: Any) -> bool:
    import os

    return isinstance(filepath, (str, os.PathLike))


def _classes() -> List[Tuple[Tuple[str, str], Any]]:
    import sys

    found = []
    for mod_name, attr in _TARGETS:
        if mod_name.split(".")[0] not in sys.modules:
            continue  # a flavour the user has not imported: leave it alone
        try:
            mod = importlib.import_module(mod_name)
        except Exception:  # noqa: BLE001 - absent or broken flavour: nothing to patch
            continue
        cls = getattr(mod, attr, None)
        if cls is not None:
            found.append(((mod_name, attr), cls))
    return found


def install_hook() -> List[str]:
    """Wrap ``save`` on every Keras Model class present; returns what was patched."""
    import sys

    if "tensorflow" not in sys.modules and "keras" not in sys.modules and "tf_keras" not in sys.modules:
        try:
            import tensorflow  # noqa: F401 - loads tf.keras so its Model class can be found
        except ImportError:
            pass
    patched = []
    for key, cls in _classes():
        current = cls.__dict__.get("save")
        if current is None or hasattr(current, _MARK):
            continue
        _ORIGINALS[key] = current
        cls.save = _wrap(current)
        patched.append(f"{key[0]}.{key[1]}.save")
    return patched


def uninstall_hook() -> List[str]:
    restored = []
    for (mod_name, attr), orig in list(_ORIGINALS.items()):
        mod = importlib.import_module(mod_name)
        cls = getattr(mod, attr)
        cls.save = orig
        restored.append(f"{mod_name}.{attr}.save")
        del _ORIGINALS[(mod_name, attr)]
    return restored


def original_save(model: Any) -> Optional[Callable[..., Any]]:
    """The unwrapped ``save`` for this model's class, if the hook wrapped it."""
    for klass in type(model).__mro__:
        fn = klass.__dict__.get("save")
        if fn is not None:
            return getattr(fn, _MARK, None)
    return None


def save(model: Any, path: "os.PathLike[str] | str", sample_input: Any = None,
         resume_check: bool = False, **save_kwargs: Any) -> Any:
    """``model.save(path, **save_kwargs)`` then capture; a failed capture warns, never raises.

    The model save is the user's data: it must succeed even when the capture can't.
    ``resume_check`` records one training step, run on a copy loaded from ``path``.
    """
    from envrepro.capturing.capture import safe_capture

    orig = original_save(model)
    if orig is not None:
        orig(model, path, **save_kwargs)  # the hook, if installed, must not capture twice
    else:
        with capture_guard():
            model.save(path, **save_kwargs)
    return safe_capture(path, model=model, sample_input=sample_input, resume_check=resume_check)
