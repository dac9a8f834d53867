"""Read what a saved Keras model file says about itself, without importing TensorFlow.

``envrepro doctor``, ``inspect`` and ``capture --infer`` must work on a machine where the saving
TensorFlow can't even be installed, and must never run the model's code (an H5 Lambda layer is
marshalled bytecode, a SavedModel is a program). So this module reads the files directly:

* SavedModel: ``saved_model.pb`` with a minimal protobuf wire-format decoder (the TF version, git
  version, op list and, before TF 2.5, the Keras JSON in the object graph), and
  ``keras_metadata.pb`` (TF >= 2.5) for the Keras JSON;
* H5: root attributes through h5py, imported lazily: without h5py the info says so in ``notes``;
* ``.keras``: ``metadata.json`` and ``config.json`` from the zip, refusing unsafe entry names and
  capping sizes (a zip is attacker-controlled input).

Where each format keeps each fact is documented in FAILURES.md ("Where the saving versions live").
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from envrepro.sidecar.modelformat import HDF5_MAGIC, LFS_MAGIC, ZIP_MAGIC  # the capture format owns the magic

MAX_JSON_BYTES = 64 * 1024 * 1024      # config.json / metadata.json / keras_metadata.pb
MAX_ZIP_ENTRIES = 100_000
MAX_PB_BYTES = 2 * 1024 * 1024 * 1024  # saved_model.pb is read whole; larger is not a model we handle

# Class names Keras itself provides (Keras 2.4 .. 3.x): layers, models, initializers, regularizers,
# constraints, optimizers, schedules, losses, metrics, activations, dtype policies. Generated from
# tf.keras 2.4.1 and Keras 3.15 by introspection, plus internal names that appear in configs.
_BUILTIN_TEXT = """
AUC AWQDTypePolicy AbstractRNNCell Accuracy Activation ActivityRegularization Adadelta Adafactor
Adagrad Adam AdamW Adamax AdaptiveAveragePooling1D AdaptiveAveragePooling2D AdaptiveAveragePooling3D
AdaptiveMaxPooling1D AdaptiveMaxPooling2D AdaptiveMaxPooling3D Add AdditiveAttention AlphaDropout
Attention AugMix AutoContrast Average AveragePooling1D AveragePooling2D AveragePooling3D AvgPool1D
AvgPool2D AvgPool3D BatchNormalization Bidirectional BinaryAccuracy BinaryCrossentropy
BinaryFocalCrossentropy BinaryIoU CTC CategoricalAccuracy CategoricalCrossentropy
CategoricalFocalCrossentropy CategoricalHinge CategoryCrossing CategoryEncoding CenterCrop
CircleLoss ClassMethod Concatenate Constant Constraint Conv1D Conv1DTranspose Conv2D Conv2DTranspose
Conv3D Conv3DTranspose ConvLSTM1D ConvLSTM2D ConvLSTM3D Convolution1D Convolution1DTranspose
Convolution2D Convolution2DTranspose Convolution3D Convolution3DTranspose CosineDecay
CosineDecayRestarts CosineSimilarity Cropping1D Cropping2D Cropping3D CuDNNGRU CuDNNLSTM CutMix
DTypePolicy Dense DenseFeatures DepthwiseConv1D DepthwiseConv2D Dice Discretization Dot Dropout
ELU EinsumDense Embedding Equalization ExponentialDecay F1Score FBetaScore FalseNegatives
FalsePositives FeatureSpace Flatten FloatDTypePolicy Ftrl Functional GRU GRUCell
GaussianDropout GaussianNoise GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D
GlobalAvgPool1D GlobalAvgPool2D GlobalAvgPool3D GlobalMaxPool1D GlobalMaxPool2D GlobalMaxPool3D
GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D GlorotNormal GlorotUniform Grain
GroupNormalization GroupQueryAttention HashedCrossing Hashing HeNormal HeUniform Hinge Huber
Identity InputLayer InputSpec InstanceMethod InstanceProperty IntegerLookup InverseTimeDecay
IoU KLD KLDivergence KerasTensor L1 L1L2 L2 LSTM LSTMCell Lambda Layer LayerNormalization
LeakyReLU LearningRateSchedule LecunNormal LecunUniform LinearCosineDecay LinearModel Lion
LocallyConnected1D LocallyConnected2D LogCosh LogCoshError Loss LossScaleOptimizer
LossScaleOptimizerV3 MAE MAPE MSE MSLE Masking MaxNorm MaxPool1D MaxPool2D MaxPool3D
MaxPooling1D MaxPooling2D MaxPooling3D Maximum Mean MeanAbsoluteError
MeanAbsolutePercentageError MeanIoU MeanMetricWrapper MeanRelativeError MeanSquaredError
MeanSquaredLogarithmicError MeanTensor MelSpectrogram Metric MinMaxNorm Minimum MixUp Model
Muon MultiHeadAttention Multiply Nadam Network NoisyLinearCosineDecay NonNeg Normalization
OneHotIoU OneHotMeanIoU Ones Optimizer Orthogonal PReLU Permute PiecewiseConstantDecay
Pipeline Poisson Policy PolynomialDecay Precision PrecisionAtRecall PreprocessingLayer
QuantizedDTypePolicy QuantizedFloat8DTypePolicy R2Score RMSNormalization RMSprop RNN
RadialConstraint RandAugment RandomBrightness RandomColorDegeneration RandomColorJitter
RandomContrast RandomCrop RandomElasticTransform RandomErasing RandomFlip RandomFourierFeatures
RandomGaussianBlur RandomGrayscale RandomHeight RandomHue RandomInvert RandomNormal
RandomPerspective RandomPosterization RandomRotation RandomSaturation RandomSharpness
RandomShear RandomTranslation RandomUniform RandomWidth RandomZoom ReLU Recall
RecallAtPrecision Reduction Regularizer RepeatVector Rescaling Reshape Resizing
ReversibleEmbedding RootMeanSquaredError SGD STFTSpectrogram SeparableConv1D SeparableConv2D
SeparableConvolution1D SeparableConvolution2D SequenceFeatures Sequential SharedObject
SimpleRNN SimpleRNNCell SlicingOpLambda Softmax Solarization SparseCategoricalAccuracy
SparseCategoricalCrossentropy SparseTopKCategoricalAccuracy SpatialDropout1D SpatialDropout2D
SpatialDropout3D SpectralNormalization SpecificityAtSensitivity SquaredHinge
StackedRNNCells StringLookup Subtract SensitivityAtSpecificity Sum TFOpLambda TFSMLayer
TensorFlowOpLayer TensorShape TextVectorization ThresholdedReLU TimeDistributed
TopKCategoricalAccuracy TorchModuleWrapper Tversky TruncatedNormal TrueNegatives TruePositives
UnitNormalization UnitNorm UpSampling1D UpSampling2D UpSampling3D VarianceScaling WideDeepModel
Wrapper ZeroPadding1D ZeroPadding2D ZeroPadding3D Zeros
binary_crossentropy binary_focal_crossentropy categorical_crossentropy categorical_hinge
categorical_focal_crossentropy celu cosine_similarity ctc deserialize dice elu exponential gelu
get glu hard_shrink hard_sigmoid hard_silu hard_swish hard_tanh hinge huber kl_divergence kld
kullback_leibler_divergence leaky_relu linear log_cosh log_sigmoid log_softmax logcosh mae mape
mean_absolute_error mean_absolute_percentage_error mean_squared_error
mean_squared_logarithmic_error mish mse msle poisson relu relu6 selu serialize sigmoid silu
soft_shrink softmax softplus softsign sparse_categorical_crossentropy sparse_plus sparsemax
squared_hinge squareplus swish tanh tanh_shrink threshold tversky binary_accuracy
categorical_accuracy sparse_categorical_accuracy top_k_categorical_accuracy
sparse_top_k_categorical_accuracy accuracy acc crossentropy radial_constraint max_norm
min_max_norm non_neg unit_norm l1 l2 l1_l2 orthogonal_regularizer OrthogonalRegularizer
"""
BUILTIN_NAMES = frozenset(_BUILTIN_TEXT.split())
_FRAMEWORK_MODULE = re.compile(r"^(keras|tf_keras|tensorflow)(\.|$)")
_ACTIVATION_KEYS = ("activation", "recurrent_activation")


@dataclass
class TrainingConfigSummary:
    """What the compile() config asks of the loader (FAILURES.md classes 4a, 4b, 4c)."""

    optimizer: Optional[str] = None          # optimizer_config.class_name ('Adam', 'Custom>Adam')
    optimizer_keys: List[str] = field(default_factory=list)
    legacy_keys: List[str] = field(default_factory=list)   # 'lr', 'decay' (Keras 2 only)
    losses: List[str] = field(default_factory=list)        # string losses ('mse')
    metrics: List[str] = field(default_factory=list)       # string metrics
    is_legacy_optimizer: Optional[bool] = None
    schedule: Optional[str] = None           # learning_rate schedule class_name


@dataclass
class LambdaInfo:
    layer: str
    function_type: str          # 'lambda' (Keras 2 base64 marshal), '__lambda__' (Keras 3), 'function', ...
    code: Optional[str] = None  # base64 of the marshalled code object, when the config has it
    has_output_shape: bool = False


@dataclass
class ModelFileInfo:
    """Everything the model's own files say about how (and by what) they were written."""

    path: str
    format: Optional[str] = None                 # savedmodel | h5 | keras | None (not a model)
    tensorflow_version: Optional[str] = None     # SavedModel only
    tensorflow_git_version: Optional[str] = None
    keras_version: Optional[str] = None
    backend: Optional[str] = None
    model_class: Optional[str] = None
    date_saved: Optional[str] = None             # .keras metadata.json
    class_names: List[str] = field(default_factory=list)
    custom_classes: List[str] = field(default_factory=list)
    registered_names: List[str] = field(default_factory=list)   # 'pkg>Name'
    config_modules: List[str] = field(default_factory=list)     # 'module' fields (Keras 3 / .keras)
    ops: List[str] = field(default_factory=list)
    custom_ops: List[str] = field(default_factory=list)         # 'Addons>Mish', 'TFRA>...'
    lambdas: List[LambdaInfo] = field(default_factory=list)
    training_config: Optional[TrainingConfigSummary] = None
    optimizer_weights: Optional[bool] = None
    markers: List[str] = field(default_factory=list)  # batch_shape, dtype_policy, list_config, input_dtype, gpu_device, fingerprint, keras_metadata
    weights_only: bool = False
    problems: List[str] = field(default_factory=list)  # why this is not a loadable model
    notes: List[str] = field(default_factory=list)     # what could not be read, and why

    @property
    def keras_major(self) -> Optional[int]:
        m = re.match(r"(\d+)", self.keras_version or "")
        return int(m.group(1)) if m else None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Protobuf wire format (just enough to walk SavedModel messages)
