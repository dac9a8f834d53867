"""Environment images in a registry, by content key: the registry setting checked, the refs, and a
pull whose image is checked against the capture before it is used.

``<registry>/envrepro-env:<key>`` holds the environment image of key ``key`` (``image.spec``),
``<registry>/envrepro-serve:<key>`` a serving image (``serving.context``). A pulled image is used
only when its labels say it was built for this capture: key, Python, TensorFlow, base image,
runtime version, the sha256 of the lock actually installed (the translated one for a macOS,
Windows or GPU capture) and its translation. Anything else is refused: the pulled tag is removed,
the local tag never points at it, the progress and the load report say why, and the image is
built here instead. Labels are only as trustworthy as whoever can push to the registry: the
check catches a wrong, stale or substituted image, not a forger who knows the capture (the load's
reference check in the sandbox still runs on whatever image is used).

Credentials: only the engine's own (``docker login``); nothing here reads, passes or prints them.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Tuple

from envrepro import config
from envrepro.image.spec import IMAGE_REPO, LABEL, LABEL_KEY, Progress
from envrepro.engine.base import ContainerEngine, image_labels
from envrepro.errors import BuildFailed, EnvreproError

SERVE_REPO = "envrepro-serve"      # serving.context.SERVE_REPO (not imported: that pulls the runtime)
_LABEL_DOMAIN = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"\A{_LABEL_DOMAIN}(?:\.{_LABEL_DOMAIN})*\Z")
_PATH = re.compile(r"\A[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_KEY = re.compile(r"\A[0-9a-f]{16,64}\Z")
MAX_LENGTH = 200                    # Docker allows 255 for the whole name; the repo and tag follow
TRANSLATION_LABELS = (LABEL + "translated-from", LABEL + "translated-for")
FORMAT = "HOST[:PORT][/NAMESPACE...] (e.g. registry.example.com/team or 127.0.0.1:5000)"


class RegistryError(EnvreproError):
    """A registry setting that is not HOST[:PORT][/NAMESPACE] (exit 2)."""


def _shown(value: str) -> str:
    """The value as it may be printed: any user:password@ part is masked, length capped."""
    value = re.sub(r"(?<=//)[^/@]*@|\A[^/@]*@", "***@", value)
    return repr(value[:80])


def _problem(value: str) -> Optional[str]:
    """Why ``value`` is not a registry Docker would read as one, or None."""
    if not value or len(value) > MAX_LENGTH:
        return f"it must be 1 to {MAX_LENGTH} characters"
    if "://" in value:
        return "drop the scheme: Docker chooses HTTPS (plain HTTP only for 127.0.0.0/8 and --insecure-registry)"
    if "@" in value:
        return "credentials do not go in the registry name: run `docker login HOST`"
    host, _, path = value.partition("/")
    name, colon, port = host.partition(":")
    if not _HOST.match(name):
        return f"{name[:60]!r} is not a lowercase host name or IPv4 address"
    if colon and not (port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
        return f"port {port[:10]!r} is not 1-65535"
    if not colon and "." not in name and name != "localhost":
        return (f"{name!r} has no '.' or ':PORT', so Docker would read it as a Docker Hub account: "
                "write the registry's full host name (or localhost)")
    for part in path.split("/") if path else []:
        if not _PATH.match(part):
            return (f"namespace part {part[:40]!r} is not lowercase letters and digits "
                    "separated by '.', '_', '__' or '-'")
    return None


def check_registry(value: str, source: str = "--registry") -> str:
    """``value`` without trailing slashes, or RegistryError naming ``source``."""
    cleaned = str(value).strip().rstrip("/")
    why = _problem(cleaned)
    if why:
        raise RegistryError(f"registry {_shown(cleaned)} is not {FORMAT}: {why}", source,
                            "fix the value and run the same command again")
    return cleaned


def resolve(flag: Optional[str] = None) -> Optional[str]:
    """The configured registry (flag, ENVREPRO_REGISTRY, config ``registry``), checked; None when
    there is none."""
    value = config.configured_registry(flag)
    if not value:
        return None
    source = ("--registry" if flag else "ENVREPRO_REGISTRY" if os.environ.get("ENVREPRO_REGISTRY")
              else f"registry in {config.config_path()}")
    return check_registry(value, source)


def env_ref(registry: str, key: str) -> str:
    """Where the environment image of ``key`` lives in ``registry`` (what load pulls)."""
    return f"{registry}/{IMAGE_REPO}:{key}"


def serve_ref(registry: str, key: str) -> str:
    return f"{registry}/{SERVE_REPO}:{key}"


def valid_key(key: Any) -> bool:
    """A content key that may go into a tag (a label read from an image is untrusted)."""
    return isinstance(key, str) and bool(_KEY.match(key))


def _value(v: Optional[str]) -> str:
    return "missing" if v is None else repr(str(v)[:80])


def label_problems(labels: Dict[str, str], expected: Dict[str, str]) -> List[str]:
    """What in an image's labels differs from what the capture needs ([]: it is the image)."""
    problems = [f"{name} is {_value(labels.get(name))}, the capture needs {want[:80]!r}"
                for name, want in expected.items() if labels.get(name) != want]
    problems += [f"{name} is {_value(labels.get(name))}, the capture's lock is not translated"
                 for name in TRANSLATION_LABELS if name not in expected and name in labels]
    return problems


def _discard(engine: ContainerEngine, ref: str, say: Progress) -> None:
    try:
        engine.remove_image(ref)
    except EnvreproError as e:
        say(f"could not remove the refused image {ref}: {e}")


def pull_verified(engine: ContainerEngine, registry: str, tag: str, expected: Dict[str, str],
                  say: Progress) -> Tuple[Optional[Dict[str, Any]], Dict[str, Any]]:
    """Pull the environment image of ``expected``'s key from ``registry``; tag it ``tag`` only
    when its labels match ``expected`` (``spec.env_labels``). Returns (the inspected image or
    None, what happened: ``{"ref", "outcome": pulled|absent|unreachable|refused, "reason"}``)."""
    ref = env_ref(registry, expected[LABEL_KEY])
    say(f"Pulling {ref}")
    try:
        if not engine.pull(ref, on_line=say):
            say(f"{ref} is not in the registry; building")
            return None, {"ref": ref, "outcome": "absent", "reason": "not in the registry"}
    except BuildFailed as e:       # PullFailed: denied, unreachable
        say(f"Could not pull {ref} ({e}); building instead")
        return None, {"ref": ref, "outcome": "unreachable", "reason": str(e)}
    pulled = engine.inspect_image(ref)
    problems = (label_problems(image_labels(pulled), expected) if pulled
                else ["the engine shows no image under that name after the pull"])
    if problems:
        reason = "its labels do not match the capture: " + "; ".join(problems)
        say(f"Refusing {ref}: {reason}; building instead")
        _discard(engine, ref, say)
        return None, {"ref": ref, "outcome": "refused", "reason": reason}
    engine.tag(str(pulled.get("Id") or ref), tag)     # by id: the image that was checked
    say(f"Pulled {ref}: labels match the capture")
    return pulled, {"ref": ref, "outcome": "pulled", "reason": None}
