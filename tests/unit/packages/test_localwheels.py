"""envrepro.packages.localwheels: local and editable installs, and their wheels (offline)."""
import sys

import pytest

from envrepro.packages import localwheels
from envrepro.errors import CaptureError

try:
    from .fake_dists import dist, project
except ImportError:
    from fake_dists import dist, project


def test_legacy_develop_install_is_editable(tmp_path):
    src = project(tmp_path / "proj")
    egg = src / "envrepro_testpkg.egg-info"
    egg.mkdir()
    raw = dist("envrepro-testpkg", "0.1.0", location=str(src), metadata_dir=str(egg))
    assert localwheels.classify(raw) == ("editable", str(src))
    assert localwheels.classify(dist("six", "1")) == (None, None)


def test_wheel_build_failure_names_the_distribution(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    src = project(tmp_path / "bad", broken=True)
    raw = dist("badpkg", "0.1", direct_url={"url": src.as_uri(), "dir_info": {}})
    with pytest.raises(CaptureError) as err:
        localwheels.build_local_wheels([raw], tmp_path / "wheels", sys.executable)
    assert "badpkg 0.1" in str(err.value) and str(src) in str(err.value)
    gone = dist("gonepkg", "0.1", direct_url={"url": (tmp_path / "nope").as_uri(),
                                              "dir_info": {"editable": True}})
    with pytest.raises(CaptureError, match="gonepkg 0.1 was installed from"):
        localwheels.build_local_wheels([gone], tmp_path / "wheels", sys.executable)
    assert list((tmp_path / "wheels").iterdir()) == []
