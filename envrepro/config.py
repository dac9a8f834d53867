"""The user's settings, in one place: where envrepro reads its config file and keeps its cache,
and which base image and registry to use.

Precedence everywhere: the command-line flag, then the environment variable
(``ENVREPRO_BASE_IMAGE``, ``ENVREPRO_REGISTRY``, ``ENVREPRO_PROBE_TIMEOUT``), then
``~/.config/envrepro/config.yaml`` (``base_image:``, ``registry:``, ``probe_timeout:``; honours
XDG_CONFIG_HOME). ``trusted_keys:`` and ``require_signature:`` (signed captures, envrepro/signing/)
come from the config file only. The cache (translated locks, build logs,
the images index) lives under ``$XDG_CACHE_HOME/envrepro``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from envrepro.errors import EnvreproError


def config_path() -> Path:
    """``$XDG_CONFIG_HOME/envrepro/config.yaml`` (default ``~/.config/envrepro/config.yaml``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "envrepro" / "config.yaml"


def load_config() -> Dict[str, Any]:
    """``~/.config/envrepro/config.yaml`` (honours XDG_CONFIG_HOME); {} when absent."""
    p = config_path()
    if not p.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise EnvreproError(f"config file is unreadable ({str(e).splitlines()[0]})", str(p),
                            "fix or remove it") from None
    return data if isinstance(data, dict) else {}


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/envrepro`` (default ``~/.cache/envrepro``): translated locks, build logs,
    the images index. Everything in it can be deleted."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "envrepro"


def base_image_setting(base_image: Optional[str] = None) -> Optional[str]:
    """The base image the user asked for: flag, else ENVREPRO_BASE_IMAGE, else config
    ``base_image``; None means the default for the captured Python (``image.bases``)."""
    chosen = base_image or os.environ.get("ENVREPRO_BASE_IMAGE") or load_config().get("base_image")
    return str(chosen) if chosen else None


def configured_registry(registry: Optional[str] = None) -> Optional[str]:
    """The registry prebuilt environments are pulled from: flag, else ENVREPRO_REGISTRY, else
    config ``registry``; None when there is none."""
    value = registry or os.environ.get("ENVREPRO_REGISTRY") or load_config().get("registry")
    return str(value).rstrip("/") if value else None


# How long ``capture --python``'s probe may run: it imports TensorFlow (a minute or more on a
# loaded machine, cold caches, network filesystems), loads the model and predicts once.
DEFAULT_PROBE_TIMEOUT = 900.0


def probe_timeout(timeout: Optional[float] = None) -> float:
    """Seconds the capture probe may take before it is stopped: flag, else
    ENVREPRO_PROBE_TIMEOUT, else config ``probe_timeout``, else 900."""
    source, value = "--timeout", timeout
    if value is None and os.environ.get("ENVREPRO_PROBE_TIMEOUT"):
        source, value = "ENVREPRO_PROBE_TIMEOUT", os.environ["ENVREPRO_PROBE_TIMEOUT"]
    if value is None:
        source, value = "probe_timeout in " + str(config_path()), load_config().get("probe_timeout")
    if value is None:
        return DEFAULT_PROBE_TIMEOUT
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise EnvreproError(f"probe timeout {value!r} is not a positive number of seconds", source,
                            f"set it to e.g. {DEFAULT_PROBE_TIMEOUT:.0f}")
    return seconds


# Signed captures (envrepro/signing/): the public keys trusted, and whether every command that
# runs or ships a capture refuses one no trusted key signed. Read from the config file only: no
# flag or environment variable can turn the requirement off.

def trusted_keys() -> List[Path]:
    """Config ``trusted_keys:``: the public key PEM files signatures are checked against (a
    relative path is taken from the config file's folder, ``~`` expanded); [] when unset."""
    value = load_config().get("trusted_keys")
    if value is None:
        return []
    where = config_path()
    if not isinstance(value, list) or not all(isinstance(k, str) and k.strip() for k in value):
        raise EnvreproError("trusted_keys is not a list of public key PEM paths", str(where),
                            "write it as trusted_keys: [/path/to/team.pub, ...]")
    return [where.parent / os.path.expanduser(k.strip()) for k in value]


def require_signature() -> bool:
    """Config ``require_signature:`` (true or false; default false)."""
    value = load_config().get("require_signature", False)
    if value is None or isinstance(value, bool):
        return bool(value)
    raise EnvreproError(f"require_signature is {str(value)[:40]!r}, not true or false", str(config_path()),
                        "write require_signature: true (or false)")
