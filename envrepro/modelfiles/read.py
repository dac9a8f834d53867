"""Read what a saved Keras model file says about itself, without importing TensorFlow.

``envrepro doctor``, ``inspect`` and ``capture --infer`` must work on a machine where the saving
TensorFlow can't even be installed, and must never run the model's code (an H5 Lambda layer is
marshalled bytecode, a SavedModel is a program). So the files are read directly, one reader per
format: savedmodel.py (``saved_model.pb`` through protowire.py, ``keras_metadata.pb``), h5file.py
(root attributes through h5py, optional) and kerasarchive.py (``.keras`` zip, read defensively);
the Keras config they all end in is walked by kerasconfig.py. This module holds what they fill in
(:class:`ModelFileInfo`), the dispatcher on the file's magic bytes and the human summary.

Where each format keeps each fact is documented in docs/failures.md ("Where the saving versions live").
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from envrepro.modelfiles.h5file import read_h5
from envrepro.modelfiles.kerasarchive import read_keras_zip
from envrepro.modelfiles.info import ModelFileInfo
from envrepro.modelfiles.savedmodel import read_savedmodel
from envrepro.modelfiles.format import HDF5_MAGIC, LFS_MAGIC, ZIP_MAGIC  # the capture format owns the magic


def read_model_file(path: "os.PathLike[str] | str") -> ModelFileInfo:
    """Inspect a SavedModel folder, an H5 file or a ``.keras`` zip. Never raises on content:
    what makes the file unloadable goes to ``problems``, what could not be read to ``notes``."""
    p = Path(os.path.abspath(path))
    info = ModelFileInfo(path=str(p))
    if p.is_dir():
        read_savedmodel(p, info)
    elif p.is_file():
        with open(p, "rb") as f:
            head = f.read(64)
        if head.startswith(HDF5_MAGIC):
            info.format = "h5"
            read_h5(p, info)
        elif head.startswith(ZIP_MAGIC):
            info.format = "keras"
            read_keras_zip(p, info)
        elif head.startswith(LFS_MAGIC):
            info.problems.append("file is a Git LFS pointer, not the model (run `git lfs pull`)")
        else:
            info.problems.append("not a Keras model file: neither HDF5, a .keras zip nor a SavedModel folder")
    else:
        info.problems.append("no model at this path")
    _finish(info)
    return info


def _finish(info: ModelFileInfo) -> None:
    info.class_names = sorted(set(info.class_names))
    info.custom_classes = sorted(set(info.custom_classes))
    info.registered_names = sorted(set(info.registered_names))
    info.config_modules = sorted(set(info.config_modules))
    info.custom_ops = sorted({o for o in info.ops if ">" in o})
    info.markers = sorted(set(info.markers))


def describe(info: ModelFileInfo) -> str:
    """Human summary for ``envrepro inspect`` on a model without a capture."""
    rows = [f"model        {info.path}", f"format       {info.format or 'unknown'}"]

    def row(label: str, value: Any) -> None:
        if value not in (None, "", [], False):
            rows.append(f"{label:<13}{value}")

    row("tensorflow", info.tensorflow_version and f"{info.tensorflow_version}"
        + (f" ({info.tensorflow_git_version})" if info.tensorflow_git_version else ""))
    row("keras", info.keras_version)
    row("backend", info.backend)
    row("saved", info.date_saved)
    row("model class", info.model_class)
    row("custom", ", ".join(info.custom_classes))
    row("registered", ", ".join(info.registered_names))
    row("custom ops", ", ".join(info.custom_ops))
    row("lambdas", ", ".join(f"{l.layer} ({l.function_type})" for l in info.lambdas))
    tc = info.training_config
    if tc:
        bits = [f"optimizer {tc.optimizer}"] if tc.optimizer else []
        if tc.legacy_keys:
            bits.append("Keras-2 keys " + ", ".join(tc.legacy_keys))
        if tc.losses:
            bits.append("loss " + ", ".join(tc.losses))
        if tc.metrics:
            bits.append("metrics " + ", ".join(tc.metrics))
        row("compiled", "; ".join(bits) or "yes")
    row("markers", ", ".join(info.markers))
    for p in info.problems:
        rows.append(f"{'PROBLEM':<13}{p}")
    for n in info.notes:
        rows.append(f"{'note':<13}{n}")
    return "\n".join(rows) + "\n"
