"""Read a ``.keras`` zip: ``metadata.json`` (Keras version, save date) and ``config.json``.

A zip is attacker-controlled input: entries with absolute or '..' names refuse the whole file,
the number of entries is capped, and a member is inflated only up to the cap whatever its header
claims. Nothing else in the archive (weights, assets) is read.
"""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Optional

from envrepro.modelfiles.kerasconfig import MAX_JSON_BYTES, as_str, summarize_training_config, walk_config

from envrepro.modelfiles.info import ModelFileInfo

MAX_ZIP_ENTRIES = 100_000


def _unsafe_name(name: str) -> bool:
    norm = name.replace("\\", "/")
    return (norm.startswith("/") or bool(re.match(r"^[A-Za-z]:", norm))
            or ".." in norm.split("/") or "\x00" in norm)


def _read_member(zf: zipfile.ZipFile, name: str, info: ModelFileInfo) -> Optional[bytes]:
    try:
        zi = zf.getinfo(name)
    except KeyError:
        return None
    if zi.file_size > MAX_JSON_BYTES:
        info.problems.append(f"{name} in the zip is larger than {MAX_JSON_BYTES >> 20} MiB: refused")
        return None
    with zf.open(zi) as fh:
        data = fh.read(MAX_JSON_BYTES + 1)   # the header's size can lie: cap what is inflated
    if len(data) > MAX_JSON_BYTES:
        info.problems.append(f"{name} inflates past {MAX_JSON_BYTES >> 20} MiB: refused")
        return None
    return data


def read_keras_zip(path: Path, info: ModelFileInfo) -> None:
    """Fill ``info`` from a ``.keras`` zip's two JSON members, after refusing unsafe archives."""
    try:
        zf = zipfile.ZipFile(str(path))
    except (zipfile.BadZipFile, OSError) as e:
        info.problems.append(f"not a readable zip ({e})")
        return
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            info.problems.append(f"zip has {len(infos)} entries: refused")
            return
        bad = [zi.filename for zi in infos if _unsafe_name(zi.filename)]
        if bad:
            info.problems.append("zip has entries with absolute or '..' names (refused, not read): "
                                 + ", ".join(sorted(bad)[:5]))
            return
        names = {zi.filename for zi in infos}
        if "config.json" not in names:
            info.problems.append("zip has no config.json: not a .keras model")
            return
        meta = _read_member(zf, "metadata.json", info)
        config_raw = _read_member(zf, "config.json", info)
    if meta:
        try:
            m = json.loads(meta.decode("utf-8", "replace"))
            info.keras_version = as_str(m.get("keras_version"))
            info.date_saved = as_str(m.get("date_saved"))
        except (ValueError, AttributeError):
            info.notes.append("metadata.json is not valid JSON")
    if config_raw:
        try:
            config = json.loads(config_raw.decode("utf-8", "replace"))
        except ValueError:
            info.notes.append("config.json is not valid JSON")
            return
        if isinstance(config, dict):
            info.model_class = as_str(config.get("class_name"))
            walk_config(config, info)
            if config.get("compile_config"):
                info.training_config = summarize_training_config(config["compile_config"])
