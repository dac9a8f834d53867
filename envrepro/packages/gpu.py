"""Which TensorFlow a GPU image gets (``--gpus``), and where its CUDA libraries come from.

A capture made with ``tensorflow-cpu`` has no GPU kernels: built as it is, the image would run
on the CPU whatever the base. So ``--gpus`` builds the GPU build of the same version instead,
re-resolved under the capture's pins (``envrepro.packages.platforms.translate(gpu=True)``):

==================  ==================================  ==============================================
captured TF         requirement of the GPU lock         CUDA / cuDNN
==================  ==================================  ==============================================
< 2.1               ``tensorflow-gpu==V``               the CUDA base image (``data/gpu_bases.yaml``)
2.1 - 2.13          ``tensorflow==V``                   the CUDA base image, Python built from source
>= 2.14             ``tensorflow[and-cuda]==V``         pip wheels (``nvidia-*``), on ``python:X.Y-slim``
==================  ==================================  ==============================================

A capture that already pins the GPU build keeps its lock: ``tensorflow-gpu``, ``tensorflow`` 2.1
to 2.13, and ``tensorflow`` 2.14+ installed with its ``and-cuda`` extra (the lock then pins
``nvidia-cudnn-cu*``). TensorFlow 2.14+ without the extra gets it.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence, Tuple

from envrepro.sidecar import lockfile
from envrepro.sidecar.manifest import Capture

GPU_IN_TENSORFLOW_FROM = (2, 1)     # before: the GPU build is the separate tensorflow-gpu
CUDA_WHEELS_FROM = (2, 14)          # from: tensorflow[and-cuda] brings CUDA and cuDNN as wheels
AND_CUDA = "and-cuda"
CPU_BUILDS = ("tensorflow-cpu",)
CUDNN_WHEEL = re.compile(r"^nvidia-cudnn-cu\d+$")


def tf_minor(version: str) -> Optional[Tuple[int, int]]:
    m = re.match(r"^(\d+)\.(\d+)", str(version or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def cuda_as_wheels(tf_version: str) -> bool:
    """True when TensorFlow ``tf_version``'s GPU build gets CUDA and cuDNN as pip wheels
    (``tensorflow[and-cuda]``, 2.14 on): the image stays on ``python:X.Y-slim``."""
    minor = tf_minor(tf_version)
    return minor is not None and minor >= CUDA_WHEELS_FROM


def gpu_distribution(version: str) -> str:
    """The distribution of TensorFlow ``version``'s Linux GPU build."""
    minor = tf_minor(version)
    return "tensorflow-gpu" if minor is not None and minor < GPU_IN_TENSORFLOW_FROM else "tensorflow"


def gpu_requirement(name: str, version: str) -> str:
    """``name`` (a Linux TensorFlow distribution) with the ``and-cuda`` extra where it has one."""
    return f"{name}[{AND_CUDA}]" if name == "tensorflow" and cuda_as_wheels(version) else name


def base_name(requirement: str) -> str:
    """``tensorflow[and-cuda]`` -> ``tensorflow``."""
    return lockfile.canonical_name(requirement.split("[", 1)[0].strip())


def _has_cuda_wheels(entries: Sequence[lockfile.LockEntry]) -> bool:
    return any(CUDNN_WHEEL.match(e.name) for e in entries)


def mapped_for_gpu(entry: lockfile.LockEntry, entries: Sequence[lockfile.LockEntry]) -> Optional[str]:
    """The GPU requirement name a Linux TensorFlow pin of the lock becomes (``tensorflow``,
    ``tensorflow[and-cuda]``, ``tensorflow-gpu``), or None when it is the GPU build already."""
    if entry.name not in ("tensorflow", "tensorflow-cpu") or not entry.version:
        return None
    wanted = gpu_requirement(gpu_distribution(entry.version), entry.version)
    if base_name(wanted) == entry.name and (wanted == entry.name or _has_cuda_wheels(entries)):
        return None
    return wanted


def needs_gpu_lock(capture: Capture) -> bool:
    """True when the capture's lock (made on Linux) doesn't pin a TensorFlow GPU build with
    its CUDA libraries: ``--gpus`` then builds from a GPU lock (see the module docstring)."""
    try:
        entries = list(capture.lock.entries)
    except OSError:
        return False
    return any(mapped_for_gpu(e, entries) for e in entries)


def libraries(requirement: str) -> str:
    """Where the CUDA libraries of a GPU requirement come from, for the report."""
    return ("CUDA and cuDNN as pip wheels" if f"[{AND_CUDA}]" in requirement
            else "CUDA and cuDNN from the base image")
