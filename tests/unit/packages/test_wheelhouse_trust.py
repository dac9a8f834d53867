"""A carried wheelhouse (``bundle --wheels``) is untrusted: its target can't name paths, records
never leave the store, and a file for a pin without a hash must be that pin's version."""
import json
from pathlib import Path

import pytest

from envrepro.errors import InvalidCapture
from envrepro.packages.wheelhouse import portable
from envrepro.packages.wheelhouse.fetch import dist_version, same_version
from envrepro.packages.wheelhouse.store import StoreError, WheelStore
from envrepro.packages.wheelhouse.target import Target
from envrepro.sidecar.manifest import Capture

GOOD = {"python": "3.8.18", "machine": "x86_64", "implementation": "CPython", "abiflags": "", "glibc": [2, 36]}


@pytest.mark.parametrize("field, value", [
    ("machine", "../../../tmp/x"), ("machine", "x86_64/../../evil"), ("python", "3.8/../.."),
    ("python", "../3.8"), ("abiflags", "/x"), ("implementation", "CPython/../x"), ("glibc", [2, -1]),
    ("glibc", ["2", "36/.."]),
])
def test_a_target_with_a_path_in_a_field_is_not_a_target(field, value):
    with pytest.raises(ValueError):
        Target.from_doc(dict(GOOD, **{field: value}))


def test_real_targets_still_read():
    t = Target.from_doc(GOOD)
    assert t.ident() == "cp38-manylinux_2_36_x86_64"
    assert Target.from_doc(dict(GOOD, python="3.13.0", machine="aarch64", abiflags="t")).abi == "cp313t"
    assert Target(python="3.12.0rc1").xy == "3.12"


def test_records_never_leave_the_store(tmp_path):
    store = WheelStore(tmp_path / "store")
    for parts in (("built", "..", "x.json"), ("built", "a/b", "x.json"), ("..", "x.json"), (".hidden", "x.json"), ()):
        with pytest.raises(StoreError):
            store.write_record({"sha256": "0" * 64}, *parts)
        assert store.read_record(*parts) is None
    store.write_record({"ok": 1}, "targets", "sha256:" + "a" * 64 + ".json")   # image ids keep working
    assert store.read_record("targets", "sha256:" + "a" * 64 + ".json") == {"ok": 1}
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "store" / "x.json").exists()


def _capture(tmp_path, lock):
    root = tmp_path / "m.envrepro"
    root.mkdir()
    (root / "requirements.lock").write_text(lock)
    return Capture(root=root, data={"python": {"version": "3.8.18"}})


def _carried(tmp_path, files, target=GOOD):
    import hashlib

    folder = tmp_path / "carried"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / portable.INDEX).write_text(json.dumps({
        "format": 1, "target": target, "built": [],
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}))
    return folder


def test_a_carried_target_naming_a_path_is_refused_before_any_file_is_taken(tmp_path):
    cap = _capture(tmp_path, "six==1.16.0\n")
    carried = _carried(tmp_path, {"six-1.16.0-py2.py3-none-any.whl": b"six"},
                       dict(GOOD, machine="../../../../tmp/evil"))
    store = WheelStore(tmp_path / "store")
    with pytest.raises(InvalidCapture, match="without a readable target"):
        portable.import_dir(carried, cap, lambda line: None, store)
    assert not any(Path(tmp_path / "store").rglob("*.whl"))


def test_a_file_for_a_pin_without_hash_must_be_that_pins_version(tmp_path):
    cap = _capture(tmp_path, "six==1.16.0\n")
    carried = _carried(tmp_path, {"six-1.15.0-py2.py3-none-any.whl": b"older six"})
    with pytest.raises(InvalidCapture, match="does not pin"):
        portable.import_dir(carried, cap, lambda line: None, WheelStore(tmp_path / "store"))
    other = tmp_path / "other"
    other.mkdir()
    carried_ok = _carried(other, {"six-1.16.0-py2.py3-none-any.whl": b"six"})
    assert portable.import_dir(carried_ok, cap, lambda line: None, WheelStore(tmp_path / "store2")) == 1


def test_versions_of_file_names():
    assert dist_version("six-1.16.0-py2.py3-none-any.whl") == "1.16.0"
    assert dist_version("termcolor-1.1.0.tar.gz") == "1.1.0"
    assert dist_version("weird.whl") == ""
    assert same_version("1.0", "1.0.0") and not same_version("1.15.0", "1.16.0") and not same_version("", "1.0")


def test_a_direct_reference_pinned_only_by_its_url_fragment_travels_in_a_wheels_bundle(tmp_path):
    """``name @ https://...#sha256=H``: the carried wheel is declared the build of H (the hash in
    the URL), and the other machine takes it for that capture as the build of that pin."""
    import hashlib

    from envrepro.packages import directrefs
    from envrepro.packages.wheelhouse import sdists
    from envrepro.packages.wheelhouse.prepare import Wheelhouse
    from envrepro.packages.installplan import install_plan
    from envrepro.sidecar.lockfile import Lock

    sdist_sha = hashlib.sha256(b"pkg sdist").hexdigest()
    lock = Lock.parse(f"pkg @ https://files.example/pkg-1.0.tar.gz#sha256={sdist_sha}\n")
    here = WheelStore(tmp_path / "here")
    built = tmp_path / "pkg-1.0-py3-none-any.whl"
    built.write_bytes(b"pkg wheel")
    stored = here.add(built)
    target = Target.from_doc(GOOD)
    wh = Wheelhouse(target, {"pkg": stored}, install_plan(lock, {"pkg": stored.parent.name}), ["pkg"])
    carried = tmp_path / "carried"
    portable.export(wh, lock, carried)
    doc = json.loads((carried / portable.INDEX).read_text())
    assert doc["built"][0]["sdist_sha256"] == [sdist_sha]
    root = tmp_path / "m.envrepro"
    root.mkdir()
    (root / "requirements.lock").write_text(lock.text)
    cap = Capture(root=root, data={"python": {"version": "3.8.18"}})
    there = WheelStore(tmp_path / "there")
    assert portable.import_dir(carried, cap, lambda line: None, there) == 1
    entry = next(iter(directrefs.pinned_lock(lock).every))
    assert sdists.built_wheel(there, target, entry, portable.scope_of(cap)).read_bytes() == b"pkg wheel"
