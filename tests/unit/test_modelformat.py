"""envrepro.sidecar.modelformat: the model format from the magic bytes."""
import pytest

from envrepro.errors import ModelNotFound
from envrepro.sidecar import modelformat


def test_detect_format(tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    assert modelformat.detect_format(tmp_path / "sm") == "savedmodel"
    (tmp_path / "a.h5").write_bytes(b"\x89HDF\r\n\x1a\nxx")
    assert modelformat.detect_format(tmp_path / "a.h5") == "h5"
    (tmp_path / "b.keras").write_bytes(b"PK\x03\x04xx")
    assert modelformat.detect_format(tmp_path / "b.keras") == "keras"
    (tmp_path / "lfs.h5").write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(ModelNotFound, match="git lfs pull"):
        modelformat.detect_format(tmp_path / "lfs.h5")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="not a SavedModel"):
        modelformat.detect_format(tmp_path / "empty")
    with pytest.raises(ModelNotFound, match="no model"):
        modelformat.detect_format(tmp_path / "missing")
