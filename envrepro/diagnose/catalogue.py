"""FAILURES.md as data: why ``load_model`` fails across environments, how to see it coming.

Each :class:`FailureClass` carries the exact message users see (so a user who searches their
error finds the class), the versions involved, a static detector and the fix. Detectors look only
at facts gathered without importing TensorFlow: what the model file says
(:class:`~envrepro.diagnose.modelfiles.ModelFileInfo`), the saving environment (capture, or inferred) and
the target environment (probe facts). ``classify_exception`` maps a real error from ``--try``
back to a class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from envrepro.diagnose.tfversions import for_tf, minor_of, vtuple
from envrepro.diagnose.modelfiles import ModelFileInfo

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITY_ORDER = {ERROR: 0, WARNING: 1, INFO: 2}


@dataclass
class Env:
    """One environment as the detectors see it (saving or target); every field may be unknown."""

    python: Optional[str] = None
    tensorflow: Optional[str] = None
    keras: Optional[str] = None           # version of the Keras that load_model runs
    keras_flavor: Optional[str] = None    # tf.keras | keras3 | tf_keras
    packages: Dict[str, str] = field(default_factory=dict)   # canonical name -> version
    env: Dict[str, Optional[str]] = field(default_factory=dict)
    gpu: Optional[bool] = None

    def has(self, name: str) -> bool:
        return name in self.packages

    @property
    def tf(self) -> Tuple[int, ...]:
        return vtuple(self.tensorflow)[:2]


@dataclass
class Context:
    info: ModelFileInfo
    saved: Env
    target: Env
    compile: bool = True
    custom_objects: Dict[str, str] = field(default_factory=dict)   # captured Name -> module:attr
    missing_modules: Dict[str, str] = field(default_factory=dict)  # module -> distribution, absent in target


@dataclass
class Hit:
    severity: str
    detail: str                 # what exactly, in this model and environment
    message: str = ""           # the error text the user will see (formatted)
    fix: str = ""               # overrides the class fix when set


@dataclass(frozen=True)
class FailureClass:
    id: str
    title: str
    message: str                # exact text, {path}/{name} filled in by detectors
    versions: str
    fix: str
    sources: Tuple[str, ...]
    needles: Tuple[str, ...]    # substrings of the exception text that identify the class
    detect: Callable[[Context], List[Hit]] = field(compare=False, default=lambda ctx: [])


def _keras3(env: Env) -> bool:
    """load_model there is Keras 3 (TF >= 2.16 without legacy switch, or TF 2.15 + keras 3)."""
    if env.keras_flavor == "keras3":
        return True
    kv = vtuple(env.packages.get("keras"))
    return env.tf == (2, 15) and bool(kv) and kv[0] >= 3 and env.keras_flavor != "tf_keras"


def _tf_known(env: Env) -> bool:
    return len(env.tf) == 2


# -- detectors ------------------------------------------------------------------------------

def _d1(ctx: Context) -> List[Hit]:
    if ctx.info.format != "savedmodel" or not _keras3(ctx.target):
        return []
    row = for_tf(ctx.saved.tensorflow) or for_tf(ctx.target.tensorflow)
    tfk = minor_of(ctx.target.tensorflow) or "2.15"
    return [Hit(ERROR, f"a SavedModel folder and load_model here is Keras {ctx.target.keras or '3'} "
                       f"(TensorFlow {ctx.target.tensorflow})",
                fix=f"pip install tf-keras~={tfk}.0 and set TF_USE_LEGACY_KERAS=1 before importing "
                    "TensorFlow; or `envrepro load MODEL` (the saving environment); or "
                    "keras.layers.TFSMLayer(path, call_endpoint='serving_default') for inference only"
                    + (f" (saved with TF {row.get('minor')})" if row else ""))]


def _d2(ctx: Context) -> List[Hit]:
    hits = []
    for module, dist in sorted(ctx.missing_modules.items()):
        names = sorted(n for n, spec in ctx.custom_objects.items() if spec.split(":", 1)[0] == module)
        hits.append(Hit(ERROR, f"{', '.join(names) or module} come(s) from module {module} "
                               f"(distribution {dist}), which is not installed here",
                        message=_unknown_message(ctx.target, names[0] if names else module),
                        fix=f"pip install {dist} (the version in the capture's lock), or `envrepro load MODEL`"))
    if not ctx.custom_objects and ctx.info.custom_classes:
        names = [n for n in ctx.info.custom_classes if not n.startswith("Addons>")]
        if names:
            hits.append(Hit(WARNING, "the model uses classes Keras doesn't provide: " + ", ".join(names),
                            message=_unknown_message(ctx.target, names[0]),
                            fix="import the module that defines them and pass custom_objects= "
                                "(envrepro capture --infer --code-path DIR finds and snapshots them)"))
    return hits


def _unknown_message(target: Env, name: str) -> str:
    if _keras3(target):
        return (f"TypeError: Could not locate class '{name}'. Make sure custom classes and functions "
                "are decorated with `@keras.saving.register_keras_serializable()`. ...")
    if _tf_known(target) and target.tf <= (2, 12):
        return f"ValueError: Unknown layer: {name}"
    return (f"ValueError: Unknown layer: '{name}'. Please ensure you are using a "
            "`keras.utils.custom_object_scope` and that this object is included in the scope.")


def _d3(ctx: Context) -> List[Hit]:
    h5 = ctx.target.packages.get("h5py")
    if ctx.info.format == "h5" and _tf_known(ctx.target) and ctx.target.tf < (2, 5) \
            and vtuple(h5)[:1] >= (3,):
        return [Hit(ERROR, f"TensorFlow {ctx.target.tensorflow} reads H5 attributes as bytes, "
                           f"h5py {h5} returns str")]
    return []


def _d4a(ctx: Context) -> List[Hit]:
    tc = ctx.info.training_config
    if not tc or not ctx.compile or not _tf_known(ctx.target) or ctx.target.tf > (2, 10):
        return []
    if (tc.optimizer or "").startswith("Custom>") or tc.is_legacy_optimizer is False:
        return [Hit(ERROR, f"optimizer {tc.optimizer} was saved by TF >= 2.11; "
                           f"TensorFlow {ctx.target.tensorflow} doesn't know it",
                    message=f"ValueError: Unknown optimizer: {tc.optimizer}")]
    return []


def _d4b(ctx: Context) -> List[Hit]:
    tc = ctx.info.training_config
    if not tc or not ctx.compile or not ctx.info.optimizer_weights or _keras3(ctx.target):
        return []
    saved_old = (_tf_known(ctx.saved) and ctx.saved.tf <= (2, 10)) or \
        (not _tf_known(ctx.saved) and tc.is_legacy_optimizer is None)
    if saved_old and _tf_known(ctx.target) and ctx.target.tf >= (2, 11):
        return [Hit(WARNING, "optimizer state saved by TF <= 2.10, restored into a v2.11+ optimizer")]
    return []


def _d4c(ctx: Context) -> List[Hit]:
    tc = ctx.info.training_config
    if not tc or not ctx.compile or ctx.info.format != "h5" or not _keras3(ctx.target):
        return []
    if ctx.info.keras_major is not None and ctx.info.keras_major >= 3:
        return []
    reasons = []
    if tc.legacy_keys:
        reasons.append("Keras-2 optimizer keys " + ", ".join(tc.legacy_keys))
    if tc.losses or tc.metrics:
        reasons.append("losses/metrics by name: " + ", ".join(tc.losses + tc.metrics))
    if tc.schedule and tc.schedule not in ("ExponentialDecay", "PiecewiseConstantDecay", "PolynomialDecay",
                                           "InverseTimeDecay", "CosineDecay", "CosineDecayRestarts"):
        reasons.append(f"schedule {tc.schedule}")
    if not reasons:
        return []
    name = (tc.losses + tc.metrics + ["mse"])[0]
    return [Hit(ERROR, "the compile config is Keras 2's (" + "; ".join(reasons) + ") and load_model "
                       "compiles it by default",
                message=(f"ValueError: Could not deserialize 'keras.metrics.{name}' because it is not "
                         f"a KerasSaveable subclass (older Keras 3: Could not locate function '{name}')"),
                fix="load_model(path, compile=False), then compile again; or `envrepro load MODEL`")]


def _d5(ctx: Context) -> List[Hit]:
    lambdas = ctx.info.lambdas
    if not lambdas:
        return []
    names = ", ".join(l.layer for l in lambdas)
    hits = []
    sp, tp = minor_of(ctx.saved.python), minor_of(ctx.target.python)
    marshalled = [l for l in lambdas if l.function_type in ("lambda", "__lambda__")]
    if marshalled and tp and sp and sp != tp:
        hits.append(Hit(ERROR, f"Lambda layer(s) {names} hold Python {sp} bytecode; this is Python {tp}",
                        message="ValueError: bad marshal data (unknown type code)",
                        fix=f"load under Python {sp} (`envrepro load MODEL`); or replace the Lambda "
                            "with a registered layer and re-save"))
    elif marshalled and tp and not sp:
        hits.append(Hit(WARNING, f"Lambda layer(s) {names} hold bytecode of an unknown Python "
                                 f"(no format stores it); this is Python {tp}",
                        message="ValueError: bad marshal data (unknown type code)",
                        fix="load under the saving Python minor"))
    if marshalled and _keras3(ctx.target):
        hits.append(Hit(ERROR, f"Keras 3 refuses Python-lambda Lambda layers ({names}) in safe_mode",
                        message="ValueError: Requested the deserialization of a `Lambda` layer whose "
                                "`function` is a Python lambda. This carries a potential risk of "
                                "arbitrary code execution and thus it is disallowed by default. ...",
                        fix="load_model(path, safe_mode=False) if you trust the file "
                            "(`envrepro load --unsafe`), or replace the Lambda"))
    return hits


def _d6a(ctx: Context) -> List[Hit]:
    np_v, t = vtuple(ctx.target.packages.get("numpy")), ctx.target
    if not np_v or not _tf_known(t):
        return []
    if t.tf <= (2, 17) and np_v[0] >= 2:
        return [Hit(ERROR, f"numpy {t.packages['numpy']} with TensorFlow {t.tensorflow} "
                           "(built against NumPy 1.x)", fix="pip install 'numpy<2'")]
    if t.tf <= (2, 11) and np_v[:2] >= (1, 24):
        return [Hit(WARNING, f"numpy {t.packages['numpy']} with TensorFlow {t.tensorflow}: numpy 1.24 "
                             "removed np.object/np.bool aliases old TF uses",
                    message="AttributeError: module 'numpy' has no attribute 'object'",
                    fix="pip install 'numpy<1.24'")]
    return []


def _d6b(ctx: Context) -> List[Hit]:
    pb, t = vtuple(ctx.target.packages.get("protobuf")), ctx.target
    if pb and _tf_known(t) and t.tf <= (2, 11) and pb[:2] >= (4, 21):
        return [Hit(ERROR, f"protobuf {t.packages['protobuf']} with TensorFlow {t.tensorflow}")]
    return []


def _d6c(ctx: Context) -> List[Hit]:
    uses = sorted({n for n in ctx.info.custom_ops + ctx.info.custom_classes + ctx.info.registered_names
                   if n.startswith("Addons>")})
    if not uses:
        return []
    t = ctx.target
    if not t.has("tensorflow-addons"):
        return [Hit(ERROR, "the model uses TensorFlow Addons (" + ", ".join(uses) + "), not installed here",
                    message=f"NotFoundError: Op type not registered '{uses[0]}' in binary running on ...",
                    fix="pip install tensorflow-addons (TF <= 2.15 / tf-keras) and import it before "
                        "loading; or `envrepro load MODEL`")]
    if _keras3(t):
        return [Hit(ERROR, "TensorFlow Addons has no Keras 3 support (end of life May 2024)",
                    fix="`envrepro load MODEL`, or rebuild with Keras equivalents and re-save")]
    return []


def _d7a(ctx: Context) -> List[Hit]:
    hits = []
    plugin = [o for o in ctx.info.custom_ops if not o.startswith("Addons>")]
    if plugin:
        hits.append(Hit(WARNING, "ops from plugin packages: " + ", ".join(plugin),
                        message=f"NotFoundError: Op type not registered '{plugin[0]}' in binary running on ...",
                        fix="install and import the package that registers them"))
    s, t = ctx.saved, ctx.target
    if _tf_known(s) and _tf_known(t) and s.tf > t.tf and ctx.info.format == "savedmodel":
        hits.append(Hit(WARNING, f"saved by TensorFlow {s.tensorflow}, loaded by older {t.tensorflow}: "
                                 "ops added since may be missing",
                        message="NotFoundError: Op type not registered 'DisableCopyOnRead' in binary ...",
                        fix=f"load with TensorFlow >= {minor_of(s.tensorflow)}"))
    return hits


def _d7b(ctx: Context) -> List[Hit]:
    cudnn = [o for o in ctx.info.ops if o.startswith("Cudnn")]
    gpu_pinned = "gpu_device" in ctx.info.markers
    if not (cudnn or gpu_pinned) or ctx.target.gpu:
        return []
    what = ("GPU-only ops " + ", ".join(cudnn)) if cudnn else "nodes pinned to /device:GPU"
    return [Hit(WARNING if not cudnn else ERROR, f"{what} in the graph; no GPU in this environment")]


def _d7c(ctx: Context) -> List[Hit]:
    row = for_tf(ctx.target.tensorflow)
    have = next((v for k, v in ctx.target.packages.items() if k.startswith("nvidia-cudnn-cu")), None)
    if not row or not have or not row.get("cudnn"):
        return []
    if vtuple(have)[:1] != vtuple(str(row["cudnn"]))[:1]:
        return [Hit(WARNING, f"cuDNN {have} installed; TensorFlow {ctx.target.tensorflow} was built "
                             f"with cuDNN {row['cudnn']} / CUDA {row['cuda']}")]
    return []


def _d8a(ctx: Context) -> List[Hit]:
    i, t = ctx.info, ctx.target
    k3 = (i.keras_major or 0) >= 3 or any(m.startswith("keras.src.models") for m in i.config_modules)
    if not k3 or _keras3(t) or not (t.tensorflow or t.keras):
        return []
    msg = ("TypeError: Could not deserialize class 'Functional' because its parent module "
           "keras.src.models.functional cannot be imported" if i.format == "keras"
           else "ValueError: Unrecognized keyword arguments: ['batch_shape']")
    return [Hit(ERROR, f"saved by Keras {i.keras_version or '3'}, load_model here is Keras 2 "
                       f"({t.keras or t.tensorflow})", message=msg)]


def _d8b(ctx: Context) -> List[Hit]:
    i = ctx.info
    if i.format != "keras" or not _keras3(ctx.target):
        return []
    k = vtuple(i.keras_version)
    if (k[:1] == (2,) and k[:2] >= (2, 13)) or any(m.startswith("keras.src.engine") for m in i.config_modules):
        return [Hit(WARNING, f".keras file written by Keras {i.keras_version} (2.13-2.15 layout), "
                             "loaded by Keras 3 (reported broken in 3.0.x; unconfirmed for current 3.x)")]
    return []


def _d8c(ctx: Context) -> List[Hit]:
    t = ctx.target
    if ctx.info.model_class == "Functional" and _tf_known(t) and t.tf <= (2, 2):
        return [Hit(ERROR, f"class 'Functional' (TF >= 2.3) with TensorFlow {t.tensorflow}")]
    return []


def _d8d(ctx: Context) -> List[Hit]:
    i, s, t = ctx.info, ctx.saved, ctx.target
    hits = []
    if "list_config" in i.markers:
        hits.append(Hit(WARNING, "pre-TF-2 Sequential config (a bare list of layers)",
                        message="AttributeError: 'list' object has no attribute 'items'"))
    if "input_dtype" in i.markers:
        hits.append(Hit(ERROR, "Keras 1 layer arguments (input_dtype)",
                        message="TypeError: Unrecognized keyword arguments: ['input_dtype']"))
    if "StringLookup" in i.class_names and i.format == "savedmodel" and s.tf == (2, 7) \
            and (2, 8) <= t.tf <= (2, 10):
        hits.append(Hit(WARNING, "StringLookup SavedModel from TF 2.7 in TF 2.8-2.10",
                        message="... _SatisfiesTypeConstraint ..."))
    return hits


def _d8e(ctx: Context) -> List[Hit]:
    i, t = ctx.info, ctx.target
    hits = [Hit(ERROR, p, message=(f"No model config found in the file at {i.path}." if i.weights_only else
                                   f"OSError: SavedModel file does not exist at: {i.path}/"
                                   "{saved_model.pbtxt|saved_model.pb}"))
            for p in i.problems]
    if i.format == "keras" and _tf_known(t) and t.tf <= (2, 11) and not _keras3(t):
        hits.append(Hit(ERROR, f".keras file, TensorFlow {t.tensorflow} reads only H5 and SavedModel",
                        message=f"OSError: SavedModel file does not exist at: {i.path}/"
                                "{saved_model.pbtxt|saved_model.pb}",
                        fix="load with TF >= 2.12 (or `envrepro load MODEL`)"))
    return hits


CLASSES: Tuple[FailureClass, ...] = (
    FailureClass("1", "SavedModel folder under Keras 3",
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
                 ("File format not supported", "legacy SavedModel format is not supported"), _d1),
    FailureClass("2", "Unregistered custom object / bad get_config",
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
                  "required positional arguments", "unexpected keyword argument 'trainable'"), _d2),
    FailureClass("3", "h5py 3 with TF <= 2.4",
                 "AttributeError: 'str' object has no attribute 'decode'",
                 "TF <= 2.4 (and multi-backend keras <= 2.3) with h5py >= 3.0", "pip install 'h5py<3'",
                 ("tf#44467", "ContinuumIO/anaconda-issues#12427"),
                 ("has no attribute 'decode'",), _d3),
    FailureClass("4a", "New optimizer loaded by old TF",
                 "ValueError: Unknown optimizer: Custom>Adam; weight_decay is not a valid argument, "
                 "kwargs should be empty for `optimizer_experimental.Optimizer`",
                 "saved TF >= 2.11, loaded TF <= 2.10",
                 "load_model(path, compile=False) and compile again; custom_objects={'Custom>Adam': Adam}",
                 ("chaquo/chaquopy#1075", "kyleskom/NBA-Machine-Learning-Sports-Betting#108"),
                 ("Unknown optimizer: Custom>", "weight_decay is not a valid argument"), _d4a),
    FailureClass("4b", "Legacy optimizer checkpoint into a v2.11+ optimizer",
                 "You are trying to restore a checkpoint from a legacy Keras optimizer into a v2.11+ "
                 "Optimizer, which can cause errors.",
                 "saved TF <= 2.10, loaded TF >= 2.11", "use tf.keras.optimizers.legacy.*",
                 ("zsylvester/segmenteverygrain#5",),
                 ("restore a checkpoint from a legacy Keras optimizer",), _d4b),
    FailureClass("4c", "Keras-2 compile config in Keras 3",
                 "ValueError: Could not deserialize 'keras.metrics.mse' because it is not a "
                 "KerasSaveable subclass (older: Could not locate function 'mse'; "
                 "Argument(s) not recognized: {'lr': ...}; Unknown decay: 'WarmUp')",
                 "H5/SavedModel with training_config loaded by Keras >= 3",
                 "load_model(path, compile=False), then compile",
                 ("GantMan/nsfw_model#164", "k#19330", "k#18887"),
                 ("Argument(s) not recognized", "Could not locate function", "is not a KerasSaveable subclass",
                  "Unknown decay"), _d4c),
    FailureClass("5", "Lambda bytecode across Python versions / safe_mode",
                 "ValueError: bad marshal data (unknown type code); SystemError: unknown opcode; Keras 3: "
                 "Requested the deserialization of a `Lambda` layer whose `function` is a Python lambda ... "
                 "safe_mode=False",
                 "any TF; saving and loading Python minors differ (the code object is marshalled)",
                 "load under the saving Python minor; safe_mode=False for trusted files; replace the "
                 "Lambda with a registered layer; set output_shape",
                 ("k#14875", "k#7440", "k#9595", "tk#567"),
                 ("bad marshal data", "unknown opcode", "deserialization of a `Lambda` layer",
                  "deserialization of a Lambda layer", "could not automatically infer the shape of the Lambda"),
                 _d5),
    FailureClass("6a", "NumPy ABI / removed aliases",
                 "A module that was compiled using NumPy 1.x cannot be run in NumPy 2.x ...; "
                 "_ARRAY_API not found; AttributeError: module 'numpy' has no attribute 'object'",
                 "TF <= 2.17 with numpy 2; TF <= 2.11 with numpy >= 1.24",
                 "pip install 'numpy<2' (or '<1.24'), or upgrade TF",
                 ("tf#67291", "CameronBodine/PINGMapper#123", "tf#62832"),
                 ("compiled using NumPy 1.x", "_ARRAY_API not found", "module 'numpy' has no attribute"),
                 _d6a),
    FailureClass("6b", "protobuf too new",
                 "TypeError: Descriptors cannot be created directly. If this call came from a _pb2.py "
                 "file, your generated code is out of date and must be regenerated with protoc >= "
                 "3.19.0. ... Downgrade the protobuf package to 3.20.x or lower.",
                 "protobuf >= 4.21 with TF <= 2.11",
                 "pip install 'protobuf<=3.20.3', or PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python",
                 ("tf#56266", "tf#59665"), ("Descriptors cannot be created directly",), _d6b),
    FailureClass("6c", "TensorFlow Addons",
                 "NotFoundError: Op type not registered 'Addons>Mish' in binary running on ...; "
                 "Unknown layer: 'Addons>InstanceNormalization'",
                 "TFA end of life May 2024, no Keras 3",
                 "import tensorflow_addons (TF <= 2.15 / tf-keras), or Keras equivalents and re-save",
                 ("tfa#1554", "CompImg/LST-AI#11", "tfa#2807"),
                 ("Addons>", "Op type not registered 'Addons>", "Unknown layer: 'Addons>",
                  "Unknown layer: Addons>"), _d6c),
    FailureClass("7a", "Missing or newer ops",
                 "NotFoundError: Op type not registered 'DisableCopyOnRead' in binary running on ...",
                 "saving TF newer than loading TF; plugin packages (TF-DF, TFRA)",
                 "import the plugin package; load with TF >= the saving TF",
                 ("tf#62229", "tensorflow/decision-forests#108", "tf#58980"),
                 ("Op type not registered",), _d7a),
    FailureClass("7b", "GPU kernels on a CPU host",
                 "No OpKernel was registered to support Op 'CudnnRNN' ... Registered devices: [CPU]",
                 "TF1 CuDNNLSTM; Keras 3 LSTM/GRU exported on GPU (2.16/2.17)",
                 "export on CPU (CUDA_VISIBLE_DEVICES=-1) or ship .keras/H5",
                 ("k#18504", "tf#77442", "tf#26600"),
                 ("No OpKernel was registered", "but available devices are"), _d7b),
    FailureClass("7c", "cuDNN/CUDA mismatch",
                 "Loaded runtime CuDNN library: A but source was compiled with: B. CuDNN library needs "
                 "to have matching major version ... DNN library initialization failed",
                 "GPU builds", "install the CUDA/cuDNN TF was built with (tensorflow[and-cuda] >= 2.14)",
                 ("tf#60913", "googlecolab/colabtools#2626"),
                 ("DNN library initialization failed", "Loaded runtime CuDNN library"), _d7c),
    FailureClass("8a", "Keras 3 file in Keras 2",
                 "ValueError: Unrecognized keyword arguments: ['batch_shape']; .keras: Could not "
                 "deserialize class 'Functional' because its parent module "
                 "keras.src.models.functional cannot be imported",
                 "saved by Keras 3, loaded by TF <= 2.15 / tf-keras",
                 "load with Keras 3, or rewrite the config (batch_shape -> batch_input_shape)",
                 ("tf#66381", "tf#64685", "tf#70866"),
                 ("['batch_shape']", "keras.src.models"), _d8a),
    FailureClass("8b", "Keras 2.13-2.15 .keras in Keras 3",
                 "TypeError: Could not deserialize class 'Functional' because its parent module "
                 "keras.src.engine.functional cannot be imported",
                 "Keras 3.0.x reported (k#19089 open)", "load with tf-keras, save H5, reload",
                 ("k#19089", "k#21663"), ("keras.src.engine",), _d8b),
    FailureClass("8c", "'Functional' unknown to old Keras", "ValueError: Unknown layer: Functional",
                 "saved TF >= 2.3, loaded TF <= 2.2 / multi-backend keras",
                 "load with a newer TF, or rename the class to Model in the config",
                 ("tf#41929", "gmalivenko/onnx2keras#85"), ("Unknown layer: Functional",), _d8c),
    FailureClass("8d", "Ancient configs / changed op constraints",
                 "AttributeError: 'list' object has no attribute 'items'; Unrecognized keyword "
                 "arguments: ['input_dtype']; _SatisfiesTypeConstraint",
                 "cross-minor", "load in the saving TF and re-save",
                 ("tf#38135", "stratospark/food-101-keras#24", "tf#58485"),
                 ("'list' object has no attribute 'items'", "['input_dtype']", "_SatisfiesTypeConstraint"),
                 _d8d),
    FailureClass("8e", "Not a model file",
                 "No model config found in the file at {path}.; OSError: SavedModel file does not exist "
                 "at: {path}/{{saved_model.pbtxt|saved_model.pb}}",
                 "all", "rebuild the model and load_weights; git lfs pull",
                 ("tf#40991",), ("No model config found", "SavedModel file does not exist"), _d8e),
)

# Not in FAILURES.md's table: what only a capture reveals, and imports that fail before load_model.
EXTRA: Tuple[FailureClass, ...] = (
    FailureClass("drift", "Custom code changed since the save",
                 "(no error: the model loads and predicts differently)",
                 "any", "load with the snapshot (`envrepro load MODEL`), or restore the code",
                 (), ()),
    FailureClass("import", "A module the model needs is missing",
                 "ModuleNotFoundError: No module named '{name}'", "any",
                 "install the distribution that provides it, or `envrepro load MODEL`",
                 (), ("No module named",)),
)
BY_ID: Dict[str, FailureClass] = {c.id: c for c in CLASSES + EXTRA}


def get(class_id: str) -> FailureClass:
    return BY_ID[class_id]


def detect(ctx: Context) -> List[Tuple[FailureClass, Hit]]:
    """Run every detector; a detector that trips over unexpected data is skipped, not fatal."""
    out: List[Tuple[FailureClass, Hit]] = []
    for cls in CLASSES:
        try:
            hits = cls.detect(ctx)
        except Exception:  # noqa: BLE001 - a detector bug must not hide the other findings
            continue
        out.extend((cls, h) for h in hits)
    return out


def classify_exception(type_name: str, message: str) -> Optional[str]:
    """The class id of a load_model error (``--try``), or None when it is not catalogued.

    The longest matching needle wins, so specific needles beat the generic ones they contain:
    'Unknown optimizer: Custom>' is 4a, not 2; "Op type not registered 'Addons>" is 6c, not 7a.
    """
    text = f"{type_name}: {message}"
    best: Optional[Tuple[int, str]] = None
    for cls in CLASSES + EXTRA:
        for needle in cls.needles:
            if needle in text and (best is None or len(needle) > best[0]):
                best = (len(needle), cls.id)
    return best[1] if best else None


def table_rows() -> List[Dict[str, Any]]:
    """The catalogue as plain data (for --json and docs)."""
    return [{"id": c.id, "title": c.title, "message": c.message, "versions": c.versions,
             "fix": c.fix, "sources": list(c.sources)} for c in CLASSES + EXTRA]


def by_severity(items: Sequence[Any], key: Callable[[Any], str]) -> List[Any]:
    return sorted(items, key=lambda x: SEVERITY_ORDER.get(key(x), 3))
