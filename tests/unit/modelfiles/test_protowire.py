"""modelfiles/protowire.py: the minimal protobuf wire-format decoder."""
import pytest

from envrepro.modelfiles.protowire import fields, iter_fields

from modelfile_builders import fld, varint


def test_decoder_roundtrip_and_errors():
    data = fld(1, 150) + fld(2, "abc") + fld(2, "de") + varint((3 << 3) | 5) + b"\x01\x00\x00\x00"
    got = list(iter_fields(data))
    assert got[0] == (1, 0, 150)
    assert [bytes(v) for n, w, v in got if n == 2] == [b"abc", b"de"]
    assert got[-1] == (3, 5, 1)
    assert {k: len(v) for k, v in fields(data).items()} == {1: 1, 2: 2, 3: 1}
    with pytest.raises(ValueError):
        list(iter_fields(fld(2, "abc")[:-1]))          # runs past the end
    with pytest.raises(ValueError):
        list(iter_fields(b"\x80"))                      # truncated varint
    with pytest.raises(ValueError):
        list(iter_fields(varint((1 << 3) | 3)))         # groups are not supported
