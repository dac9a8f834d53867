"""The failure catalogue as one table: why ``load_model`` fails across environments (docs/failures.md).

Both sides read it: the loader, inside old interpreters and containers, names the class of the
error it just caught (``classify``) so the host can print the fix; the host's doctor
(envrepro/diagnose/catalogue.py) adds a static detector to each class and classifies ``--try``
errors with the same ``classify``. That is why this module lives in the runtime: standard library
only, Python 3.6 syntax, no imports of envrepro host code.

Each class carries the exact text users see (so a user who searches their error finds the class),
the versions involved, the fix, the issues that document it and the ``needles``: substrings of the
error text that identify it.
"""
from collections import namedtuple

Failure = namedtuple("Failure", "id title message versions fix sources needles")
Failure.__doc__ = """One failure class. ``message`` may hold {path} / {name}, filled in by the doctor;
``sources`` are issue references (k# keras, tk# tf-keras, tf# tensorflow, tfa# addons)."""

# The classes of docs/failures.md, in its order; then what only a capture reveals (drift) and the
# import that fails before load_model is even called.
FAILURES = (
    Failure("1", "SavedModel folder under Keras 3",
            "ValueError: File format not supported: filepath={path}. Keras 3 only supports V3 "
            "`.keras` files, legacy H5 format files (`.h5` extension). Note that the legacy "
            "SavedModel format is not supported by `load_model()` in Keras 3. In order to reload a "
            "TensorFlow SavedModel as an inference-only layer in Keras 3, use "
            "`keras.layers.TFSMLayer({path}, call_endpoint='serving_default')` (note that your "
            "`call_endpoint` might have a different name).",
            "saved TF <= 2.15; loaded TF >= 2.16 (Keras 3), or TF 2.15 with Keras 3 installed",
            "pip install tf-keras~=<TF minor> and TF_USE_LEGACY_KERAS=1 before importing TF; else "
            "keras.layers.TFSMLayer (inference only); re-save as .keras",
            ("k#18709", "unicode-org/lstm_word_segmentation#28", "cbrnr/sleepecg#214"),
            ("File format not supported", "legacy SavedModel format is not supported")),
    Failure("2", "Unregistered custom object / bad get_config",
            "ValueError: Unknown layer: '{name}'. Please ensure you are using a "
            "`keras.utils.custom_object_scope` ...; Keras 3: TypeError: Could not locate class "
            "'{name}'. Make sure custom classes are decorated with "
            "`@keras.saving.register_keras_serializable()`.",
            "all; TF 2.13 broke some registrations",
            "import the module; @register_keras_serializable(package=...); custom_objects=; a "
            "complete get_config with **kwargs",
            ("tf#61085", "k#19899", "k#21046", "keras-team/keras-io#1884"),
            ("Could not locate class", "Unknown layer", "Unknown optimizer", "Unknown metric",
             "Unknown loss", "Unknown activation", "missing 1 required positional argument",
             "required positional arguments", "unexpected keyword argument 'trainable'")),
    Failure("3", "h5py 3 with TF <= 2.4",
            "AttributeError: 'str' object has no attribute 'decode'",
            "TF <= 2.4 (and multi-backend keras <= 2.3) with h5py >= 3.0", "pip install 'h5py<3'",
            ("tf#44467", "ContinuumIO/anaconda-issues#12427"),
            ("has no attribute 'decode'",)),
    Failure("4a", "New optimizer loaded by old TF",
            "ValueError: Unknown optimizer: Custom>Adam; weight_decay is not a valid argument, "
            "kwargs should be empty for `optimizer_experimental.Optimizer`",
            "saved TF >= 2.11, loaded TF <= 2.10",
            "load_model(path, compile=False) and compile again; custom_objects={'Custom>Adam': Adam}",
            ("chaquo/chaquopy#1075", "kyleskom/NBA-Machine-Learning-Sports-Betting#108"),
            ("Unknown optimizer: Custom>", "weight_decay is not a valid argument")),
    Failure("4b", "Legacy optimizer checkpoint into a v2.11+ optimizer",
            "You are trying to restore a checkpoint from a legacy Keras optimizer into a v2.11+ "
            "Optimizer, which can cause errors.",
            "saved TF <= 2.10, loaded TF >= 2.11", "use tf.keras.optimizers.legacy.*",
            ("zsylvester/segmenteverygrain#5",),
            ("restore a checkpoint from a legacy Keras optimizer",)),
    Failure("4c", "Keras-2 compile config in Keras 3",
            "ValueError: Could not deserialize 'keras.metrics.mse' because it is not a "
            "KerasSaveable subclass (older: Could not locate function 'mse'; "
            "Argument(s) not recognized: {'lr': ...}; Unknown decay: 'WarmUp')",
            "H5/SavedModel with training_config loaded by Keras >= 3",
            "load_model(path, compile=False), then compile",
            ("GantMan/nsfw_model#164", "k#19330", "k#18887"),
            ("Argument(s) not recognized", "Could not locate function", "is not a KerasSaveable subclass",
             "Unknown decay")),
    Failure("5", "Lambda bytecode across Python versions / safe_mode",
            "ValueError: bad marshal data (unknown type code); SystemError: unknown opcode; Keras 3: "
            "Requested the deserialization of a `Lambda` layer whose `function` is a Python lambda ... "
            "safe_mode=False",
            "any TF; saving and loading Python minors differ (the code object is marshalled)",
            "load under the saving Python minor; safe_mode=False for trusted files (`envrepro load "
            "--unsafe`); replace the Lambda with a registered layer; set output_shape",
            ("k#14875", "k#7440", "k#9595", "tk#567"),
            ("bad marshal data", "unknown opcode", "deserialization of a `Lambda` layer",
             "deserialization of a Lambda layer", "could not automatically infer the shape of the Lambda",
             "safe_mode")),
    Failure("6a", "NumPy ABI / removed aliases",
            "A module that was compiled using NumPy 1.x cannot be run in NumPy 2.x ...; "
            "_ARRAY_API not found; AttributeError: module 'numpy' has no attribute 'object'",
            "TF <= 2.17 with numpy 2; TF <= 2.11 with numpy >= 1.24",
            "pip install 'numpy<2' (or '<1.24'), or upgrade TF",
            ("tf#67291", "CameronBodine/PINGMapper#123", "tf#62832"),
            ("compiled using NumPy 1.x", "_ARRAY_API not found", "module 'numpy' has no attribute")),
    Failure("6b", "protobuf too new",
            "TypeError: Descriptors cannot be created directly. If this call came from a _pb2.py "
            "file, your generated code is out of date and must be regenerated with protoc >= "
            "3.19.0. ... Downgrade the protobuf package to 3.20.x or lower.",
            "protobuf >= 4.21 with TF <= 2.11",
            "pip install 'protobuf<=3.20.3', or PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python",
            ("tf#56266", "tf#59665"), ("Descriptors cannot be created directly",)),
    Failure("6c", "TensorFlow Addons",
            "NotFoundError: Op type not registered 'Addons>Mish' in binary running on ...; "
            "Unknown layer: 'Addons>InstanceNormalization'",
            "TFA end of life May 2024, no Keras 3",
            "import tensorflow_addons (TF <= 2.15 / tf-keras), or Keras equivalents and re-save",
            ("tfa#1554", "CompImg/LST-AI#11", "tfa#2807"),
            ("Addons>", "Op type not registered 'Addons>", "Unknown layer: 'Addons>",
             "Unknown layer: Addons>")),
    Failure("7a", "Missing or newer ops",
            "NotFoundError: Op type not registered 'DisableCopyOnRead' in binary running on ...",
            "saving TF newer than loading TF; plugin packages (TF-DF, TFRA)",
            "import the plugin package; load with TF >= the saving TF",
            ("tf#62229", "tensorflow/decision-forests#108", "tf#58980"),
            ("Op type not registered",)),
    Failure("7b", "GPU kernels on a CPU host",
            "No OpKernel was registered to support Op 'CudnnRNN' ... Registered devices: [CPU]",
            "TF1 CuDNNLSTM; Keras 3 LSTM/GRU exported on GPU (2.16/2.17)",
            "export on CPU (CUDA_VISIBLE_DEVICES=-1) or ship .keras/H5",
            ("k#18504", "tf#77442", "tf#26600"),
            ("No OpKernel was registered", "but available devices are")),
    Failure("7c", "cuDNN/CUDA mismatch",
            "Loaded runtime CuDNN library: A but source was compiled with: B. CuDNN library needs "
            "to have matching major version ... DNN library initialization failed",
            "GPU builds", "install the CUDA/cuDNN TF was built with (tensorflow[and-cuda] >= 2.14)",
            ("tf#60913", "googlecolab/colabtools#2626"),
            ("DNN library initialization failed", "Loaded runtime CuDNN library")),
    Failure("8a", "Keras 3 file in Keras 2",
            "ValueError: Unrecognized keyword arguments: ['batch_shape']; .keras: Could not "
            "deserialize class 'Functional' because its parent module "
            "keras.src.models.functional cannot be imported",
            "saved by Keras 3, loaded by TF <= 2.15 / tf-keras",
            "load with Keras 3, or rewrite the config (batch_shape -> batch_input_shape)",
            ("tf#66381", "tf#64685", "tf#70866"),
            ("['batch_shape']", "keras.src.models")),
    Failure("8b", "Keras 2.13-2.15 .keras in Keras 3",
            "TypeError: Could not deserialize class 'Functional' because its parent module "
            "keras.src.engine.functional cannot be imported",
            "Keras 3.0.x reported (k#19089 open)", "load with tf-keras, save H5, reload",
            ("k#19089", "k#21663"), ("keras.src.engine",)),
    Failure("8c", "'Functional' unknown to old Keras", "ValueError: Unknown layer: Functional",
            "saved TF >= 2.3, loaded TF <= 2.2 / multi-backend keras",
            "load with a newer TF, or rename the class to Model in the config",
            ("tf#41929", "gmalivenko/onnx2keras#85"), ("Unknown layer: Functional",)),
    Failure("8d", "Ancient configs / changed op constraints",
            "AttributeError: 'list' object has no attribute 'items'; Unrecognized keyword "
            "arguments: ['input_dtype']; _SatisfiesTypeConstraint",
            "cross-minor", "load in the saving TF and re-save",
            ("tf#38135", "stratospark/food-101-keras#24", "tf#58485"),
            ("'list' object has no attribute 'items'", "['input_dtype']", "_SatisfiesTypeConstraint")),
    Failure("8e", "Not a model file",
            "No model config found in the file at {path}.; OSError: SavedModel file does not exist "
            "at: {path}/{{saved_model.pbtxt|saved_model.pb}}",
            "all", "rebuild the model and load_weights; git lfs pull",
            ("tf#40991",), ("No model config found", "SavedModel file does not exist")),
    Failure("drift", "Custom code changed since the save",
            "(no error: the model loads and predicts differently)",
            "any", "load with the snapshot (`envrepro load MODEL`), or restore the code",
            (), ()),
    Failure("import", "A module the model needs is missing",
            "ModuleNotFoundError: No module named '{name}'", "any",
            "install the distribution that provides it, or snapshot the module in the capture "
            "(`envrepro load MODEL` imports it from there)",
            (), ("No module named",)),
)
EXTRA_IDS = ("drift", "import")   # not load_model errors of docs/failures.md's numbered classes
BY_ID = dict((f.id, f) for f in FAILURES)


def match(text):
    """The Failure whose needle occurs in ``text``, or None. The longest matching needle wins, so
    specific needles beat the generic ones they contain: 'Unknown optimizer: Custom>' is 4a, not
    2; "Op type not registered 'Addons>" is 6c, not 7a; 'Unknown layer: Functional' is 8c."""
    best = None
    for failure in FAILURES:
        for needle in failure.needles:
            if needle in text and (best is None or len(needle) > best[0]):
                best = (len(needle), failure)
    return best[1] if best else None


def classify(text):
    """``{"id", "name", "fix"}`` of the class of an error text (JSON for the loader's report), or None."""
    failure = match(text)
    if failure is None:
        return None
    return {"id": failure.id, "name": failure.title, "fix": failure.fix}
