"""Snapshot copies: whole packages, no links out of the tree, __main__ scripts; regular files
only, no secrets-looking, hidden or private-key files, each one left out listed with why."""
import json
import os
import threading

import pytest

from envrepro.errors import CaptureError
from envrepro.capturing import snapshot
from envrepro.fsutil import sha256_file

PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nSENTINEL\n-----END OPENSSH PRIVATE KEY-----\n"


def copy_within(seconds, *args):
    """``copy_modules(*args)`` in a daemon thread: a copy that blocks (a FIFO opened for
    reading waits for a writer forever) fails the test instead of hanging the run."""
    out = {}

    def run():
        try:
            out["result"] = snapshot.copy_modules(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the test's thread
            out["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"the snapshot copy still runs after {seconds} s (blocked on a FIFO?)"
    if "error" in out:
        raise out["error"]
    return out["result"]


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


@pytest.fixture
def messy_package(tmp_path):
    """A package with code, package data, secrets, hidden files and special files."""
    pkg = tmp_path / "src" / "mypkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "keys").mkdir()
    (pkg / ".ssh").mkdir()
    (pkg / "secrets").mkdir()
    files = {
        "__init__.py": "",
        "layers.py": "class L: pass\n",
        "sub/__init__.py": "",
        "sub/blocks.py": "from .. import layers\n",
        "vocab.txt": "the\nof\nand\n",
        "config.json": json.dumps({"units": 4}),
        "_ops.so": "\x7fELF native extension",     # native code a module imports: kept
        "sub/table.csv": "a,b\n1,2\n",
        ".env": "API_TOKEN=SENTINEL\n",
        ".env.production": "API_TOKEN=SENTINEL\n",
        ".gitignore": "*.pyc\n",
        "id_rsa": PRIVATE_KEY,
        "server.key": "SENTINEL",
        "cert.pem": "SENTINEL",
        "credentials.json": '{"secret": "SENTINEL"}',
        "keys/id_ed25519": PRIVATE_KEY,
        ".ssh/config": "SENTINEL",
        "secrets/db.yaml": "password: SENTINEL\n",
        "notes.txt": "deploy with\n" + PRIVATE_KEY,      # a private key under a harmless name
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    os.mkfifo(pkg / "pipe")
    (pkg / "pipe_link").symlink_to(pkg / "pipe")
    (pkg / "sub" / "pipe_alias.txt").symlink_to(pkg / "pipe")
    return pkg


MESSY_COPIED = ["snapshot/mypkg/__init__.py", "snapshot/mypkg/_ops.so", "snapshot/mypkg/config.json",
                "snapshot/mypkg/layers.py", "snapshot/mypkg/sub/__init__.py",
                "snapshot/mypkg/sub/blocks.py", "snapshot/mypkg/sub/table.csv",
                "snapshot/mypkg/vocab.txt"]
MESSY_SKIPPED = {
    "mypkg/.env": "looks like a secret",
    "mypkg/.env.production": "looks like a secret",
    "mypkg/.gitignore": "hidden, not package data",
    "mypkg/.ssh/": "looks like a secret",
    "mypkg/cert.pem": "looks like a secret",
    "mypkg/credentials.json": "looks like a secret",
    "mypkg/id_rsa": "looks like a secret",
    "mypkg/keys/id_ed25519": "looks like a secret",
    "mypkg/notes.txt": "holds a private key",
    "mypkg/pipe": "FIFO, not a regular file",
    "mypkg/pipe_link": "link to a FIFO",
    "mypkg/secrets/": "looks like a secret",
    "mypkg/server.key": "looks like a secret",
    "mypkg/sub/pipe_alias.txt": "link to a FIFO",
}


def test_only_regular_files_and_no_secrets_are_copied_and_every_skip_is_listed(tmp_path, messy_package):
    pkg = messy_package
    cap = tmp_path / "cap"
    res = copy_within(20, [{"module": "mypkg.layers", "file": str(pkg / "layers.py"), "distribution": None,
                            "top": "mypkg", "root": str(pkg)}], cap / "snapshot", cap)
    assert sorted(f["path"] for f in res.files) == MESSY_COPIED
    on_disk = sorted(p.relative_to(cap).as_posix() for p in cap.rglob("*") if not p.is_dir())
    assert on_disk == MESSY_COPIED                      # nothing else, not even a withdrawn copy
    assert sorted(p.relative_to(cap).as_posix() for p in cap.rglob("*") if p.is_dir()) == \
        ["snapshot", "snapshot/mypkg", "snapshot/mypkg/sub"]
    for entry in res.files:                              # the content, and its hash, are the source's
        copied = cap / entry["path"]
        assert copied.read_bytes() == open(entry["origin"], "rb").read()
        assert entry["sha256"] == sha256_file(copied) == sha256_file(entry["origin"])
        assert entry["module"] == "mypkg.layers" and not copied.is_symlink()
    assert (cap / "snapshot/mypkg/vocab.txt").read_text() == "the\nof\nand\n"
    assert json.loads((cap / "snapshot/mypkg/config.json").read_text()) == {"units": 4}
    assert {s["path"]: s["reason"] for s in res.skipped} == MESSY_SKIPPED
    assert len(res.skipped) == len(MESSY_SKIPPED)
    assert all(s["origin"] == str(pkg.parent / s["path"].rstrip("/")) for s in res.skipped)
    assert res.refused == []                             # links inside the tree are not refused
    for p in cap.rglob("*"):
        if p.is_file():
            assert "SENTINEL" not in p.read_text(errors="replace"), p
    # One warning names every file left out, with its reason.
    [line] = [w for w in res.warnings if w.startswith("snapshot: skipped")]
    assert line.startswith("snapshot: skipped 12 files and 2 folders: mypkg/.env (looks like a secret), ")
    for path, reason in MESSY_SKIPPED.items():
        assert f"{path} ({reason})" in line
    assert line.endswith("; move or rename any the model needs") and "\n" not in line


def test_the_module_file_the_model_needs_is_copied_whatever_its_name(tmp_path):
    pkg = tmp_path / "secrets"                   # a package named like a secrets folder
    (pkg / "credentials").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "credentials" / "__init__.py").write_text("")
    (pkg / "credentials" / "layers.py").write_text("class L: pass\n")
    (pkg / "credentials" / "secret.yaml").write_text("token: SENTINEL\n")
    (pkg / "credentials.py").write_text("A = 1\n")
    cap = tmp_path / "cap"
    res = copy_within(20, [{"module": "secrets.credentials.layers", "distribution": None, "root": str(pkg),
                            "file": str(pkg / "credentials" / "layers.py")}], cap / "snapshot", cap)
    assert sorted(f["path"] for f in res.files) == [
        "snapshot/secrets/__init__.py", "snapshot/secrets/credentials/__init__.py",
        "snapshot/secrets/credentials/layers.py"]
    # A folder holding the module is walked, but other secrets-looking names in it are not copied.
    assert {s["path"]: s["reason"] for s in res.skipped} == {
        "secrets/credentials.py": "looks like a secret",
        "secrets/credentials/secret.yaml": "looks like a secret"}


def test_a_private_key_split_between_chunks_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot, "_CHUNK", 7)
    pkg = tmp_path / "p"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "blob.bin").write_text("x" * 30 + PRIVATE_KEY)
    (pkg / "data" / "ok.bin").write_text("-----BEGIN PUBLIC KEY-----\n" * 3)
    cap = tmp_path / "cap"
    res = copy_within(20, [{"module": "p", "distribution": None, "root": str(pkg)}], cap / "snapshot", cap)
    assert sorted(f["path"] for f in res.files) == ["snapshot/p/__init__.py", "snapshot/p/data/ok.bin"]
    assert res.skipped == [{"path": "p/data/blob.bin", "origin": str(pkg / "data" / "blob.bin"),
                            "reason": "holds a private key"}]
    assert (cap / "snapshot/p/data/ok.bin").read_text() == "-----BEGIN PUBLIC KEY-----\n" * 3
    assert not (cap / "snapshot/p/data/blob.bin").exists()


