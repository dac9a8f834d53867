"""Recording a Lambda layer's function source at capture (runtime/lambdasource.py): the text
is kept only when it compiles to the function's very bytecode, under every Python the runtime
runs on; what it uses is carried as imports or constants, or it says why not."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from envrepro.runtime import lambdasource
from envrepro.runtime.lambdasource import lambda_record

MODULE = textwrap.dedent('''
    import math
    SCALE = 0.5
    def helper(x):
        return x + 1
    layers = [dict(f=lambda t: t * 0.5 + 1.0), dict(g=lambda a, b=2: (a,
         b * SCALE))]
    two = (lambda x: x + 1, lambda x: x + 2)
    def make(k):
        return lambda x: x * k + helper(x) + math.pi
    class Box:
        @staticmethod
        def named(x, y=2.0):
            """doc"""
            return math.tanh(x) * y
    bad = lambda x: x + some_undefined
    def closure_obj():
        o = object()
        return lambda x: (o, x)
    text = lambda s: s + "é"
''')


@pytest.fixture()
def mod(tmp_path, monkeypatch):
    (tmp_path / "lam_mod.py").write_text(MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("lam_mod", None)
    import lam_mod
    yield lam_mod
    sys.modules.pop("lam_mod", None)


def test_a_lambda_in_a_list_is_cut_out_of_its_line(mod):
    rec = lambda_record("l", mod.layers[0]["f"])
    assert rec["source"] == "lambda t: t * 0.5 + 1.0" and rec["kind"] == "lambda"
    assert rec["globals"] == {} and rec["python"] == "%d.%d" % sys.version_info[:2]


def test_a_lambda_over_two_lines_with_a_default_and_a_global(mod):
    rec = lambda_record("l", mod.layers[1]["g"])
    assert rec["source"] == "lambda a, b=2: (a, b * SCALE)"
    assert rec["globals"] == {"SCALE": {"value": 0.5}}


def test_two_lambdas_on_one_line_each_get_its_own_text(mod):
    assert lambda_record("a", mod.two[0])["source"] == "lambda x: x + 1"
    assert lambda_record("b", mod.two[1])["source"] == "lambda x: x + 2"


def test_a_closure_carries_its_cells_and_the_globals_it_uses(mod):
    rec = lambda_record("l", mod.make(3))
    assert rec["source"] == "lambda x: x * k + helper(x) + math.pi"
    assert rec["globals"] == {"k": {"value": 3}, "helper": {"object": "lam_mod:helper"},
                              "math": {"module": "math"}}


def test_a_decorated_def_without_its_decorator(mod):
    rec = lambda_record("l", mod.Box.named)
    assert rec["kind"] == "def" and rec["source"].startswith("def named(x, y=2.0):")
    assert "@staticmethod" not in rec["source"] and rec["globals"] == {"math": {"module": "math"}}


def test_non_ascii_text_before_the_lambda(mod):
    assert lambda_record("l", mod.text)["source"] == 'lambda s: s + "é"'


@pytest.mark.parametrize("attr, why", [
    ("bad", "it uses some_undefined, which is not defined where it was"),
    ("closure", "it uses o (of type object"),
])
def test_what_cannot_be_carried_says_why(mod, attr, why):
    fn = mod.bad if attr == "bad" else mod.closure_obj()
    rec = lambda_record("l", fn)
    assert "source" not in rec and why in rec["why_not"]


def test_an_edited_file_gives_no_source(mod, tmp_path):
    fn = mod.layers[0]["f"]
    path = Path(fn.__code__.co_filename)
    path.write_text(path.read_text().replace("t * 0.5 + 1.0", "t * 0.5 + 2.0"))
    import linecache

    linecache.checkcache(str(path))
    rec = lambda_record("l", fn)
    assert "source" not in rec and "compiles to its bytecode" in rec["why_not"]


def test_no_file_and_not_a_function():
    fn = eval("lambda x: x")        # no file: '<string>'
    assert "can't be read" in lambda_record("l", fn)["why_not"]
    assert "not a Python function" in lambda_record("l", len)["why_not"]
    assert lambda_record("l", None)["why_not"]


PYTHONS = sorted(Path.home().glob(".pyenv/versions/3.*/bin/python"))
OLD = [p for p in PYTHONS if p.parent.parent.name.startswith(("3.6.", "3.8.", "3.12."))]


@pytest.mark.parametrize("python", OLD, ids=lambda p: p.parent.parent.name)
def test_the_same_records_under_the_pythons_the_runtime_runs_on(python, tmp_path):
    """Run as the probe would under the training interpreter (3.6 syntax, standard library)."""
    (tmp_path / "lam_mod.py").write_text(MODULE, encoding="utf-8")
    code = textwrap.dedent('''
        import importlib.util, json, sys
        sys.path.insert(0, sys.argv[2])
        spec = importlib.util.spec_from_file_location("ls", sys.argv[1])
        ls = importlib.util.module_from_spec(spec); spec.loader.exec_module(ls)
        import lam_mod as m
        fns = [m.layers[0]["f"], m.layers[1]["g"], m.two[1], m.make(3), m.Box.named, m.text]
        print(json.dumps([ls.lambda_record("l", f).get("source") for f in fns]))
    ''')
    proc = subprocess.run([str(python), "-c", code, lambdasource.__file__, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got[:4] == ["lambda t: t * 0.5 + 1.0", "lambda a, b=2: (a, b * SCALE)",
                       "lambda x: x + 2", "lambda x: x * k + helper(x) + math.pi"]
    assert got[4].startswith("def named(x, y=2.0):") and got[5] == 'lambda s: s + "é"'


def test_old_pythons_are_there():
    """The cross-version test above must not silently run on nothing."""
    assert len(OLD) >= 2, PYTHONS
