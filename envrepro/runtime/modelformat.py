"""What a saved model file is, read from the file itself (folder layout, magic bytes, the config
inside), without loading the model.
"""
from __future__ import absolute_import, division, print_function

import json
import os

# The file magic of each format: the one definition (the host's sidecar/modelformat.py and model
# readers import these too).
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
LFS_MAGIC = b"version https://git-lfs"


def detect_format(path):
    """``savedmodel`` | ``h5`` | ``keras`` | None, from the folder layout or the file magic (the
    extension is only a fallback, for paths that don't exist yet: people save HDF5 as
    ``.model``)."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")) or os.path.exists(
                os.path.join(path, "saved_model.pbtxt")):
            return "savedmodel"
        return None
    if os.path.isfile(path):
        magic = b""
        try:
            with open(path, "rb") as fh:
                magic = fh.read(8)
        except (IOError, OSError):
            pass
        if magic == HDF5_MAGIC:
            return "h5"
        if magic[:4] == ZIP_MAGIC:
            return "keras"
        return None
    lower = path.lower()
    if lower.endswith((".h5", ".hdf5")):
        return "h5"
    if lower.endswith(".keras"):
        return "keras"
    return None


def h5_static(path):
    """Class name and compile flag from an H5 file's attributes, without loading the model."""
    out = {}
    try:
        import h5py

        with h5py.File(path, "r") as fh:
            cfg = fh.attrs.get("model_config")
            if cfg is not None:
                if isinstance(cfg, bytes):
                    cfg = cfg.decode("utf-8")
                out["class_name"] = json.loads(cfg).get("class_name")
            out["compile"] = fh.attrs.get("training_config") is not None
            out["state_saved"] = "optimizer_weights" in fh
    except Exception:
        pass
    return out


def keras_zip_static(path):
    """Class name and compile flag from a ``.keras`` zip's config.json."""
    out = {}
    try:
        import zipfile

        with zipfile.ZipFile(path) as zf:
            cfg = json.loads(zf.read("config.json").decode("utf-8"))
        out["class_name"] = cfg.get("class_name")
        out["compile"] = bool(cfg.get("compile_config"))
    except Exception:
        pass
    return out


def is_compiled(model):
    """Whether the live model was compiled (its training config and optimizer get saved)."""
    if model is None or getattr(model, "optimizer", None) is None:
        return False
    for attr in ("compiled", "_is_compiled"):
        val = getattr(model, attr, None)
        if isinstance(val, bool):
            return val
    return True
