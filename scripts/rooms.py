#!/usr/bin/env python3
"""envrepro's structure report: its rooms, how they import each other, and where pip runs and
the lock is read. Reads the source with ``ast``; never imports the project. Standard library only.

Usage: python scripts/rooms.py [--root DIR] [--json]

DIR (default: this checkout) is the folder holding the ``envrepro/`` package. ``--json`` prints
the same figures as one JSON object. Exit 0; exit 2 (one line) when DIR or DIR/envrepro is missing.

A *room* is a sub-folder of envrepro/ with everything under it (envrepro/packages/wheelhouse/ is
part of room ``packages``), or one top-level module envrepro/NAME.py (room ``NAME``;
envrepro/__init__.py is room ``__init__``). A *module* is one .py file; a package's __init__.py
is the package's module (envrepro.image). Places are printed as path:line, paths from DIR.

The figures:

1. Rooms: each room's modules (.py files) and lines (every line of them, blank and comment lines
   included), largest first, and the total. Sub-folders without .py files show 0 and 0.
2. Imports: every ``import`` and ``from ... import`` of envrepro, at any depth (inside functions
   too), relative imports resolved. ``from envrepro.x import y`` imports module envrepro.x.y when
   that file exists, else envrepro.x. Imports under ``if TYPE_CHECKING:`` never run: they are
   counted apart and left out of every cycle. Counts are of statements.
   - The room graph: room -> the rooms it imports.
   - Cycles between rooms: rooms that reach each other through imports (strongly connected
     components of the room graph, size > 1). Each comes with one example: the shortest loop of
     modules that leaves a room and comes back (``a -> b -> c -> a``), each step with the line of
     its import, avoiding envrepro/__init__.py when another loop exists; and the modules on such
     loops (module SCCs spanning rooms). If no loop of modules exists (the rooms reach each
     other through different modules), the example is a loop of rooms, each step with one
     import that makes it.
   - Import-time cycles between rooms: the same with imports inside functions left out too: the
     cycles that exist while the modules load.
   - Cycles inside rooms: modules of one room that import each other through that room's own
     imports (strongly connected components, size > 1), each with its shortest loop.
   - Unresolved: imports of an envrepro module with no file, or of a name its module doesn't
     define at top level (only checked where the module has no ``import *``/``__getattr__``).
3. Rooms that run pip: modules that run pip or pip-tools or read the package index, each piece of
   evidence printed. Evidence is code, never a docstring or a message:
   - an import of pip, pip._internal or piptools (pip._vendor, pip's copy of packaging, is not
     running pip);
   - an argv list that runs ``-m pip``/``-m piptools``, runs ``-c "import piptools"``, starts
     with pip/pip-compile/pip-sync and a subcommand or option, or passes pip's own
     ``--disable-pip-version-check``;
   - a string that is a pip-tools program or module ("piptools", "pip-compile", "pip-sync") or
     pip internals ("pip._internal...");
   - a urllib request (urlopen, Request, build_opener) in a module that names an index in a
     string ("/simple", "pypi.org", "index-url", "index_url");
   - pip's run-time settings for a subprocess (PIP_DISABLE_PIP_VERSION_CHECK, PIP_NO_INPUT as
     keywords or dict keys), or a subprocess call inside a function named for pip (run_pip).
   Room ``runtime`` runs inside containers and training interpreters, where reading installed
   distributions is its job: it is listed apart, as the runtime side.
4. parse_lock calls: calls ``parse_lock(...)`` or ``x.parse_lock(...)`` outside the body of
   ``def parse_lock``; the calls inside the defining module are included and marked.
5. Lock reads: ``.read_text()``, ``.read_bytes()``, ``.open()`` or ``open(...)`` of the lock's
   path: ``lock_path``, ``LOCK_FILE``, "requirements.lock", a path built from one (``/``, ``+``,
   Path(), os.path.join(), str()) or a local name assigned one; ``f(lock_path)`` is not the
   lock's path. A helper that reads the lock counts where it reads, not where it is called.
6. Aliased imports: imports of envrepro given another name: ``import envrepro.x.y as z`` (z != y)
   and ``from envrepro.x import b as c`` (c != b). Listed apart: the module aliases, where the
   imported thing is a module and the alias differs from the module's own name.
7. Duplicate basenames: module file names (not __init__.py) found more than once, with rooms.
"""
import argparse
import ast
import json
import re
import sys
from collections import defaultdict, deque
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Set, Tuple

PACKAGE = "envrepro"
RUNTIME_ROOMS = ("runtime",)
DEFAULT_ROOT = Path(__file__).resolve().parent.parent

PIP_MODULES = ("pip", "piptools")                        # python -m <these>
PIP_PROGRAMS = ("pip", "pip3", "pip-compile", "pip-sync")
PIP_COMMANDS = ("install", "download", "wheel", "index", "config", "list", "show", "freeze",
                "uninstall", "compile", "sync", "inspect", "hash", "cache")
