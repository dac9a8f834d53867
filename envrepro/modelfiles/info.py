"""What a saved model's own files say about how (and by what) they were written: the value every
reader of this room fills in (``savedmodel``, ``h5file``, ``kerasarchive``, through
``kerasconfig``) and ``read.read_model_file`` returns.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class TrainingConfigSummary:
    """What the compile() config asks of the loader (docs/failures.md classes 4a, 4b, 4c)."""

    optimizer: Optional[str] = None          # optimizer_config.class_name ('Adam', 'Custom>Adam')
    optimizer_keys: List[str] = field(default_factory=list)
    legacy_keys: List[str] = field(default_factory=list)   # 'lr', 'decay' (Keras 2 only)
    losses: List[str] = field(default_factory=list)        # string losses ('mse')
    metrics: List[str] = field(default_factory=list)       # string metrics
    is_legacy_optimizer: Optional[bool] = None
    schedule: Optional[str] = None           # learning_rate schedule class_name


@dataclass
class LambdaInfo:
    """A Lambda layer: its function is bytecode or source of the saving Python (class 5)."""

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
    named_by: Dict[str, str] = field(default_factory=dict)       # custom name -> where the config names it
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
