"""What the Docker engine says, made readable: shared by the engine's classes (docker.py and its
mixins), which import it rather than each other."""
from __future__ import annotations

import re
from typing import Optional, Tuple

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def explain(text: str) -> Optional[str]:
    """A readable sentence for the engine errors users actually meet, or None."""
    low = text.lower()
    if "no space left on device" in low:
        return ("the Docker engine ran out of disk space (no space left on device); free some with "
                "`docker system prune` (or `envrepro gc`) and retry")
    if "denied" in low or "unauthorized" in low or "authentication required" in low:
        return "the registry refused access; run `docker login <registry>` or check the image name"
    if any(s in low for s in ("dial tcp", "no such host", "i/o timeout", "tls handshake timeout",
                              "connection refused", "network is unreachable", "temporary failure in name resolution")):
        return "the registry could not be reached from the Docker engine (network, proxy or DNS)"
    if "manifest unknown" in low or ("not found" in low and "manifest" in low):
        return "the registry has no such image"
    return None


def split_ref(ref: str) -> Tuple[str, str]:
    """'reg:5000/a/b:tag' -> ('reg:5000/a/b', 'tag'); digests stay whole."""
    if "@" in ref:
        repo, digest = ref.split("@", 1)
        return repo, digest
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
        return repo, tag
    return ref, "latest"
