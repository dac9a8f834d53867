"""runtime/reference.py: user samples for the reference prediction."""
import pytest

from envrepro.runtime import reference


def test_load_sample(tmp_path):
    np = pytest.importorskip("numpy")
    np.save(tmp_path / "one.npy", np.ones((2, 3)))
    np.savez(tmp_path / "list.npz", np.ones(2), np.zeros(3))
    np.savez(tmp_path / "dict.npz", a=np.ones(2), b=np.zeros(3))
    assert reference.load_sample(str(tmp_path / "one.npy")).shape == (2, 3)
    lst = reference.load_sample(str(tmp_path / "list.npz"))
    assert isinstance(lst, list) and [a.shape for a in lst] == [(2,), (3,)]
    dct = reference.load_sample(str(tmp_path / "dict.npz"))
    assert sorted(dct) == ["a", "b"]
