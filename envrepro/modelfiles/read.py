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
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from envrepro.modelfiles.h5file import read_h5
from envrepro.modelfiles.kerasarchive import read_keras_zip
from envrepro.modelfiles.kerasconfig import LambdaInfo, TrainingConfigSummary
from envrepro.modelfiles.savedmodel import read_savedmodel
from envrepro.modelfiles.format import HDF5_MAGIC, LFS_MAGIC, ZIP_MAGIC  # the capture format owns the magic


@dataclass
class ModelFileInfo:
    """Everything the model's own files say about how (and by what) they were written."""

    path: str
    format: Optional[str] = None                 # savedmodel | h5 | keras | None (not a model)
    tensorflow_version: Optional[str] = None     # SavedModel only
    tensorflow_git_version: Optional[str] = None
    keras_version: Optional[str] = None
    backend: Optional[str] = None
    model_class: Optional[str] = None
    date_saved: Optional[str] = None             # .keras metadata.json
    class_names: List[str] = field(default_factory=list)
    custom_classes: List[str] = field(default_factory=list)
    named_by: Dict[str, str] = field(default_factory=dict)       # custom name -> where the config names it
    registered_names: List[str] = field(default_factory=list)   # 'pkg>Name'
    config_modules: List[str] = field(default_factory=list)     # 'module' fields (Keras 3 / .keras)
    ops: List[str] = field(default_factory=list)
    custom_ops: List[str] = field(default_factory=list)         # 'Addons>Mish', 'TFRA>...'
    lambdas: List[LambdaInfo] = field(default_factory=list)
    training_config: Optional[TrainingConfigSummary] = None
    optimizer_weights: Optional[bool] = None
    markers: List[str] = field(default_factory=list)  # batch_shape, dtype_policy, list_config, input_dtype, gpu_device, fingerprint, keras_metadata
    weights_only: bool = False
    problems: List[str] = field(default_factory=list)  # why this is not a loadable model
    notes: List[str] = field(default_factory=list)     # what could not be read, and why

    @property
    def keras_major(self) -> Optional[int]:
        m = re.match(r"(\d+)", self.keras_version or "")
        return int(m.group(1)) if m else None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


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