PIP_ONLY_OPTIONS = ("--disable-pip-version-check",)
PIP_STRINGS = ("piptools", "pip-compile", "pip-sync")
PIP_RUN_ENV = ("PIP_DISABLE_PIP_VERSION_CHECK", "PIP_NO_INPUT")     # matter only when pip runs
PIP_NAME = re.compile(r"(?<![a-z])pip(tools)?(?![a-z])")          # run_pip, not pipeline
INDEX_HINT = re.compile(r"/simple\b|pypi\.org|pypi\.python\.org|index[-_]url")
URL_CALLS = ("urlopen", "Request", "build_opener")
LOCK_NAMES = ("lock_path", "LOCK_FILE")
LOCK_STRING = "requirements.lock"
READ_METHODS = ("read_text", "read_bytes", "open")
OPEN_FUNCTIONS = ("open", "io.open", "os.open", "codecs.open")
PATH_CALLS = ("Path", "PurePath", "str", "fspath", "joinpath", "resolve", "absolute")
PATH_METHODS = ("joinpath", "resolve", "absolute")


# --- the package ------------------------------------------------------------------------------

class Module:
    """One .py file: dotted name, path from the root, room, text and syntax tree."""

    def __init__(self, name: str, path: Path, rel: str, room: str) -> None:
        self.name, self.rel, self.room = name, rel, room
        self.source = path.read_bytes().decode("utf-8", errors="replace")
        self.lines = len(self.source.splitlines())
        self.is_package = path.name == "__init__.py"
        self.error = ""
        try:
            self.tree: Optional[ast.Module] = ast.parse(self.source, filename=rel)
        except (SyntaxError, ValueError) as exc:
            self.tree, self.error = None, f"{type(exc).__name__}: {exc}"

    @property
    def short(self) -> str:
        """The dotted name without the package prefix (the package itself keeps its name)."""
        return self.name[len(PACKAGE) + 1:] or self.name

    def at(self, node: ast.AST) -> str:
        return f"{self.rel}:{getattr(node, 'lineno', 0)}"

    def segment(self, node: ast.AST, width: int = 70) -> str:
        """The node's source on one line, cut at ``width`` characters."""
        text = " ".join((ast.get_source_segment(self.source, node) or "").split())
        return text if len(text) <= width else text[:width - 3] + "..."

    def nodes(self) -> Iterator[ast.AST]:
        return ast.walk(self.tree) if self.tree is not None else iter(())


def discover(root: Path) -> Tuple[Dict[str, Module], List[Module], List[str]]:
    """The package's importable modules by dotted name, all its .py files, and its rooms. Where
    x.py and x/__init__.py both exist, the package is the module (as for Python)."""
    pkg = root / PACKAGE
    files = []
    for path in sorted(pkg.rglob("*.py")):
        parts = path.relative_to(pkg).parts
        if any(p == "__pycache__" or p.startswith(".") for p in parts):
            continue
        stem = list(parts[:-1]) + ([] if parts[-1] == "__init__.py" else [parts[-1][:-3]])
        room = parts[0] if len(parts) > 1 else parts[0][:-3]
        files.append(Module(".".join([PACKAGE] + stem), path, path.relative_to(root).as_posix(),
                            room))
    importable = {m.name: m for m in sorted(files, key=lambda m: m.is_package)}
    modules = dict(sorted(importable.items(), key=lambda item: item[1].rel))
    folders = [p.name for p in pkg.iterdir()
               if p.is_dir() and p.name != "__pycache__" and not p.name.startswith(".")]
    return modules, files, sorted(set(folders) | {m.room for m in files})


def room_table(files: List[Module], rooms: List[str]) -> Dict[str, Any]:
    """Figure 1: modules and lines per room, largest first, and the total."""
    rows = {r: {"room": r, "modules": 0, "lines": 0} for r in rooms}
    for m in files:
        rows[m.room]["modules"] += 1
        rows[m.room]["lines"] += m.lines
    ordered = sorted(rows.values(), key=lambda r: (-r["lines"], r["room"]))
    total = {"rooms": len(rows), "modules": len(files), "lines": sum(m.lines for m in files)}
    return {"rooms": ordered, "total": total}


# --- imports ----------------------------------------------------------------------------------

