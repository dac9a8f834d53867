"""TensorFlow's compatibility table (``envrepro/data/compat.yaml``) and version helpers.

The table answers the questions no model file answers: which Python a TF version runs on,
which Keras it writes, which numpy/h5py/protobuf a working environment needs. Doctor checks
environments against it; ``capture --infer`` builds a lock from it.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Dict, List, Optional, Tuple

import yaml

from envrepro import shipped

DATA = ("envrepro.data", "compat.yaml")   # read through the package (envrepro.shipped)


def vtuple(version: Optional[str]) -> Tuple[int, ...]:
    """'2.4.1' -> (2, 4, 1); 'v2.4.0-49-g85c8' -> (2, 4, 0); '2.2.4-tf' -> (2, 2, 4); '' -> ()."""
    nums: List[int] = []
    core = re.split(r"[-+]", (version or "").strip().lstrip("v"), maxsplit=1)[0]
    for part in core.split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        nums.append(int(m.group(0)))
        if m.group(0) != part:
            break
    return tuple(nums)


def minor_of(version: Optional[str]) -> Optional[str]:
    """'2.4.1' -> '2.4'; None when the version has no minor."""
    t = vtuple(version)
    return f"{t[0]}.{t[1]}" if len(t) >= 2 else None


@functools.lru_cache(maxsize=1)
def table() -> Dict[str, Dict[str, Any]]:
    """Rows keyed by TensorFlow minor ('2.4'), in file order (oldest first)."""
    data = yaml.safe_load(shipped.text(*DATA))
    return {str(k): dict(v) for k, v in (data.get("tensorflow") or {}).items()}


def for_tf(version: Optional[str]) -> Dict[str, Any]:
    """The row for TensorFlow ``version`` (any patch of the minor), with ``minor`` added; an empty
    dict for a version the table doesn't know (callers treat that as "no advice")."""
    m = minor_of(version)
    row = table().get(m or "")
    if row is None:
        return {}
    out = dict(row)
    out["minor"] = m
    return out


def known_minors() -> List[str]:
    return list(table())


def likely_python(tf_version: Optional[str]) -> Optional[str]:
    return for_tf(tf_version).get("python_likely")


def supports_python(tf_version: Optional[str], python_version: Optional[str]) -> Optional[bool]:
    """Whether TF ``tf_version`` has wheels for ``python_version`` (None when unknown)."""
    row = for_tf(tf_version)
    pm = minor_of(python_version)
    if not row or not pm:
        return None
    return pm in row.get("python", [])


def tf_for_keras(keras_version: Optional[str]) -> Optional[str]:
    """The TensorFlow minor most likely to have written a file with this ``keras_version``.

    Keras 2 versions name their TF (2.6.0 .. 2.15.0, tf-keras 2.16+: same minor); older in-TF
    Keras versions are shared by several TFs ('2.2.4-tf': 2.0 and 2.1; '2.4.0': 2.3 and 2.4):
    the newest is returned. Keras 3 maps through each row's ``keras3_saved`` range.
    """
    kv = vtuple(keras_version)
    if not kv:
        return None
    rows = table()
    if kv[0] >= 3:
        for minor, row in rows.items():
            lo, hi = (row.get("keras3_saved") or [None, None])
            if lo and vtuple(lo)[:2] <= kv[:2] <= vtuple(hi)[:2]:
                return minor
        return list(rows)[-1] if kv[:2] > (3, 0) else None
    if kv[0] != 2 or len(kv) < 2:
        return None
    matches = [m for m, row in rows.items() if str(row.get("keras")) == keras_version]
    if matches:
        return matches[-1]
    candidate = f"2.{kv[1]}"
    return candidate if candidate in rows else None


def keras_flavor_for(tf_version: Optional[str]) -> Optional[str]:
    return for_tf(tf_version).get("keras_flavor")


def gpu_build(tf_version: Optional[str]) -> Optional[Dict[str, str]]:
    """CUDA/cuDNN of TF's tested GPU build (merge point with data/gpu_bases.yaml)."""
    row = for_tf(tf_version)
    if not row or not row.get("cuda"):
        return None
    return {"cuda": str(row["cuda"]), "cudnn": str(row["cudnn"])}


def requirements(tf_version: Optional[str]) -> Dict[str, str]:
    """``{distribution: specifier}`` a working environment for this TF must satisfy."""
    out: Dict[str, str] = {}
    for req in for_tf(tf_version).get("requires") or []:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
        if m:
            out[canonical(m.group(1))] = m.group(2).strip()
    return out


def pins(tf_version: Optional[str]) -> Dict[str, str]:
    return {canonical(k): str(v) for k, v in (for_tf(tf_version).get("pins") or {}).items()}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def satisfies(version: Optional[str], spec: str) -> Optional[bool]:
    """``version`` in ``spec`` (PEP 440), None when either can't be parsed."""
    if not version or not spec:
        return None
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
        from packaging.version import InvalidVersion, Version
    except ImportError:  # pragma: no cover - pip-tools brings packaging
        return None
    try:
        return Version(version) in SpecifierSet(spec)
    except (InvalidSpecifier, InvalidVersion):
        return None
