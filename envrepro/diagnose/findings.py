"""What the doctor reports: findings with a severity, and the severities' order.

Shared by the static checks (checks.py), the failure detectors (catalogue.py), ``--try``
(trial.py) and the report (doctor.py), so each speaks the same severities.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITY_ORDER = {ERROR: 0, WARNING: 1, INFO: 2}


@dataclass
class Finding:
    """One thing the user should know: what, why it matters, how to fix it."""

    severity: str                 # info | warning | error
    what: str
    why: str = ""
    fix: str = ""
    kind: str = ""                # python | framework | package | drift | class | try | capture | env
    class_id: Optional[str] = None
    message: str = ""             # the error text the user will see
    detail: str = ""              # e.g. a unified diff


def by_severity(items: Sequence[Any], key: Callable[[Any], str]) -> List[Any]:
    """Errors first, then warnings, then information (stable within a severity)."""
    return sorted(items, key=lambda x: SEVERITY_ORDER.get(key(x), 3))