class Import(NamedTuple):
    """One name imported from envrepro: ``dst`` the module it loads (None: no such module)."""
    src: str
    dst: Optional[str]
    written: str            # the dotted name as imported (envrepro.x.y, or envrepro.x.name)
    alias: ast.alias
    node: ast.stmt
    in_function: bool
    type_checking: bool


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class ImportSites(ast.NodeVisitor):
    """Every import statement of a module: (node, inside a function, under TYPE_CHECKING)."""

    def __init__(self) -> None:
        self.sites: List[Tuple[ast.stmt, bool, bool]] = []
        self.depth = self.typing = 0

    def visit_FunctionDef(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if not is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.typing += 1
        for stmt in node.body:
            self.visit(stmt)
        self.typing -= 1
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Import(self, node: ast.stmt) -> None:
        self.sites.append((node, self.depth > 0, self.typing > 0))

    visit_ImportFrom = visit_Import


def is_ours(name: Optional[str]) -> bool:
    return bool(name) and (name == PACKAGE or name.startswith(PACKAGE + "."))  # type: ignore


def from_base(mod: Module, node: ast.ImportFrom) -> Optional[str]:
    """The absolute module a ``from X import ...`` reads from (relative imports resolved)."""
    if not node.level:
        return node.module
    pkg = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
    if node.level - 1 >= len(pkg):
        return None
    pkg = pkg[:len(pkg) - (node.level - 1)]
    return ".".join(pkg + ([node.module] if node.module else []))


def targets(mod: Module, node: ast.stmt, modules: Dict[str, Module]
            ) -> Iterator[Tuple[ast.alias, Optional[str], str]]:
    """(alias, module loaded or None, name as written) for each envrepro name of a statement."""
    if isinstance(node, ast.Import):
        for a in node.names:
            if is_ours(a.name):
                yield a, (a.name if a.name in modules else None), a.name
        return
    base = from_base(mod, node)  # type: ignore[arg-type]
    if not is_ours(base):
        return
    for a in node.names:
        full = f"{base}.{a.name}"
        if full in modules:
            yield a, full, full
        else:
            yield a, (base if base in modules else None), full


def collect_imports(modules: Dict[str, Module]) -> List[Import]:
    out = []
    for mod in modules.values():
        if mod.tree is None:
            continue
        visitor = ImportSites()
        visitor.visit(mod.tree)
        for node, in_function, typing_only in visitor.sites:
            for alias, dst, written in targets(mod, node, modules):
                out.append(Import(mod.name, dst, written, alias, node, in_function, typing_only))
    return out


def top_level_names(tree: ast.Module) -> Optional[Set[str]]:
    """Names bound at a module's top level (through if/try/with/for blocks too); None when it
    can't be known (``import *`` or a module ``__getattr__``)."""
    names: Set[str] = set()
    todo: List[ast.stmt] = list(tree.body)
    while todo:
        stmt = todo.pop()
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            if any(a.name == "*" for a in stmt.names):
                return None
            names.update((a.asname or a.name).split(".")[0] for a in stmt.names)
        else:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo.extend(getattr(stmt, field, []) or [])
    return None if "__getattr__" in names else names


def unresolved(imports: List[Import], modules: Dict[str, Module]) -> List[Dict[str, str]]:
    """Imports of a module that has no file, or of a name its module doesn't define."""
    out = []
    for imp in imports:
        name = imp.written.rsplit(".", 1)[-1]
        if imp.dst is None:
            why = "no such module"
        elif imp.dst == imp.written or name == "*" or modules[imp.dst].tree is None:
            continue
        else:
            known = top_level_names(modules[imp.dst].tree)  # type: ignore[arg-type]
            if known is None or name in known:
                continue
            why = f"{short(imp.dst)} defines no {name}"
        src = modules[imp.src]
        out.append({"at": src.at(imp.node), "imports": short(imp.written), "why": why})
    return out


def short(name: str) -> str:
    return name[len(PACKAGE) + 1:] or name


# --- graphs -----------------------------------------------------------------------------------

Graph = Dict[str, Set[str]]


def strongly_connected(nodes: Iterable[str], succ: Graph) -> List[List[str]]:
    """Tarjan's strongly connected components (iterative), those of size > 1, each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found = []
    for root in sorted(nodes):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(succ.get(root, ()))))]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    found.append(pop_component(stack, on_stack, node))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(succ.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted((c for c in found if len(c) > 1), key=lambda c: (-len(c), c))


def pop_component(stack: List[str], on_stack: Set[str], node: str) -> List[str]:
    component = []
    while True:
        top = stack.pop()
        on_stack.discard(top)
        component.append(top)
        if top == node:
            return sorted(component)


def path_between(succ: Graph, start: str, goal: str) -> Optional[List[str]]:
    """A shortest path start -> goal (breadth first, neighbours in sorted order)."""
    came: Dict[str, Optional[str]] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while came[path[-1]] is not None:
                path.append(came[path[-1]])  # type: ignore[arg-type]
            return path[::-1]
        for nxt in sorted(succ.get(node, ())):
            if nxt not in came:
                came[nxt] = node
                queue.append(nxt)
    return None


def shortest_loop(succ: Graph, through: Iterable[Tuple[str, str]]) -> Optional[List[str]]:
    """The shortest loop ``a -> ... -> a`` that takes one of the edges ``through``."""
    best: Optional[List[str]] = None
    for a, b in sorted(set(through)):
        back = path_between(succ, b, a)
        if back is not None and (best is None or len(back) + 1 < len(best)):
            best = [a] + back
    return best


def graph_of(pairs: Iterable[Tuple[str, str]]) -> Graph:
    succ: Graph = defaultdict(set)
    for a, b in pairs:
        succ[a].add(b)
    return succ


# --- cycles -----------------------------------------------------------------------------------

def live_imports(imports: List[Import], with_functions: bool = True) -> List[Import]:
    """The imports that run: resolved, not under TYPE_CHECKING, not of the module itself."""
    return [i for i in imports if i.dst and i.dst != i.src and not i.type_checking
            and (with_functions or not i.in_function)]


def first_imports(imports: List[Import]) -> Dict[Tuple[str, str], Import]:
    """For each (module, module) pair, its first import (lowest line)."""
    out: Dict[Tuple[str, str], Import] = {}
    for imp in sorted(imports, key=lambda i: (i.src, i.node.lineno)):
        out.setdefault((imp.src, imp.dst), imp)  # type: ignore[arg-type]
    return out


def hop(imp: Import, modules: Dict[str, Module]) -> Dict[str, Any]:
    return {"from": short(imp.src), "to": short(imp.dst or imp.written),
            "at": modules[imp.src].at(imp.node), "in_function": imp.in_function}


def module_loop(first: Dict[Tuple[str, str], Import], room: Dict[str, str]
                ) -> Optional[List[str]]:
    """The shortest loop of modules that crosses rooms, avoiding the package's own __init__
    (which every import of the package runs anyway) when another loop exists."""
    for avoid in ({PACKAGE}, set()):
        edges = [p for p in first if not avoid & set(p)]
        loop = shortest_loop(graph_of(edges), [p for p in edges if room[p[0]] != room[p[1]]])
        if loop:
            return loop
    return None


def on_loops(first: Dict[Tuple[str, str], Import], room: Dict[str, str]) -> List[str]:
    """Modules on a loop of modules that crosses rooms (their SCCs spanning rooms)."""
    comps = strongly_connected({n for p in first for n in p}, graph_of(first))
    return sorted(short(n) for c in comps if len({room[n] for n in c}) > 1 for n in c)


def room_example(comp: List[str], live: List[Import], modules: Dict[str, Module]
                 ) -> Dict[str, Any]:
    """A loop of modules through the rooms ``comp`` (or, if none, a loop of rooms)."""
    room = {n: m.room for n, m in modules.items()}
    inside = [i for i in live if room[i.src] in comp and room[i.dst] in comp]  # type: ignore
    first = first_imports(inside)
    loop = module_loop(first, room)
    if loop:
        return {"kind": "modules", "loop": [short(n) for n in loop],
                "hops": [hop(first[pair], modules) for pair in zip(loop, loop[1:])],
                "modules_on_loops": on_loops(first, room)}
    by_rooms: Dict[Tuple[str, str], Import] = {}
    for (a, b), imp in sorted(first.items()):
        by_rooms.setdefault((room[a], room[b]), imp)
    pairs = [p for p in by_rooms if p[0] != p[1]]
    loop = shortest_loop(graph_of(pairs), pairs) or []
    return {"kind": "rooms", "loop": loop, "modules_on_loops": [],
            "hops": [hop(by_rooms[pair], modules) for pair in zip(loop, loop[1:])]}


def room_cycles(live: List[Import], modules: Dict[str, Module], rooms: List[str]
                ) -> List[Dict[str, Any]]:
    """Cycles between rooms: room SCCs of size > 1, each with an example loop."""
    pairs = {(modules[i.src].room, modules[i.dst].room) for i in live}  # type: ignore[index]
    succ = graph_of((a, b) for a, b in pairs if a != b)
    return [dict(rooms=comp, **room_example(comp, live, modules))
            for comp in strongly_connected(rooms, succ)]


def in_room_cycles(live: List[Import], modules: Dict[str, Module]) -> List[Dict[str, Any]]:
    """Cycles inside rooms: SCCs of modules through imports that stay in one room."""
    same = [i for i in live if modules[i.src].room == modules[i.dst].room]  # type: ignore
    first = first_imports(same)
    succ = graph_of(first)
    out = []
    for comp in strongly_connected(modules, succ):
        loop = shortest_loop(succ, [p for p in first if p[0] in comp and p[1] in comp]) or []
        out.append({"room": modules[comp[0]].room, "modules": [short(n) for n in comp],
                    "loop": [short(n) for n in loop],
                    "hops": [hop(first[pair], modules) for pair in zip(loop, loop[1:])]})
    return sorted(out, key=lambda c: (c["room"], c["modules"]))


def import_figures(modules: Dict[str, Module], rooms: List[str]) -> Dict[str, Any]:
    """Figure 2: the import graph between rooms, its cycles and the cycles inside rooms."""
    imports = collect_imports(modules)
    statements = {(i.src, i.node.lineno, i.node.col_offset): i for i in imports}
    typing_only = sorted({modules[i.src].at(i.node) + " " + short(i.written)
                          for i in imports if i.type_checking})
    live = live_imports(imports)
    module_level = live_imports(imports, with_functions=False)
    pairs = sorted({(modules[i.src].room, modules[i.dst].room) for i in live  # type: ignore
                    if modules[i.src].room != modules[i.dst].room})  # type: ignore[index]
    return {
        "statements": len(statements),
        "in_functions": sum(1 for i in statements.values() if i.in_function),
        "type_checking": {"statements": len({s for s, i in statements.items() if i.type_checking}),
                          "imports": typing_only},
        "room_edges": [list(p) for p in pairs],
        "room_cycles": room_cycles(live, modules, rooms),
        "import_time_room_cycles": room_cycles(module_level, modules, rooms),
        "in_room_cycles": in_room_cycles(live, modules),
        "unresolved": unresolved(imports, modules),
        "_imports": imports,
    }


# --- pip --------------------------------------------------------------------------------------

def docstring_ids(tree: ast.Module) -> Set[int]:
    """ids of the docstring constants (module, classes, functions)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def is_pip_module(name: str) -> bool:
    return name == "pip" or name.startswith("pip._internal") or name.split(".")[0] == "piptools"


def import_evidence(mod: Module) -> List[Tuple[int, str]]:
    out = []
    for node in mod.nodes():
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        else:
            continue
        out += [(node.lineno, f"imports {n}") for n in names if is_pip_module(n)]
    return out


def argv_runs_pip(values: List[Optional[str]]) -> Optional[str]:
    """What an argv list (its string constants, None elsewhere) says about running pip."""
    for here, nxt in zip(values, values[1:]):
        if here == "-m" and nxt in PIP_MODULES:
            return f"argv runs -m {nxt}"
        if here == "-c" and nxt and re.search(r"\bimport (pip|piptools)\b", nxt):
            return f"argv runs -c {nxt!r}"
    if len(values) > 1 and values[0] in PIP_PROGRAMS and values[1] and \
            (values[1] in PIP_COMMANDS or values[1].startswith("-")):
        return f"argv runs {values[0]} {values[1]}"
    options = [v for v in values if v in PIP_ONLY_OPTIONS]
    return f"argv passes pip's {options[0]}" if options else None


def argv_evidence(mod: Module, claimed: Set[int]) -> List[Tuple[int, str]]:
    """argv lists that run pip; their constants go to ``claimed`` (not evidence again)."""
    out = []
    for node in mod.nodes():
        if not isinstance(node, (ast.List, ast.Tuple)):
            continue
        values = [e.value if isinstance(e, ast.Constant) and isinstance(e.value, str) else None
                  for e in node.elts]
        what = argv_runs_pip(values)
        if what:
            out.append((node.lineno, f"{what}: {mod.segment(node)}"))
            claimed.update(id(e) for e in node.elts)
    return out


def code_strings(mod: Module) -> Iterator[ast.Constant]:
    """String constants that are code: not docstrings, not parts of f-strings (messages)."""
    if mod.tree is None:
        return
    skip = docstring_ids(mod.tree)
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.JoinedStr):
            skip.update(id(v) for v in node.values)
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node


