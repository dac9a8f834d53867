"""runtime/modelformat.py: what a saved model is, from its layout and magic bytes."""
from envrepro.runtime import modelformat


def test_detect_format(tmp_path):
    h5 = tmp_path / "weird.model"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 16)
    zf = tmp_path / "m.bin"
    zf.write_bytes(b"PK\x03\x04rest")
    sm = tmp_path / "sm"
    sm.mkdir()
    (sm / "saved_model.pb").write_text("x")
    lfs = tmp_path / "m.h5"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\n")
    assert modelformat.detect_format(str(h5)) == "h5"
    assert modelformat.detect_format(str(zf)) == "keras"
    assert modelformat.detect_format(str(sm)) == "savedmodel"
    assert modelformat.detect_format(str(tmp_path)) is None
    assert modelformat.detect_format(str(lfs)) is None  # a pointer, not a model
    assert modelformat.detect_format(str(tmp_path / "future.keras")) == "keras"
