"""docs/architecture.md and the README's tree, checked against the source tree and pyproject.toml.

The page lists every room (each folder under envrepro/ that holds modules, each top-level module)
in one table, shows the layers of the import contract and names real modules and functions. These
tests fail when a room is added, removed or renamed, or the contracts change, and the page, the
README's "How it works" tree or the contracts don't follow. The source is read as text (``ast``),
nothing of envrepro is imported, nothing reaches the network.
"""
import ast
import re
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

try:
    import tomllib                      # Python 3.11+
except ModuleNotFoundError:             # pragma: no cover - older Pythons
    tomllib = None

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "envrepro"
DOC = REPO / "docs" / "architecture.md"
README = REPO / "README.md"
PYPROJECT = REPO / "pyproject.toml"

ROOMS_HEADING = "## The rooms"          # the table of rooms, in reading order
LAYERS_HEADING = "## The layers"        # the text diagram of the layers contract
HOW_IT_WORKS = "## How it works"        # the README section holding the tree
NOT_ROOMS = ("__init__.py", "__main__.py")
RETIRED = ("build", "wheelhouse")       # old top-level rooms: build/ is image/ + packages/ now
FILE_SUFFIXES = {"py", "md", "yaml", "yml", "toml", "lock", "json", "tar", "txt", "whl", "h5",
                 "keras", "pb", "sh", "in", "log", "cfg", "Dockerfile", "envrepro"}

WHERE_ROOMS = f"the table under '{ROOMS_HEADING}, in reading order' in docs/architecture.md"
WHERE_LAYERS = f"the diagram under '{LAYERS_HEADING}' in docs/architecture.md"


# --- the source tree ----------------------------------------------------------------------------

def _skipped(path: Path) -> bool:
    return any(part == "__pycache__" or part.startswith(".") for part in path.relative_to(PKG).parts)


def module_files() -> List[Path]:
    return sorted(p for p in PKG.rglob("*.py") if not _skipped(p))


def py_folders() -> List[str]:
    """Every folder under envrepro/ with .py files in it or below it, as ``a/b`` (POSIX)."""
    found: Set[str] = set()
    for f in module_files():
        rel = f.parent.relative_to(PKG)
        for i in range(1, len(rel.parts) + 1):
            found.add("/".join(rel.parts[:i]))
    return sorted(found)


def top_modules() -> List[str]:
    return sorted(p.name for p in PKG.glob("*.py") if p.name not in NOT_ROOMS)


def rooms() -> List[str]:
    """The top-level rooms as the page writes them: ``name/`` and ``name.py``."""
    return [f + "/" for f in py_folders() if "/" not in f] + top_modules()


def nested_packages() -> List[str]:
    return [f for f in py_folders() if "/" in f]


def has_code(room: str) -> bool:
    """A room with a statement in it (data/ holds only an empty __init__.py: nothing to import)."""
    files = sorted((PKG / room).rglob("*.py")) if room.endswith("/") else [PKG / room]
    for f in files:
        if _skipped(f):
            continue
        body = ast.parse(f.read_text(encoding="utf-8")).body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]             # a docstring alone is no code
        if body:
            return True
    return False


def dotted(room: str) -> str:
    """``image/`` -> ``envrepro.image``, ``cli.py`` -> ``envrepro.cli``."""
    return "envrepro." + (room[:-1] if room.endswith("/") else room[:-3]).replace("/", ".")


def room_of(module: str) -> str:
    """``envrepro.image`` -> ``image/``, ``envrepro.cli`` -> ``cli.py``."""
    name = module.split(".", 1)[1].replace(".", "/")
    return name + "/" if (PKG / name).is_dir() else name + ".py"


def is_module(name: str) -> bool:
    """A real module or package of envrepro (``envrepro.x.y``)."""
    parts = name.split(".")
    if parts[0] != "envrepro":
        return False
    path = PKG.joinpath(*parts[1:])
    return (path.is_dir() and any(path.glob("*.py"))) or path.with_suffix(".py").is_file()


# --- the page -----------------------------------------------------------------------------------

