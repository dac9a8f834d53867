"""envrepro.fsutil.file_lock: exclusive, and gone from the folder once released."""
import threading
import time

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
