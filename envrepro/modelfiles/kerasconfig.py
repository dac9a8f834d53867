"""What a Keras model config says: class names, custom objects, Lambda layers, the compile config.

Every format ends in the same JSON (SavedModel's Keras metadata, H5's ``model_config`` attribute,
.keras's ``config.json``), so one walker reads all of them. Whether a class is Keras's own decides
whether loading needs the user's code: ``BUILTIN_NAMES`` is that table. The compile config decides
whether ``compile=True`` loading works in another Keras (docs/failures.md classes 4a, 4b, 4c).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from envrepro.modelfiles.info import LambdaInfo, ModelFileInfo, TrainingConfigSummary

MAX_JSON_BYTES = 64 * 1024 * 1024      # a Keras JSON read whole: config.json / metadata.json / keras_metadata.pb

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
ce cosine cosine_proximity glorot_uniform glorot_normal he_normal he_uniform lecun_normal
lecun_uniform zeros ones random_normal random_uniform truncated_normal variance_scaling identity
constant uniform normal
"""
BUILTIN_NAMES = frozenset(_BUILTIN_TEXT.split())
_FRAMEWORK_MODULE = re.compile(r"^(keras|tf_keras|tensorflow)(\.|$)")
# Keys whose string value names a function Keras looks up by name: a custom one when it is not
# Keras's own (an activation given as a function, a MeanMetricWrapper's ``fn``, an initializer,
# regularizer or constraint given as a function, a loss or metric of the training config, given
# as one string or as lists/dicts of them per output).
_NAME_KEYS = ("activation", "recurrent_activation", "fn", "loss", "metrics", "weighted_metrics")
_NAME_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
TRAINING_CONFIG = "training_config"


def as_str(value: Any) -> Optional[str]:
    """An attribute or JSON value as text: h5py returns bytes or str depending on its version."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def is_builtin(class_name: str, module: Optional[str] = None) -> bool:
    """Built into Keras: a known name, or (Keras 3 configs) a ``keras.*`` module."""
    if ">" in class_name:
        return False
    if module is not None and _FRAMEWORK_MODULE.match(module):
        return True
    return class_name in BUILTIN_NAMES or (class_name.startswith("__") and class_name.endswith("__"))


def _custom(info: ModelFileInfo, name: str, where: str) -> None:
    info.custom_classes.append(name)
    info.named_by.setdefault(name, where)


def _names(value: Any) -> List[str]:
    """The plain strings of a name key's value: one, or lists/dicts of them (per output); dicts
    with a ``class_name`` are configs, walked as such."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) and "class_name" not in value:
        return [n for v in value.values() for n in _names(v)]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _names(v)]
    return []


def _is_name_key(key: str) -> bool:
    return key in _NAME_KEYS or key.endswith(_NAME_SUFFIXES)


def keras_registration(name: str) -> bool:
    """Keras's own registered name: TF 2.11+ optimizers save as ``Custom>Adam``."""
    package, _, short = name.partition(">")
    return package == "Custom" and short in BUILTIN_NAMES


def walk_config(config: Any, info: ModelFileInfo, _depth: int = 0, owner: str = "the model") -> None:
    """Collect class names, custom classes (each with where it is named: ``info.named_by``),
    registered names, modules, Lambda layers and the markers of docs/failures.md classes 8a/8d
    from a model config, a layer's SavedModel metadata or a training config (any nesting).
    ``owner`` says where the config is: a layer's name is added as the walk goes down, except
    under the training config (``owner=TRAINING_CONFIG``)."""
    if _depth > 200:
        return
    if isinstance(config, list):
        for item in config:
            walk_config(item, info, _depth + 1, owner)
        return
    if not isinstance(config, dict):
        return
    cname = config.get("class_name")
    module = config.get("module") if isinstance(config.get("module"), str) else None
    registered = config.get("registered_name") if isinstance(config.get("registered_name"), str) else None
    inner = config.get("config")
    if isinstance(cname, str) and owner != TRAINING_CONFIG:
        lname = inner.get("name") if isinstance(inner, dict) else config.get("name")
        owner = f"layer '{lname}'" if isinstance(lname, str) and lname else owner
    if isinstance(cname, str):
        info.class_names.append(cname)
        if module:
            info.config_modules.append(module)
        if cname == "function" and isinstance(inner, str):
            # Keras 3 serialized function: builtin when its module is keras.*
            if module and not _FRAMEWORK_MODULE.match(module):
                _custom(info, registered if registered and ">" in registered else inner, f"function in {owner}")
        elif not is_builtin(cname, module) and not keras_registration(cname):
            _custom(info, cname, f"class of {owner}")
        for name in (cname, registered or ""):
            if ">" in name and not keras_registration(name):
                info.registered_names.append(name)
        if cname == "Lambda" and isinstance(inner, dict):
            _lambda_layer(inner, info)
        if cname in ("Sequential", "Model", "Functional") and isinstance(inner, list):
            info.markers.append("list_config")       # pre-TF-2 Sequential: a bare list of layers
        if cname in ("DTypePolicy", "FloatDTypePolicy") and module:
            info.markers.append("dtype_policy")
    for key, value in config.items():
        if key == "batch_shape":
            info.markers.append("batch_shape")
        elif key == "input_dtype":
            info.markers.append("input_dtype")
        elif _is_name_key(key):
            for name in _names(value):
                if name and not is_builtin(name) and not keras_registration(name):
                    _custom(info, name, f"{key} of {owner}")
                    if ">" in name:
                        info.registered_names.append(name)
        if isinstance(value, (dict, list)):
            walk_config(value, info, _depth + 1, owner)


def _lambda_layer(cfg: Dict[str, Any], info: ModelFileInfo) -> None:
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
        out.optimizer = as_str(opt.get("class_name"))
        cfg = opt.get("config") if isinstance(opt.get("config"), dict) else {}
        out.optimizer_keys = sorted(cfg)
        out.legacy_keys = sorted(k for k in ("lr", "decay") if k in cfg)
        if "is_legacy_optimizer" in cfg:
            out.is_legacy_optimizer = bool(cfg["is_legacy_optimizer"])
        lr = cfg.get("learning_rate")
        if isinstance(lr, dict) and lr.get("class_name"):
            out.schedule = as_str(lr.get("class_name"))
    elif isinstance(opt, str):
        out.optimizer = opt
    out.losses = sorted(set(_loss_names(tc.get("loss"))))
    out.metrics = sorted(set(_loss_names(tc.get("metrics")) + _loss_names(tc.get("weighted_metrics"))))
    return out
