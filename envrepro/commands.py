"""One function per ``envrepro`` command; each returns a result object and prints nothing.

``cli.py`` wires typer options to these and hands the result to ``render.emit``, which prints it
as text or JSON and gives the exit code. Interactive commands (``run``, ``shell``) stream the
container's own output to the terminal and return only its exit code. The commands that carry a
model elsewhere (``sign``, ``verify``, ``bundle``, ``push``) are ``sharecommands.py``; what both
modules share (the engine, ``--gpus``, the signature gate, progress) is ``commandbase.py``.

Order matters for the user's errors: the capture is checked first (bad input, exit 2) and the
engine second (exit 3), so a broken capture is reported even on a machine without Docker.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from envrepro import errors
from envrepro.commandbase import (EngineFactory, engine_factory_or_default, progress_reporter, signed,
                                  wants_gpus)
from envrepro.engine.base import ContainerEngine
from envrepro.sidecar import layout, manifest, recovery

if TYPE_CHECKING:
    from envrepro.reporter import Reporter
    from envrepro.image.inventory import ImageRow, PruneResult
    from envrepro.image.ensure import ImageInfo
    from envrepro.capturing.capture import CaptureResult
    from envrepro.diagnose.doctor import DoctorReport
    from envrepro.modelfiles.read import ModelFileInfo
    from envrepro.sandbox.report import LoadReport
    from envrepro.serving.image import ServeBuild


@dataclass
class Exited:
    """``run``/``shell``: the output already went to the terminal; only the exit code remains."""

    exit_code: int


@dataclass
class DockerfileText:
    text: str


@dataclass
class KubernetesManifests:
    """``k8s``: the Deployment, Service, HorizontalPodAutoscaler and NetworkPolicy, printed as one YAML stream."""

    documents: List[Dict[str, Any]]

    def to_dict(self) -> Dict[str, Any]:
        return {"apiVersion": "v1", "kind": "List", "items": self.documents}


@dataclass
class Inspection:
    """``inspect``: a capture, or for a model saved without envrepro what its files say."""

    model: str
    capture: Optional[manifest.Capture] = None
    file_info: Optional[ModelFileInfo] = None   # when there is no capture


@dataclass
class ImageList:
    rows: List[ImageRow]


# --------------------------------------------------------------------------------------------
# capture side: no Docker
# --------------------------------------------------------------------------------------------

def capture(model: str, python: str, modules: Sequence[str] = (), code_paths: Sequence[str] = (),
            sample: Optional[str] = None, no_hashes: bool = False, infer: bool = False,
            timeout: Optional[float] = None, resume_check: bool = False) -> CaptureResult:
    """``envrepro capture``: probe the training interpreter (or, with ``infer``, read the model's
    files) and write ``MODEL.envrepro/``; the probe is stopped after ``timeout`` seconds (the
    setting when None). Returns the CaptureResult."""
    hashes = False if no_hashes else None
    if infer and resume_check:
        from envrepro.errors import CaptureError

        raise CaptureError("--resume-check needs the training environment, which --infer has not",
                           model, "capture with --python TRAINING_PYTHON --resume-check")
    if infer:
        from envrepro.capturing.infer import infer_capture

        return infer_capture(model, code_paths=code_paths, hashes=hashes)
    from envrepro.capturing.capture import capture as do_capture

    return do_capture(model, python=python, modules=modules, code_paths=code_paths, hashes=hashes,
                      sample_file=sample, timeout=timeout, resume_check=resume_check)


def inspect(model: str) -> Inspection:
    model_path = layout.resolve_model(model)
    sidecar = layout.sidecar_for(model_path)
    recovery.recover(sidecar)        # a capture killed while replacing this one is put back first
    if sidecar.exists():
        return Inspection(model, capture=manifest.read(sidecar))
    from envrepro.modelfiles.read import read_model_file

    return Inspection(model, file_info=read_model_file(model_path))


def doctor(model: str, python: Optional[str] = None, try_load: bool = False,
           code_paths: Sequence[str] = ()) -> DoctorReport:
    from envrepro.diagnose.doctor import diagnose

    if try_load:                       # --try imports the capture's code on this host
        signed(model)
    return diagnose(model, python=python, try_load=try_load, code_paths=code_paths)


# --------------------------------------------------------------------------------------------
# load side: capture -> image -> sandbox
# --------------------------------------------------------------------------------------------

@dataclass
class _Environment:
    """What load, run and shell all start from: the checked capture, the engine, the image."""

    capture: manifest.Capture
    engine: ContainerEngine
    image: ImageInfo
    gpus: bool


def _environment(model: str, base_image: Optional[str], registry: Optional[str],
                 gpus: Optional[str], engine_factory: Optional[EngineFactory], say: Reporter,
                 allow_model_change: bool = False) -> _Environment:
    """The capture is checked (hash-verified, readable by the sandbox user) before the engine is
    reached and any image built, so a bad capture costs nothing and is exit 2 even without Docker."""
    from envrepro.image import ensure
    from envrepro.sandbox import container as sandbox

    cap = sandbox.prepare(model, allow_model_change=allow_model_change)
    signed(cap)
    engine = engine_factory_or_default(engine_factory)()
    use_gpus = wants_gpus(gpus)
    info = ensure.ensure_image(cap, engine, base_image=base_image, registry=registry, gpus=use_gpus,
                               on_progress=say)
    return _Environment(cap, engine, info, use_gpus)


def load(model: str, base_image: Optional[str] = None, registry: Optional[str] = None,
         gpus: Optional[str] = None, unsafe: bool = False, memory: str = "4g", quiet: bool = False,
         engine_factory: Optional[EngineFactory] = None, debug: bool = False,
         allow_model_change: bool = False, into: Optional[str] = None, verbose: bool = False) -> LoadReport:
    """``envrepro load``: the environment image (found, pulled or built), the model loaded in the
    sandbox and verified. Returns the LoadReport. ``MODEL`` may be a bundle (``FILE.tar``, see
    ``load_bundle``; ``into``: where it is extracted). ``verbose``: the build's output on stderr."""
    from envrepro import progress
    from envrepro.sandbox import container as sandbox

    if into is not None or _is_bundle(model):
        return load_bundle(model, into=into, base_image=base_image, gpus=gpus, unsafe=unsafe, memory=memory,
                           quiet=quiet, engine_factory=engine_factory, debug=debug, verbose=verbose)
    with progress_reporter(quiet, verbose) as say:
        env = _environment(model, base_image, registry, gpus, engine_factory, say,
                           allow_model_change=allow_model_change)
        with progress.step(say, "Loading the model in a sandbox container") as shown:
            report = sandbox.load(env.capture, env.engine, env.image, unsafe=unsafe, json=quiet, memory=memory,
                                  debug=debug, image_seconds=env.image.seconds, gpus=env.gpus)
            if not report.ok:
                shown.fail("the report says why")
        return report


