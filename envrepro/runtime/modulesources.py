"""Where user modules live and what must be copied so they import elsewhere: a module's file, its
top-level package folder, and the helper modules next to it that it imports.
"""
from __future__ import absolute_import, division, print_function

import os
import sys

from .distributions import is_site_dir
from .facts import is_under, norm_path


def module_file(modname):
    """Source file of an imported module (``.py`` over ``.pyc``), or None."""
    mod = sys.modules.get(modname)
    path = getattr(mod, "__file__", None) if mod is not None else None
    if not path:
        return None
    if path.endswith((".pyc", ".pyo")):
        src = path[:-1]
        if os.path.exists(src):
            path = src
    return os.path.abspath(path)


def object_file(target):
    """Source file defining a class or function, or None."""
    path = module_file(getattr(target, "__module__", None) or "")
    if path is None:
        try:
            import inspect

            path = inspect.getsourcefile(target)
        except Exception:
            path = None
    return os.path.abspath(path) if path else None


def module_entry(modname, dists, via):
    """Where a module lives and what must be copied so it (and its relative imports) work:
    the whole top-level package folder, or the single module file."""
    path = module_file(modname)
    top = modname.split(".", 1)[0]
    root = path
    if modname == "__main__":
        top = "__main__"
    else:
        topmod = sys.modules.get(top)
        topfile = getattr(topmod, "__file__", None) if topmod is not None else None
        if topfile and os.path.basename(topfile).startswith("__init__."):
            root = os.path.dirname(os.path.abspath(topfile))
        elif topmod is not None and hasattr(topmod, "__path__") and path:
            for entry in list(topmod.__path__):  # namespace package: the portion holding it
                if is_under(norm_path(path), norm_path(entry)):
                    root = os.path.abspath(entry)
                    break
        elif topfile:
            root = os.path.abspath(topfile)
    dist = dists.for_file(path) if path else None
    return {
        "module": modname,
        "file": path,
        "distribution": dist["name"] if dist else None,
        "editable": bool(dist and dist["editable"]),
        "top": top,
        "root": root,
        "source_root": os.path.dirname(root) if root else None,
        "via": via,
    }


def _system_dirs():
    """The interpreter's own prefixes: modules under them are never the user's."""
    dirs = set()
    for attr in ("prefix", "base_prefix", "exec_prefix", "base_exec_prefix"):
        val = getattr(sys, attr, None)
        if val:
            dirs.add(norm_path(val))
    return dirs


def _imported_tops(path):
    """Top-level module names a source file imports (absolute imports only)."""
    import ast

    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), filename=path)
    except Exception:
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.append(node.module.split(".")[0])
    return names


def sibling_modules(modules, dists):
    """User modules imported from the same source folders as the custom modules.

    A custom layer file often imports a helper module sitting next to it (``from helpers import
    act``); copying only the layer's file would break the load. Only folders outside
    site-packages and the interpreter prefix are considered, so this stays cheap and never
    sweeps installed packages in.
    """
    roots = set()
    system = _system_dirs()
    for entry in modules:
        if entry["distribution"] or not entry["source_root"] or entry["top"] == "__main__":
            continue
        root = norm_path(entry["source_root"])
        if is_site_dir(root) or any(is_under(root, s) for s in system) or root == norm_path(os.sep):
            continue
        roots.add(root)
    if not roots:
        return []
    tops = set(e["top"] for e in modules)
    tops.update(("__main__", "envrepro"))
    # Follow the import statements of the custom modules (transitively), not everything the
    # training script happened to import from the same folder.
    pending = [e.get("file") for e in modules
               if not e["distribution"] and e.get("file") and e["top"] != "__main__"]
    seen_files = set()
    out = []
    while pending:
        path = pending.pop()
        if not path or path in seen_files or not path.endswith(".py"):
            continue
        seen_files.add(path)
        for name in _imported_tops(path):
            if name in tops:
                continue
            mod = sys.modules.get(name)
            mpath = getattr(mod, "__file__", None) if mod is not None else None
            if not mpath or not isinstance(mpath, str):
                continue
            full = norm_path(mpath)
            if not any(full.startswith(root + os.sep) for root in roots):
                continue
            entry = module_entry(name, dists, "sibling")
            if entry["distribution"] is None and entry["source_root"] and \
                    norm_path(entry["source_root"]) in roots:
                out.append(entry)
                tops.add(name)
                pending.append(entry.get("file"))
    out.sort(key=lambda e: e["module"])
    return out
