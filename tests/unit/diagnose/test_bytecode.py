"""diagnose/bytecode.py: which Python wrote a Lambda layer's marshalled code, on real payloads
written by CPython 3.6 .. 3.13 (tests/fixtures/lambda-bytecode, made by its make.py)."""
import base64
import json
from pathlib import Path

import pytest

from envrepro.diagnose import bytecode

SAMPLES = {p.stem.split("-")[1]: json.loads(p.read_text())
           for p in (Path(__file__).resolve().parents[2] / "fixtures" / "lambda-bytecode").glob("python-*.json")}

# What each payload fits: exact for most, two adjacent minors when the bytecode is the same.
EXPECTED = {
    "3.6": {"arith": ["3.6", "3.7"], "call": ["3.6", "3.7"], "is": ["3.6", "3.7"]},
    "3.7": {"arith": ["3.6", "3.7"], "call": ["3.7"], "is": ["3.6", "3.7"]},
    "3.8": {"arith": ["3.8", "3.9"], "call": ["3.8", "3.9"], "is": ["3.8", "3.9"]},
    "3.9": {"arith": ["3.8", "3.9"], "call": ["3.8", "3.9"], "is": ["3.9"]},
    "3.10": {"arith": ["3.10"], "call": ["3.10"], "is": ["3.10"]},
    "3.11": {"arith": ["3.11", "3.12"], "call": ["3.11"], "is": ["3.11", "3.12"]},
    "3.12": {"arith": ["3.11", "3.12"], "call": ["3.12"], "is": ["3.11", "3.12"]},
    "3.13": {"arith": ["3.13"], "call": ["3.13"], "is": ["3.13"]},
}


def test_every_minor_has_samples():
    assert sorted(SAMPLES, key=lambda m: int(m.split(".")[1])) == list(bytecode.MINORS)


@pytest.mark.parametrize("minor", bytecode.MINORS)
def test_the_writing_python_is_always_among_the_answers(minor):
    for name, payload in SAMPLES[minor].items():
        fits = bytecode.pythons_for(payload)
        assert minor in fits and len(fits) <= 2, (name, fits)
        if name in EXPECTED[minor]:
            assert fits == EXPECTED[minor][name], name


def test_several_lambdas_narrow_the_answer():
    assert bytecode.common_pythons([SAMPLES["3.9"]["arith"], SAMPLES["3.9"]["is"]]) == ["3.9"]
    assert bytecode.common_pythons([SAMPLES["3.9"]["arith"], SAMPLES["3.10"]["arith"]]) == []


def test_anything_else_fits_no_python():
    good = base64.b64decode(SAMPLES["3.8"]["call"])
    for junk in ("not base64 ***", base64.b64encode(b"\x00\x01garbage").decode(),
                 base64.b64encode(good[:-3]).decode(), base64.b64encode(good + b"N").decode(), ""):
        assert bytecode.pythons_for(junk) == [], junk
    # the same payload with one opcode no minor of its layout defines (7 is unused in 3.6 .. 3.10)
    minors, codes = bytecode.code_objects(good)
    assert minors == ("3.8", "3.9", "3.10") and len(codes) == 1
    start = good.index(codes[0].code)
    bad = good[:start] + bytes([7]) + good[start + 1:]
    assert bytecode.code_objects(bad) is not None and bytecode.pythons_for(base64.b64encode(bad).decode()) == []
