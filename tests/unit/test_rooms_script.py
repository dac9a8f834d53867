"""scripts/rooms.py on a tiny fake envrepro: it finds exactly what was planted.

Rooms: alpha/ (a <-> b, an in-room cycle), beta/ (with a nested folder) and gamma.py. alpha.a
imports beta.lock at module level and beta.lock imports alpha.a inside a function: one cycle
between rooms, not an import-time one. gamma -> alpha exists only under TYPE_CHECKING, so alpha
and gamma are no cycle although alpha imports gamma.
"""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "rooms.py"

FILES = {
    "envrepro/__init__.py": "",
    "envrepro/alpha/__init__.py": "",
    "envrepro/alpha/a.py": '''
        """Runs nothing: pip-compile in a docstring is no evidence."""
        from envrepro import gamma
        from envrepro.alpha import b
        from envrepro.beta import lock as lk


        def load(path):
            return lk.parse_lock(path.read_text())
        ''',
    "envrepro/alpha/b.py": '''
        from envrepro.beta.lock import parse_lock as parse

        from . import a

        EXCLUDED = frozenset({"pip", "envrepro"})   # a distribution name, not running pip
        ''',
    "envrepro/beta/__init__.py": "",
    "envrepro/beta/b.py": "X = 1\n",
    "envrepro/beta/deep/c.py": "Y = 2\n",
    "envrepro/beta/lock.py": '''
        LOCK_FILE = "requirements.lock"


        def parse_lock(text):
            return [] if not text else parse_lock("")


        def read(root):
            return (root / LOCK_FILE).read_text()


        def later():
            from envrepro.alpha import a
            return a
        ''',
    "envrepro/gamma.py": '''
        import subprocess
        import sys
        from typing import TYPE_CHECKING

        if TYPE_CHECKING:
            from envrepro.alpha.a import load


        def run(name):
            message = f"pip install {name} failed"
            return subprocess.run([sys.executable, "-m", "pip", "install", name]), message
        ''',
}


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake")
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def report(tree):
    proc = run_script("--root", str(tree), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def line_of(tree, rel, needle):
    lines = (tree / rel).read_text(encoding="utf-8").splitlines()
    return f"{rel}:{next(i for i, line in enumerate(lines, 1) if needle in line)}"


def test_rooms_and_lines(report, tree):
    rooms = {r["room"]: (r["modules"], r["lines"]) for r in report["rooms"]}
    assert {r: m for r, (m, _) in rooms.items()} == {"alpha": 3, "beta": 4, "gamma": 1,
                                                     "__init__": 1}
    beta = sum(len((tree / p).read_text().splitlines()) for p in FILES if p.startswith("envrepro/beta/"))
    assert rooms["beta"][1] == beta
    assert report["total"]["lines"] == sum(lines for _, lines in rooms.values())
    assert [r["lines"] for r in report["rooms"]] == sorted(rooms[r][1] for r in rooms)[::-1]


def test_cycles(report, tree):
    imports = report["imports"]
    [cycle] = imports["room_cycles"]
    assert cycle["rooms"] == ["alpha", "beta"]
    assert cycle["kind"] == "modules" and cycle["loop"] == ["alpha.a", "beta.lock", "alpha.a"]
    assert [h["at"] for h in cycle["hops"]] == [
        line_of(tree, "envrepro/alpha/a.py", "import lock as lk"),
        line_of(tree, "envrepro/beta/lock.py", "from envrepro.alpha import a")]
    assert [h["in_function"] for h in cycle["hops"]] == [False, True]
    assert imports["import_time_room_cycles"] == []
    [inner] = imports["in_room_cycles"]
    assert (inner["room"], inner["modules"]) == ("alpha", ["alpha.a", "alpha.b"])
    assert imports["type_checking"]["statements"] == 1
    assert imports["unresolved"] == []


def test_pip_evidence(report, tree):
    [gamma] = report["pip"]["rooms"]
    assert (gamma["room"], gamma["modules"]) == ("gamma", ["gamma"])
    [evidence] = gamma["evidence"]
    assert evidence["at"] == line_of(tree, "envrepro/gamma.py", '"-m", "pip"')
    assert evidence["what"].startswith("argv runs -m pip")
    assert report["pip"]["runtime_side"] == []


def test_lock_figures(report, tree):
    calls = report["parse_lock"]
    assert calls["count"] == 1 and calls["outside_defining_module"] == 1
    assert [s["at"] for s in calls["sites"]] == [line_of(tree, "envrepro/alpha/a.py", "lk.parse_lock(")]
    reads = report["lock_reads"]
    assert [s["at"] for s in reads["sites"]] == [line_of(tree, "envrepro/beta/lock.py", ".read_text()")]


def test_aliases_and_duplicates(report):
    aliases = report["aliases"]
    assert aliases["count"] == 2
    assert [(a["imports"], a["as"]) for a in aliases["module_aliases"]] == [("beta.lock", "lk")]
    assert [(a["imports"], a["as"]) for a in aliases["name_aliases"]] == [("beta.lock.parse_lock", "parse")]
    assert report["duplicate_basenames"] == [
        {"basename": "b.py", "rooms": ["alpha", "beta"],
         "files": ["envrepro/alpha/b.py", "envrepro/beta/b.py"]}]


def test_text_report_and_missing_root(tree, tmp_path):
    proc = run_script("--root", str(tree))
    assert proc.returncode == 0, proc.stderr
    assert "e.g. loop of modules: alpha.a -> beta.lock -> alpha.a" in proc.stdout
    missing = run_script("--root", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and missing.stdout == ""
    assert len(missing.stderr.strip().splitlines()) == 1
