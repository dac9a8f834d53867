"""diagnose/catalogue.py: classification of real error texts (docs/failures.md), static detectors, compat table."""
import pytest

from envrepro.diagnose import catalogue
from envrepro.packages import tfversions as compat
from envrepro.diagnose.catalogue import Context, Env, classify_exception
from envrepro.diagnose.findings import ERROR, WARNING
from envrepro.modelfiles.info import LambdaInfo, TrainingConfigSummary
from envrepro.modelfiles.read import ModelFileInfo

# Error texts as users report them (docs/failures.md, Keras sources), one or more per class.
REAL_ERRORS = [
    ("ValueError", "File format not supported: filepath=/m. Keras 3 only supports V3 `.keras` files, "
                   "legacy H5 format files (`.h5` extension).", "1"),
    ("TypeError", "Could not locate class 'MyLayer'. Make sure custom classes and functions are decorated "
                  "with `@keras.saving.register_keras_serializable()`.", "2"),
    ("ValueError", "Unknown layer: 'MyLayer'. Please ensure you are using a `keras.utils.custom_object_scope`", "2"),
    ("TypeError", "__init__() missing 1 required positional argument: 'units'", "2"),
    ("AttributeError", "'str' object has no attribute 'decode'", "3"),
    ("ValueError", "Unknown optimizer: Custom>Adam. Please ensure this object is passed", "4a"),
    ("ValueError", "weight_decay is not a valid argument, kwargs should be empty for "
                   "`optimizer_experimental.Optimizer`.", "4a"),
    ("ValueError", "You are trying to restore a checkpoint from a legacy Keras optimizer into a v2.11+ "
                   "Optimizer, which can cause errors.", "4b"),
    ("ValueError", "Argument(s) not recognized: {'lr': 0.001}", "4c"),
    ("ValueError", "Could not deserialize 'keras.metrics.mse' because it is not a KerasSaveable subclass", "4c"),
    ("TypeError", "Could not locate function 'mse'. Make sure custom classes are decorated", "4c"),
    ("ValueError", "Unknown decay: 'WarmUp'. Please ensure this object is passed", "4c"),
    ("ValueError", "bad marshal data (unknown type code)", "5"),
    ("SystemError", "unknown opcode", "5"),
    ("ValueError", "Requested the deserialization of a `Lambda` layer whose `function` is a Python lambda.", "5"),
    ("ImportError", "A module that was compiled using NumPy 1.x cannot be run in NumPy 2.0.0", "6a"),
    ("AttributeError", "module 'numpy' has no attribute 'object'.", "6a"),
    ("TypeError", "Descriptors cannot be created directly.", "6b"),
    ("NotFoundError", "Op type not registered 'Addons>Mish' in binary running on host.", "6c"),
    ("ValueError", "Unknown layer: 'Addons>InstanceNormalization'. Please ensure", "6c"),
    ("NotFoundError", "Op type not registered 'DisableCopyOnRead' in binary running on host.", "7a"),
    ("InvalidArgumentError", "No OpKernel was registered to support Op 'CudnnRNN' used by ...", "7b"),
    ("UnknownError", "Failed to get convolution algorithm. DNN library initialization failed.", "7c"),
    ("ValueError", "Unrecognized keyword arguments: ['batch_shape']", "8a"),
    ("TypeError", "Could not deserialize class 'Functional' because its parent module "
                  "keras.src.models.functional cannot be imported.", "8a"),
    ("TypeError", "Could not deserialize class 'Functional' because its parent module "
                  "keras.src.engine.functional cannot be imported.", "8b"),
    ("ValueError", "Unknown layer: Functional", "8c"),
    ("AttributeError", "'list' object has no attribute 'items'", "8d"),
    ("OSError", "No model config found in the file at /m.h5.", "8e"),
    ("OSError", "SavedModel file does not exist at: /m.keras/{saved_model.pbtxt|saved_model.pb}", "8e"),
    ("ModuleNotFoundError", "No module named 'acme_layers'", "import"),
]


@pytest.mark.parametrize("type_name,message,expected", REAL_ERRORS)
def test_classify_exception(type_name, message, expected):
    assert classify_exception(type_name, message) == expected


def test_unknown_error_is_not_classified():
    assert classify_exception("RuntimeError", "something else entirely") is None


def test_every_class_is_complete():
    ids = [c.id for c in catalogue.CLASSES]
    assert ids == ["1", "2", "3", "4a", "4b", "4c", "5", "6a", "6b", "6c", "7a", "7b", "7c",
                   "8a", "8b", "8c", "8d", "8e"]
    for c in catalogue.CLASSES:
        assert c.title and c.message and c.fix and c.versions and c.sources and c.needles, c.id
    assert {r["id"] for r in catalogue.table_rows()} >= set(ids) | {"drift", "import"}