def run(model: str, command: List[str], base_image: Optional[str] = None, memory: str = "4g",
        unsafe: bool = False, engine_factory: Optional[EngineFactory] = None,
        gpus: Optional[str] = None, registry: Optional[str] = None,
        allow_model_change: bool = False, verbose: bool = False) -> Exited:
    from envrepro.image import usage
    from envrepro.sandbox import container as sandbox

    if command and command[0] == "--":
        command = command[1:]
    with progress_reporter(verbose=verbose) as say:  # the command's own output comes next
        env = _environment(model, base_image, registry, gpus, engine_factory, say,
                           allow_model_change=allow_model_change)
    usage.record_use(env.image, env.capture)
    return Exited(sandbox.run_command(env.capture, env.engine, env.image, command, memory=memory,
                                      unsafe=unsafe, gpus=env.gpus))


def shell(model: str, base_image: Optional[str] = None, memory: str = "4g", unsafe: bool = False,
          engine_factory: Optional[EngineFactory] = None, gpus: Optional[str] = None,
          registry: Optional[str] = None, runner: Optional[Callable[[List[str]], int]] = None,
          allow_model_change: bool = False, verbose: bool = False) -> Exited:
    from envrepro.image import usage
    from envrepro.sandbox import container as sandbox

    with progress_reporter(verbose=verbose) as say:  # the shell comes next
        env = _environment(model, base_image, registry, gpus, engine_factory, say,
                           allow_model_change=allow_model_change)
    usage.record_use(env.image, env.capture)
    extra: Dict[str, Any] = {"runner": runner} if runner is not None else {}
    return Exited(sandbox.shell(env.capture, env.image, memory=memory, unsafe=unsafe, gpus=env.gpus,
                                **extra))


def migrate(model: str, out: Optional[str] = None, python: Optional[str] = None, to: Optional[str] = None,
            code_path: Optional[str] = None, unsafe: bool = False, quiet: bool = False,
            engine_factory: Optional[EngineFactory] = None, verbose: bool = False) -> Any:
    """``envrepro migrate``: the model rewritten for a target TensorFlow/Keras, each artifact
    verified there against the capture's reference (``migrating/``). Returns a ``Migration``."""
    from envrepro import progress
    from envrepro.image import ensure
    from envrepro.migrating.migrate import check_inputs, migrate as run_migration
    from envrepro.sandbox import container as sandbox

    cap = sandbox.prepare(model)
    signed(cap)
    inputs = check_inputs(cap, out, python, to, code_path)
    with progress_reporter(quiet, verbose) as say:
        def image(capture: manifest.Capture, engine: ContainerEngine) -> Any:
            return ensure.ensure_image(capture, engine, on_progress=say)

        with progress.step(say, "Migrating: the source exports, the target rebuilds and verifies") as shown:
            result = run_migration(cap, engine_factory_or_default(engine_factory), image, unsafe=unsafe,
                                   say=lambda line: progress.log(say, line), inputs=inputs)
            if result.exit_code:
                shown.fail("the report says why")
        return result


