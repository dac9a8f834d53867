"""Which Keras model format a path holds, told from its files (magic bytes), not its name.

The magic bytes and the format test are defined once, in the standard-library runtime
(``runtime/modelformat.py``), which the probe uses inside the training interpreter; the host
uses them too and adds only the reason and the fix when a path is not a model.
"""
from __future__ import annotations

from pathlib import Path

from envrepro.errors import ModelNotFound
from envrepro.runtime.modelformat import HDF5_MAGIC, LFS_MAGIC, ZIP_MAGIC
from envrepro.runtime.modelformat import detect_format as sniff_format

__all__ = ["HDF5_MAGIC", "LFS_MAGIC", "ZIP_MAGIC", "detect_format"]


def detect_format(model_path: Path) -> str:
    """savedmodel | h5 | keras, from the files (magic bytes), not the name alone. The test itself
    is the runtime's (the probe makes the same one in the training interpreter); this adds the
    reason, and the fix, when it fails."""
    if not model_path.is_dir() and not model_path.is_file():
        raise ModelNotFound("no model at this path", str(model_path),
                            "check the path, or save the model first")
    fmt = sniff_format(str(model_path))
    if fmt:
        return fmt
    if model_path.is_dir():
        raise ModelNotFound(
            "folder is not a SavedModel (no saved_model.pb)", str(model_path),
            "pass the folder model.save() wrote, or an .h5/.keras file",
        )
    with open(model_path, "rb") as f:
        head = f.read(64)
    if head.startswith(LFS_MAGIC):
        raise ModelNotFound("file is a Git LFS pointer, not the model", str(model_path),
                            "run `git lfs pull`")
    fix = "pass what model.save() wrote: a SavedModel folder, an .h5 or a .keras file"
    if not head:
        raise ModelNotFound("file is empty, not a Keras model", str(model_path), fix)
    name = model_path.name.lower()
    if name.endswith((".h5", ".hdf5")):
        raise ModelNotFound("named like an HDF5 model but is not an HDF5 file",
                            str(model_path), fix)
    if name.endswith(".keras"):
        raise ModelNotFound("named like a .keras model but is not a zip archive",
                            str(model_path), fix)
    raise ModelNotFound("not a Keras model file (neither HDF5 nor .keras zip)", str(model_path), fix)
