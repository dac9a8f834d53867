"""The platform an image build installs for, read from its base image once and cached: which
wheels fit a container of that base (Linux, its glibc and machine, its Python and ABI).

The wheelhouse is filled on the host, whose own platform says nothing about the image's: ``pip
download`` is told the target's tags (``--platform``/``--python-version``/``--implementation``/
``--abi``), the same tags pip inside the container would accept. They come from the base image
itself (one short container, no network, cached by the base's image id), not from a table: a
``python:3.6-slim`` is Debian buster (glibc 2.28), a ``python:3.12-slim`` bookworm (2.36).
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from envrepro.engine.base import ContainerEngine
from envrepro.errors import BuildFailed
from envrepro.packages.wheelhouse.store import WheelStore

# Standard library only and Python 3.6-compatible: it runs in the base image's interpreter.
PROBE = (
    "import json, os, platform, sys\n"
    "try:\n    libc = os.confstr('CS_GNU_LIBC_VERSION') or ''\nexcept (ValueError, OSError):\n    libc = ''\n"
    "print(json.dumps({'version': platform.python_version(), 'machine': platform.machine(),\n"
    "  'implementation': platform.python_implementation(), 'abiflags': getattr(sys, 'abiflags', ''),\n"
    "  'libc': libc}))\n")


_PYTHON = re.compile(r"\A\d{1,2}\.\d{1,3}(\.\d{1,3})?([a-z]{1,2}\d{0,3})?\+?\Z")
_MACHINE = re.compile(r"\A[a-z0-9_]{1,20}\Z")
_ABIFLAGS = re.compile(r"\A[a-z]{0,4}\Z")
IMPLEMENTATIONS = ("CPython", "PyPy")


@dataclass(frozen=True)
class Target:
    """What a base image's Python accepts."""

    python: str                 # "3.8.18"
    machine: str = "x86_64"
    implementation: str = "CPython"
    abiflags: str = ""
    glibc: Tuple[int, int] = (2, 36)

    def __post_init__(self) -> None:
        """Every field is a tag fragment of a known shape: a target read from a carried
        wheelhouse's index is untrusted, and ``ident`` names record folders."""
        if not _PYTHON.match(self.python):
            raise ValueError(f"python {self.python[:40]!r} is not a version")
        if not _MACHINE.match(self.machine):
            raise ValueError(f"machine {self.machine[:40]!r} is not a machine name")
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation {self.implementation[:40]!r} is not one of {IMPLEMENTATIONS}")
        if not _ABIFLAGS.match(self.abiflags):
            raise ValueError(f"abiflags {self.abiflags[:40]!r} are not ABI flags")
        if not (isinstance(self.glibc, tuple) and len(self.glibc) == 2
                and all(isinstance(v, int) and 0 <= v < 1000 for v in self.glibc)):
            raise ValueError(f"glibc {self.glibc!r} is not a version")

    @property
    def xy(self) -> str:
        return ".".join(self.python.split(".")[:2])

    @property
    def abi(self) -> str:
        return "cp" + self.xy.replace(".", "") + self.abiflags

    def platforms(self) -> List[str]:
        """manylinux tags from the base's glibc down to 2.5, newest first (pip's order)."""
        arch = self.machine
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
        for (lm, ln), alias in (((2, 17), "manylinux2014"), ((2, 12), "manylinux2010"), ((2, 5), "manylinux1")):
            if (major, minor) >= (lm, ln):
                tags.append(f"{alias}_{arch}")
        return tags

    def pip_args(self) -> List[str]:
        """``pip download`` options selecting files for this target."""
        args: List[str] = []
        for p in self.platforms():
            args += ["--platform", p]
        # the full version: Requires-Python such as "!=3.9.0,!=3.9.1,>=3.9" (cryptography) is
        # judged against it, and "3.9" would mean 3.9.0
        args += ["--python-version", self.python, "--implementation",
                 "cp" if self.implementation == "CPython" else "pp", "--abi", self.abi]
        return args

    def to_doc(self) -> Dict[str, Any]:
        return dict(asdict(self), glibc=list(self.glibc))

    @classmethod
    def from_doc(cls, doc: Dict[str, Any]) -> "Target":
        """From ``to_doc``'s output (a record, or a carried wheelhouse's index); ValueError when
        it isn't one."""
        try:
            return cls(python=str(doc["python"]), machine=str(doc["machine"]),
                       implementation=str(doc["implementation"]), abiflags=str(doc.get("abiflags") or ""),
                       glibc=(int(doc["glibc"][0]), int(doc["glibc"][1])))
        except (KeyError, TypeError, ValueError, IndexError):
            raise ValueError("not a target") from None

    def accepts(self, filename: str) -> bool:
        """Whether pip in the image would install this wheel (its tags against the target's).
        A lock entry's hashes cover every file of the release (other Pythons, macOS...): the
        store may hold another build's file for the same pin."""
        if not filename.endswith(".whl"):
            return False
        from envrepro.packages.indexhashes import wheel_tags

        return bool(wheel_tags(filename) & _tags(self))

    def ident(self) -> str:
        """A short name for records: cp38-manylinux_2_36_x86_64."""
        return f"{self.abi}-{self.platforms()[0] if self.platforms() else self.machine}"


@functools.lru_cache(maxsize=16)
def _tags(target: Target) -> FrozenSet[Tuple[str, str, str]]:
    from envrepro.packages.indexhashes import linux_target_tags

    return frozenset(linux_target_tags({"version": target.python, "machine": target.machine,
                                        "implementation": target.implementation, "target_glibc": target.glibc}))


def parse_probe(text: str, where: str) -> Target:
    try:
        doc = json.loads(text.strip().splitlines()[-1])
        libc = re.match(r"glibc (\d+)\.(\d+)", str(doc.get("libc") or ""))
        if not libc:
            raise BuildFailed(f"{where} has no glibc ({doc.get('libc') or 'unknown libc'}): "
                              "the wheelhouse fetches manylinux wheels", None,
                              "use a glibc base image (python:X.Y-slim), or ENVREPRO_BUILDER=dockerfile")
        return Target(python=str(doc["version"]), machine=str(doc["machine"]),
                      implementation=str(doc["implementation"]), abiflags=str(doc.get("abiflags") or ""),
                      glibc=(int(libc.group(1)), int(libc.group(2))))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise BuildFailed(f"could not read the platform of {where} (its python3 printed "
                          f"{text.strip()[:120]!r})", None, "check that the base image has python3") from None


def probe(engine: ContainerEngine, base: str, base_info: Dict[str, Any], store: WheelStore) -> Target:
    """The base image's Target, cached by its image id."""
    image_id = str(base_info.get("Id") or "").replace("sha256:", "")
    cached: Optional[Dict[str, Any]] = store.read_record("targets", image_id + ".json") if image_id else None
    if cached:
        try:
            return Target.from_doc(cached)
        except ValueError:
            pass
    code, out, err = engine.run(base, ["python3", "-c", PROBE], user="65534:65534",
                                network_disabled=True, read_only=True, stream=False, timeout=120)
    if code != 0:
        raise BuildFailed(f"the base image {base} could not run python3 (exit {code}): "
                          f"{(err or out).strip()[-200:]}", None, "check the base image (--base-image)")
    target = parse_probe(out, base)
    if image_id:
        store.write_record(target.to_doc(), "targets", image_id + ".json")
    return target
