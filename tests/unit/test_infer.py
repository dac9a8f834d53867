"""capturing/infer.py: planning an inferred capture from the model file alone (no network)."""
import pytest

from envrepro.capturing import infer
from envrepro.diagnose.kerasconfig import LambdaInfo
from envrepro.diagnose.modelfiles import ModelFileInfo


def test_infer_plan_savedmodel():
    p = infer.plan(ModelFileInfo(path="/sm", format="savedmodel", tensorflow_version="2.4.1", keras_version="2.4.0"))
    assert p.tensorflow == "2.4.1" and p.python == "3.8" and p.keras_flavor == "tf.keras"
    assert p.requirements == ["tensorflow-cpu==2.4.1"]
    assert "numpy==1.19.5" in p.constraints and "h5py==2.10.0" in p.constraints


def test_infer_plan_h5_and_keras3_and_tf_keras():
    p = infer.plan(ModelFileInfo(path="/m.h5", format="h5", keras_version="2.4.0"))
    assert p.tensorflow == "2.4.4" and any("keras_version 2.4.0" in r for r in p.reasons)
    p = infer.plan(ModelFileInfo(path="/m.keras", format="keras", keras_version="3.5.0"))
    assert p.requirements == ["tensorflow-cpu==2.17.1", "keras==3.5.0"] and p.keras_flavor == "keras3"
    p = infer.plan(ModelFileInfo(path="/m.h5", format="h5", keras_version="2.16.0"))
    assert "tf-keras==2.16.0" in p.requirements and p.env == {"TF_USE_LEGACY_KERAS": "1"}
    p = infer.plan(ModelFileInfo(path="/sm", format="savedmodel", tensorflow_version="2.4.1",
                                 custom_ops=["Addons>Mish"]))
    assert "tensorflow-addons==0.12.1" in p.requirements
    p = infer.plan(ModelFileInfo(path="/sm", tensorflow_version="2.4.1"), python="3.7.16")
    assert p.python == "3.7"
    with pytest.raises(Exception):
        infer.plan(ModelFileInfo(path="/m.h5", format="h5"))


def test_infer_picks_the_python_whose_marshal_format_fits(monkeypatch):
    """Lambda bytecode narrows the Python guess: the likeliest first, then the others."""
    info = ModelFileInfo(path="/m.h5", format="h5", keras_version="2.4.0", lambdas=[LambdaInfo("l", "lambda", "AAAA")])
    p = infer.plan(info)
    monkeypatch.setattr(infer, "find_interpreter", lambda xy: (f"/py{xy}", xy + ".0"))
    import envrepro.diagnose.lambdas as d

    monkeypatch.setattr(d, "check_lambdas", lambda i, exe: ["ok"] if exe == "/py3.7" else ["ValueError: bad marshal data"])
    q, note = infer._python_for_lambdas(info, p, None)
    assert p.python == "3.8" and q.python == "3.7" and "3.7" in note and "unmarshals" in q.reasons[-1]
    monkeypatch.setattr(d, "check_lambdas", lambda i, exe: ["ValueError: bad marshal data"])
    q, note = infer._python_for_lambdas(info, p, None)
    assert q.python == "3.8" and "kept Python 3.8" in note
