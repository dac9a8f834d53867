"""envrepro.modelfiles.format: the model format from the magic bytes."""
import pytest

from envrepro.errors import ModelNotFound
from envrepro.modelfiles import format as modelformat


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


@pytest.mark.parametrize("name, content, what", [
    ("m.h5", b"", "file is empty, not a Keras model"),
    ("m.hdf5", b"<html>", "named like an HDF5 model but is not an HDF5 file"),
    ("m.keras", b"{}", "named like a .keras model but is not a zip archive"),
    ("m.bin", b"\x00\x01", "not a Keras model file (neither HDF5 nor .keras zip)"),
])
def test_a_file_that_is_no_model_says_what_it_is_not(tmp_path, name, content, what):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ModelNotFound) as err:
        modelformat.detect_format(tmp_path / name)
    assert err.value.what == what and err.value.path == str(tmp_path / name)
    assert err.value.fix.startswith("pass what model.save() wrote")