def dockerfile(model: str, base_image: Optional[str] = None, gpus: "Optional[str] | bool" = False,
               serve: bool = False, output: Optional[str] = None, name: Optional[str] = None,
               unsafe: bool = False, allow_model_change: bool = False) -> DockerfileText:
    """``envrepro dockerfile``: no engine needed, the capture is read (and verified) only.
    ``serve``: the serving image's Dockerfile; with ``output`` its whole build context is written
    there (``docker build DIR`` builds it on a machine without envrepro)."""
    from pathlib import Path

    from envrepro.image import ensure

    if not serve:
        if output or name:
            raise errors.EnvreproError("-o and --name go with --serve", None, "envrepro dockerfile MODEL --serve -o DIR")
        cap = manifest.read(layout.sidecar_for(layout.resolve_model(model)))
        return DockerfileText(ensure.dockerfile_for(cap, base_image=base_image, gpus=wants_gpus(gpus)))
    from envrepro.sandbox.container import prepare
    from envrepro.serving import image as serving

    cap = prepare(model, allow_model_change=allow_model_change)
    signed(cap)
    if output is None:
        with tempfile.TemporaryDirectory(prefix="envrepro-serve-ctx-") as tmp:
            serving.write_context(cap, Path(tmp) / "ctx", name, base_image, wants_gpus(gpus), unsafe)
            return DockerfileText((Path(tmp) / "ctx" / "Dockerfile").read_text(encoding="utf-8"))
    ctx = serving.write_context(cap, Path(output), name, base_image, wants_gpus(gpus), unsafe)
    return DockerfileText(f"wrote the build context of {ctx.name} to {output}: "
                          f"docker build -t {ctx.tag} {output}\n")


def build(model: str, serve: bool = True, tag: Optional[str] = None, name: Optional[str] = None,
          base_image: Optional[str] = None, gpus: Optional[str] = None, unsafe: bool = False,
          memory: str = "4g", verify: bool = True, allow_model_change: bool = False,
          engine_factory: Optional[EngineFactory] = None, quiet: bool = False,
          verbose: bool = False) -> "ServeBuild":
    """``envrepro build MODEL --serve``: the serving image, self-checked, tagged when proven. The
    images index records that the capture uses its environment, as a load does, so
    ``envrepro images prune`` keeps the environment and the serving images built on it."""
    from envrepro.image import usage
    from envrepro.sandbox.container import prepare
    from envrepro.serving import image as serving
    from envrepro.serving import orphans

    if not serve:
        raise errors.EnvreproError("envrepro build builds serving images: pass --serve", None,
                                   "envrepro load MODEL builds the environment image")
    serving.check_tag(tag)
    cap = prepare(model, allow_model_change=allow_model_change)
    signed(cap)
    engine = engine_factory_or_default(engine_factory)()
    own = orphans.ownership(engine)
    if own is not None:   # the self-check's containers of a killed build: orphans the next serve or prune removes
        own.label_services(orphans.Owner.current().labels("self-check"))
    with progress_reporter(quiet, verbose) as say:
        result = serving.build(cap, engine, tag=tag, name=name, base_image=base_image, gpus=wants_gpus(gpus),
                               unsafe=unsafe, memory=memory, say=say, verify=verify)
    not_recorded = usage.record_image_use(engine, result.env_tag, cap)
    if not_recorded:
        result.warnings.append(not_recorded)
    return result


def serve(model: str, port: int = 8501, host: str = "127.0.0.1", name: Optional[str] = None,
          base_image: Optional[str] = None, gpus: Optional[str] = None, unsafe: bool = False,
          memory: str = "4g", allow_model_change: bool = False,
          engine_factory: Optional[EngineFactory] = None, verbose: bool = False) -> Exited:
    """``envrepro serve MODEL``: build if needed, run in the foreground until a signal (Ctrl-C,
    SIGTERM: the server drains, its containers go; exit 0) or until the server exits by itself
    (its exit code); the server's log lines are shown as messages. A watcher removes the
    containers if this process is killed. The images index records that the capture uses the
    served image's environment as the server starts (it runs until stopped or killed)."""
    from envrepro.image import usage
    from envrepro.sandbox.container import prepare
    from envrepro.serving import foreground as serving_run
    from envrepro.serving import watcher

    cap = prepare(model, allow_model_change=allow_model_change)
    signed(cap)
    engine = engine_factory_or_default(engine_factory)()
    with progress_reporter(verbose=verbose) as say:
        recording = usage.RecordingStarts(engine, cap, say)
        return Exited(serving_run.serve(cap, recording, port=port, host=host, name=name, base_image=base_image,
                                        gpus=wants_gpus(gpus), unsafe=unsafe, memory=memory, say=say,
                                        watch=watcher.spawn))