# -- detectors -----------------------------------------------------------------------------

TF24 = Env(python="3.8.18", tensorflow="2.4.1", keras="2.4.0", keras_flavor="tf.keras",
           packages={"tensorflow-cpu": "2.4.1", "numpy": "1.19.5", "h5py": "2.10.0", "protobuf": "3.20.3"})
TF221 = Env(python="3.11.7", tensorflow="2.21.0", keras="3.15.1", keras_flavor="keras3",
            packages={"tensorflow-cpu": "2.21.0", "keras": "3.15.1", "numpy": "2.4.6", "h5py": "3.14.0",
                      "protobuf": "7.36.2"})


def hits(info, saved=TF24, target=TF221, **kw):
    return {(cls.id, h.severity) for cls, h in catalogue.detect(Context(info=info, saved=saved, target=target, **kw))}


def test_class1_savedmodel_under_keras3_but_not_with_tf_keras():
    info = ModelFileInfo(path="/m", format="savedmodel", keras_version="2.4.0")
    assert ("1", ERROR) in hits(info)
    legacy = Env(**{**TF221.__dict__, "keras_flavor": "tf_keras"})
    assert "1" not in {i for i, _ in hits(info, target=legacy)}
    tf215_k3 = Env(python="3.11", tensorflow="2.15.1", keras_flavor="tf.keras", packages={"keras": "3.0.5"})
    assert ("1", ERROR) in hits(info, target=tf215_k3)


def test_class2_missing_provider_and_unregistered_classes():
    info = ModelFileInfo(path="/m.h5", format="h5", custom_classes=["AcmeDense"])
    got = catalogue.detect(Context(info=info, saved=TF24, target=TF24,
                                   custom_objects={"AcmeDense": "acme_layers:AcmeDense"},
                                   missing_modules={"acme_layers": "acme-layers"}))
    (cls, hit), = [(c, h) for c, h in got if c.id == "2"]
    assert hit.severity == ERROR and "acme-layers" in hit.detail and "Unknown layer: AcmeDense" in hit.message
    assert ("2", WARNING) in hits(info, target=TF24)      # no capture: custom classes, no mapping


def test_class3_h5py3_on_old_tf():
    info = ModelFileInfo(path="/m.h5", format="h5")
    target = Env(python="3.8", tensorflow="2.4.1", keras_flavor="tf.keras", packages={"h5py": "3.1.0"})
    assert ("3", ERROR) in hits(info, target=target)
    assert "3" not in {i for i, _ in hits(info, target=TF24)}


def test_class4_optimizers():
    new_opt = ModelFileInfo(path="/m.h5", format="h5", optimizer_weights=True,
                            training_config=TrainingConfigSummary(optimizer="Custom>Adam", is_legacy_optimizer=False))
    assert ("4a", ERROR) in hits(new_opt, saved=TF221, target=TF24, compile=True)
    old = ModelFileInfo(path="/m.h5", format="h5", keras_version="2.4.0", optimizer_weights=True,
                        training_config=TrainingConfigSummary(optimizer="Adam", legacy_keys=["lr"], losses=["mse"]))
    tf212 = Env(python="3.10", tensorflow="2.12.0", keras_flavor="tf.keras")
    assert ("4b", WARNING) in hits(old, target=tf212, compile=True)
    assert ("4c", ERROR) in hits(old, compile=True)
    assert "4c" not in {i for i, _ in hits(old, compile=False)}


def test_class5_lambda():
    info = ModelFileInfo(path="/m.h5", format="h5", lambdas=[LambdaInfo("lam", "lambda", "4wE=")])
    got = hits(info)
    assert ("5", ERROR) in got                                 # 3.8 bytecode, Python 3.11 and Keras 3
    same_py = Env(**{**TF24.__dict__})
    assert "5" not in {i for i, _ in hits(info, target=same_py)}
    unknown = Env(tensorflow="2.4.1")
    assert ("5", WARNING) in hits(info, saved=unknown, target=same_py)


def test_class6_environment():
    info = ModelFileInfo(path="/m.h5", format="h5")
    np2 = Env(python="3.11", tensorflow="2.15.1", keras_flavor="tf.keras", packages={"numpy": "2.0.2"})
    assert ("6a", ERROR) in hits(info, target=np2)
    pb4 = Env(python="3.8", tensorflow="2.4.1", keras_flavor="tf.keras", packages={"protobuf": "4.25.3"})
    assert ("6b", ERROR) in hits(info, target=pb4)
    tfa = ModelFileInfo(path="/sm", format="savedmodel", ops=["Addons>Mish"], custom_ops=["Addons>Mish"])
    assert ("6c", ERROR) in hits(tfa, target=TF24)


