"""Custom-code drift: each module of the capture's snapshot against its current source.

A model whose custom layer was edited after the save loads without error and computes something
else, so the doctor diffs the snapshot copy with the code the user has now. The manifest records
where each file was copied from (``origin``), but a manifest is untrusted input (anyone can edit
a capture and re-seal it): an origin is shown as text, never opened. The current source is found
by the module's name in folders the user chose (``doctor --code-path DIR``, then the current
directory), purely by path: ``a.b.c`` is ``DIR/a/b/c.py`` or ``DIR/a/b/c/__init__.py``. Nothing
is imported, no symbolic link is followed out of DIR, and only regular files of at most
``MAX_SOURCE_BYTES`` are read. The module name comes from the snapshot file's place in
``snapshot/`` (a schema-checked relative path), so a snapshot can only name Python modules.
"""
from __future__ import annotations

import ast
import difflib
import os
import stat
from pathlib import PurePosixPath
from typing import Any, Dict, List, Optional, Sequence, Tuple

from envrepro.diagnose.findings import ERROR, INFO, Finding
from envrepro.fsutil import is_within
from envrepro.sidecar import manifest
from envrepro.sidecar.layout import SNAPSHOT_DIR
from envrepro.sidecar.schema import MODULE_RE

MAX_DIFF_LINES = 200
MAX_SOURCE_BYTES = 4 * 1024 * 1024      # a module's source; a larger file is not compared
MAX_LISTED = 6                          # module names listed in one finding


# --------------------------------------------------------------------------------------------
# Where a module's current source is (by name, in the folders the user chose)
# --------------------------------------------------------------------------------------------

def module_of(rel: str) -> Optional[str]:
    """The module a snapshot file is (``snapshot/pkg/sub/mod.py`` -> ``pkg.sub.mod``,
    ``snapshot/pkg/__init__.py`` -> ``pkg``); None for anything else (data files, odd names)."""
    parts = list(PurePosixPath(rel).parts)
    if len(parts) < 2 or parts[0] != SNAPSHOT_DIR or not parts[-1].endswith(".py"):
        return None
    parts = parts[1:]
    parts[-1] = parts[-1][:-3]
    if parts[-1] == "__init__":
        parts.pop()
    name = ".".join(parts)
    return name if parts and MODULE_RE.match(name) else None


def search_dirs(code_paths: Sequence[str] = ()) -> List[str]:
    """The ``--code-path`` folders, then the current directory: absolute, each once."""
    return list(dict.fromkeys(os.path.abspath(p) for p in list(code_paths) + [os.getcwd()]))


def _regular(path: str) -> Optional[os.stat_result]:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def find_source(module: str, dirs: Sequence[str]) -> Optional[str]:
    """``DIR/a/b/c.py`` or ``DIR/a/b/c/__init__.py`` in the first folder that has one, as long
    as it resolves inside that folder to a regular file; never imports (no ``find_spec``)."""
    if not MODULE_RE.match(module):
        return None
    parts = module.split(".")
    for d in dirs:
        real_dir = os.path.realpath(d)
        for candidate in (os.path.join(d, *parts[:-1], parts[-1] + ".py"),
                          os.path.join(d, *parts, "__init__.py")):
            real = os.path.realpath(candidate)
            if os.path.commonpath([real, real_dir]) != real_dir or _regular(real) is None:
                continue
            return candidate
    return None


