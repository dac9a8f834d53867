"""Find the custom objects a model's config names in a source tree (``capture --infer --code-path``).

The config names each object one of three ways: a class name (``ScaledDense``), a function name
(``my_act`` as an activation, ``my_loss`` in the training config) or a registered name
(``matrix>ScaledDense``: ``@register_keras_serializable(package="matrix")``, where ``name=`` may
differ from the class's own name). The source is read as text, never imported: a registration
decorator followed by ``class``/``def`` defines the registered name, else a ``class Name(`` or
``def Name(`` defines the plain one. The first definition in a sorted walk wins; a name defined
more than once is reported.
"""
from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from envrepro.capturing.snapshot import skipped_dir
from envrepro.modelfiles.kerasconfig import BUILTIN_NAMES, keras_registration

MAX_SOURCE_BYTES = 2 * 1024 * 1024
DEFAULT_PACKAGE = "Custom"        # register_keras_serializable's default package
_DEFINITION = re.compile(r"^[ \t]*(?:class|def)[ \t]+([A-Za-z_]\w*)[ \t]*[(:]", re.M)
_REGISTRATION = re.compile(r"register_keras_serializable[ \t]*\(([^)]*)\)[ \t]*\n"
                           r"(?:[ \t]*@[^\n]*\n)*[ \t]*(?:class|def)[ \t]+([A-Za-z_]\w*)")


@dataclass
class Definition:
    """Where one named object is defined: ``module:attr``, the file, what to snapshot."""

    name: str          # as the config names it ('matrix>Scaled', 'MyDense', 'my_act')
    module: str
    attr: str
    file: str
    root: str          # the top-level package folder, or the file itself
    others: List[str] = field(default_factory=list)   # further definitions, not used


def wanted_names(names: Iterable[str]) -> List[str]:
    """The names worth looking for: not Keras's own, not TensorFlow Addons' ('Addons>...':
    a distribution provides them), each a Python identifier after its package."""
    out = set()
    for n in names:
        package, _, short = n.rpartition(">")
        if package == "Addons" or keras_registration(n) or not short.isidentifier():
            continue
        if package or short not in BUILTIN_NAMES:
            out.add(n)
    return sorted(out)


def registration_key(args: str, attr: str) -> Optional[str]:
    """``register_keras_serializable(args)`` on ``attr`` -> its registered name, or None when the
    arguments aren't literal strings."""
    try:
        call = ast.parse(f"f({args})", mode="eval").body
    except SyntaxError:
        return None
    values = {"package": DEFAULT_PACKAGE, "name": None}
    try:
        for key, node in zip(("package", "name"), call.args):
            values[key] = ast.literal_eval(node)
        for kw in call.keywords:
            if kw.arg in values:
                values[kw.arg] = ast.literal_eval(kw.value)
    except ValueError:
        return None
    if not isinstance(values["package"], str) or not isinstance(values["name"], (str, type(None))):
        return None
    return f"{values['package']}>{values['name'] or attr}"


def _module_name(root: Path, file: Path) -> str:
    parts = list(file.relative_to(root).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources(code_paths: Sequence[str]) -> Iterable[Tuple[Path, Path, str]]:
    """``(root, file, text)`` of every Python source under the folders, in a stable order."""
    for cp in code_paths:
        root = Path(os.path.abspath(cp))
        for cur, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not skipped_dir(d) and d != "site-packages")
            for fname in sorted(files):
                if not fname.endswith(".py"):
                    continue
                path = Path(cur, fname)
                try:
                    if path.stat().st_size > MAX_SOURCE_BYTES:
                        continue
                    yield root, path, path.read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue


def find_definitions(names: Iterable[str], code_paths: Sequence[str]) -> Dict[str, Definition]:
    """Name -> its Definition, for the names found under ``code_paths``."""
    wanted = set(names)
    found: Dict[str, Definition] = {}
    if not wanted:
        return found
    shorts = {n.rpartition(">")[2] for n in wanted}

    def add(name: str, attr: str, root: Path, path: Path) -> None:
        if name not in wanted:
            return
        rel = path.relative_to(root)
        if name in found:
            if str(path) != found[name].file and str(path) not in found[name].others:
                found[name].others.append(str(path))
            return
        found[name] = Definition(name=name, module=_module_name(root, path), attr=attr, file=str(path),
                                 root=str(root / rel.parts[0] if len(rel.parts) > 1 else path))

    sources = list(_sources(code_paths))
    for root, path, text in sources:     # registrations first: they name a class exactly
        for m in _REGISTRATION.finditer(text):
            key = registration_key(m.group(1), m.group(2))
            if key:
                add(key, m.group(2), root, path)
    for root, path, text in sources:
        for m in _DEFINITION.finditer(text):
            attr = m.group(1)
            if attr in shorts:
                add(attr, attr, root, path)
                for n in wanted:   # 'pkg>Name' found by its class when no registration names it
                    if n.rpartition(">")[2] == attr and ">" in n:
                        add(n, attr, root, path)
    return found


def missing_report(missing: Sequence[str], named_by: Dict[str, str]) -> str:
    """One warning line: each name not found, and where the config names it."""
    return ("custom objects the model names were not found under --code-path (load_model will fail "
            "with 'Unknown ...' for them): " + ", ".join(
                f"{n} ({named_by[n]})" if named_by.get(n) else n for n in missing))