def test_class7_and_8():
    newer = ModelFileInfo(path="/sm", format="savedmodel", tensorflow_version="2.10.0")
    saved = Env(tensorflow="2.10.0")
    assert ("7a", WARNING) in hits(newer, saved=saved, target=TF24)
    cudnn = ModelFileInfo(path="/sm", format="savedmodel", ops=["CudnnRNN"])
    assert ("7b", ERROR) in hits(cudnn, target=TF24)
    k3 = ModelFileInfo(path="/m.keras", format="keras", keras_version="3.15.1",
                       config_modules=["keras.src.models.functional"])
    tf215 = Env(python="3.11", tensorflow="2.15.1", keras="2.15.0", keras_flavor="tf.keras")
    assert ("8a", ERROR) in hits(k3, saved=TF221, target=tf215)
    k213 = ModelFileInfo(path="/m.keras", format="keras", keras_version="2.13.1")
    assert ("8b", WARNING) in hits(k213)
    functional = ModelFileInfo(path="/m.h5", format="h5", model_class="Functional")
    assert ("8c", ERROR) in hits(functional, target=Env(tensorflow="2.2.0", keras_flavor="tf.keras"))
    weights = ModelFileInfo(path="/w.h5", format="h5", weights_only=True,
                            problems=["No model config found in the file at /w.h5."])
    assert ("8e", ERROR) in hits(weights)
    keras_on_old = ModelFileInfo(path="/m.keras", format="keras", keras_version="2.12.0")
    assert ("8e", ERROR) in hits(keras_on_old, target=Env(tensorflow="2.11.0", keras_flavor="tf.keras"))


def test_compatible_case_has_no_hits():
    info = ModelFileInfo(path="/m.keras", format="keras", keras_version="3.15.1")
    assert hits(info, saved=TF221, target=TF221) == set()


def test_broken_detector_does_not_hide_the_others(monkeypatch):
    broken = catalogue.CLASSES[0].__class__(**{**catalogue.CLASSES[0].__dict__, "detect": lambda ctx: 1 / 0})
    monkeypatch.setattr(catalogue, "CLASSES", (broken,) + catalogue.CLASSES[1:])
    info = ModelFileInfo(path="/w.h5", format="h5", weights_only=True, problems=["x"])
    assert ("8e", ERROR) in hits(info)


# -- compat.yaml ---------------------------------------------------------------------------

def test_compat_table_covers_2_0_to_2_21_consistently():
    minors = compat.known_minors()
    assert minors == [f"2.{i}" for i in range(0, 22)]
    for minor in minors:
        row = compat.for_tf(minor + ".0")
        for key in ("latest", "python", "python_likely", "cpu_distribution", "keras", "keras_flavor",
                    "cuda", "cudnn", "requires", "pins"):
            assert row.get(key) not in (None, "", []), (minor, key)
        assert compat.minor_of(row["latest"]) == minor
        assert row["python_likely"] in row["python"], minor
        reqs = compat.requirements(minor)
        for name, version in compat.pins(minor).items():
            if name in reqs:   # every known-good pin satisfies what the row requires
                assert compat.satisfies(version, reqs[name]) is True, (minor, name, version, reqs[name])
        assert (row["keras_flavor"] == "keras3") == (compat.vtuple(minor) >= (2, 16))


def test_compat_lookups():
    assert compat.for_tf("2.4.1")["python"] == ["3.6", "3.7", "3.8"]
    assert compat.likely_python("v2.4.0-49-g85c8b2a817f") == "3.8"
    assert compat.for_tf("1.15.0") == {} and compat.for_tf(None) == {}
    assert compat.pins("2.4")["numpy"].startswith("1.19.") and compat.pins("2.4")["h5py"] == "2.10.0"
    assert compat.gpu_build("2.4.1") == {"cuda": "11.0", "cudnn": "8.0"}
    assert compat.supports_python("2.21.0", "3.9.1") is False and compat.supports_python("2.20", "3.13")
    assert compat.tf_for_keras("2.2.4-tf") == "2.1" and compat.tf_for_keras("2.4.0") == "2.4"
    assert compat.tf_for_keras("2.13.1") == "2.13" and compat.tf_for_keras("2.16.0") == "2.16"
    assert compat.tf_for_keras("3.5.0") == "2.17" and compat.tf_for_keras("3.15.1") == "2.21"
    assert compat.tf_for_keras("1.2.2") is None
    assert compat.vtuple("2.15.0.post1") == (2, 15, 0, 0) or compat.vtuple("2.15.0.post1")[:3] == (2, 15, 0)