# --------------------------------------------------------------------------------------------

Buffer = Union[bytes, bytearray, memoryview]


def _varint(buf: memoryview, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def iter_fields(data: Buffer) -> Iterator[Tuple[int, int, Any]]:
    """Yield ``(field_number, wire_type, value)`` for each field of one message.

    Varints and fixed-size values come back as ints, length-delimited ones as memoryview slices
    (no copy: a graph_def of hundreds of MB is skipped, not duplicated). Groups (wire types 3/4,
    unused by TensorFlow's protos) and malformed input raise ValueError.
    """
    buf = memoryview(data) if not isinstance(data, memoryview) else data
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise ValueError("truncated fixed64")
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ValueError("length-delimited field runs past the end")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            if pos + 4 > end:
                raise ValueError("truncated fixed32")
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def fields(data: Buffer) -> Dict[int, List[Any]]:
    """All fields of one message, grouped by number (repeated fields keep their order)."""
    out: Dict[int, List[Any]] = {}
    for number, _wire, value in iter_fields(data):
        out.setdefault(number, []).append(value)
    return out


def _text(value: Any) -> str:
    return bytes(value).decode("utf-8", "replace")


def _first_text(msg: Dict[int, List[Any]], number: int) -> Optional[str]:
    vals = msg.get(number)
    return _text(vals[0]) if vals and isinstance(vals[0], memoryview) else None


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

def read_model_file(path: "os.PathLike[str] | str") -> ModelFileInfo:
    """Inspect a SavedModel folder, an H5 file or a ``.keras`` zip. Never raises on content:
    what makes the file unloadable goes to ``problems``, what could not be read to ``notes``."""
    p = Path(os.path.abspath(path))
    info = ModelFileInfo(path=str(p))
    if p.is_dir():
        _read_savedmodel(p, info)
    elif p.is_file():
        with open(p, "rb") as f:
            head = f.read(64)
        if head.startswith(HDF5_MAGIC):
            info.format = "h5"
            _read_h5(p, info)
        elif head.startswith(ZIP_MAGIC):
            info.format = "keras"
            _read_keras_zip(p, info)
        elif head.startswith(LFS_MAGIC):
            info.problems.append("file is a Git LFS pointer, not the model (run `git lfs pull`)")
        else:
            info.problems.append("not a Keras model file: neither HDF5, a .keras zip nor a SavedModel folder")
    else:
        info.problems.append("no model at this path")
    _finish(info)
    return info


def _finish(info: ModelFileInfo) -> None:
    info.class_names = sorted(set(info.class_names))
    info.custom_classes = sorted(set(info.custom_classes))
    info.registered_names = sorted(set(info.registered_names))
    info.config_modules = sorted(set(info.config_modules))
    info.custom_ops = sorted({o for o in info.ops if ">" in o})
    info.markers = sorted(set(info.markers))


# --------------------------------------------------------------------------------------------
# SavedModel
# --------------------------------------------------------------------------------------------

def _read_savedmodel(folder: Path, info: ModelFileInfo) -> None:
    pb, pbtxt = folder / "saved_model.pb", folder / "saved_model.pbtxt"
    if not pb.is_file() and not pbtxt.is_file():
        info.problems.append("folder is not a SavedModel (no saved_model.pb or saved_model.pbtxt)")
        return
    info.format = "savedmodel"
    if (folder / "fingerprint.pb").is_file():
        info.markers.append("fingerprint")   # written from TF 2.12 on
    keras_json: Optional[str] = None
    if pb.is_file():
        with open(pb, "rb") as f:
            head = f.read(64)
        if head.startswith(LFS_MAGIC):
            info.problems.append("saved_model.pb is a Git LFS pointer, not the model (run `git lfs pull`)")
            return
        if pb.stat().st_size > MAX_PB_BYTES:
            info.notes.append("saved_model.pb is larger than 2 GiB: not read")
        else:
            try:
                keras_json = _parse_saved_model_pb(pb.read_bytes(), info)
            except ValueError as e:
                info.notes.append(f"saved_model.pb could not be decoded ({e})")
    else:
        text = pbtxt.read_text(encoding="utf-8", errors="replace")
        m = re.search(r'tensorflow_version:\s*"([^"]*)"', text)
        info.tensorflow_version = m.group(1) if m else None
        m = re.search(r'tensorflow_git_version:\s*"([^"]*)"', text)
        info.tensorflow_git_version = m.group(1) if m else None
        info.ops = sorted(set(re.findall(r'^\s*op\s*{\s*name:\s*"([^"]+)"', text, re.M)))
    meta = folder / "keras_metadata.pb"
    if meta.is_file():
        info.markers.append("keras_metadata")
        if meta.stat().st_size > MAX_JSON_BYTES:
            info.notes.append("keras_metadata.pb is too large to read")
        else:
            try:
                keras_json = _parse_keras_metadata(meta.read_bytes()) or keras_json
            except ValueError as e:
                info.notes.append(f"keras_metadata.pb could not be decoded ({e})")
    if keras_json:
        _apply_keras_root(keras_json, info)
    elif not info.notes:
        info.notes.append("no Keras metadata: a tf.saved_model.save / model.export() SavedModel, "
                          "which load_model can't restore as a Keras model")


def _parse_saved_model_pb(data: bytes, info: ModelFileInfo) -> Optional[str]:
    """Read meta_info_def (versions, ops) of the first MetaGraph; return the pre-2.5 Keras root
    JSON from the object graph's user objects, if any."""
    saved = fields(data)
    graphs = saved.get(2) or []
    if not graphs:
        raise ValueError("no meta graph")
    meta_graph = fields(graphs[0])
    for raw in meta_graph.get(1) or []:
        mi = fields(raw)
        info.tensorflow_version = _first_text(mi, 5) or info.tensorflow_version
        info.tensorflow_git_version = _first_text(mi, 6) or info.tensorflow_git_version
        ops = set()
        for oplist in mi.get(2) or []:
            for opdef in fields(oplist).get(1) or []:
                name = _first_text(fields(opdef), 1)
                if name:
                    ops.add(name)
        info.ops = sorted(ops)
    if b"/device:GPU" in data:
        info.markers.append("gpu_device")
    root_json = None
    for graph in meta_graph.get(7) or []:          # object_graph_def: SavedObjectGraph
        for node_raw in fields(graph).get(1) or []:  # nodes: SavedObject
            node = fields(node_raw)
            for user_raw in node.get(4) or []:       # user_object: SavedUserObject
                user = fields(user_raw)
                ident = _first_text(user, 1) or ""
                metadata = _first_text(user, 3)
                if metadata and ident in ("_tf_keras_model", "_tf_keras_network",
                                          "_tf_keras_sequential") and root_json is None:
                    root_json = metadata
    return root_json


def _parse_keras_metadata(data: bytes) -> Optional[str]:
    """``SavedMetadata.nodes[]``: the node whose path is ``root`` holds the model's JSON."""
    first = None
    for node_raw in fields(data).get(1) or []:
        node = fields(node_raw)
        path = _first_text(node, 3)
        metadata = _first_text(node, 5)
        if metadata and first is None:
            first = metadata
        if path == "root" and metadata:
            return metadata
    return first


def _apply_keras_root(text: str, info: ModelFileInfo) -> None:
    try:
        root = json.loads(text)
    except ValueError:
        info.notes.append("Keras metadata is not valid JSON")
        return
    if not isinstance(root, dict):
        return
    info.keras_version = info.keras_version or _s(root.get("keras_version"))
    info.backend = info.backend or _s(root.get("backend"))
    info.model_class = info.model_class or _s(root.get("class_name"))
    config = root.get("model_config") or ({"class_name": root.get("class_name"),
                                           "config": root.get("config")} if root.get("config") else None)
    if config:
        walk_config(config, info)
    if root.get("training_config"):
        info.training_config = summarize_training_config(root["training_config"])


def _s(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# --------------------------------------------------------------------------------------------
# H5
# --------------------------------------------------------------------------------------------

def _read_h5(path: Path, info: ModelFileInfo) -> None:
    try:
        import h5py  # noqa: F401 - optional: the host may not have it
    except ImportError:
        info.notes.append("h5py not installed: the H5 attributes (Keras version, config) were not "
                          "read (pip install h5py)")
        return
    try:
        with h5py.File(str(path), "r") as fh:
            attrs = fh.attrs
            info.keras_version = _s(attrs.get("keras_version"))
            info.backend = _s(attrs.get("backend"))
            raw_config = attrs.get("model_config")
            raw_training = attrs.get("training_config")
            info.optimizer_weights = "optimizer_weights" in fh
            if "model_weights" in fh:
                sub = fh["model_weights"].attrs
                info.keras_version = info.keras_version or _s(sub.get("keras_version"))
                info.backend = info.backend or _s(sub.get("backend"))
            weights_only = raw_config is None and ("layer_names" in attrs or "model_weights" not in fh)
    except (OSError, ValueError) as e:
        info.problems.append(f"HDF5 file could not be opened ({e})")
        return
    if weights_only:
        info.weights_only = True
        info.problems.append(f"No model config found in the file at {path}. (a weights-only file: "
                             "rebuild the model in code and call load_weights)")
        return
    if raw_config is not None:
        try:
            config = json.loads(_s(raw_config) or "null")
        except ValueError:
            info.notes.append("model_config attribute is not valid JSON")
            config = None
        if config:
            info.model_class = _s(config.get("class_name")) if isinstance(config, dict) else None
            walk_config(config, info)
    if raw_training is not None:
        try:
            info.training_config = summarize_training_config(json.loads(_s(raw_training) or "null"))
        except ValueError:
            info.notes.append("training_config attribute is not valid JSON")


# --------------------------------------------------------------------------------------------
# .keras zip
# --------------------------------------------------------------------------------------------

def _unsafe_name(name: str) -> bool:
    norm = name.replace("\\", "/")
    return (norm.startswith("/") or bool(re.match(r"^[A-Za-z]:", norm))
            or ".." in norm.split("/") or "\x00" in norm)


def _read_member(zf: zipfile.ZipFile, name: str, info: ModelFileInfo) -> Optional[bytes]:
    try:
        zi = zf.getinfo(name)
    except KeyError:
        return None
    if zi.file_size > MAX_JSON_BYTES:
        info.problems.append(f"{name} in the zip is larger than {MAX_JSON_BYTES >> 20} MiB: refused")
        return None
    with zf.open(zi) as fh:
        data = fh.read(MAX_JSON_BYTES + 1)   # the header's size can lie: cap what is inflated
    if len(data) > MAX_JSON_BYTES:
        info.problems.append(f"{name} inflates past {MAX_JSON_BYTES >> 20} MiB: refused")
        return None
    return data


def _read_keras_zip(path: Path, info: ModelFileInfo) -> None:
    try:
        zf = zipfile.ZipFile(str(path))
    except (zipfile.BadZipFile, OSError) as e:
        info.problems.append(f"not a readable zip ({e})")
        return
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            info.problems.append(f"zip has {len(infos)} entries: refused")
            return
        bad = [zi.filename for zi in infos if _unsafe_name(zi.filename)]
        if bad:
            info.problems.append("zip has entries with absolute or '..' names (refused, not read): "
                                 + ", ".join(sorted(bad)[:5]))
            return
        names = {zi.filename for zi in infos}
        if "config.json" not in names:
            info.problems.append("zip has no config.json: not a .keras model")
            return
        meta = _read_member(zf, "metadata.json", info)
        config_raw = _read_member(zf, "config.json", info)
    if meta:
        try:
            m = json.loads(meta.decode("utf-8", "replace"))
            info.keras_version = _s(m.get("keras_version"))
            info.date_saved = _s(m.get("date_saved"))
        except (ValueError, AttributeError):
            info.notes.append("metadata.json is not valid JSON")
    if config_raw:
        try:
            config = json.loads(config_raw.decode("utf-8", "replace"))
        except ValueError:
            info.notes.append("config.json is not valid JSON")
            return
        if isinstance(config, dict):
            info.model_class = _s(config.get("class_name"))
            walk_config(config, info)
            if config.get("compile_config"):
                info.training_config = summarize_training_config(config["compile_config"])


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------

def is_builtin(class_name: str, module: Optional[str] = None) -> bool:
    """Built into Keras: a known name, or (Keras 3 configs) a ``keras.*`` module."""
    if ">" in class_name:
        return False
    if module is not None and _FRAMEWORK_MODULE.match(module):
        return True
    return class_name in BUILTIN_NAMES or (class_name.startswith("__") and class_name.endswith("__"))


def walk_config(config: Any, info: ModelFileInfo, _depth: int = 0) -> None:
    """Collect class names, custom classes, registered names, modules, Lambda layers and the
    markers of FAILURES.md classes 8a/8d from a model config (any nesting)."""
    if _depth > 200:
        return
    if isinstance(config, list):
        for item in config:
            walk_config(item, info, _depth + 1)
        return
    if not isinstance(config, dict):
        return
    cname = config.get("class_name")
    module = config.get("module") if isinstance(config.get("module"), str) else None
    registered = config.get("registered_name") if isinstance(config.get("registered_name"), str) else None
    if isinstance(cname, str):
        info.class_names.append(cname)
        if module:
            info.config_modules.append(module)
        if cname == "function" and isinstance(config.get("config"), str):
            # Keras 3 serialized function: builtin when its module is keras.*
            if module and not _FRAMEWORK_MODULE.match(module):
                info.custom_classes.append(registered if registered and ">" in registered else config["config"])
        elif not is_builtin(cname, module):
            info.custom_classes.append(cname)
        for name in (cname, registered or ""):
            if ">" in name:
                info.registered_names.append(name)
        inner = config.get("config")
        if cname == "Lambda" and isinstance(inner, dict):
            _lambda(inner, info)
        if cname in ("Sequential", "Model", "Functional") and isinstance(inner, list):
            info.markers.append("list_config")       # pre-TF-2 Sequential: a bare list of layers
        if cname in ("DTypePolicy", "FloatDTypePolicy") and module:
            info.markers.append("dtype_policy")
    for key, value in config.items():
        if key == "batch_shape":
            info.markers.append("batch_shape")
        elif key == "input_dtype":
            info.markers.append("input_dtype")
        elif key in _ACTIVATION_KEYS and isinstance(value, str) and value not in BUILTIN_NAMES:
            info.custom_classes.append(value)
        if isinstance(value, (dict, list)):
            walk_config(value, info, _depth + 1)


def _lambda(cfg: Dict[str, Any], info: ModelFileInfo) -> None:
    name = str(cfg.get("name") or "lambda")
    fn = cfg.get("function")
    ftype = cfg.get("function_type")
    code = None
    if isinstance(fn, dict) and fn.get("class_name") == "__lambda__":
        ftype = "__lambda__"
        code = (fn.get("config") or {}).get("code")
    elif ftype == "lambda":
        if isinstance(fn, (list, tuple)) and fn:
            code = fn[0]
        elif isinstance(fn, str):
            code = fn
    info.lambdas.append(LambdaInfo(layer=name, function_type=str(ftype or "unknown"),
                                   code=code if isinstance(code, str) else None,
                                   has_output_shape=cfg.get("output_shape") is not None))


def _loss_names(value: Any) -> List[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        if "class_name" in value:
            cfg = value.get("config")
            if value.get("class_name") == "function" and isinstance(cfg, str):
                return [cfg]
            return []
        return [n for v in value.values() for n in _loss_names(v)]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _loss_names(v)]
    return []


def summarize_training_config(tc: Any) -> Optional[TrainingConfigSummary]:
    """The parts of ``training_config`` (H5/SavedModel) or ``compile_config`` (.keras) that
    decide whether compile=True loading works in another Keras."""
    if not isinstance(tc, dict):
        return None
    out = TrainingConfigSummary()
    opt = tc.get("optimizer_config") or tc.get("optimizer")
    if isinstance(opt, dict):
        out.optimizer = _s(opt.get("class_name"))
        cfg = opt.get("config") if isinstance(opt.get("config"), dict) else {}
        out.optimizer_keys = sorted(cfg)
        out.legacy_keys = sorted(k for k in ("lr", "decay") if k in cfg)
        if "is_legacy_optimizer" in cfg:
            out.is_legacy_optimizer = bool(cfg["is_legacy_optimizer"])
        lr = cfg.get("learning_rate")
        if isinstance(lr, dict) and lr.get("class_name"):
            out.schedule = _s(lr.get("class_name"))
    elif isinstance(opt, str):
        out.optimizer = opt
    out.losses = sorted(set(_loss_names(tc.get("loss"))))
    out.metrics = sorted(set(_loss_names(tc.get("metrics")) + _loss_names(tc.get("weighted_metrics"))))
    return out


def describe(info: ModelFileInfo) -> str:
    """Human summary for ``envrepro inspect`` on a model without a capture."""
    rows = [f"model        {info.path}", f"format       {info.format or 'unknown'}"]

    def row(label: str, value: Any) -> None:
        if value not in (None, "", [], False):
            rows.append(f"{label:<13}{value}")

    row("tensorflow", info.tensorflow_version and f"{info.tensorflow_version}"
        + (f" ({info.tensorflow_git_version})" if info.tensorflow_git_version else ""))
    row("keras", info.keras_version)
    row("backend", info.backend)
    row("saved", info.date_saved)
    row("model class", info.model_class)
    row("custom", ", ".join(info.custom_classes))
    row("registered", ", ".join(info.registered_names))
    row("custom ops", ", ".join(info.custom_ops))
    row("lambdas", ", ".join(f"{l.layer} ({l.function_type})" for l in info.lambdas))
    tc = info.training_config
    if tc:
        bits = [f"optimizer {tc.optimizer}"] if tc.optimizer else []
        if tc.legacy_keys:
            bits.append("Keras-2 keys " + ", ".join(tc.legacy_keys))
        if tc.losses:
            bits.append("loss " + ", ".join(tc.losses))
        if tc.metrics:
            bits.append("metrics " + ", ".join(tc.metrics))
        row("compiled", "; ".join(bits) or "yes")
    row("markers", ", ".join(info.markers))
    for p in info.problems:
        rows.append(f"{'PROBLEM':<13}{p}")
    for n in info.notes:
        rows.append(f"{'note':<13}{n}")
    return "\n".join(rows) + "\n"