def k8s(model: str, image: str, **options: Any) -> KubernetesManifests:
    """``envrepro k8s``: Deployment, Service, autoscaler and a deny-egress NetworkPolicy running the serving image ``image`` of
    a captured model (``options``: the other fields of ``serving.k8s.Options``). No engine and no
    cluster needed; the capture is read (and verified) first, then every flag is checked."""
    from envrepro.serving import k8s as kube

    cap = manifest.read(layout.sidecar_for(layout.resolve_model(model)))
    return KubernetesManifests(kube.manifests(cap, kube.Options(image=image, **options)))


def images_list(engine_factory: Optional[EngineFactory] = None) -> ImageList:
    """envrepro's images, each with the serving containers running from it (``serving``: whose
    ``envrepro serve`` runs, or is gone: orphaned)."""
    from envrepro.image import inventory
    from envrepro.serving import orphans

    engine = engine_factory_or_default(engine_factory)()
    return ImageList(orphans.attach(inventory.list_images(engine), orphans.listing(engine), inventory.ImageRow))


def images_prune(dry_run: bool = False, cache: bool = False,
                 engine_factory: Optional[EngineFactory] = None) -> PruneResult:
    """The orphaned serving containers first (their images may then go too), then the images."""
    from envrepro.image import inventory
    from envrepro.serving import orphans

    engine = engine_factory_or_default(engine_factory)()
    failed: Dict[str, str] = {}
    swept = orphans.sweep(engine, dry_run=dry_run, failed=failed)
    result = inventory.prune(engine, dry_run=dry_run, cache=cache)
    result.orphans = [c.to_dict() for c in swept]
    result.failed.update(failed)
    return result


# --------------------------------------------------------------------------------------------
# air-gapped bundles: envrepro load FILE.tar (written by sharecommands.bundle)
# --------------------------------------------------------------------------------------------

def _is_bundle(model: str) -> bool:
    """A regular ``.tar`` file: a bundle, or refused as not one (a model is never a .tar)."""
    import os

    from envrepro.bundling.members import SUFFIX

    return model.endswith(SUFFIX) and os.path.isfile(model)


def load_bundle(path: str, into: Optional[str] = None, base_image: Optional[str] = None,
                gpus: Optional[str] = None, unsafe: bool = False, memory: str = "4g", quiet: bool = False,
                engine_factory: Optional[EngineFactory] = None, debug: bool = False,
                verbose: bool = False) -> "LoadReport":
    """``envrepro load FILE.tar``: verify the bundle (every member), extract it safely beside it
    (or into ``into``), load its image (or import its wheels), then the normal load of its model;
    the report names the bundle. No registry is asked: the image is local after ``docker load``."""
    from envrepro.bundling.members import BundleError
    from envrepro.bundling.unpack import is_bundle, open_bundle

    if not is_bundle(path):
        raise BundleError("not an envrepro bundle (a regular .tar file starting with envrepro-bundle.json)",
                          path, "write one with `envrepro bundle MODEL -o FILE.tar`")
    if wants_gpus(gpus):
        raise BundleError("bundles hold the CPU environment: --gpus does not apply", path,
                          "load without --gpus")
    engines: List[ContainerEngine] = []

    def engine() -> ContainerEngine:     # reached only once the bundle verified
        if not engines:
            engines.append(engine_factory_or_default(engine_factory)())
        return engines[0]

    with progress_reporter(quiet, verbose) as say:
        opened = open_bundle(path, engine, into=into, say=say)
    if opened.base_image and base_image and base_image != opened.base_image:
        raise BundleError(f"the bundle's image is built on {opened.base_image}, not {base_image}", path,
                          "load without --base-image")
    report = load(str(opened.model), base_image=opened.base_image or base_image, registry=None,
                  unsafe=unsafe, memory=memory, quiet=quiet, engine_factory=engine, debug=debug,
                  verbose=verbose)
    report.image["bundle"] = str(opened.bundle)
    report.image["bundle_kind"] = opened.manifest.kind
    return report
