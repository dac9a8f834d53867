"""The Python API behind ``envrepro.save`` and ``envrepro.capture``."""
from __future__ import annotations

import os
import warnings
from typing import Any, Iterable, Optional

from envrepro.capturing.capture import CaptureResult, capture as _capture


def capture(path: "os.PathLike[str] | str", model: Any = None, sample_input: Any = None,
            modules: Iterable[str] = (), code_paths: Iterable[str] = ()) -> CaptureResult:
    """Capture the environment of an already saved model, in this (training) process."""
    return _capture(path, model=model, sample_input=sample_input, modules=modules, code_paths=code_paths)


def save(model: Any, path: "os.PathLike[str] | str", sample_input: Any = None,
         **save_kwargs: Any) -> Optional[CaptureResult]:
    """``model.save(path, **save_kwargs)`` then capture; a failed capture warns, never raises.

    The model save is the user's data: it must succeed even when the capture can't.
    """
    from envrepro.capturing.hook import capture_guard, original_save

    orig = original_save(model)
    if orig is not None:
        orig(model, path, **save_kwargs)  # the hook, if installed, must not capture twice
    else:
        with capture_guard():
            model.save(path, **save_kwargs)
    return safe_capture(path, model=model, sample_input=sample_input)


def safe_capture(path: Any, **kwargs: Any) -> Optional[CaptureResult]:
    try:
        result = _capture(str(path), **kwargs)
    except Exception as e:  # noqa: BLE001 - a capture must never break training
        warnings.warn(f"envrepro: the model was saved, but its environment was not captured: {e}",
                      RuntimeWarning, stacklevel=3)
        return None
    for w in result.warnings:
        if os.environ.get("ENVREPRO_QUIET") != "1":
            warnings.warn(f"envrepro: {w}", UserWarning, stacklevel=3)
    return result
