"""modelfiles/read.py: the format dispatcher (magic bytes, LFS pointers) and the human summary.

The per-format readers have their own tests (test_savedmodel.py, test_h5file.py,
test_kerasarchive.py, test_kerasconfig.py, test_protowire.py).
"""
import json

from envrepro.modelfiles import read as modelfiles
from envrepro.modelfiles.read import read_model_file

from modelfile_builders import KERAS2_ROOT, saved_model_pb


def test_file_magic(tmp_path):
    lfs = tmp_path / "m.h5"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n")
    assert "git lfs pull" in read_model_file(lfs).problems[0]
    junk = tmp_path / "m.bin"
    junk.write_bytes(b"\x00" * 100)
    assert "not a Keras model file" in read_model_file(junk).problems[0]
    assert read_model_file(tmp_path / "missing").problems == ["no model at this path"]


def test_describe_and_to_dict(tmp_path):
    sm = tmp_path / "sm"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(saved_model_pb(keras_root=KERAS2_ROOT))
    info = read_model_file(sm)
    text = modelfiles.describe(info)
    assert "tensorflow   2.4.1" in text and "MyCustomLayer" in text and "Keras-2 keys decay, lr" in text
    json.dumps(info.to_dict())
