"""The doctor's side of the failure catalogue: a static detector for each class of docs/failures.md.

The classes themselves (ids, titles, the exact messages users see, versions, fixes, the error
needles) are one table in envrepro/runtime/failures.py, shared with the loader that classifies
errors inside containers. Here each class gets a detector that looks only at facts gathered
without importing TensorFlow: what the model file says
(:class:`~envrepro.modelfiles.read.ModelFileInfo`), the saving environment (capture, or
inferred) and the target environment (probe facts). ``classify_exception`` maps a real error from
``--try`` back to a class through the same table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from envrepro.packages.tfversions import for_tf, minor_of, vtuple
from envrepro.diagnose.findings import ERROR, WARNING
from envrepro.modelfiles.read import ModelFileInfo
from envrepro.runtime import failures

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


Detector = Callable[[Context], List[Hit]]


def _no_detector(ctx: Context) -> List[Hit]:
    return []


@dataclass(frozen=True)
class FailureClass:
    """A class of runtime/failures.py (its fields read through: id, title, message, versions, fix,
    sources, needles) with the detector that sees it coming."""

    failure: failures.Failure
    detect: Detector = field(compare=False, default=_no_detector)

    def __getattr__(self, name: str) -> Any:
        if name == "failure":          # not set yet (copy/unpickle): don't recurse
            raise AttributeError(name)
        return getattr(self.failure, name)


def _keras3(env: Env) -> bool:
    """load_model there is Keras 3 (TF >= 2.16 without legacy switch, or TF 2.15 + keras 3)."""
    if env.keras_flavor == "keras3":
        return True
    kv = vtuple(env.packages.get("keras"))
    return env.tf == (2, 15) and bool(kv) and kv[0] >= 3 and env.keras_flavor != "tf_keras"


def _tf_known(env: Env) -> bool:
    return len(env.tf) == 2


# -- detectors ------------------------------------------------------------------------------

def _keras3_refuses_legacy_savedmodel(ctx: Context) -> List[Hit]:
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


def _custom_objects_unavailable(ctx: Context) -> List[Hit]:
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


def _h5py3_with_old_tf(ctx: Context) -> List[Hit]:
    h5 = ctx.target.packages.get("h5py")
    if ctx.info.format == "h5" and _tf_known(ctx.target) and ctx.target.tf < (2, 5) \
            and vtuple(h5)[:1] >= (3,):
        return [Hit(ERROR, f"TensorFlow {ctx.target.tensorflow} reads H5 attributes as bytes, "
                           f"h5py {h5} returns str")]
    return []


def _new_optimizer_in_old_tf(ctx: Context) -> List[Hit]:
    tc = ctx.info.training_config
    if not tc or not ctx.compile or not _tf_known(ctx.target) or ctx.target.tf > (2, 10):
        return []
    if (tc.optimizer or "").startswith("Custom>") or tc.is_legacy_optimizer is False:
        return [Hit(ERROR, f"optimizer {tc.optimizer} was saved by TF >= 2.11; "
                           f"TensorFlow {ctx.target.tensorflow} doesn't know it",
                    message=f"ValueError: Unknown optimizer: {tc.optimizer}")]
    return []


def _legacy_optimizer_state_in_new_tf(ctx: Context) -> List[Hit]:
    tc = ctx.info.training_config
    if not tc or not ctx.compile or not ctx.info.optimizer_weights or _keras3(ctx.target):
        return []
    saved_old = (_tf_known(ctx.saved) and ctx.saved.tf <= (2, 10)) or \
        (not _tf_known(ctx.saved) and tc.is_legacy_optimizer is None)
    if saved_old and _tf_known(ctx.target) and ctx.target.tf >= (2, 11):
        return [Hit(WARNING, "optimizer state saved by TF <= 2.10, restored into a v2.11+ optimizer")]
    return []


def _keras2_compile_config_in_keras3(ctx: Context) -> List[Hit]:
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


def _lambda_bytecode_or_safe_mode(ctx: Context) -> List[Hit]:
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


def _numpy_too_new_for_tf(ctx: Context) -> List[Hit]:
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


def _protobuf_too_new_for_tf(ctx: Context) -> List[Hit]:
    pb, t = vtuple(ctx.target.packages.get("protobuf")), ctx.target
    if pb and _tf_known(t) and t.tf <= (2, 11) and pb[:2] >= (4, 21):
        return [Hit(ERROR, f"protobuf {t.packages['protobuf']} with TensorFlow {t.tensorflow}")]
    return []


def _tensorflow_addons_unavailable(ctx: Context) -> List[Hit]:
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


def _ops_not_registered(ctx: Context) -> List[Hit]:
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


def _gpu_ops_without_gpu(ctx: Context) -> List[Hit]:
    cudnn = [o for o in ctx.info.ops if o.startswith("Cudnn")]
    gpu_pinned = "gpu_device" in ctx.info.markers
    if not (cudnn or gpu_pinned) or ctx.target.gpu:
        return []
    what = ("GPU-only ops " + ", ".join(cudnn)) if cudnn else "nodes pinned to /device:GPU"
    return [Hit(WARNING if not cudnn else ERROR, f"{what} in the graph; no GPU in this environment")]


def _cudnn_mismatch(ctx: Context) -> List[Hit]:
    row = for_tf(ctx.target.tensorflow)
    have = next((v for k, v in ctx.target.packages.items() if k.startswith("nvidia-cudnn-cu")), None)
    if not row or not have or not row.get("cudnn"):
        return []
    if vtuple(have)[:1] != vtuple(str(row["cudnn"]))[:1]:
        return [Hit(WARNING, f"cuDNN {have} installed; TensorFlow {ctx.target.tensorflow} was built "
                             f"with cuDNN {row['cudnn']} / CUDA {row['cuda']}")]
    return []


def _keras3_file_in_keras2(ctx: Context) -> List[Hit]:
    i, t = ctx.info, ctx.target
    k3 = (i.keras_major or 0) >= 3 or any(m.startswith("keras.src.models") for m in i.config_modules)
    if not k3 or _keras3(t) or not (t.tensorflow or t.keras):
        return []
    msg = ("TypeError: Could not deserialize class 'Functional' because its parent module "
           "keras.src.models.functional cannot be imported" if i.format == "keras"
           else "ValueError: Unrecognized keyword arguments: ['batch_shape']")
    return [Hit(ERROR, f"saved by Keras {i.keras_version or '3'}, load_model here is Keras 2 "
                       f"({t.keras or t.tensorflow})", message=msg)]


def _keras2_archive_in_keras3(ctx: Context) -> List[Hit]:
    i = ctx.info
    if i.format != "keras" or not _keras3(ctx.target):
        return []
    k = vtuple(i.keras_version)
    if (k[:1] == (2,) and k[:2] >= (2, 13)) or any(m.startswith("keras.src.engine") for m in i.config_modules):
        return [Hit(WARNING, f".keras file written by Keras {i.keras_version} (2.13-2.15 layout), "
                             "loaded by Keras 3 (reported broken in 3.0.x; unconfirmed for current 3.x)")]
    return []


def _functional_unknown_to_old_keras(ctx: Context) -> List[Hit]:
    t = ctx.target
    if ctx.info.model_class == "Functional" and _tf_known(t) and t.tf <= (2, 2):
        return [Hit(ERROR, f"class 'Functional' (TF >= 2.3) with TensorFlow {t.tensorflow}")]
    return []


def _ancient_config(ctx: Context) -> List[Hit]:
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


def _not_a_model(ctx: Context) -> List[Hit]:
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


# class id -> the detector that sees it coming; the ids, texts and fixes are runtime/failures.py's.
DETECTORS: Dict[str, Detector] = {
    "1": _keras3_refuses_legacy_savedmodel,
    "2": _custom_objects_unavailable,
    "3": _h5py3_with_old_tf,
    "4a": _new_optimizer_in_old_tf,
    "4b": _legacy_optimizer_state_in_new_tf,
    "4c": _keras2_compile_config_in_keras3,
    "5": _lambda_bytecode_or_safe_mode,
    "6a": _numpy_too_new_for_tf,
    "6b": _protobuf_too_new_for_tf,
    "6c": _tensorflow_addons_unavailable,
    "7a": _ops_not_registered,
    "7b": _gpu_ops_without_gpu,
    "7c": _cudnn_mismatch,
    "8a": _keras3_file_in_keras2,
    "8b": _keras2_archive_in_keras3,
    "8c": _functional_unknown_to_old_keras,
    "8d": _ancient_config,
    "8e": _not_a_model,
}

BY_ID: Dict[str, FailureClass] = {f.id: FailureClass(f, DETECTORS.get(f.id, _no_detector))
                                  for f in failures.FAILURES}
CLASSES: Tuple[FailureClass, ...] = tuple(BY_ID[cid] for cid in DETECTORS)   # the detected ones


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
    """The class id of a load_model error (``--try``), or None when it is not catalogued (the
    loader's rule: runtime/failures.py, longest matching needle wins)."""
    failure = failures.match(f"{type_name}: {message}")
    return failure.id if failure else None


def table_rows() -> List[Dict[str, Any]]:
    """The catalogue as plain data (for --json and docs)."""
    return [{"id": f.id, "title": f.title, "message": f.message, "versions": f.versions,
             "fix": f.fix, "sources": list(f.sources)} for f in failures.FAILURES]
