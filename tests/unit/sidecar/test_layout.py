"""envrepro.sidecar.layout: sidecar naming, and no heavy import (the save hook reads it)."""
import subprocess
import sys

import pytest

from envrepro.errors import ModelNotFound
from envrepro.sidecar import layout


def test_sidecar_names(tmp_path):
    assert layout.sidecar_for(tmp_path / "my_model").name == "my_model.envrepro"
    assert layout.sidecar_for(tmp_path / "m.h5").name == "m.h5.envrepro"
    assert layout.sidecar_for(tmp_path / "m.h5.envrepro").name == "m.h5.envrepro"
    assert layout.model_for(tmp_path / "m.h5.envrepro") == tmp_path / "m.h5"


def test_resolve_model_accepts_the_sidecar(tmp_path):
    (tmp_path / "m.h5").write_bytes(b"x")
    assert layout.resolve_model(tmp_path / "m.h5.envrepro") == tmp_path / "m.h5"
    with pytest.raises(ModelNotFound, match="no model"):
        layout.resolve_model(tmp_path / "gone.h5")


def test_mounts_are_inside_the_capture_mount():
    assert layout.WHEELS_MOUNT == layout.CAPTURE_MOUNT + "/" + layout.WHEELS_DIR


def test_import_is_light():
    code = "import sys, envrepro.sidecar.layout; assert 'yaml' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
