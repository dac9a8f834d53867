"""The one boundary a capture's manifest crosses: a declarative check of ``envrepro/v1``.

Captures travel between people and the manifest seals itself (anyone can edit a capture and
re-seal it), so every value in it is untrusted input. :func:`check` runs on every read
(``manifest.read``, after ``upgrade``): types, required keys, versions as PEP 440, distribution
names canonical (PEP 503/508), hashes hex, paths relative and inside the capture, ``env`` limited
to the variables envrepro records. Everything downstream (Dockerfile, plan, reports) takes the
values it let through. A refusal is one :class:`InvalidCapture` line naming the field path.
The lock file is checked by ``sidecar.locktrust``; the format is docs/format.md.
"""
from __future__ import annotations

import datetime
import math
import re
from pathlib import PurePosixPath
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from envrepro.errors import InvalidCapture
from envrepro.runtime.recipes import RECIPE_NAMES
from envrepro.sidecar.layout import (LOCK_FILE, REFERENCE_DIR, REQUIREMENTS_IN, SCHEMA,
                                     SNAPSHOT_DIR, WHEELS_DIR)

# The variables the probe records (runtime/probe.py ``facts["env"]``): nothing else reaches the
# container's environment.
ENV_ALLOWED = frozenset({"TF_USE_LEGACY_KERAS", "KERAS_BACKEND"})
FIX = "capture the model again with `envrepro capture MODEL`; don't edit a capture by hand"

NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)   # PEP 508
PYTHON_VERSION_RE = re.compile(r"\A[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,4}((a|b|rc)[0-9]{1,4})?(\+[a-z0-9.]{1,32})?\Z")
HEX64_RE = re.compile(r"\A[0-9a-f]{64}\Z")
MODULE_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
OBJECT_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*\Z")
ENV_VALUE_RE = re.compile(r"\A[A-Za-z0-9_.,:+-]{0,64}\Z")
TOKEN_RE = re.compile(r"\A[A-Za-z0-9_.+-]{1,64}\Z")