def read_source(path: str) -> Optional[str]:
    """The text of a regular file of at most MAX_SOURCE_BYTES (its links resolved), else None."""
    real = os.path.realpath(path)
    st = _regular(real)
    if st is None or st.st_size > MAX_SOURCE_BYTES:
        return None
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(real, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        data = f.read(MAX_SOURCE_BYTES + 1)
    return None if len(data) > MAX_SOURCE_BYTES else data.decode("utf-8", errors="replace")


def as_text(value: Any, limit: int = 200) -> str:
    """A manifest value shown on one line: control characters escaped, length bounded."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# What changed: cosmetic (comments, docstrings, formatting) or code that runs
# --------------------------------------------------------------------------------------------

def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _functions(tree: ast.AST) -> Dict[str, str]:
    """Qualified name ('MyLayer.call') -> normalized dump of every function in the module."""
    out: Dict[str, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                q = prefix + child.name
                out[q] = ast.dump(child, include_attributes=False)
                visit(child, q + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)
    visit(tree, "")
    return out


def code_change(old: str, new: str) -> Tuple[str, List[str]]:
    """('same' | 'cosmetic' | 'code', changed functions). Comments, docstrings and formatting are
    cosmetic: they can't change what the model computes. Anything else that runs is code."""
    if old == new:
        return "same", []
    try:
        a, b = _strip_docstrings(ast.parse(old)), _strip_docstrings(ast.parse(new))
    except SyntaxError as e:
        return "code", [f"(does not parse: {e.msg} line {e.lineno})"]
    except (ValueError, RecursionError, MemoryError) as e:
        return "code", [f"(does not parse: {type(e).__name__})"]
    if ast.dump(a, include_attributes=False) == ast.dump(b, include_attributes=False):
        return "cosmetic", []
    fa, fb = _functions(a), _functions(b)
    changed = sorted(q for q in set(fa) | set(fb) if fa.get(q) != fb.get(q))
    return "code", changed or ["(module or class-level code)"]


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------

def _listed(names: List[str]) -> str:
    more = len(names) - MAX_LISTED
    return ", ".join(names[:MAX_LISTED]) + (f" and {more} more" if more > 0 else "")


def snapshot_drift(cap: manifest.Capture, code_paths: Sequence[str] = ()) -> Tuple[List[Dict[str, Any]], List[Finding]]:
    """Each snapshotted module against its current source in ``code_paths`` and the current
    directory: a diff, and LOUD when code that runs changed (the model then loads without error
    and predicts differently). Modules found in none of them are listed in one INFO finding."""
    dirs = search_dirs(code_paths)
    drift: List[Dict[str, Any]] = []
    findings: List[Finding] = []
    not_found: List[Tuple[str, str]] = []      # (module, recorded origin)
    for entry in manifest.snapshot_entries(cap):
        rel = str(entry.get("path") or "")
        module = module_of(rel)
        if module is None:
            continue            # a data file of a package: not a module, not looked for
        origin = as_text(entry.get("origin") or "?")
        item: Dict[str, Any] = {"path": rel, "module": module, "origin": origin, "current": None,
                                "status": "not_found", "kind": "not_found", "changed": [], "diff": ""}
        current = find_source(module, dirs)
        if current is None:
            not_found.append((module, origin))
            drift.append(item)
            continue
        item["current"] = current
        snap = cap.root / rel
        old = read_source(str(snap)) if is_within(snap, cap.root) else None
        new = read_source(current)
        if old is None or new is None:
            item["status"] = item["kind"] = "unreadable"
            drift.append(item)
            findings.append(Finding(INFO, f"{module}: {current if new is None else 'capture:' + rel} is not a "
                                    f"regular file of at most {MAX_SOURCE_BYTES // (1024 * 1024)} MiB: not compared",
                                    kind="drift", class_id="drift"))
            continue
        kind, changed = code_change(old, new)
        if kind == "same":
            continue
        diff = list(difflib.unified_diff(old.splitlines(), new.splitlines(), f"capture:{rel}", current,
                                         lineterm=""))
        item.update(status="changed", kind=kind, changed=changed,
                    diff="\n".join(diff[:MAX_DIFF_LINES]) + ("\n..." if len(diff) > MAX_DIFF_LINES else ""))
        drift.append(item)
        if kind == "code":
            findings.append(Finding(
                ERROR, f"custom code changed since the save: {current}: " + ", ".join(changed),
                f"module {module} (captured from {origin}) loads without error with the new code and "
                "computes something else (nothing warns at load time)",
                "`envrepro load MODEL` loads with the snapshot; or restore the code "
                "(`doctor --try` checks the snapshot's predictions here)", kind="drift", class_id="drift",
                detail=item["diff"]))
        else:
            findings.append(Finding(INFO, f"{current}: only comments/docstrings changed since the save",
                                    kind="drift", class_id="drift", detail=item["diff"]))
    if not_found:
        findings.append(Finding(
            INFO, f"custom code not compared with the capture's snapshot: {_listed([m for m, _ in not_found])} "
                  f"not found in {', '.join(dirs)}",
            f"{not_found[0][0]} was captured from {not_found[0][1]}; doctor looks a module up by name in "
            "the folders you give it and never opens a path a capture recorded",
            "pass --code-path DIR (the folder you import them from)",
            kind="drift", class_id="drift"))
    return drift, findings
