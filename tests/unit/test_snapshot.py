"""Snapshot copies: whole packages, no links out of the tree, __main__ scripts."""
import os

import pytest

from envrepro.errors import CaptureError
from envrepro.capturing import snapshot
def test_package_copied_whole_and_hashed(tmp_path):
    src = tmp_path / "src"
    pkg = src / "mypkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "layers.py").write_text("from .. import util\n")
    (pkg / "util.py").write_text("U = 1\n")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "x.pyc").write_bytes(b"junk")
    cap = tmp_path / "cap"
    res = snapshot.copy_modules([{"module": "mypkg.sub.layers", "file": str(pkg / "sub" / "layers.py"),
                                  "distribution": None, "top": "mypkg", "root": str(pkg)}],
                                cap / "snapshot", cap)
    paths = sorted(f["path"] for f in res.files)
    assert paths == ["snapshot/mypkg/__init__.py", "snapshot/mypkg/sub/__init__.py",
                     "snapshot/mypkg/sub/layers.py", "snapshot/mypkg/util.py"]
    assert all(len(f["sha256"]) == 64 and f["origin"].startswith(str(pkg)) for f in res.files)
    assert res.modules == {"mypkg.sub.layers": "mypkg.sub.layers"}


def test_link_out_of_tree_is_refused_not_copied(tmp_path):
    secret = tmp_path / "home" / ".aws" / "credentials"
    secret.parent.mkdir(parents=True)
    secret.write_text("aws_secret_access_key = SENTINEL\n")
    pkg = tmp_path / "proj" / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "creds").symlink_to(secret)
    (pkg / "inside.py").write_text("A = 1\n")
    (pkg / "alias.py").symlink_to(pkg / "inside.py")   # a link inside the tree is fine
    cap = tmp_path / "cap"
    res = snapshot.copy_modules([{"module": "mypkg", "distribution": None, "root": str(pkg)}],
                                cap / "snapshot", cap)
    copied = {f["path"] for f in res.files}
    assert "snapshot/mypkg/creds" not in copied
    assert "snapshot/mypkg/alias.py" in copied and not (cap / "snapshot/mypkg/alias.py").is_symlink()
    assert res.refused == [str(pkg / "creds")]
    for p in cap.rglob("*"):
        if p.is_file():
            assert "SENTINEL" not in p.read_text()


def test_distribution_modules_are_not_copied(tmp_path):
    res = snapshot.copy_modules([{"module": "tensorflow_addons.layers", "distribution": "tensorflow-addons",
                                  "root": "/nonexistent"}], tmp_path / "s", tmp_path)
    assert res.files == [] and res.modules == {}


def test_main_script_snapshotted_under_its_name(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("class L: pass\n")
    cap = tmp_path / "cap"
    res = snapshot.copy_modules([{"module": "__main__", "file": str(script), "root": str(script),
                                  "distribution": None}], cap / "snapshot", cap)
    assert res.modules == {"__main__": "train"}
    assert [f["path"] for f in res.files] == ["snapshot/train.py"]
    assert any("__name__" in w for w in res.warnings)


def test_size_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot, "MAX_BYTES", 10)
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "big.py").write_text("x" * 100)
    with pytest.raises(CaptureError, match="exceeds"):
        snapshot.copy_modules([{"module": "p", "distribution": None, "root": str(pkg)}], tmp_path / "s", tmp_path)
