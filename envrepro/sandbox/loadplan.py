"""The plan contract between host and loader: where things are inside the container and what
the in-container loader (``envrepro/runtime/loader.py``) is asked to do.

The plan is JSON the loader reads from ``ENVREPRO_PLAN``; ``PLAN_VERSION`` changes with its shape.
It is built from the manifest alone (docs/format.md), with container paths, never host paths.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from envrepro.runtime import launch
from envrepro.sidecar import layout, manifest

PLAN_VERSION = 1
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4


@dataclass(frozen=True)
class ContainerPaths:
    """Where the model, the capture and the runtime scripts appear inside the container."""

    model: str
    capture: str = layout.CAPTURE_MOUNT
    runtime: str = launch.CONTAINER_DIR

    @property
    def snapshot(self) -> str:
        return f"{self.capture}/{layout.SNAPSHOT_DIR}"

    def in_capture(self, rel: str) -> str:
        return f"{self.capture}/{rel.lstrip('/')}"


def container_paths(capture: manifest.Capture) -> ContainerPaths:
    """The model keeps its file name (Keras 3 dispatches on the ``.keras``/``.h5`` suffix)."""
    return ContainerPaths(model=f"{layout.MODEL_MOUNT}/{capture.model_path.name}")


def make_plan(capture: manifest.Capture, container_paths: ContainerPaths,
              unsafe: bool = False) -> Dict[str, Any]:
    """The loader's instructions, from the manifest, with container paths.

    Keras 3's safe_mode stays on unless the user passed ``--unsafe``: the plan always carries it
    and the loader passes it to every ``load_model`` that accepts it. ``recipe`` is the way
    load_model worked at capture (runtime/recipes.py), None for captures that predate it: the
    loader then makes the one call it always made.

    An inferred capture (``capture --infer``) has no reference from the training environment; one
    in its manifest could only have been made elsewhere, so none is passed on. ``drift`` asks the
    loader to compare the source tree's classes with the SavedModel's traced graphs instead
    (runtime/drift.py). Nothing loaded an inferred model at capture, so no recipe was recorded:
    ``all_recipes`` asks the loader to try them all, in order.
    """
    paths = container_paths
    inferred = bool(capture.get("inferred"))
    ref = capture.get("reference")
    plan_ref = None
    if isinstance(ref, dict) and ref.get("inputs") and not inferred:
        tol = ref.get("tolerance") or {}
        plan_ref = {
            "inputs": [paths.in_capture(p) for p in ref.get("inputs") or []],
            "outputs": [paths.in_capture(p) for p in ref.get("outputs") or []],
            "input_structure": ref.get("input_structure") or "single",
            "input_names": list(ref.get("input_names") or []),
            "output_structure": ref.get("output_structure") or "single",
            "output_names": list(ref.get("output_names") or []),
            "atol": float(tol.get("atol", DEFAULT_ATOL)),
            "rtol": float(tol.get("rtol", DEFAULT_RTOL)),
        }
    opt = capture.get("optimizer")
    plan_opt = None
    if isinstance(opt, dict) and opt.get("class"):
        plan_opt = {k: opt.get(k) for k in ("class", "iterations", "state_saved", "num_weights")}
        # What the saved file holds (runtime/savedstate), in captures that recorded it only:
        # without these keys the loader keeps the old comparison.
        plan_opt.update((k, opt[k]) for k in ("saved_variables", "saved_iterations") if k in opt)
        # What the training environment's own load_model restored from the file: the loader
        # compares with that (like with like); captures without it keep the comparison above.
        if isinstance(opt.get("restored"), dict):
            plan_opt["restored"] = {k: opt["restored"].get(k)
                                    for k in ("class", "iterations", "variables", "via")}
    return {
        "plan_version": PLAN_VERSION,
        "model_path": paths.model,
        "model_name": capture.model_path.name,
        "format": capture.get("model.format"),
        "compile": bool(capture.get("load.compile", True)),
        "recipe": capture.get("load.recipe"),
        "custom_objects": dict(manifest.model_custom_objects(capture)),
        "modules": list(capture.get("load.modules") or []),
        # What the Lambda layers' bytecode expects in the training script's globals (checked by
        # the manifest schema): runtime/lambdaglobals.py gives it to the loader's __main__.
        "lambda_globals": lambda_globals(capture),
        "snapshot_dir": paths.snapshot,
        "keras_flavor": capture.get("frameworks.keras_flavor"),
        "env": captured_env(capture),
        "safe_mode": not unsafe,
        "reference": plan_ref,
        "optimizer": plan_opt,
        "resume_check": plan_resume(capture, paths),
        "drift": inferred,
        "all_recipes": inferred,
    }


def lambda_globals(capture: manifest.Capture) -> Dict[str, Any]:
    """The names the capture recorded for its Lambda layers' functions, merged (first wins)."""
    out: Dict[str, Any] = {}
    for record in capture.get("load.lambdas") or []:
        for name, entry in sorted((record.get("globals") or {}).items()):
            out.setdefault(name, dict(entry))
    return out


def plan_resume(capture: manifest.Capture, paths: ContainerPaths) -> Optional[Dict[str, Any]]:
    """The training step recorded at capture, for the loader to replay (runtime/resume.py); None
    for captures without one. The manifest reader has checked its values (manifest.check_resume).
    The targets take the structure of the reference outputs they were made from."""
    resume = capture.get("resume_check")
    if not isinstance(resume, dict):
        return None
    if "skipped" in resume:
        return {"skipped": resume["skipped"]}
    ref = capture.get("reference") or {}
    weights_file = resume.get("weights_file")
    return {
        "loss": float(resume["loss"]),
        "iterations": int(resume["iterations"]),
        "seed": int(resume["seed"]),
        "targets": [paths.in_capture(p) for p in resume["targets"]],
        "target_structure": ref.get("output_structure") or "single",
        "target_names": list(ref.get("output_names") or []),
        "weights_file": paths.in_capture(weights_file) if weights_file else None,
        "weights": dict(resume["weights"]),
        "atol": float(resume["atol"]),
        "rtol": float(resume["rtol"]),
    }


def captured_env(capture: manifest.Capture) -> Dict[str, str]:
    """Variables that change what TF/Keras load (TF_USE_LEGACY_KERAS, KERAS_BACKEND): set ones only.
    The reader refused any other name (sidecar/schema.py); the allowlist is applied here again."""
    from envrepro.sidecar.schema import ENV_ALLOWED

    env = capture.get("env") or {}
    return {str(k): str(v) for k, v in sorted(env.items()) if v is not None and k in ENV_ALLOWED}