def test_a_withdrawn_copy_leaves_no_empty_folder(tmp_path):
    pkg = tmp_path / "p"
    (pkg / "deploy").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "deploy" / "key.txt").write_text(PRIVATE_KEY)
    cap = tmp_path / "cap"
    res = copy_within(20, [{"module": "p", "distribution": None, "root": str(pkg)}], cap / "snapshot", cap)
    assert [f["path"] for f in res.files] == ["snapshot/p/__init__.py"]
    assert sorted(p.relative_to(cap).as_posix() for p in cap.rglob("*")) == \
        ["snapshot", "snapshot/p", "snapshot/p/__init__.py"]


def test_a_fifo_as_the_module_file_itself_is_skipped_not_opened(tmp_path):
    os.mkfifo(tmp_path / "train.py")
    cap = tmp_path / "cap"
    res = copy_within(20, [{"module": "__main__", "file": str(tmp_path / "train.py"),
                            "root": str(tmp_path / "train.py"), "distribution": None}], cap / "snapshot", cap)
    assert res.files == [] and not (cap / "snapshot").exists()
    assert res.skipped == [{"path": "train.py", "origin": str(tmp_path / "train.py"),
                            "reason": "FIFO, not a regular file"}]


def test_links_out_of_the_tree_and_linked_folders_are_listed_as_skipped(tmp_path):
    outside = tmp_path / "home"
    outside.mkdir()
    (outside / "token").write_text("SENTINEL")
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "token").symlink_to(outside / "token")
    (pkg / "more").symlink_to(outside, target_is_directory=True)
    (pkg / "gone.txt").symlink_to(pkg / "nothing-here")
    cap = tmp_path / "cap"
    res = copy_within(20, [{"module": "p", "distribution": None, "root": str(pkg)}], cap / "snapshot", cap)
    assert [f["path"] for f in res.files] == ["snapshot/p/__init__.py"]
    assert sorted(res.refused) == [str(pkg / "more"), str(pkg / "token")]
    assert {s["path"]: s["reason"] for s in res.skipped} == {
        "p/more/": "linked folder, not followed",
        "p/token": f"symbolic link out of {pkg}, not followed",
        "p/gone.txt": "broken symbolic link"}