class Bad(Exception):
    """A value that does not fit: ``path`` (the field's) is filled in on the way up."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why
        self.path: list = []


def shown(value: Any) -> str:
    """A value as one short line (repr escapes newlines)."""
    scalar = isinstance(value, (str, int, float)) or value is None
    text = repr(value) if scalar else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


Check = Callable[[Any], None]


# -- leaves ------------------------------------------------------------------------------------
def expect(what: str, ok: Callable[[Any], bool]) -> Check:
    def check(v: Any) -> None:
        if not ok(v):
            raise Bad(f"expected {what}, got {shown(v)}")
    return check


def _is_text(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= 4096 and "\x00" not in v


def _is_line(v: Any) -> bool:
    return _is_text(v) and not any(c in v for c in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


TEXT = expect("text", _is_text)
LINE = expect("one line of text", _is_line)
BOOL = expect("true or false", lambda v: isinstance(v, bool))
NUMBER = expect("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v))
TOLERANCE = expect("a non-negative number", lambda v: isinstance(v, (int, float))
                   and not isinstance(v, bool) and math.isfinite(v) and v >= 0)
COUNT = expect("a count", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)
HEX64 = expect("a sha256 (64 lowercase hex digits)", lambda v: isinstance(v, str) and bool(HEX64_RE.match(v)))
MODULE = expect("a module name", lambda v: isinstance(v, str) and bool(MODULE_RE.match(v)))
OBJECT = expect("'module:attr'", lambda v: isinstance(v, str) and bool(OBJECT_RE.match(v)))
TOKEN = expect("a short word", lambda v: isinstance(v, str) and bool(TOKEN_RE.match(v)))


def _plain(v: Any, depth: int, budget: list, max_depth: int = 16) -> bool:
    budget[0] -= 1
    if budget[0] < 0 or depth > max_depth:
        return False
    if v is None or isinstance(v, (bool, int, float, str, datetime.date)):
        return not isinstance(v, str) or _is_text(v)
    if isinstance(v, list):
        return all(_plain(x, depth + 1, budget, max_depth) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, (str, int, float, bool)) and _plain(x, depth + 1, budget, max_depth)
                   for k, x in v.items())
    return False


# Free-form data (optimizer.config, build facts): plain, small, finite-depth (a YAML alias can
# make a list that contains itself, or a billion laughs).
ANY = expect("plain data (at most 16 levels, 10000 values)", lambda v: _plain(v, 0, [10000]))


def _pep440(v: Any) -> bool:
    if not (isinstance(v, str) and _is_line(v) and v == v.strip() and len(v) <= 64):
        return False
    try:
        Version(v)
    except InvalidVersion:
        return False
    return True


VERSION = expect("a PEP 440 version", _pep440)
PYTHON_VERSION = expect("a Python version X.Y.Z", lambda v: isinstance(v, str)
                        and bool(PYTHON_VERSION_RE.match(v)) and _pep440(v))


def is_name(v: Any) -> bool:
    """A canonical distribution name (PEP 503 normalised, PEP 508 shaped)."""
    return isinstance(v, str) and len(v) <= 128 and bool(NAME_RE.match(v)) and canonicalize_name(v) == v


NAME = expect("a canonical distribution name", is_name)
# A distribution's name as its metadata spells it (``PyYAML``): recorded for reports only.
SPELLED_NAME = expect("a distribution name", lambda v: isinstance(v, str) and len(v) <= 128
                      and bool(NAME_RE.match(v)))


def one_of(*values: Any) -> Check:
    return expect(" or ".join(repr(v) for v in values), lambda v: isinstance(v, str) and v in values)


def relpath(under: Optional[str] = None, suffix: str = "") -> Check:
    """A relative, normalised POSIX path inside the capture (under ``under/`` when given)."""
    def check(v: Any) -> None:
        if not (isinstance(v, str) and _is_line(v) and v):
            raise Bad(f"expected a relative path, got {shown(v)}")
        p = PurePosixPath(v)
        if (p.is_absolute() or "\\" in v or ".." in p.parts or p.as_posix() != v or "." in v.split("/")
                or v.startswith("~") or ":" in v.split("/")[0]):
            raise Bad(f"expected a relative path inside the capture, got {shown(v)}")
        if under and p.parts[:1] != (under,):
            raise Bad(f"expected a path under {under}/, got {shown(v)}")
        if suffix and not v.endswith(suffix):
            raise Bad(f"expected a {suffix} path, got {shown(v)}")
    return check


# -- structure ---------------------------------------------------------------------------------
def nullable(inner: Check) -> Check:
    def check(v: Any) -> None:
        if v is not None:
            inner(v)
    return check


def list_of(inner: Check, limit: int = 100000) -> Check:
    def check(v: Any) -> None:
        if not isinstance(v, list):
            raise Bad(f"expected a list, got {shown(v)}")
        if len(v) > limit:
            raise Bad(f"expected at most {limit} items, got {len(v)}")
        for i, item in enumerate(v):
            _at(str(i), inner, item)
    return check


def map_of(key: Check, value: Check) -> Check:
    def check(v: Any) -> None:
        if not isinstance(v, dict):
            raise Bad(f"expected a mapping, got {shown(v)}")
        for k, item in v.items():
            if not isinstance(k, str):
                raise Bad(f"expected text keys, got {shown(k)}")
            _at(k, key, k, "key: ")
            _at(k, value, item)
    return check


def mapping(fields: Mapping[str, Check], required: Sequence[str] = ()) -> Check:
    """A mapping with these keys (others are ignored: nothing downstream reads them)."""
    def check(v: Any) -> None:
        if not isinstance(v, dict):
            raise Bad(f"expected a mapping, got {shown(v)}")
        for k in required:
            if k not in v:
                raise Bad(f"required key {k!r} is missing")
        for k, inner in fields.items():
            if k in v:
                _at(k, inner, v[k])
    return check


def _at(part: str, check: Check, value: Any, prefix: str = "") -> None:
    try:
        check(value)
    except Bad as e:
        ok = _is_line(part) and 0 < len(part) <= 60 and part.isprintable() and "." not in part
        e.path.insert(0, part if ok else f"[{shown(part)}]")
        if prefix and not e.why.startswith(prefix):
            e.why = prefix + e.why
        raise


def _env(v: Any) -> None:
    map_of(expect(f"one of {', '.join(sorted(ENV_ALLOWED))}", lambda k: k in ENV_ALLOWED),
           nullable(expect("a short value (letters, digits, . , : + - _)",
                           lambda x: isinstance(x, str) and bool(ENV_VALUE_RE.match(x)))))(v)


_WEIGHTS = mapping({"arrays": COUNT, "params": COUNT, "sum": NUMBER, "abs_sum": NUMBER, "sha256": HEX64},
                   required=("arrays", "params", "sum", "abs_sum", "sha256"))

_RESUME_DONE = mapping({
    "loss": NUMBER, "iterations_before": nullable(COUNT), "iterations": COUNT,
    "targets": list_of(relpath(REFERENCE_DIR)), "target_kind": nullable(TOKEN),
    "weights_file": nullable(relpath(REFERENCE_DIR)), "weights_skipped": nullable(TEXT),
    "weights": _WEIGHTS, "atol": TOLERANCE, "rtol": TOLERANCE, "seed": COUNT, "seconds": nullable(NUMBER),
}, required=("loss", "iterations", "targets", "weights", "atol", "rtol", "seed"))


IDENT_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,99}\Z")
IDENT = expect("a Python name", lambda v: isinstance(v, str) and bool(IDENT_RE.match(v)))
_CONSTANT = expect("a number, a string of at most 256 characters, true, false or null",
                   lambda v: v is None or isinstance(v, bool) or (isinstance(v, str) and len(v) <= 256)
                   or (isinstance(v, (int, float)) and math.isfinite(v)))


def _lambda_global(v: Any) -> None:
    """One name a Lambda function's source uses: exactly one of a module to import, an object of
    an importable module, or a constant (runtime/lambdasource.py)."""
    if not isinstance(v, dict) or len(v) != 1 or next(iter(v)) not in ("module", "object", "value"):
        raise Bad(f"expected one of {{module: M}}, {{object: 'M:attr'}}, {{value: C}}, got {shown(v)}")
    key, value = next(iter(v.items()))
    _at(key, {"module": MODULE, "object": OBJECT, "value": _CONSTANT}[key], value)


_LAMBDA = mapping({"layer": LINE, "kind": nullable(one_of("lambda", "def")), "source": nullable(TEXT),
                   "globals": nullable(map_of(IDENT, _lambda_global)), "python": nullable(LINE),
                   "why_not": nullable(TEXT)}, required=("layer",))


def _resume(v: Any) -> None:
    if isinstance(v, dict) and "skipped" in v:
        mapping({"skipped": TEXT})(v)
    else:
        _RESUME_DONE(v)


_LOCAL = mapping({"name": NAME, "version": nullable(LINE), "kind": one_of("local", "url", "vcs"),
                  "source": nullable(LINE), "wheel": nullable(relpath(WHEELS_DIR, ".whl")),
                  "sha256": nullable(HEX64)}, required=("name",))

MANIFEST_SCHEMA = mapping({
    "schema": one_of(SCHEMA),
    "envrepro_version": nullable(LINE),
    "created": nullable(expect("a time", lambda v: _is_line(v) or isinstance(v, (datetime.date, datetime.datetime)))),
    "inferred": nullable(BOOL),
    "model": mapping({"name": LINE, "format": nullable(one_of("savedmodel", "h5", "keras")),
                      "class_name": nullable(LINE), "sha256": nullable(HEX64)}, required=("name",)),
    "python": mapping({"version": PYTHON_VERSION, "implementation": nullable(LINE),
                       "sys_platform": nullable(TOKEN), "machine": nullable(TOKEN),
                       "libc": ANY}, required=("version",)),
    "frameworks": mapping({"tensorflow": nullable(VERSION), "tensorflow_distribution": nullable(NAME),
                           "keras": nullable(VERSION), "keras_flavor": nullable(one_of("tf.keras", "keras3", "tf_keras")),
                           "tf_keras": nullable(VERSION), "git_version": nullable(LINE),
                           "build": nullable(map_of(LINE, ANY))}),
    "env": nullable(_env),
    "load": mapping({"compile": BOOL, "custom_objects": nullable(map_of(LINE, OBJECT)),
                     "modules": nullable(list_of(MODULE)), "recipe": nullable(one_of(*RECIPE_NAMES)),
                     "recipes_failed": nullable(list_of(mapping({"recipe": one_of(*RECIPE_NAMES),
                                                                 "error": TEXT}, required=("recipe",)))),
                     "lambdas": nullable(list_of(_LAMBDA, limit=256))}),
    "lock": mapping({"file": one_of(LOCK_FILE), "requirements_in": one_of(REQUIREMENTS_IN),
                     "sha256": nullable(HEX64), "distributions": nullable(COUNT), "hashes": nullable(BOOL),
                     "hashes_reason": nullable(TEXT), "missing_hashes": nullable(list_of(NAME)),
                     "sdist_only": nullable(list_of(NAME)), "top_level": nullable(list_of(NAME)),
                     "local": nullable(list_of(_LOCAL)), "platform": nullable(LINE)}),
    "snapshot": mapping({"dir": one_of(SNAPSHOT_DIR), "modules": nullable(map_of(MODULE, MODULE)),
                         "files": nullable(list_of(mapping({"path": relpath(SNAPSHOT_DIR), "sha256": nullable(HEX64),
                                                            "origin": nullable(TEXT), "module": nullable(MODULE)},
                                                           required=("path",)))),
                         "refused_links": nullable(list_of(TEXT))}),
    "requirement_modules": nullable(map_of(MODULE, SPELLED_NAME)),
    "reference": nullable(mapping({
        "inputs": list_of(relpath(REFERENCE_DIR, ".npy")), "outputs": list_of(relpath(REFERENCE_DIR, ".npy")),
        "input_structure": nullable(one_of("single", "list", "dict")),
        "output_structure": nullable(one_of("single", "list", "dict")),
        "input_names": nullable(list_of(nullable(LINE))), "output_names": nullable(list_of(nullable(LINE))),
        "tolerance": nullable(mapping({"atol": TOLERANCE, "rtol": TOLERANCE})),
        "vocabularies": nullable(map_of(LINE, LINE)), "free_dimension": nullable(COUNT)})),
    "reference_skipped": nullable(TEXT),
    "optimizer": nullable(mapping({"class": nullable(LINE), "config": ANY, "iterations": nullable(COUNT),
                                   "state_saved": nullable(BOOL), "num_weights": nullable(COUNT),
                                   "saved_variables": nullable(COUNT), "saved_iterations": nullable(COUNT),
                                   "restored": nullable(mapping({
                                       "class": nullable(LINE), "iterations": nullable(COUNT),
                                       "variables": nullable(COUNT),
                                       "via": nullable(one_of("load_model", "load_weights"))})),
                                   "restored_skipped": nullable(TEXT)})),
    "resume_check": nullable(_resume),
    "inference": nullable(mapping({"reasons": nullable(list_of(TEXT)), "requirements": nullable(list_of(LINE)),
                                   "constraints": nullable(list_of(LINE)), "resolved_by": nullable(TEXT),
                                   "custom_classes_missing": nullable(list_of(LINE)),
                                   "interpreter": nullable(TEXT)})),
    "warnings": nullable(list_of(TEXT)),
    "files": map_of(relpath(), HEX64),
}, required=("schema",))


def check(data: Any, manifest_path: str) -> Dict[str, Any]:
    """``data`` if it is a valid ``envrepro/v1`` manifest, else InvalidCapture (exit 2), one line."""
    try:
        MANIFEST_SCHEMA(data)
        # Then the whole document, unknown keys included (a report may print them): plain data,
        # no alias cycles, bounded.
        if not _plain(data, 0, [500000], 32):
            raise Bad("expected plain data (at most 32 levels, 500000 values, no self-references)")
    except Bad as e:
        where = ".".join(e.path) or "(top)"
        raise InvalidCapture(f"invalid manifest: {where}: {e.why}", manifest_path, FIX) from None
    except RecursionError:
        raise InvalidCapture("invalid manifest: nested too deeply", manifest_path, FIX) from None
    return data

