"""envrepro.fsutil: the capture lock (exclusive, gone once released) and the folder swap."""
import os
import threading
import time

import pytest

from envrepro import fsutil
from envrepro.fsutil import file_lock


def test_lock_is_exclusive_and_leaves_no_file(tmp_path):
    lock = tmp_path / ".m.h5.envrepro.lock"
    inside, order = threading.Event(), []

    def second():
        inside.wait()
        with file_lock(lock):
            order.append("second in")

    t = threading.Thread(target=second)
    t.start()
    with file_lock(lock):
        inside.set()
        time.sleep(0.3)             # the second holder waits on the file we hold
        order.append("first out")
    t.join(10)
    assert order == ["first out", "second in"]
    assert list(tmp_path.iterdir()) == []


def test_many_holders_never_overlap(tmp_path):
    """Holders removing the file on release while others wait on it: still one at a time."""
    lock, active, overlaps = tmp_path / "x.lock", [0], []

    def hold():
        for _ in range(20):
            with file_lock(lock):
                active[0] += 1
                if active[0] != 1:
                    overlaps.append(active[0])
                time.sleep(0.001)
                active[0] -= 1

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert overlaps == [] and not lock.exists()


def test_a_lock_held_elsewhere_is_not_waited_for_without_blocking(tmp_path):
    lock = tmp_path / "x.lock"
    with file_lock(lock) as held:
        assert held
        with file_lock(lock, blocking=False) as second:
            assert second is False
    with file_lock(lock, blocking=False) as held:
        assert held
    assert not lock.exists()


def _folder(path, text):
    path.mkdir()
    (path / "f").write_text(text)
    return path


@pytest.mark.parametrize("no_exchange", [False, True])
def test_replace_dir_puts_the_new_folder_in_and_removes_the_old(tmp_path, monkeypatch, no_exchange):
    if no_exchange:
        monkeypatch.setenv("ENVREPRO_TEST_NO_EXCHANGE", "1")
    new, final = _folder(tmp_path / ".x.tmp-1", "new"), _folder(tmp_path / "x", "old")
    fsutil.replace_dir(new, final)
    assert (final / "f").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["x"]


def test_exchange_swaps_two_folders_in_one_step(tmp_path, monkeypatch):
    a, b = _folder(tmp_path / "a", "A"), _folder(tmp_path / "b", "B")
    if not fsutil.exchange(a, b):
        pytest.skip("this system or filesystem can't swap folders in one step (renameat2)")
    assert (a / "f").read_text() == "B" and (b / "f").read_text() == "A"
    monkeypatch.setenv("ENVREPRO_TEST_NO_EXCHANGE", "1")
    assert fsutil.exchange(a, b) is False and (a / "f").read_text() == "B"


@pytest.mark.parametrize("no_exchange", [False, True])
def test_rename_noreplace_never_replaces(tmp_path, monkeypatch, no_exchange):
    if no_exchange:
        monkeypatch.setenv("ENVREPRO_TEST_NO_EXCHANGE", "1")
    src, empty = _folder(tmp_path / "src", "s"), tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    for dst in (empty, tmp_path / "link"):
        with pytest.raises(FileExistsError):
            fsutil.rename_noreplace(src, dst)
    fsutil.rename_noreplace(src, tmp_path / "dst")
    assert (tmp_path / "dst" / "f").read_text() == "s" and not src.exists()


def test_the_fallback_puts_the_old_folder_back_when_the_second_rename_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("ENVREPRO_TEST_NO_EXCHANGE", "1")
    new, final = _folder(tmp_path / ".x.tmp-1", "new"), _folder(tmp_path / "x", "old")
    real_rename, calls = os.rename, []

    def rename(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(fsutil.os, "rename", rename)
    with pytest.raises(OSError):
        fsutil.replace_dir(new, final)
    assert (final / "f").read_text() == "old" and sorted(os.listdir(tmp_path)) == [".x.tmp-1", "x"]


def test_a_linked_capture_is_replaced_not_followed(tmp_path):
    target = _folder(tmp_path / "elsewhere", "kept")
    (tmp_path / "x").symlink_to(target)
    fsutil.replace_dir(_folder(tmp_path / ".x.tmp-1", "new"), tmp_path / "x")
    assert (target / "f").read_text() == "kept"
    assert not (tmp_path / "x").is_symlink() and (tmp_path / "x" / "f").read_text() == "new"


def test_leftovers_are_the_temp_and_aside_folders_never_links_or_the_lock(tmp_path):
    for name in (".x.tmp-1", ".x.old-2-ab", ".y.tmp-1", "x"):
        (tmp_path / name).mkdir()
    (tmp_path / ".x.lock").write_text("")
    (tmp_path / ".x.old-link").symlink_to(tmp_path / "x")
    assert [p.name for p in fsutil.leftovers(tmp_path, "x")] == [".x.old-2-ab", ".x.tmp-1"]