def section(text: str, heading: str) -> str:
    """From the first line starting with ``heading`` to the next ``## `` heading."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(heading)]
    assert starts, f"no section starting with {heading!r}"
    out = []
    for line in lines[starts[0] + 1:]:
        if line.startswith("## "):
            break
        out.append(line)
    return "\n".join(out)


def code_blocks(text: str) -> List[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)


def spans(text: str) -> List[str]:
    """The `code spans` of markdown text."""
    return re.findall(r"`([^`\n]+)`", text)


def cells(line: str) -> List[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@lru_cache(maxsize=None)
def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def room_table() -> Tuple[List[str], List[List[str]]]:
    """The rooms table: its header and its rows (cells), separator left out."""
    lines = [l for l in section(doc_text(), ROOMS_HEADING).splitlines() if l.lstrip().startswith("|")]
    assert len(lines) > 2, f"no table in {WHERE_ROOMS}"
    header = [c.lower() for c in cells(lines[0])]
    assert "room" in header, f"the table in {WHERE_ROOMS} has no 'room' column: {header}"
    return header, [cells(l) for l in lines[2:]]


def table_rooms() -> List[Tuple[str, List[str]]]:
    """(the room a row names, every code span of the row), row by row."""
    header, rows = room_table()
    col = header.index("room")
    out = []
    for row in rows:
        named = spans(row[col]) if col < len(row) else []
        assert len(named) == 1, (f"each row of {WHERE_ROOMS} names one room in its 'room' column as "
                                 f"`name/` or `name.py`; this one has {named}: {' | '.join(row)}")
        out.append((named[0], [s for c in row for s in spans(c)]))
    return out


def doc_layers() -> List[Set[str]]:
    """The diagram's layers, top first, as sets of dotted module names."""
    blocks = code_blocks(section(doc_text(), LAYERS_HEADING))
    assert blocks, f"no diagram (a ``` block) in {WHERE_LAYERS}"
    layers = []
    for line in blocks[0].splitlines():
        m = re.match(r"^\s*(\d+)\s+(\S.*)$", line)
        if not m:
            continue
        assert int(m.group(1)) == len(layers) + 1, f"the layers of {WHERE_LAYERS} are numbered 1, 2, 3...: {line!r}"
        layers.append({dotted(item.strip()) for item in m.group(2).split("|")})
    assert layers, f"no numbered layer lines ('1  cli.py') in {WHERE_LAYERS}"
    return layers


# --- pyproject.toml -----------------------------------------------------------------------------

def pyproject() -> Dict:
    text = PYPROJECT.read_text(encoding="utf-8")
    if tomllib is not None:
        return tomllib.loads(text)
    tomli = pytest.importorskip("tomli", reason="reading pyproject.toml needs tomllib (3.11+) or tomli")
    return tomli.loads(text)                    # pragma: no cover


def contracts() -> List[Dict]:
    found = pyproject().get("tool", {}).get("importlinter", {}).get("contracts", [])
    assert found, "pyproject.toml has no [[tool.importlinter.contracts]]"
    return found


def contract_layers() -> List[Set[str]]:
    layered = [c for c in contracts() if c.get("type") == "layers"]
    assert len(layered) == 1, f"pyproject.toml should have one layers contract, it has {len(layered)}"
    return [{m.strip().strip("()") for m in re.split(r"[|:]", layer) if m.strip()}
            for layer in layered[0]["layers"]]


# --- (a) every room is on the page --------------------------------------------------------------

def test_every_room_is_in_the_table():
    named = {room for room, _ in table_rooms()}
    named |= {room_of(s) for s in named if s.startswith("envrepro.")}
    missing = [r for r in rooms() if r not in named]
    assert not missing, "\n".join(
        f"envrepro/{r} is a room but docs/architecture.md doesn't list it: add a row "
        f"'| N | `{r}` | its one job | layer | may import |' to {WHERE_ROOMS}, where a newcomer "
        f"should read it (and put it in a layer of pyproject.toml)" for r in missing)


