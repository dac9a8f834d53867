"""Resolutions on the host never build a source distribution.

Resolving a lock with pip (``capture --infer``) or pip-compile (a macOS/Windows capture
translated for Linux) needs each candidate's dependencies. For a wheel they are read from its
metadata; for an sdist pip runs its ``setup.py`` - code from the index, chosen by a capture or a
model file that came from someone else, running on this host with this user's files and
credentials. So every host resolution runs with ``--only-binary :all:``.

Some pins have no wheel at all (TensorFlow 2.4.1 needs ``termcolor~=1.1.0`` and ``wrapt~=1.12.1``,
both sdist-only). For those, a *stand-in* wheel is written - the same name and version, no code,
no dependencies - into a ``--find-links`` folder and the resolution is retried. The version is
the highest the index lists that satisfies the requirement pip could not meet, or the captured
pin when the resolution has it as a constraint: then pip reports no "could not find a version"
but a conflict (``ResolutionImpossible`` naming the requirement), which counts only when the
pinned version satisfies the requirement (else it is a real conflict, left to fail). The lock then
pins the real sdist (the image build compiles it, inside the build container); its own
dependencies were not resolved, which the caller reports (an sdist that declares dependencies
fails the hash-checked build with pip naming them, never silently).

Nothing here imports pip: pip runs as a subprocess, and this module parses its messages.
"""
from __future__ import annotations

import base64
import hashlib
import io
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ONLY_BINARY = ["--only-binary", ":all:"]
MAX_ROUNDS = 12          # stand-ins added one failure at a time: TF 2.4.1 needs 2
_UNSATISFIED = re.compile(r"Could not find a version that satisfies the requirement (\S+)")
# A requirement whose only candidates are sdists, when a constraint pins it too (pip's resolver
# then reports the requirements of the impossible resolution instead of "could not find").
_IMPOSSIBLE = re.compile(r"RequirementInformation\(requirement=SpecifierRequirement\('([^']+)'\)")
_AVAILABLE = re.compile(r"^Available versions:\s*(.*)$", re.M)

Attempt = Callable[[List[str]], Tuple[bool, str]]          # extra pip args -> (ok, output)
ListVersions = Callable[[str], List[str]]                  # project name -> versions on the index


def unsatisfied(output: str, pins: Optional[Dict[str, str]] = None) -> List[Requirement]:
    """The requirements pip could not meet, from its output (unparseable ones are left out).
    ``pins``: canonical name -> version of the resolution's ``==`` constraints; a requirement of
    an impossible resolution counts when its pin satisfies it (no binary was the only problem)."""
    found: List[Requirement] = []
    for m in _UNSATISFIED.finditer(output):
        try:
            found.append(Requirement(m.group(1)))
        except InvalidRequirement:
            continue
    for m in _IMPOSSIBLE.finditer(output):
        try:
            req = Requirement(m.group(1))
        except InvalidRequirement:
            continue
        pin = (pins or {}).get(canonicalize_name(req.name))
        if pin is not None and _accepts(req, pin) and str(req) not in {str(r) for r in found}:
            found.append(req)
    return found


def _accepts(req: Requirement, version: str) -> bool:
    try:
        return req.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def parse_available(output: str) -> List[str]:
    """Versions from ``pip index versions`` output ("Available versions: 1.2, 1.1")."""
    m = _AVAILABLE.search(output)
    return [v.strip() for v in m.group(1).split(",") if v.strip()] if m else []


def pip_index_versions(pip_argv: Sequence[str], python_xy: str, env: Optional[Dict[str, str]] = None,
                       timeout: int = 120) -> ListVersions:
    """A ``ListVersions`` running ``<pip_argv> index versions NAME`` for Python ``python_xy``:
    every version on the index, sdist-only ones included (listing reads the index, runs nothing)."""
    def versions(name: str) -> List[str]:
        cmd = list(pip_argv) + ["index", "versions", name, "--pre", "--disable-pip-version-check",
                                "--python-version", python_xy]
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout, check=False)
        except (OSError, subprocess.SubprocessError):
            return []
        return parse_available(proc.stdout.decode("utf-8", "replace"))
    return versions


def best_version(req: Requirement, versions: Iterable[str]) -> Optional[str]:
    """The highest of ``versions`` that ``req`` accepts (pre-releases only if it names one)."""
    parsed = []
    for v in versions:
        try:
            parsed.append(Version(v))
        except InvalidVersion:
            continue
    ok = list(req.specifier.filter(parsed))
    return str(max(ok)) if ok else None


def stub_wheel(folder: Path, name: str, version: str) -> Path:
    """Write a wheel of ``name`` ``version`` with metadata only: no code, no dependencies."""
    dist = re.sub(r"[^\w.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                             "Summary: envrepro resolution stand-in (the index has only an sdist)\n"),
        f"{info}/WHEEL": ("Wheel-Version: 1.0\nGenerator: envrepro\nRoot-Is-Purelib: true\n"
                          "Tag: py2-none-any\nTag: py3-none-any\n"),
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in files.items():
            zf.writestr(zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0)), text)
    out = folder / f"{dist}-{version}-py2.py3-none-any.whl"
    out.write_bytes(buf.getvalue())
    return out


def resolve(attempt: Attempt, list_versions: ListVersions, stub_dir: Path,
            max_rounds: int = MAX_ROUNDS, pins: Optional[Dict[str, str]] = None
            ) -> Tuple[bool, str, Dict[str, str]]:
    """Run ``attempt`` with ``--only-binary :all:`` (and the stand-ins folder as find-links once
    there are stand-ins) until it succeeds or no new stand-in helps. ``pins``: the resolution's
    ``==`` constraints (canonical name -> version): a pinned sdist-only requirement gets a
    stand-in of that version. Returns (ok, pip's last output, {canonical name: version} of the
    sdist-only pins stood in for)."""
    stubs: Dict[str, str] = {}
    ok, out = False, ""
    for _ in range(max_rounds):
        extra = list(ONLY_BINARY) + (["--find-links", str(stub_dir)] if stubs else [])
        ok, out = attempt(extra)
        if ok:
            break
        added = False
        for req in unsatisfied(out, pins):
            key = canonicalize_name(req.name)
            if key in stubs:
                continue
            pin = (pins or {}).get(key)
            version = pin if pin is not None and _accepts(req, pin) else best_version(req, list_versions(req.name))
            if version is None:
                continue
            stub_wheel(stub_dir, req.name, version)
            stubs[key] = version
            added = True
        if not added:
            break
    return ok, out, stubs


def constraint_pins(constraints: str) -> Dict[str, str]:
    """canonical name -> version of the ``name==version`` lines of a constraints file."""
    pins: Dict[str, str] = {}
    for line in constraints.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = (x.strip() for x in line.split("==", 1))
            pins[canonicalize_name(name.split("[", 1)[0])] = version.split(";", 1)[0].strip()
    return pins


def stubs_note(stubs: Dict[str, str]) -> Optional[str]:
    """The warning for a resolution that stood in for sdist-only pins."""
    if not stubs:
        return None
    pins = ", ".join(f"{n}=={v}" for n, v in sorted(stubs.items()))
    return (f"{pins}: the index has only source distributions; resolved without reading their "
            "dependencies (that would run their setup.py on this host); the image build compiles them")
