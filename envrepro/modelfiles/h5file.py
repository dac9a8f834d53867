"""Read an H5 model file's root attributes: Keras version, backend, model and training config.

h5py is imported lazily and is optional: without it the info says so in ``notes`` (a host that
only runs the doctor need not install it). A file without ``model_config`` is weights only
(docs/failures.md class 8e). H5 stores no TensorFlow version: only the Keras version.
"""
from __future__ import annotations

import json
from pathlib import Path

from envrepro.modelfiles.kerasconfig import TRAINING_CONFIG, as_str, summarize_training_config, walk_config

from envrepro.modelfiles.info import ModelFileInfo


def read_h5(path: Path, info: ModelFileInfo) -> None:
    """Fill ``info`` from an H5 file's attributes, never its weights (only the attributes say who
    wrote the file; reading weights would cost memory for nothing)."""
    try:
        import h5py  # noqa: F401 - optional: the host may not have it
    except ImportError:
        info.notes.append("h5py not installed: the H5 attributes (Keras version, config) were not "
                          "read (pip install h5py)")
        return
    try:
        with h5py.File(str(path), "r") as fh:
            attrs = fh.attrs
            info.keras_version = as_str(attrs.get("keras_version"))
            info.backend = as_str(attrs.get("backend"))
            raw_config = attrs.get("model_config")
            raw_training = attrs.get("training_config")
            info.optimizer_weights = "optimizer_weights" in fh
            if "model_weights" in fh:
                sub = fh["model_weights"].attrs
                info.keras_version = info.keras_version or as_str(sub.get("keras_version"))
                info.backend = info.backend or as_str(sub.get("backend"))
            weights_only = raw_config is None and ("layer_names" in attrs or "model_weights" not in fh)
    except (OSError, ValueError) as e:
        info.problems.append(f"HDF5 file could not be opened ({e})")
        return
    if weights_only:
        info.weights_only = True
        info.problems.append(f"No model config found in the file at {path}. (a weights-only file: "
                             "rebuild the model in code and call load_weights)")
        return
    if raw_config is not None:
        try:
            config = json.loads(as_str(raw_config) or "null")
        except ValueError:
            info.notes.append("model_config attribute is not valid JSON")
            config = None
        if config:
            info.model_class = as_str(config.get("class_name")) if isinstance(config, dict) else None
            walk_config(config, info)
    if raw_training is not None:
        try:
            training = json.loads(as_str(raw_training) or "null")
            info.training_config = summarize_training_config(training)
            walk_config(training, info, owner=TRAINING_CONFIG)
        except ValueError:
            info.notes.append("training_config attribute is not valid JSON")
