"""Which packages and files the wheel holds: found by rule, never listed by hand.

Everything else (name, version, dependencies, entry point) is in pyproject.toml. This file exists
because one rule pyproject's ``packages.find`` can't express: the Dockerfile templates live in the
top-level ``images/`` folder (beside ``envrepro/``, where they are read and reviewed as Dockerfiles)
and ship as the package ``envrepro.images``. Every folder below ``envrepro/`` and ``images/`` is a
package (``__pycache__`` aside), so a new room or template folder can't be forgotten, and every file in a package folder ships
with it (``package_data`` ``*``: templates, fragments, scripts, YAML tables, the runtime package). tests/unit/test_packaging.py
builds the wheel and compares its file list with the source tree.
"""
import os

import setuptools
from setuptools import find_namespace_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP = ("__pycache__",)


def _folders(root):
    """Dotted names of ``root`` and every folder below it (relative to ``root``)."""
    names = [""]
    for folder, subdirs, _files in os.walk(os.path.join(HERE, root)):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP and not d.startswith("."))
        rel = os.path.relpath(folder, os.path.join(HERE, root))
        if rel != ".":
            names.append(rel.replace(os.sep, "."))
    return names


packages = find_namespace_packages(where=HERE, include=["envrepro", "envrepro.*"],
                                   exclude=["*.__pycache__"])
package_dir = {}
for sub in _folders("images"):
    name = "envrepro.images" + ("." + sub if sub else "")
    packages.append(name)
    package_dir[name] = os.path.join("images", *sub.split(".")) if sub else "images"

# PEP 639 (a license expression) from setuptools 77 on, which needs Python 3.9; the save hook is
# installed into Python 3.8 training environments too, whose newest setuptools is 75.
license_field = ({"license_expression": "Apache-2.0"}
                 if tuple(int(p) for p in setuptools.__version__.split(".")[:1]) >= (77,)
                 else {"license": "Apache-2.0"})

setup(packages=sorted(set(packages)), package_dir=package_dir,
      package_data={"": ["*"]}, exclude_package_data={"": ["*.py[cod]", "*.so", "*.orig", "*.rej", "*~"]},
      **license_field)
