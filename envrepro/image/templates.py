"""The Dockerfile text lives in ``images/`` (package ``envrepro.images``), not in Python: the
environment template ``env.Dockerfile``, the Python-from-source stage, and the named fragments in
``images/fragments/`` (the pip environment block, the rest stage, one install step...).

Python only fills values in, with ``string.Template``: ``${NAME}`` is ours, ``$$NAME`` is Docker's
own variable. The paths below are the image's layout, named once here and filled into the
templates, so the Python side and the Dockerfile text cannot disagree.
"""
from __future__ import annotations

from string import Template
from typing import Dict

from envrepro import shipped
from envrepro.sidecar import layout

VENV = "/opt/envrepro/venv"
BUILD_DIR = layout.BUILD_DIR
# Local wheels are locked as ``name @ file:///envrepro/capture/wheels/<file>`` (the capture's
# mount point at run time); the builder stage puts them at the same path.
WHEELS_DIR = layout.WHEELS_MOUNT
USER_UID = 10001   # the image's envrepro user; the sandbox runs as it (sandbox.policy)
LAYOUT = {"VENV": VENV, "BUILD_DIR": BUILD_DIR, "WHEELS_DIR": WHEELS_DIR, "USER_UID": str(USER_UID)}


def template_text(name: str = "env.Dockerfile") -> str:
    """A template from package ``envrepro.images`` (pyproject maps it to the ``images/`` folder)."""
    return shipped.text("envrepro.images", name)


def fill(name: str, **values: str) -> str:
    """Template ``name`` with the image layout and ``values`` filled in.

    In a fragment (``fragments/...``), lines starting with ``##`` explain it and are not rendered,
    and the file's final newline is not part of the text: callers join and nest fragments.
    """
    text = template_text(name)
    if name.startswith("fragments/"):
        text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("##"))
        text = text[:-1] if text.endswith("\n") else text
    mapping: Dict[str, str] = dict(LAYOUT, **values)
    return Template(text).substitute(mapping)