def string_evidence(mod: Module, claimed: Set[int]) -> List[Tuple[int, str]]:
    return [(c.lineno, f"string {c.value!r}") for c in code_strings(mod)
            if id(c) not in claimed and (c.value in PIP_STRINGS or c.value.startswith(
                ("pip._internal", "piptools.")))]


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def urllib_calls(mod: Module) -> Iterator[ast.Call]:
    """Calls of urllib.request's urlopen, Request or build_opener (dotted or imported)."""
    imported = {a.asname or a.name for n in mod.nodes() if isinstance(n, ast.ImportFrom)
                and n.module == "urllib.request" for a in n.names if a.name in URL_CALLS}
    for node in mod.nodes():
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            if name in imported or (name.startswith("urllib.request.")
                                    and name.rsplit(".", 1)[-1] in URL_CALLS):
                yield node


def index_evidence(mod: Module) -> List[Tuple[int, str]]:
    """urllib requests in a module that names a package index in a string."""
    hint = next((c for c in code_strings(mod) if INDEX_HINT.search(c.value)), None)
    if hint is None:
        return []
    what = f"in a module naming an index ({hint.value!r}, line {hint.lineno})"
    return [(node.lineno, f"urllib {dotted(node.func)}() {what}") for node in urllib_calls(mod)]


