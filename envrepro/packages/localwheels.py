"""Local, editable and VCS installs: what they are (PEP 610) and their wheels.

Editable and local-path installs (``direct_url.json``) are built into wheels with the *training*
interpreter (``wheels/`` in the capture) and locked as ``name @ file:///envrepro/capture/wheels/
<wheel>`` (``layout.WHEELS_MOUNT``); VCS installs are locked as ``name @ git+<url>@<commit>``.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from envrepro.packages.indexhashes import INDEX_TIMEOUT
from envrepro.packages.pipcmd import pip_subprocess_env
from envrepro.errors import CaptureError
from envrepro.fsutil import sha256_file
from envrepro.sidecar.layout import WHEELS_DIR, WHEELS_MOUNT
from envrepro.sidecar.lockfile import canonical_name

WHEEL_BUILD_TIMEOUT = 900


def _direct_url(raw: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    du = raw.get("direct_url")
    if isinstance(du, (str, bytes)):
        try:
            du = json.loads(du)
        except ValueError:
            return None
    return du if isinstance(du, dict) else None


def _file_url_to_path(url: str) -> str:
    import urllib.request

    parsed = urllib.parse.urlsplit(url)
    path = urllib.request.url2pathname(urllib.parse.unquote(parsed.path))
    if parsed.netloc and parsed.netloc != "localhost":  # UNC-ish file://host/share
        path = "//" + parsed.netloc + path
    return path


def _legacy_develop(raw: Mapping[str, Any]) -> bool:
    meta = str(raw.get("metadata_dir") or "").rstrip("/\\")
    location = str(raw.get("location") or "").rstrip("/\\")
    return (meta.endswith(".egg-info") and bool(location) and os.path.isdir(meta)
            and os.path.basename(location) not in ("site-packages", "dist-packages")
            and (os.path.isfile(os.path.join(location, "setup.py"))
                 or os.path.isfile(os.path.join(location, "pyproject.toml"))))


def classify(raw: Mapping[str, Any]) -> Tuple[Optional[str], Optional[str]]:
    """(kind, source) from PEP 610 direct_url.json; (None, None) for an index install."""
    du = _direct_url(raw)
    if not du:
        if raw.get("editable") or _legacy_develop(raw):
            # ``setup.py develop`` / egg-link installs have no direct_url.json: the project
            # folder is on sys.path and holds the .egg-info.
            return "editable", str(raw.get("location") or "")
        return None, None
    url = str(du.get("url") or "")
    sub = du.get("subdirectory")
    if "vcs_info" in du:
        info = du["vcs_info"] or {}
        ref = info.get("commit_id") or info.get("requested_revision")
        vcs = info.get("vcs", "git")
        source = url if url.startswith(vcs + "+") else f"{vcs}+{url}"
        if ref:
            source += f"@{ref}"
        if sub:
            source += f"#subdirectory={sub}"
        return "vcs", source
    is_file = url.startswith("file:")
    if "dir_info" in du:
        path = _file_url_to_path(url) if is_file else url
        if sub:
            path = os.path.join(path, sub)
        editable = bool((du.get("dir_info") or {}).get("editable")) or bool(raw.get("editable"))
        return ("editable" if editable else "local"), path
    # archive_info
    if is_file:
        return "local", _file_url_to_path(url)
    return "url", url


def archive_sha256(raw: Mapping[str, Any]) -> Optional[str]:
    du = _direct_url(raw) or {}
    info = du.get("archive_info") or {}
    hashes = info.get("hashes") or {}
    if hashes.get("sha256"):
        return str(hashes["sha256"])
    legacy = str(info.get("hash") or "")
    if legacy.startswith("sha256="):
        return legacy.split("=", 1)[1]
    return None


def _wheel_build_cmd(python: str, target: str, source: str, isolated: bool) -> List[str]:
    cmd = [python, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
           "--no-input", "-w", target]
    if not isolated:
        cmd.append("--no-build-isolation")
    else:
        cmd += ["--timeout", str(INDEX_TIMEOUT), "--retries", "1"]
    return cmd + [source]


def build_local_wheels(dists: Iterable[Mapping[str, Any]], wheels_dir: Union[str, Path],
                       python_executable: Optional[str] = None) -> List[Dict[str, Any]]:
    """Build (or copy) a wheel for each local, local-archive or editable distribution into
    ``wheels_dir`` with the *training* interpreter's pip; return the manifest entries
    ``{name, version, kind, source, wheel: "wheels/<file>", sha256}``.

    ``pip wheel --no-deps --no-build-isolation`` first (offline-friendly, uses the training
    environment's build backend), then with build isolation. Raises ``CaptureError`` naming the
    distribution and its path when neither works or the source is gone.
    """
    python = python_executable or sys.executable
    wheels_dir = Path(wheels_dir)
    wheels_dir.mkdir(parents=True, exist_ok=True)
    out: List[Dict[str, Any]] = []
    for raw in dists:
        name = canonical_name(str(raw.get("name")))
        version = str(raw.get("version"))
        kind, source = classify(raw)
        if kind not in ("editable", "local") or not source:
            raise ValueError(f"{name}: not a local or editable install ({kind})")
        if not os.path.exists(source):
            raise CaptureError(f"{name} {version} was installed from {source}, which no longer "
                               "exists: can't build its wheel", path=source,
                               fix="reinstall it from an index, or restore the source")
        if os.path.isfile(source) and source.endswith(".whl"):
            built = wheels_dir / os.path.basename(source)
            shutil.copyfile(source, built)
        else:
            built = _pip_wheel(python, name, version, source, wheels_dir)
        out.append({"name": name, "version": version, "kind": kind, "source": source,
                    "wheel": f"{WHEELS_DIR}/{built.name}", "sha256": sha256_file(built)})
    return out


def _pip_wheel(python: str, name: str, version: str, source: str, wheels_dir: Path) -> Path:
    import subprocess
    import tempfile

    env = pip_subprocess_env()
    failures = []
    for isolated in (False, True):
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=str(wheels_dir)))
        try:
            try:
                proc = subprocess.run(_wheel_build_cmd(python, str(tmp), source, isolated),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      env=env, timeout=WHEEL_BUILD_TIMEOUT, cwd=str(tmp))
                output = proc.stdout.decode("utf-8", "replace")
                ok = proc.returncode == 0
            except (OSError, subprocess.TimeoutExpired) as exc:
                ok, output = False, f"{type(exc).__name__}: {exc}"
            wheels = sorted(tmp.glob("*.whl"))
            if ok and len(wheels) == 1:
                final = wheels_dir / wheels[0].name
                os.replace(wheels[0], final)
                return final
            tail = "\n".join(output.strip().splitlines()[-12:])
            failures.append(f"[{'with' if isolated else 'without'} build isolation] {tail}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    raise CaptureError(f"building a wheel of {name} {version} ({source}) with {python} failed:\n"
                       + "\n".join(failures), path=source,
                       fix="make `pip wheel --no-deps` work for it in the training environment")


def wheel_url(wheel_rel: str) -> str:
    """``wheels/x.whl`` -> the URL the lock pins (the wheel where the build mounts the capture)."""
    return f"file://{WHEELS_MOUNT}/" + urllib.parse.quote(wheel_rel[len(WHEELS_DIR) + 1:], safe="/+!")