def test_the_skipped_warning_is_one_printable_bounded_line():
    many = [{"path": f"pkg/data/secret_{i:04d}.pem", "origin": "x", "reason": "looks like a secret"}
            for i in range(500)]
    many.append({"path": "pkg/evil\nwarning: all good", "origin": "x", "reason": "hidden, not package data"})
    line = snapshot.skipped_warning(many)
    assert line.startswith("snapshot: skipped 501 files: pkg/data/secret_0000.pem (looks like a secret), ")
    assert "\n" not in line and len(line) < snapshot.WARNING_CHARS + 200
    shown = line.count("(looks like a secret)")
    assert 10 < shown < 500 and f", and {501 - shown} more; " in line
    assert snapshot.skipped_warning([]) is None
    odd = snapshot.skipped_warning([many[-1]])
    assert odd == ("snapshot: skipped 1 file: 'pkg/evil\\nwarning: all good' (hidden, not package data)"
                   "; move or rename any the model needs")


def test_a_file_swapped_for_a_fifo_after_the_stat_is_not_read(tmp_path):
    """The open itself never blocks and re-checks what it opened (a race with the lstat)."""
    regular = tmp_path / "vocab.txt"
    regular.write_text("a\n")
    os.mkfifo(tmp_path / "pipe")
    out = {}
    worker = threading.Thread(daemon=True, target=lambda: out.update(r=snapshot._copy_regular(
        str(tmp_path / "pipe"), os.stat(regular), tmp_path / "cap" / "pipe")))
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "opening the FIFO blocked"
    assert out["r"] == (None, "changed while the snapshot was taken")
    assert not (tmp_path / "cap").exists()
    assert snapshot._copy_regular(str(regular), os.stat(regular), tmp_path / "cap" / "v.txt") == \
        (sha256_file(regular), None)