def env_evidence(mod: Module) -> List[Tuple[int, str]]:
    """pip's run-time settings given to a subprocess (keywords or dict keys)."""
    out = []
    for node in mod.nodes():
        if isinstance(node, ast.Call):
            names = [k.arg for k in node.keywords if k.arg in PIP_RUN_ENV]
        elif isinstance(node, ast.Dict):
            names = [k.value for k in node.keys if isinstance(k, ast.Constant) and k.value in PIP_RUN_ENV]
        else:
            continue
        if names:
            out.append((node.lineno, f"environment for running pip: {', '.join(names)}"))
    return out


def runner_evidence(mod: Module) -> List[Tuple[int, str]]:
    """subprocess calls inside a function named for pip (run_pip, pip_index_versions)."""
    found: Dict[int, str] = {}
    for fn in mod.nodes():
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and PIP_NAME.search(fn.name):
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and dotted(node.func).startswith("subprocess."):
                    found.setdefault(node.lineno, f"{dotted(node.func)}() in {fn.name}()")
    return sorted(found.items())


def pip_evidence(mod: Module) -> List[Tuple[int, str]]:
    claimed: Set[int] = set()
    found = import_evidence(mod) + argv_evidence(mod, claimed) + string_evidence(mod, claimed)
    return sorted(found + index_evidence(mod) + env_evidence(mod) + runner_evidence(mod))


