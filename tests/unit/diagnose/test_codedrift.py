"""diagnose/codedrift.py: a snapshot module's current source, found by name in folders the user
chose (never at a path a manifest names), and what kind of change it is."""
import os

import pytest

from envrepro.diagnose import codedrift

from test_doctor import LAYER_V1


def test_code_change_classification():
    assert codedrift.code_change(LAYER_V1, LAYER_V1) == ("same", [])
    cosmetic = LAYER_V1.replace("# double", "# times two").replace('"""A layer."""', '"""Doubles."""')
    assert codedrift.code_change(LAYER_V1, cosmetic) == ("cosmetic", [])
    reformatted = LAYER_V1.replace("return x * 2", "return (x *\n                2)")
    assert codedrift.code_change(LAYER_V1, reformatted)[0] == "cosmetic"
    kind, changed = codedrift.code_change(LAYER_V1, LAYER_V1.replace("x * 2", "tf.nn.relu(x * 2)"))
    assert kind == "code" and changed == ["MyLayer.call"]
    kind, changed = codedrift.code_change(LAYER_V1, LAYER_V1 + "\nSCALE = 3\n")
    assert kind == "code" and changed == ["(module or class-level code)"]
    assert codedrift.code_change(LAYER_V1, "def broken(:\n")[0] == "code"
    assert codedrift.code_change(LAYER_V1, "x = '\0'\n")[0] == "code"


@pytest.mark.parametrize("rel, module", [
    ("snapshot/mylayers.py", "mylayers"),
    ("snapshot/pkg/sub/mod.py", "pkg.sub.mod"),
    ("snapshot/pkg/__init__.py", "pkg"),
    ("snapshot/pkg/data/vocab.json", None),          # a package's data file: not a module
    ("snapshot/.aws/credentials", None),
    ("snapshot/.aws/config.py", None),               # not an identifier
    ("snapshot/my-layers.py", None),
    ("snapshot/__init__.py", None),
    ("reference/x.py", None),
])
def test_module_of_a_snapshot_path(rel, module):
    assert codedrift.module_of(rel) == module


def test_find_source_by_name_in_the_given_folders(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    (second / "pkg" / "sub").mkdir(parents=True)
    first.mkdir()
    (second / "pkg" / "__init__.py").write_text("")
    (second / "pkg" / "sub" / "mod.py").write_text("A = 1\n")
    (first / "mylayers.py").write_text("B = 1\n")
    (second / "mylayers.py").write_text("B = 2\n")
    dirs = [str(first), str(second)]
    assert codedrift.find_source("pkg.sub.mod", dirs) == str(second / "pkg" / "sub" / "mod.py")
    assert codedrift.find_source("pkg", dirs) == str(second / "pkg" / "__init__.py")
    assert codedrift.find_source("mylayers", dirs) == str(first / "mylayers.py")     # first folder wins
    assert codedrift.find_source("nothere", dirs) is None
    assert codedrift.find_source("../etc/passwd", dirs) is None                       # not a module name
    assert codedrift.find_source("pkg.sub", dirs) is None                             # a folder, no __init__


def test_find_source_follows_no_link_out_of_the_folder(tmp_path):
    code, outside = tmp_path / "code", tmp_path / "outside"
    code.mkdir()
    outside.mkdir()
    (outside / "secret.py").write_text("TOKEN = 'x'\n")
    (code / "inner.py").write_text("A = 1\n")
    os.symlink(outside / "secret.py", code / "leak.py")
    os.symlink(outside, code / "pkg")
    os.symlink(code / "inner.py", code / "alias.py")          # a link inside the folder is fine
    assert codedrift.find_source("leak", [str(code)]) is None
    assert codedrift.find_source("pkg.secret", [str(code)]) is None
    assert codedrift.find_source("alias", [str(code)]) == str(code / "alias.py")


def test_only_regular_files_of_bounded_size_are_read(tmp_path, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    os.mkfifo(code / "fifo.py")                    # opening it for reading would block
    assert codedrift.find_source("fifo", [str(code)]) is None
    assert codedrift.read_source(str(code / "fifo.py")) is None
    (code / "big.py").write_text("x = 1\n" * 10)
    monkeypatch.setattr(codedrift, "MAX_SOURCE_BYTES", 20)
    assert codedrift.read_source(str(code / "big.py")) is None
    (code / "small.py").write_text("x = 1\n")
    assert codedrift.read_source(str(code / "small.py")) == "x = 1\n"


def test_search_dirs_are_the_code_paths_then_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert codedrift.search_dirs(["a", str(tmp_path)]) == [str(tmp_path / "a"), str(tmp_path)]


def test_manifest_text_is_shown_on_one_line():
    assert codedrift.as_text("/p/x.py\n\x1b[2Jrm -rf") == "/p/x.py\\n\\x1b[2Jrm -rf"
    assert len(codedrift.as_text("a" * 1000)) == 200