def test_every_sub_package_is_named_in_its_rooms_row():
    rows = dict(table_rooms())
    missing = []
    for sub in nested_packages():
        parent = sub.split("/")[0] + "/"
        written = rows.get(parent, [])
        mod = "envrepro." + sub.replace("/", ".")
        if not any(s == sub + "/" or s.startswith(sub + "/") or s == mod or s.startswith(mod + ".")
                   for s in written):
            missing.append((sub, parent))
    assert not missing, "\n".join(
        f"envrepro/{sub}/ holds modules but docs/architecture.md doesn't name it: write `{sub}/` "
        f"and what it does in the row of `{parent}` in {WHERE_ROOMS}" for sub, parent in missing)


# --- (b) every room on the page exists ----------------------------------------------------------

def test_every_room_in_the_table_exists():
    real = set(rooms())
    problems = []
    seen: Set[str] = set()
    for room, _ in table_rooms():
        if room in seen:
            problems.append(f"`{room}` has two rows")
        seen.add(room)
        if not re.fullmatch(r"[a-z_][a-z0-9_]*(/|\.py)", room):
            problems.append(f"`{room}`: write a room as `name/` (a folder of envrepro/) or `name.py`")
        elif room not in real:
            problems.append(f"`{room}` is not a room: there is no envrepro/{room} with modules "
                            "(renamed or removed? update or delete its row)")
    assert not problems, f"in {WHERE_ROOMS}:\n" + "\n".join(problems)


def test_no_retired_room_is_named_anywhere():
    """Old top-level rooms (``build/``, ``wheelhouse/``), as paths or dotted names, anywhere on the page."""
    problems = []
    for s in sorted(set(spans(doc_text()))):
        name = re.sub(r"^envrepro[./]", "", s)
        first = re.split(r"[./]", name)[0]
        if first in RETIRED and ("/" in name or s.startswith("envrepro.")) and not (PKG / first).is_dir():
            problems.append(f"`{s}`: envrepro/{first}/ is gone (build/ became image/ and packages/; "
                            "the wheelhouse is packages/wheelhouse/)")
    assert not problems, "stale names in docs/architecture.md:\n" + "\n".join(problems)


@lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _defined(body: List[ast.stmt]) -> Dict[str, ast.stmt]:
    """Names a module or class body defines at its top: defs, classes, assignments, imports."""
    names: Dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        names[n.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                names[(a.asname or a.name).split(".")[0]] = node
        elif isinstance(node, (ast.If, ast.Try)):
            names.update(_defined(node.body))
            for handler in getattr(node, "handlers", []):
                names.update(_defined(handler.body))
            names.update(_defined(node.orelse))
    return names


def unresolved(name: str) -> Optional[str]:
    """Why ``room.module.attr`` (relative to envrepro) names nothing, or None when it is real."""
    parts = name.split(".")
    path, i = PKG, 0
    while i < len(parts) and ((path / parts[i]).is_dir() or (path / (parts[i] + ".py")).is_file()):
        path = path / parts[i] if (path / parts[i]).is_dir() else path / (parts[i] + ".py")
        i += 1
    if i == len(parts):
        return None
    module = path / "__init__.py" if path.is_dir() else path
    if not module.is_file():
        return f"envrepro/{path.relative_to(PKG)}/ has no {parts[i]}"
    scope = _defined(_tree(module).body)
    for depth, attr in enumerate(parts[i:i + 2]):
        node = scope.get(attr)
        if node is None:
            return f"{module.relative_to(REPO)} defines no {'.'.join(parts[i:i + depth + 1])}"
        if not isinstance(node, ast.ClassDef):
            break
        scope = _defined(node.body)
    return None


def test_the_modules_and_functions_named_exist():
    """Every `room.module.function` (or `envrepro.room...`) and every `room/path` the page names."""
    tops = {r.rstrip("/")[:-3] if r.endswith(".py") else r.rstrip("/") for r in rooms()}
    problems = []
    for s in sorted(set(spans(doc_text()))):
        if re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", s):
            name = s[len("envrepro."):] if s.startswith("envrepro.") else s
            if name.split(".")[0] not in tops or name.rsplit(".", 1)[-1] in FILE_SUFFIXES:
                continue
            why = unresolved(name)
            if why:
                problems.append(f"`{s}`: {why}")
        elif re.fullmatch(r"[\w.-]+(/[\w.-]+)*/?", s) and "/" in s:
            path = s[len("envrepro/"):] if s.startswith("envrepro/") else s
            if path.split("/")[0] in tops and not (PKG / path.rstrip("/")).exists():
                problems.append(f"`{s}`: there is no envrepro/{path.rstrip('/')}")
    assert not problems, "docs/architecture.md names what doesn't exist (renamed? update the page):\n" + \
        "\n".join(problems)


# --- (c) the contracts cover every room ---------------------------------------------------------

def test_every_layer_of_the_contract_is_a_real_module():
    fake = [m for layer in contract_layers() for m in sorted(layer) if not is_module(m)]
    assert not fake, ("pyproject.toml's layers contract names modules that don't exist "
                      f"(renamed? fix the contract and {WHERE_LAYERS}): {fake}")


def test_every_forbidden_contract_names_real_modules():
    fake = sorted({m for c in contracts() if c.get("type") == "forbidden"
                   for m in list(c.get("source_modules", [])) + list(c.get("forbidden_modules", []))
                   if m.startswith("envrepro") and not is_module(m)})
    assert not fake, f"pyproject.toml's forbidden contracts name modules that don't exist: {fake}"


def test_every_room_is_in_a_layer():
    layered = {m for layer in contract_layers() for m in layer}
    outside = [r for r in rooms() if has_code(r) and dotted(r) not in layered]
    assert not outside, "\n".join(
        f"envrepro/{r} is in no layer of the layers contract: add {dotted(r)} to a layer of "
        f"[[tool.importlinter.contracts]] in pyproject.toml, then to {WHERE_LAYERS} and the "
        f"'layer' column of {WHERE_ROOMS}" for r in outside)


def test_the_diagram_is_the_layers_contract():
    doc, contract = doc_layers(), contract_layers()
    shown = lambda layers: "\n".join(f"{i:2}  " + " | ".join(sorted(room_of(m) for m in layer))
                                     for i, layer in enumerate(layers, 1))
    assert doc == contract, (f"{WHERE_LAYERS} differs from the layers contract in pyproject.toml; "
                             f"the contract reads:\n{shown(contract)}")


def test_the_table_gives_each_room_its_layer():
    header, rows = room_table()
    if "layer" not in header:
        pytest.fail(f"the table in {WHERE_ROOMS} has no 'layer' column")
    number = {room_of(m): i for i, layer in enumerate(doc_layers(), 1) for m in layer}
    layer_col, room_col = header.index("layer"), header.index("room")
    may_col = header.index("may import") if "may import" in header else None
    problems = []
    for row in rows:
        named = spans(row[room_col]) if room_col < len(row) else []
        if len(named) != 1 or layer_col >= len(row):
            continue                    # test_every_room_is_in_the_table says what is wrong
        room = named[0]
        want = str(number[room]) if room in number else "—"
        got = row[layer_col].replace("-", "—") or "—"
        if got != want:
            problems.append(f"`{room}`: layer {got}, the diagram says {want}")
        m = re.match(r"layers? (\d+)", row[may_col]) if may_col is not None and may_col < len(row) else None
        if m and room in number and int(m.group(1)) != number[room] + 1:
            problems.append(f"`{room}` is on layer {number[room]}: it may import from layer "
                            f"{number[room] + 1} down, its row says {m.group(0)}")
    assert not problems, f"in {WHERE_ROOMS}:\n" + "\n".join(problems)


def _forbidden(pick) -> Dict:
    found = [c for c in contracts() if c.get("type") == "forbidden" and pick(c)]
    assert len(found) == 1, ("docs/architecture.md describes five forbidden contracts; one of them "
                             "is missing from pyproject.toml or split in two")
    return found[0]


def test_a_new_room_is_named_by_the_forbidden_contracts():
    """The forbidden contracts list rooms one by one: a new package must be added to each."""
    packages = [dotted(r) for r in rooms() if r.endswith("/") and has_code(r)]
    everything = [dotted(r) for r in rooms() if has_code(r)]
    top = {"envrepro.cli", "envrepro.cliserving", "envrepro.clisharing", "envrepro.clioptions", "envrepro.render",
           "envrepro.commands", "envrepro.sharecommands", "envrepro.commandbase"}
    rules = [
        ("the runtime imports nothing of the host side", "forbidden_modules",
         _forbidden(lambda c: c.get("source_modules") == ["envrepro.runtime"]),
         [m for m in everything if m != "envrepro.runtime"]),
        ("no room imports the top", "source_modules",
         _forbidden(lambda c: set(c.get("forbidden_modules", [])) == top), packages),
        ("the engine imports no room", "forbidden_modules",
         _forbidden(lambda c: c.get("source_modules") == ["envrepro.engine"]),
         [m for m in packages if m != "envrepro.engine"]),
        ("only the engine imports the Docker SDK", "source_modules",
         _forbidden(lambda c: c.get("forbidden_modules") == ["docker"]),
         [m for m in packages if m != "envrepro.engine"]),
        ("only packages/ runs pip", "source_modules",
         _forbidden(lambda c: "pip" in c.get("forbidden_modules", [])
                    and c.get("source_modules") != ["envrepro.runtime"]),
         [m for m in packages if m not in ("envrepro.packages", "envrepro.runtime")]),
    ]
    problems = [f"{m} is missing from the {key} of the contract '{c.get('name')}' ({rule})"
                for rule, key, c, wanted in rules for m in wanted if m not in c.get(key, [])]
    assert not problems, "pyproject.toml:\n" + "\n".join(problems)


# --- (d) the README's tree ----------------------------------------------------------------------

def readme_tree() -> List[Tuple[int, str]]:
    """(depth, name) of each entry of the tree that starts with ``envrepro/`` in "How it works"."""
    how = section(README.read_text(encoding="utf-8"), HOW_IT_WORKS)
    trees = [b for b in code_blocks(how) if b.strip() and b.strip().splitlines()[0].strip() == "envrepro/"]
    assert len(trees) == 1, (f"README.md's '{HOW_IT_WORKS}' should hold one tree starting with the "
                             f"line 'envrepro/' (it holds {len(trees)})")
    entries = []
    for line in trees[0].splitlines()[1:]:
        m = re.match(r"^((?:[│ ]   )*)[├└]── (\S+)", line)
        if m:
            entries.append((len(m.group(1)) // 4, m.group(2)))
    return entries


def test_the_readme_tree_lists_the_rooms():
    entries = readme_tree()
    listed = [name for depth, name in entries if depth == 0]
    real = set(rooms())
    missing = sorted(real - set(listed))
    extra = sorted(set(listed) - real - set(NOT_ROOMS))
    assert not missing and not extra, (
        f"README.md's '{HOW_IT_WORKS}' tree: " +
        (f"add {missing} (one line each, with its job, in layer order)" if missing else "") +
        ("; " if missing and extra else "") +
        (f"remove {extra} (no such room in envrepro/)" if extra else ""))


def test_every_entry_of_the_readme_tree_exists():
    stack: List[str] = []
    gone = []
    for depth, name in readme_tree():
        stack[depth:] = [name]
        rel = "".join(stack)
        if not (PKG / rel.rstrip("/")).exists():
            gone.append(rel)
    assert not gone, f"README.md's '{HOW_IT_WORKS}' tree lists what envrepro/ doesn't hold: {gone}"


def test_unit_tests_mirror_the_rooms():
    """tests/unit/<room>/ holds the tests of envrepro/<room>/: no test folder for a room that
    doesn't exist, and no test file of a room left at the top of tests/unit."""
    unit = REPO / "tests" / "unit"
    folders = sorted(p.name for p in unit.iterdir() if p.is_dir() and p.name not in ("snapshots", "__pycache__"))
    package_rooms = sorted(p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    stray = [f for f in folders if f not in package_rooms]
    assert not stray, f"tests/unit/ has folders that are no room of envrepro/: {stray}"
    empty = [room for room in folders if not any((unit / room).glob("test_*.py"))]
    assert not empty, f"test folders without tests: {empty}"
    top = sorted(p.stem[len("test_"):] for p in unit.glob("test_*.py"))
    top_level = {p.stem for p in PKG.glob("*.py")}
    misplaced = [name for name in top if name.split("_")[0] in package_rooms and name not in top_level]
    assert not misplaced, f"tests of a room's modules left in tests/unit/ (move them to tests/unit/<room>/): {misplaced}"