def pip_rooms(modules: Dict[str, Module]) -> Dict[str, Any]:
    """Figure 3: rooms whose modules run pip/pip-tools or read the index, with the evidence."""
    by_room: Dict[str, Dict[str, Any]] = {}
    for mod in modules.values():
        evidence = pip_evidence(mod)
        if not evidence:
            continue
        entry = by_room.setdefault(mod.room, {"room": mod.room, "modules": [], "evidence": []})
        entry["modules"].append(mod.short)
        entry["evidence"] += [{"at": f"{mod.rel}:{line}", "what": what} for line, what in evidence]
    rooms = [by_room[r] for r in sorted(by_room)]
    return {"rooms": [r for r in rooms if r["room"] not in RUNTIME_ROOMS],
            "runtime_side": [r for r in rooms if r["room"] in RUNTIME_ROOMS]}


# --- the lock ---------------------------------------------------------------------------------

def callee(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def parse_lock_calls(modules: Dict[str, Module]) -> Dict[str, Any]:
    """Figure 4: calls of parse_lock outside its definition."""
    defined, inside = [], set()
    for mod in modules.values():
        for node in mod.nodes():
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    node.name == "parse_lock":
                defined.append(mod)
                inside.update(id(n) for n in ast.walk(node))
    homes = {m.name for m in defined}
    sites = [{"at": mod.at(node), "in_defining_module": mod.name in homes}
             for mod in modules.values() for node in mod.nodes()
             if isinstance(node, ast.Call) and callee(node) == "parse_lock"
             and id(node) not in inside]
    return {"defined_in": sorted(m.rel for m in defined), "count": len(sites),
            "outside_defining_module": sum(1 for s in sites if not s["in_defining_module"]),
            "sites": sites}


def is_path_call(name: str) -> bool:
    return name.split(".")[-1] in PATH_CALLS or name.endswith("path.join")


def names_lock(node: ast.AST, local: Dict[str, int]) -> bool:
    """Whether an expression is the lock's path: ``lock_path``, ``LOCK_FILE``,
    "requirements.lock" or a local name assigned from one, joined into a path (``/``, ``+``,
    Path(), os.path.join(), str()). ``cache_folder(lock_path)`` is not the lock's path."""
    if isinstance(node, ast.Name):
        return node.id in LOCK_NAMES or node.id in local
    if isinstance(node, ast.Attribute):
        return node.attr in LOCK_NAMES
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value.rsplit("/", 1)[-1] == LOCK_STRING
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.Add)):
        return names_lock(node.left, local) or names_lock(node.right, local)
    if isinstance(node, ast.Call) and is_path_call(dotted(node.func)):
        parts = list(node.args) + ([node.func.value] if isinstance(node.func, ast.Attribute)
                                   and node.func.attr in PATH_METHODS else [])
        return any(names_lock(p, local) for p in parts)
    return False


def scope_nodes(scope: ast.AST) -> List[ast.AST]:
    """The nodes of one scope (a module or a function), nested functions left out."""
    out: List[ast.AST] = []
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        out.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    return out


def lock_locals(nodes: List[ast.AST]) -> Dict[str, int]:
    """Local names assigned (or bound by ``with ... as``) from an expression naming the lock,
    with the line of the assignment."""
    local: Dict[str, int] = {}
    for _ in range(2):                       # twice: a name assigned from such a name
        for node in nodes:
            pairs: List[Tuple[Any, Any]] = []
            if isinstance(node, ast.Assign):
                pairs = [(t, node.value) for t in node.targets]
            elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
                pairs = [(node.target, node.value)]
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                pairs = [(node.optional_vars, node.context_expr)]
            for target, value in pairs:
                if isinstance(target, ast.Name) and names_lock(value, local):
                    local.setdefault(target.id, node.lineno if hasattr(node, "lineno")
                                     else value.lineno)
    return local


def read_of(node: ast.AST) -> Optional[ast.AST]:
    """The expression a call reads (``x.read_text()`` -> x, ``open(x)`` -> x), else None."""
    if not isinstance(node, ast.Call):
        return None
    if dotted(node.func) in OPEN_FUNCTIONS:
        return node.args[0] if node.args else None
    if isinstance(node.func, ast.Attribute) and node.func.attr in READ_METHODS:
        return node.func.value
    return None


