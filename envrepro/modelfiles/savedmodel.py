"""Read a SavedModel folder: the saving TensorFlow's version, its ops, and the Keras JSON.

``saved_model.pb`` holds the TF version and git version in the first MetaGraph's meta_info_def,
the op list (missing ops and GPU-only kernels: docs/failures.md class 7), and before TF 2.5 the
Keras JSON in the object graph's user objects; from TF 2.5 the Keras JSON is in
``keras_metadata.pb``. A SavedModel is a program: it is decoded (protowire.py), never loaded.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List, Optional

from envrepro.modelfiles.kerasconfig import (MAX_JSON_BYTES, TRAINING_CONFIG, as_str, summarize_training_config,
                                           walk_config)
from envrepro.modelfiles.protowire import fields, first_text
from envrepro.modelfiles.format import LFS_MAGIC

from envrepro.modelfiles.info import ModelFileInfo

MAX_PB_BYTES = 2 * 1024 * 1024 * 1024  # saved_model.pb is read whole; larger is not a model we handle


def read_savedmodel(folder: Path, info: ModelFileInfo) -> None:
    """Fill ``info`` from a SavedModel folder; what can't be decoded becomes a note, not an error
    (a half-readable model still tells the doctor its TF version)."""
    pb, pbtxt = folder / "saved_model.pb", folder / "saved_model.pbtxt"
    if not pb.is_file() and not pbtxt.is_file():
        info.problems.append("folder is not a SavedModel (no saved_model.pb or saved_model.pbtxt)")
        return
    info.format = "savedmodel"
    if (folder / "fingerprint.pb").is_file():
        info.markers.append("fingerprint")   # written from TF 2.12 on
    keras_json: Optional[str] = None
    nodes: List[str] = []     # every Keras object's metadata: the layers nested in subclassed models
    if pb.is_file():
        with open(pb, "rb") as f:
            head = f.read(64)
        if head.startswith(LFS_MAGIC):
            info.problems.append("saved_model.pb is a Git LFS pointer, not the model (run `git lfs pull`)")
            return
        if pb.stat().st_size > MAX_PB_BYTES:
            info.notes.append("saved_model.pb is larger than 2 GiB: not read")
        else:
            try:
                keras_json = _parse_saved_model_pb(pb.read_bytes(), info, nodes)
            except ValueError as e:
                info.notes.append(f"saved_model.pb could not be decoded ({e})")
    else:
        text = pbtxt.read_text(encoding="utf-8", errors="replace")
        m = re.search(r'tensorflow_version:\s*"([^"]*)"', text)
        info.tensorflow_version = m.group(1) if m else None
        m = re.search(r'tensorflow_git_version:\s*"([^"]*)"', text)
        info.tensorflow_git_version = m.group(1) if m else None
        info.ops = sorted(set(re.findall(r'^\s*op\s*{\s*name:\s*"([^"]+)"', text, re.M)))
    meta = folder / "keras_metadata.pb"
    if meta.is_file():
        info.markers.append("keras_metadata")
        if meta.stat().st_size > MAX_JSON_BYTES:
            info.notes.append("keras_metadata.pb is too large to read")
        else:
            try:
                nodes = []
                keras_json = _parse_keras_metadata(meta.read_bytes(), nodes) or keras_json
            except ValueError as e:
                info.notes.append(f"keras_metadata.pb could not be decoded ({e})")
    if keras_json:
        _apply_keras_root(keras_json, info)
        for text in nodes:
            _apply_keras_node(text, info)
    elif not info.notes:
        info.notes.append("no Keras metadata: a tf.saved_model.save / model.export() SavedModel, "
                          "which load_model can't restore as a Keras model")


def _parse_saved_model_pb(data: bytes, info: ModelFileInfo, nodes: List[str]) -> Optional[str]:
    """Read meta_info_def (versions, ops) of the first MetaGraph; return the pre-2.5 Keras root
    JSON from the object graph's user objects, if any, and add every other Keras object's
    metadata to ``nodes``."""
    saved = fields(data)
    graphs = saved.get(2) or []
    if not graphs:
        raise ValueError("no meta graph")
    meta_graph = fields(graphs[0])
    for raw in meta_graph.get(1) or []:
        mi = fields(raw)
        info.tensorflow_version = first_text(mi, 5) or info.tensorflow_version
        info.tensorflow_git_version = first_text(mi, 6) or info.tensorflow_git_version
        ops = set()
        for oplist in mi.get(2) or []:
            for opdef in fields(oplist).get(1) or []:
                name = first_text(fields(opdef), 1)
                if name:
                    ops.add(name)
        info.ops = sorted(ops)
    if b"/device:GPU" in data:
        info.markers.append("gpu_device")
    root_json = None
    for graph in meta_graph.get(7) or []:          # object_graph_def: SavedObjectGraph
        for node_raw in fields(graph).get(1) or []:  # nodes: SavedObject
            node = fields(node_raw)
            for user_raw in node.get(4) or []:       # user_object: SavedUserObject
                user = fields(user_raw)
                ident = first_text(user, 1) or ""
                metadata = first_text(user, 3)
                if metadata and ident in ("_tf_keras_model", "_tf_keras_network",
                                          "_tf_keras_sequential") and root_json is None:
                    root_json = metadata
                elif metadata and ident.startswith("_tf_keras_"):
                    nodes.append(metadata)
    return root_json


def _parse_keras_metadata(data: bytes, nodes: List[str]) -> Optional[str]:
    """``SavedMetadata.nodes[]``: the node whose path is ``root`` holds the model's JSON; the
    others (layers, metrics, nested models) go to ``nodes``."""
    first = root = None
    for node_raw in fields(data).get(1) or []:
        node = fields(node_raw)
        path = first_text(node, 3)
        metadata = first_text(node, 5)
        if not metadata:
            continue
        if path == "root" and root is None:
            root = metadata
        else:
            nodes.append(metadata)
        if first is None:
            first = metadata
    if root is None and first is not None:
        nodes.remove(first)
    return root or first


def _apply_keras_root(text: str, info: ModelFileInfo) -> None:
    try:
        root = json.loads(text)
    except ValueError:
        info.notes.append("Keras metadata is not valid JSON")
        return
    if not isinstance(root, dict):
        return
    info.keras_version = info.keras_version or as_str(root.get("keras_version"))
    info.backend = info.backend or as_str(root.get("backend"))
    info.model_class = info.model_class or as_str(root.get("class_name"))
    config = root.get("model_config") or ({"class_name": root.get("class_name"),
                                           "config": root.get("config")} if root.get("config") else None)
    if config:
        walk_config(config, info)
    elif isinstance(root.get("class_name"), str):   # a subclassed model without get_config
        walk_config({"class_name": root["class_name"], "name": root.get("name")}, info)
    if root.get("training_config"):
        info.training_config = summarize_training_config(root["training_config"])
        walk_config(root["training_config"], info, owner=TRAINING_CONFIG)


def _apply_keras_node(text: str, info: ModelFileInfo) -> None:
    """A nested Keras object's metadata: the only place a subclassed model's layers are named
    (its own config, if any, does not list them)."""
    try:
        node = json.loads(text)
    except ValueError:
        return
    if isinstance(node, dict) and isinstance(node.get("class_name"), str):
        walk_config({"class_name": node["class_name"], "config": node.get("config"),
                     "name": node.get("name")}, info)
