"""The host's pip settings, carried into the image build: index URLs, trusted hosts, find-links
and the CA bundle, read the way pip itself reads them (``pip config list``; pip.conf files and
PIP_* variables as a fallback), and rendered as the builder stage's ``pip.conf``.

Only what works inside a build is kept (http(s) URLs; local paths don't exist there). The
settings reach the builder stages only, never the final image (docs/threat-model.md); URLs with
credentials in them not even those unless ``ENVREPRO_DOCKERFILE_PIP_CREDENTIALS=1``
(``credentialed_urls``, ``image.wheelhouse_builder.refuse_dockerfile``).
"""
from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from envrepro.sidecar.layout import BUILD_DIR
from envrepro.sidecar.lockfile import is_http_url

_PIP_KEYS = ("index-url", "extra-index-url", "trusted-host", "find-links", "cert")


@dataclass(frozen=True)
class PipSettings:
    """The host's pip settings that make sense inside a build: http(s) URLs only."""

    index_url: Optional[str] = None
    extra_index_urls: Tuple[str, ...] = ()
    trusted_hosts: Tuple[str, ...] = ()
    find_links: Tuple[str, ...] = ()
    cert: Optional[str] = None      # path on the host; its bytes go into the builder stage only
    timeout: int = 60
    retries: int = 5


def render_pip_conf(pip: PipSettings, has_cert: bool) -> str:
    lines = ["[global]"]

    def many(key: str, values: Sequence[str]) -> None:
        if values:
            lines.append(f"{key} =")
            lines.extend(f"    {v}" for v in values)

    if pip.index_url:
        lines.append(f"index-url = {pip.index_url}")
    many("extra-index-url", pip.extra_index_urls)
    many("trusted-host", pip.trusted_hosts)
    many("find-links", pip.find_links)
    if has_cert:
        lines.append(f"cert = {BUILD_DIR}/ca.crt")
    lines += [f"timeout = {pip.timeout}", f"retries = {pip.retries}"]
    return "\n".join(lines) + "\n"


def parse_pip_config_list(text: str) -> Dict[str, str]:
    """``pip config list`` lines (``global.cert='/x'``, ``:env:.cert='/x'``) -> {key: value}.

    Precedence as pip applies it: environment over ``install`` over ``global``.
    """
    rank = {"global": 0, "install": 1, ":env:": 2}
    best: Dict[str, Tuple[int, str]] = {}
    for line in text.splitlines():
        m = re.match(r"^(:env:|[a-z]+)\.([a-z-]+)=(.*)$", line.strip())
        if not m or m.group(2) not in _PIP_KEYS or m.group(1) not in rank:
            continue
        raw = m.group(3).strip()
        try:  # pip prints repr(value): a multi-line pip.conf value is one line with \n escapes
            value = ast.literal_eval(raw) if raw[:1] in "'\"" else raw
        except (ValueError, SyntaxError):
            value = raw.strip("'\"")
        value = " ".join(str(value).split())
        r = rank[m.group(1)]
        if m.group(2) not in best or r >= best[m.group(2)][0]:
            best[m.group(2)] = (r, value)
    return {k: v for k, (_, v) in best.items()}


def _pip_files() -> List[Path]:
    dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    home = Path(os.path.expanduser("~"))
    files = [Path(d) / "pip" / "pip.conf" for d in dirs] + [Path("/etc/pip.conf"), home / ".pip" / "pip.conf",
             Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf"]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    return files


def pip_values_from_files_and_env() -> Dict[str, str]:
    """The same keys read directly, for hosts where ``pip config list`` can't run."""
    import configparser

    values: Dict[str, str] = {}
    for f in _pip_files():
        cp = configparser.RawConfigParser()
        try:
            cp.read(f)
        except (configparser.Error, OSError):
            continue
        for section in ("global", "install"):
            if cp.has_section(section):
                values.update({k: " ".join(v.split()) for k, v in cp.items(section) if k in _PIP_KEYS})
    for key in _PIP_KEYS:
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env:
            values[key] = env
    return values


def pip_settings_from(values: Dict[str, str]) -> PipSettings:
    """Keep what works inside a build: http(s) index and find-links URLs, trusted hosts, cert."""
    def urls(key: str) -> Tuple[str, ...]:
        return tuple(u for u in values.get(key, "").split() if is_http_url(u))

    index = urls("index-url")
    cert = values.get("cert") or None
    return PipSettings(index_url=index[0] if index else None, extra_index_urls=urls("extra-index-url"),
                          trusted_hosts=tuple(values.get("trusted-host", "").split()),
                          find_links=urls("find-links"), cert=cert)


def host_pip_settings(runner: Optional[Callable[[], str]] = None) -> PipSettings:
    """The host's pip settings (``pip config list``; files and PIP_* variables as fallback)."""
    text = None
    try:
        text = runner() if runner else subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        text = None
    values = parse_pip_config_list(text) if text is not None else pip_values_from_files_and_env()
    settings = pip_settings_from(values)
    if not settings.cert:
        for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
            if os.environ.get(var) and os.path.isfile(os.environ[var]):
                return dataclasses.replace(settings, cert=os.environ[var])
    return settings


# The opt-in that lets credentials in the pip settings into the Dockerfile builder's stages.
CREDENTIALS_ENV = "ENVREPRO_DOCKERFILE_PIP_CREDENTIALS"


def credentialed_urls(pip: PipSettings) -> List[str]:
    """The index and find-links URLs of ``pip`` that carry credentials (``user:token@``), each
    shown without them."""
    from envrepro.packages.pipcmd import redact

    urls = [pip.index_url or "", *pip.extra_index_urls, *pip.find_links]
    return [redact(u) for u in urls if "@" in urllib.parse.urlsplit(u).netloc]


def credentials_allowed() -> bool:
    """Whether the user let pip credentials into Dockerfile builder stages (``CREDENTIALS_ENV=1``)."""
    return os.environ.get(CREDENTIALS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def pip_mapping(pip: Any) -> Dict[str, Any]:
    """``pip``'s index settings as the mapping the index lookups take (``indexhashes``)."""
    return {"index_url": getattr(pip, "index_url", None),
            "extra_index_urls": list(getattr(pip, "extra_index_urls", ()) or ()),
            "trusted_hosts": list(getattr(pip, "trusted_hosts", ()) or ()),
            "cert": getattr(pip, "cert", None)}