def lock_reads(modules: Dict[str, Module]) -> Dict[str, Any]:
    """Figure 5: direct reads of the lock file."""
    sites = []
    for mod in modules.values():
        scopes = [mod.tree] + [n for n in mod.nodes() if isinstance(
            n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]
        for scope in scopes if mod.tree is not None else []:
            nodes = scope_nodes(scope)
            local = lock_locals(nodes)
            for node in nodes:
                read = read_of(node)
                if read is None or not names_lock(read, local):
                    continue
                via = sorted({n.id for n in ast.walk(read)
                              if isinstance(n, ast.Name) and n.id in local})
                note = "".join(f" ({v} from line {local[v]})" for v in via)
                sites.append({"at": mod.at(node), "what": mod.segment(node) + note})
    sites.sort(key=lambda s: (s["at"].split(":")[0], int(s["at"].split(":")[1])))
    return {"count": len(sites), "sites": sites}


# --- names ------------------------------------------------------------------------------------

def aliases(imports: List[Import], modules: Dict[str, Module]) -> Dict[str, Any]:
    """Figure 6: envrepro imports under another name; module aliases listed apart."""
    module_aliases, name_aliases = [], []
    for imp in imports:
        own = imp.alias.name.rsplit(".", 1)[-1]
        if not imp.alias.asname or imp.alias.asname == own:
            continue
        entry = {"at": modules[imp.src].at(imp.node), "imports": short(imp.written),
                 "as": imp.alias.asname}
        (module_aliases if imp.written in modules else name_aliases).append(entry)
    return {"count": len(module_aliases) + len(name_aliases),
            "module_aliases": module_aliases, "name_aliases": name_aliases}


def duplicate_basenames(files: List[Module]) -> List[Dict[str, Any]]:
    """Figure 7: module file names (not __init__.py) used more than once."""
    seen: Dict[str, List[Module]] = defaultdict(list)
    for mod in files:
        if not mod.is_package:
            seen[mod.rel.rsplit("/", 1)[-1]].append(mod)
    return [{"basename": name, "rooms": sorted({m.room for m in mods}),
             "files": [m.rel for m in mods]}
            for name, mods in sorted(seen.items()) if len(mods) > 1]


def build_report(root: Path) -> Dict[str, Any]:
    modules, files, rooms = discover(root)
    report: Dict[str, Any] = {"root": str(root), "package": PACKAGE}
    report.update(room_table(files, rooms))
    report["imports"] = import_figures(modules, rooms)
    imports = report["imports"].pop("_imports")
    report["pip"] = pip_rooms(modules)
    report["parse_lock"] = parse_lock_calls(modules)
    report["lock_reads"] = lock_reads(modules)
    report["aliases"] = aliases(imports, modules)
    report["duplicate_basenames"] = duplicate_basenames(files)
    report["shadowed"] = [m.rel for m in files if modules[m.name] is not m]
    report["unparsable"] = [{"file": m.rel, "error": m.error} for m in files if m.error]
    return report


# --- text -------------------------------------------------------------------------------------

def text_rooms(report: Dict[str, Any]) -> List[str]:
    width = max([len(r["room"]) for r in report["rooms"]] + [5])
    out = ["1. Rooms (lines: every line of the room's .py files)",
           f"  {'room':<{width}}  modules   lines"]
    out += [f"  {r['room']:<{width}}  {r['modules']:>7}  {r['lines']:>6}" for r in report["rooms"]]
    t = report["total"]
    out.append(f"  {'total':<{width}}  {t['modules']:>7}  {t['lines']:>6}   ({t['rooms']} rooms)")
    return out


def text_hops(hops: List[Dict[str, Any]]) -> List[str]:
    return [f"        {h['at']}: {h['from']} imports {h['to']}"
            + (" (inside a function)" if h["in_function"] else "") for h in hops]


def text_room_cycles(title: str, cycles: List[Dict[str, Any]]) -> List[str]:
    out = [f"  {title}: {len(cycles)}"]
    for c in cycles:
        out.append(f"    {len(c['rooms'])} rooms: {', '.join(c['rooms'])}")
        label = "loop of modules" if c["kind"] == "modules" else \
            "loop of rooms (there is no loop of modules)"
        out.append(f"      e.g. {label}: {' -> '.join(c['loop'])}")
        out += text_hops(c["hops"])
        if c["modules_on_loops"]:
            out.append(f"      modules on loops that cross rooms ({len(c['modules_on_loops'])}): "
                       + ", ".join(c["modules_on_loops"]))
    return out


def text_cycles(imp: Dict[str, Any]) -> List[str]:
    out = text_room_cycles("cycles between rooms", imp["room_cycles"])
    out += text_room_cycles("import-time cycles between rooms (imports inside functions left "
                            "out too)", imp["import_time_room_cycles"])
    out.append(f"  cycles inside rooms: {len(imp['in_room_cycles'])}")
    for c in imp["in_room_cycles"]:
        out.append(f"    {c['room']}: {', '.join(c['modules'])}")
        out.append(f"      e.g. {' -> '.join(c['loop'])}")
        out += text_hops(c["hops"])
    return out


def text_graph(pairs: List[List[str]]) -> List[str]:
    succ = graph_of((a, b) for a, b in pairs)
    width = max([len(a) for a in succ] + [1])
    return [f"    {a:<{width}} -> {', '.join(sorted(succ[a]))}" for a in sorted(succ)]


def text_imports(report: Dict[str, Any]) -> List[str]:
    imp = report["imports"]
    tc = imp["type_checking"]
    out = ["2. Imports between rooms (TYPE_CHECKING imports left out of the cycles)",
           (f"  import statements of envrepro: {imp['statements']} ({imp['in_functions']} "
            f"inside functions, {tc['statements']} under TYPE_CHECKING)"),
           f"  room -> room pairs: {len(imp['room_edges'])} (room -> the rooms it imports)"]
    out += text_graph(imp["room_edges"])
    out.append(f"  under TYPE_CHECKING (not in the graph): {tc['statements']} statements")
    out += [f"    {s}" for s in tc["imports"]]
    out += text_cycles(imp)
    out.append(f"  unresolved imports: {len(imp['unresolved'])}")
    out += [f"    {u['at']}: {u['imports']} ({u['why']})" for u in imp["unresolved"]]
    return out


def text_pip_group(groups: List[Dict[str, Any]]) -> List[str]:
    out = []
    for g in groups:
        out.append(f"  {g['room']}: {len(g['modules'])} modules: {', '.join(g['modules'])}")
        out += [f"    {e['at']}: {e['what']}" for e in g["evidence"]]
    return out


def text_pip(report: Dict[str, Any]) -> List[str]:
    pip = report["pip"]
    out = [f"3. Rooms that run pip / pip-tools or read the index: {len(pip['rooms'])}"
           + (f" ({', '.join(g['room'] for g in pip['rooms'])})" if pip["rooms"] else "")]
    out += text_pip_group(pip["rooms"])
    out.append(f"  runtime side (runs in containers / training interpreters): "
               f"{len(pip['runtime_side'])}" + ("" if pip["runtime_side"] else " (no evidence)"))
    return out + text_pip_group(pip["runtime_side"])


def text_lock(report: Dict[str, Any]) -> List[str]:
    pl, reads = report["parse_lock"], report["lock_reads"]
    out = [(f"4. parse_lock( calls outside its definition: {pl['count']} "
            f"({pl['outside_defining_module']} outside {', '.join(pl['defined_in']) or '-'})")]
    out += [f"    {s['at']}" + (" (defining module)" if s["in_defining_module"] else "")
            for s in pl["sites"]]
    out.append(f"5. Reads of the lock file (lock_path / LOCK_FILE / requirements.lock): "
               f"{reads['count']}")
    return out + [f"    {s['at']}: {s['what']}" for s in reads["sites"]]


def text_names(report: Dict[str, Any]) -> List[str]:
    al = report["aliases"]
    out = [(f"6. Aliased imports of envrepro: {al['count']} "
            f"({len(al['module_aliases'])} of modules, {len(al['name_aliases'])} of names)"),
           "  modules imported under another name than their own:"]
    out += [f"    {a['at']}: {a['imports']} as {a['as']}" for a in al["module_aliases"]]
    out.append("  names imported under another name:")
    out += [f"    {a['at']}: {a['imports']} as {a['as']}" for a in al["name_aliases"]]
    dups = report["duplicate_basenames"]
    out.append(f"7. Duplicate module basenames (not __init__.py): {len(dups)}")
    for d in dups:
        where = "same room" if len(d["rooms"]) == 1 else "rooms " + ", ".join(d["rooms"])
        out.append(f"    {d['basename']} ({where}): {', '.join(d['files'])}")
    return out


def render_text(report: Dict[str, Any]) -> str:
    out = [f"envrepro rooms report: {report['root']}", ""]
    for part in (text_rooms, text_imports, text_pip, text_lock, text_names):
        out += part(report) + [""]
    if report["shadowed"]:
        out.append(f"Shadowed by a package of the same name (in figure 1 only): "
                   f"{', '.join(report['shadowed'])}")
    if report["unparsable"]:
        out.append(f"Unparsable files (counted in lines only): {len(report['unparsable'])}")
        out += [f"    {u['file']}: {u['error']}" for u in report["unparsable"]]
    return "\n".join(out).rstrip() + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                        help="folder holding the envrepro/ package (default: this checkout)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / PACKAGE).is_dir():
        what = "root not found" if not root.is_dir() else f"no {PACKAGE}/ package in"
        print(f"rooms.py: {what}: {root}", file=sys.stderr)
        return 2
    report = build_report(root)
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.json else render_text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
