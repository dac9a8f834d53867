"""Load a captured model in its reproduced environment: plan, sandbox, report.

The host never deserializes the model (TensorFlow is not a sandbox; H5 Lambda layers carry
bytecode, SavedModels are programs). It writes a plan, starts the in-container loader
(``envrepro/runtime/loader.py``) in a locked-down container and turns the one
``ENVREPRO-REPORT {json}`` line the loader prints into a :class:`LoadReport`.

Every container envrepro starts for a model (load, ``run``, ``shell``) gets the same sandbox,
built in one place (:func:`run_args`): no network, a non-root user, read-only mounts and root
filesystem, a tmpfs ``/tmp``, no capabilities, no privilege escalation, memory and pids limits.
``gpus=True`` (``--gpus all``) adds the host's GPUs to that container, and only that: the image
was built on a CUDA base for it (``build.ensure_image(gpus=True)``), the sandbox stays the same.
"""
from __future__ import annotations

import json as jsonlib
import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from envrepro import errors
from envrepro.sidecar import layout, manifest
from envrepro.engine.docker import Mount
from envrepro.runtime import launch, loader as runtime_loader

SANDBOX_USER = "10001:10001"
DEFAULT_MEMORY = "4g"
PIDS_LIMIT = 512
WORKDIR = "/tmp"
TMPFS = {"/tmp": "rw,nosuid,nodev,size=1g"}
PLAN_VERSION = 1
REPORT_PREFIX = runtime_loader.REPORT_PREFIX
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4
# Exit codes of a container killed by a signal (128 + n) that say more than the loader could.
SIGNAL_EXITS = {
    132: "illegal instruction: this TensorFlow build needs CPU instructions (AVX?) this machine lacks",
    137: "the container was killed (out of memory? raise --memory)",
    139: "segmentation fault inside the container",
}


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


def mount_cli(m: Mount) -> str:
    """A ``--mount`` value; its fields are CSV, so paths with commas or quotes get quoted."""
    def field_(k: str, v: str) -> str:
        kv = f"{k}={v}"
        return '"' + kv.replace('"', '""') + '"' if ("," in kv or '"' in kv) else kv

    parts = ["type=bind", field_("source", m.source), field_("target", m.target)]
    if m.read_only:
        parts.append("readonly")
    return ",".join(parts)


def sandbox_mounts(capture: manifest.Capture, paths: ContainerPaths) -> List[Mount]:
    return [
        Mount(str(capture.model_path), paths.model),
        Mount(str(capture.root), paths.capture),
        Mount(launch.HOST_DIR, paths.runtime),
    ]


def make_plan(capture: manifest.Capture, container_paths: ContainerPaths,
              unsafe: bool = False) -> Dict[str, Any]:
    """The loader's instructions, from the manifest, with container paths.

    Keras 3's safe_mode stays on unless the user passed ``--unsafe``: the plan always carries it
    and the loader passes it to every ``load_model`` that accepts it.
    """
    paths = container_paths
    ref = capture.get("reference")
    plan_ref = None
    if isinstance(ref, dict) and ref.get("inputs"):
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
    return {
        "plan_version": PLAN_VERSION,
        "model_path": paths.model,
        "model_name": capture.model_path.name,
        "format": capture.get("model.format"),
        "compile": bool(capture.get("load.compile", True)),
        "custom_objects": dict(manifest.model_custom_objects(capture)),
        "modules": list(capture.get("load.modules") or []),
        "snapshot_dir": paths.snapshot,
        "keras_flavor": capture.get("frameworks.keras_flavor"),
        "env": captured_env(capture),
        "safe_mode": not unsafe,
        "reference": plan_ref,
        "optimizer": plan_opt,
    }


def captured_env(capture: manifest.Capture) -> Dict[str, str]:
    """Variables that change what TF/Keras load (TF_USE_LEGACY_KERAS, KERAS_BACKEND): set ones only."""
    env = capture.get("env") or {}
    return {str(k): str(v) for k, v in sorted(env.items()) if v is not None and str(k).isidentifier()}


def sandbox_env(paths: ContainerPaths, plan: Dict[str, Any],
                extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The container's whole environment: nothing of the host's leaks in."""
    env = {
        "HOME": "/tmp",
        "PYTHONPATH": paths.snapshot,
        "PYTHONDONTWRITEBYTECODE": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "ENVREPRO_MODEL": paths.model,
        "ENVREPRO_PLAN": jsonlib.dumps(plan, sort_keys=True),
    }
    env.update(plan.get("env") or {})
    if os.environ.get("ENVREPRO_DEBUG") == "1":
        env["ENVREPRO_DEBUG"] = "1"
    env.update(extra or {})
    return env


def run_args(capture: manifest.Capture, paths: Optional[ContainerPaths] = None,
             plan: Optional[Dict[str, Any]] = None, memory: str = DEFAULT_MEMORY,
             unsafe: bool = False, extra_env: Optional[Dict[str, str]] = None,
             gpus: bool = False) -> Dict[str, Any]:
    """The sandbox of every model container, as keyword arguments of ``Engine.run``.

    No writable host mount at all: the loader reports on stdout, the plan travels in
    ``ENVREPRO_PLAN``, and scratch space is the tmpfs ``/tmp``. ``gpus``: every host GPU is
    passed in (``Engine.run(gpus=True)``, ``docker run --gpus all``); the key is absent
    otherwise.
    """
    paths = paths or container_paths(capture)
    plan = plan if plan is not None else make_plan(capture, paths, unsafe=unsafe)
    gpu: Dict[str, Any] = {"gpus": True} if gpus else {}
    return {**gpu, 
        "mounts": sandbox_mounts(capture, paths),
        "environment": sandbox_env(paths, plan, extra_env),
        "user": SANDBOX_USER,
        "network_disabled": True,
        "read_only": True,
        "tmpfs": dict(TMPFS),
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": memory,
        "pids_limit": PIDS_LIMIT,
        "workdir": WORKDIR,
    }


def docker_run_argv(image: str, command: Sequence[str], args: Dict[str, Any],
                    interactive: bool = True, tty: Optional[bool] = None,
                    docker: str = "docker") -> List[str]:
    """The same sandbox as ``run_args`` as a ``docker run`` command line (for a TTY shell)."""
    argv = [docker, "run", "--rm"]
    if interactive:
        argv.append("-i")
        if tty if tty is not None else sys.stdin.isatty():
            argv.append("-t")
    if args.get("network_disabled"):
        argv += ["--network", "none"]
    if args.get("gpus"):
        argv += ["--gpus", "all"]
    argv += ["--user", args["user"]]
    if args.get("read_only"):
        argv.append("--read-only")
    for target, opts in sorted((args.get("tmpfs") or {}).items()):
        argv += ["--tmpfs", f"{target}:{opts}" if opts else target]
    for cap in args.get("cap_drop") or []:
        argv += ["--cap-drop", cap]
    for opt in args.get("security_opt") or []:
        argv += ["--security-opt", opt]
    if args.get("mem_limit"):
        argv += ["--memory", str(args["mem_limit"])]
    if args.get("pids_limit"):
        argv += ["--pids-limit", str(args["pids_limit"])]
    for m in args.get("mounts") or []:
        argv += ["--mount", mount_cli(m)]
    for k, v in sorted((args.get("environment") or {}).items()):
        argv += ["-e", f"{k}={v}"]
    if args.get("workdir"):
        argv += ["-w", args["workdir"]]
    return argv + [image] + list(command)


def check_readable(trees: Sequence[Path], folders: Sequence[Path] = ()) -> None:
    """The sandbox user (uid 10001) reads the mounts as "other": refuse early, naming the file,
    rather than fail inside the container with a bare PermissionError.

    ``trees`` are checked with everything below them, ``folders`` only themselves (the capture
    root must be traversable, but the loader never reads its manifest). Only meaningful on Linux,
    where bind mounts keep host permissions.
    """
    if not sys.platform.startswith("linux"):
        return
    for top, recursive in [(t, True) for t in trees] + [(f, False) for f in folders]:
        for p in (_walk(top) if recursive else [top]):
            st = p.lstat()
            need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else 0)
            if stat.S_ISLNK(st.st_mode) or st.st_mode & need == need:
                continue
            raise errors.EnvreproError(
                "not readable by the sandbox user (uid 10001) inside the container", str(p),
                f"chmod a+rX {p}" if not recursive else f"chmod -R a+rX {top}")


def _walk(top: Path):
    yield top
    if top.is_dir() and not top.is_symlink():
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                yield Path(root, name)


# --- the report -----------------------------------------------------------------------------

def parse_report(stdout: "str | bytes | None") -> Optional[Dict[str, Any]]:
    """The last ``ENVREPRO-REPORT {json}`` line, or None (the loader died before printing it)."""
    if isinstance(stdout, bytes):
        stdout = stdout.decode("utf-8", errors="replace")
    for line in reversed((stdout or "").splitlines()):
        if line.startswith(REPORT_PREFIX):
            try:
                data = jsonlib.loads(line[len(REPORT_PREFIX):])
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


def no_report(container_exit: Optional[int], stderr: str) -> Dict[str, Any]:
    """What we know when the loader printed nothing: the exit code and stderr's last line."""
    lines = [ln for ln in (stderr or "").splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else ""
    why = SIGNAL_EXITS.get(container_exit or 0, f"the loader exited {container_exit} without a report")
    message = f"{why}: {last}" if last else why
    return {
        "report_version": runtime_loader.REPORT_VERSION, "ok": False, "stage": "import",
        "exit_code": container_exit,
        "error": {"type": "NoReport", "message": message, "first_line": message, "stage": "import",
                  "failure_class": runtime_loader.classify(stderr or "")},
        "mismatches": [], "versions": {}, "timings": {}, "load": {"ok": False},
        "reference": None, "optimizer": None, "network": None,
    }


@dataclass
class LoadReport:
    """The outcome of one ``envrepro load``: the loader's report plus what the host knows."""

    model: str
    capture: str
    image: Dict[str, Any]
    loader: Dict[str, Any]
    container_exit: Optional[int] = None
    stderr_tail: str = ""
    timings: Dict[str, Optional[float]] = field(default_factory=dict)
    unsafe: bool = False
    warnings: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.loader.get("ok"))

    @property
    def error(self) -> Optional[Dict[str, Any]]:
        return self.loader.get("error")

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["exit_code"] = exit_code(self)
        return d

    def to_json(self, indent: Optional[int] = 2) -> str:
        return jsonlib.dumps(self.to_dict(), indent=indent, sort_keys=True, default=str)


def exit_code(report: LoadReport) -> int:
    """0 ok, EXIT_LOAD_FAILED when the model did not load (or the loader died), EXIT_MISMATCH
    when it loaded but the reference prediction or the optimizer state differs."""
    if report.ok:
        return errors.EXIT_OK
    err = report.error
    if err is not None:
        return errors.EXIT_INTERNAL if err.get("type") == "PlanError" else errors.EXIT_LOAD_FAILED
    if report.loader.get("mismatches"):
        return errors.EXIT_MISMATCH
    return errors.EXIT_LOAD_FAILED


def image_dict(image_info: Any) -> Dict[str, Any]:
    """Duck-typed ImageInfo -> dict. build.ImageInfo says ``source`` (local|pulled|built);
    ``built``/``seconds`` are accepted too."""
    source = getattr(image_info, "source", None)
    built = getattr(image_info, "built", None)
    if source is None:
        source = "built" if built else ("pulled" if getattr(image_info, "pulled", False) else "local")
    log = getattr(image_info, "log_path", None)
    return {
        "tag": getattr(image_info, "tag", None), "key": getattr(image_info, "key", None),
        "id": getattr(image_info, "image_id", None), "source": source,
        "base_image": getattr(image_info, "base_image", None),
        "base_digest": getattr(image_info, "base_digest", None) or None,
        "seconds": getattr(image_info, "seconds", None), "log": str(log) if log else None,
        "built_from_source": list(getattr(image_info, "built_from_source", None) or []),
        "unverified": list(getattr(image_info, "unverified", None) or []),
        "translation": getattr(image_info, "translation", None),
    }


def _secs(x: Any) -> str:
    return "-" if x is None else f"{float(x):.1f} s"


def _fmt_num(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def render_report(report: LoadReport) -> str:
    """The human report: environment, image, load, optimizer, reference, timings, verdict."""
    d, img = report.loader, report.image
    v = d.get("versions") or {}
    lines = [f"envrepro load {report.model}"]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<13}{text}")

    env = ", ".join(x for x in (
        f"Python {v['python']}" if v.get("python") else "",
        f"TensorFlow {v['tensorflow']}" if v.get("tensorflow") else "",
        f"Keras {v['keras']} ({v.get('keras_module')})" if v.get("keras") else "",
        f"numpy {v['numpy']}" if v.get("numpy") else "") if x)
    row("environment", env or "unknown (the loader did not report)")
    how = {"built": "built", "pulled": "pulled"}.get(img.get("source") or "", "found locally")
    secs = report.timings.get("image")
    row("image", f"{img.get('tag') or '?'} ({how}" + (f", {_secs(secs)})" if secs is not None else ")"))
    base = img.get("base_image") or "?"
    row("base image", f"{base}@{img['base_digest']}" if img.get("base_digest") else base)
    lines.extend(_lock_lines(img))

    err = d.get("error")
    load = d.get("load") or {}
    if load.get("ok"):
        extras = [f"format {load.get('format')}", f"compile={load.get('compile')}"]
        if load.get("custom_objects"):
            extras.append("custom objects " + ", ".join(load["custom_objects"]))
        if report.unsafe:
            extras.append("safe_mode OFF (--unsafe)")
        row("load", f"OK ({', '.join(extras)})")
    if err:
        stage = err.get("stage") or d.get("stage")
        row(stage if load.get("ok") else "load",
            f"FAILED at stage {stage}: {err.get('type')}: {err.get('first_line')}")
        fc = err.get("failure_class")
        if fc:
            ident = str(fc.get("id") or "")
            where = f" (FAILURES.md class {ident})" if ident[:1].isdigit() else ""
            row("", f"known failure{where}: {fc.get('name')}; fix: {fc.get('fix')}")
    lines.extend(_optimizer_lines(d.get("optimizer")))
    lines.extend(_reference_lines(d.get("reference"), load.get("ok"), err))
    net = d.get("network") or {}
    if net:
        row("network", "isolated (loopback only)" if net.get("isolated")
            else f"NOT isolated: interfaces {', '.join(net.get('interfaces') or [])}")
    t = {**(d.get("timings") or {}), **{k: x for k, x in report.timings.items() if x is not None}}
    order = [("image", "image"), ("run", "container"), ("import_tf", "import TF"),
             ("import_modules", "import modules"), ("load", "load"), ("predict", "predict"),
             ("total", "loader total")]
    row("timings", ", ".join(f"{label} {_secs(t[k])}" for k, label in order if k in t) or "-")
    for w in report.warnings:
        row("warning", w)
    lines.append(_verdict(report))
    return "\n".join(lines) + "\n"


def _lock_lines(img: Dict[str, Any]) -> List[str]:
    """How the image's lock differs from a plain install of the captured one: translated for
    Linux (every package whose pin differs), entries without hash check, sdists built."""
    lines: List[str] = []
    t = img.get("translation") or {}
    if t:
        changes = list(t.get("changes") or [])
        lines.append(f"  {'translated':<13}for Linux from a {t.get('from')} capture: "
                     f"{len(changes)} package(s) differ from the capture")
        lines.extend(f"  {'':<13}  {c}" for c in changes)
        lines.extend(f"  {'':<13}  note: {n}" for n in t.get("notes") or [])
    if img.get("unverified"):
        lines.append(f"  {'unverified':<13}installed without hash check (no hash in the lock): "
                     + ", ".join(img["unverified"]))
    if img.get("built_from_source"):
        lines.append(f"  {'from source':<13}built from sdists at image build time: "
                     + ", ".join(img["built_from_source"]))
    return lines


def _optimizer_lines(opt: Optional[Dict[str, Any]]) -> List[str]:
    if not opt:
        return []
    if opt.get("skipped"):
        return [f"  {'optimizer':<13}not checked ({opt['skipped']})"]
    text = (f"{opt.get('restored')} restored, iterations {opt.get('iterations')}, "
            f"{opt.get('weights_restored')} variables")
    if opt.get("ok"):
        lines = [f"  {'optimizer':<13}{text}  OK"]
    else:
        lines = [f"  {'optimizer':<13}{text}  MISMATCH: {'; '.join(opt.get('problems') or [])}"]
    if opt.get("note"):
        lines.append(f"  {'':<13}{opt['note']}")
    return lines


def _reference_lines(ref: Optional[Dict[str, Any]], loaded: Any, err: Any) -> List[str]:
    if ref is None:
        if loaded and not err:
            return [f"  {'reference':<13}none in the capture (nothing to compare)"]
        return []
    tol = f"atol {_fmt_num(ref.get('atol'))} + rtol {_fmt_num(ref.get('rtol'))}"
    if ref.get("problem"):
        shapes = ref.get("shapes") or {}
        return [f"  {'reference':<13}MISMATCH: {ref['problem']} "
                f"(expected {shapes.get('expected')}, got {shapes.get('got')})"]
    diff = f"max |diff| {_fmt_num(ref.get('max_abs_diff'))}"
    if ref.get("allclose"):
        return [f"  {'reference':<13}{diff} within {tol}  OK"]
    return [f"  {'reference':<13}{diff} exceeds {tol}  MISMATCH"]


def _verdict(report: LoadReport) -> str:
    code = exit_code(report)
    if code == errors.EXIT_OK:
        if report.loader.get("reference"):
            return "result: OK - the model loads and reproduces its reference prediction"
        return "result: OK - the model loads (no reference prediction to compare)"
    if code == errors.EXIT_MISMATCH:
        return ("result: MISMATCH - the model loads but does not reproduce what was captured: "
                + "; ".join(report.loader.get("mismatches") or []))
    if code == errors.EXIT_INTERNAL:
        return "result: envrepro bug - the loader could not read its plan (run with --debug)"
    return "result: FAILED - the model does not load in the reproduced environment"


# --- running ------------------------------------------------------------------------------

def prepare(model_path: "os.PathLike[str] | str | manifest.Capture") -> manifest.Capture:
    """Read and hash-verify the capture (an edited snapshot file is refused, named) and check
    that the sandbox user can read what gets mounted.

    A Capture that ``prepare`` already returned is passed through: the CLI checks the capture
    before building an image and hands it on, so the files are not hashed twice per load."""
    if isinstance(model_path, manifest.Capture):
        return model_path
    model = layout.resolve_model(model_path)
    capture = manifest.read(layout.sidecar_for(model))
    trees = [capture.model_path, Path(launch.HOST_DIR)] + [
        capture.root / d for d in (layout.SNAPSHOT_DIR, layout.REFERENCE_DIR) if (capture.root / d).is_dir()]
    check_readable(trees, folders=[capture.root])
    return capture


def _text(x: Any) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8", errors="replace")
    return x or ""


def python_in(image_info: Any) -> str:
    return getattr(image_info, "python", None) or "python"


def load(model_path: "os.PathLike[str] | str", engine: Any, image_info: Any, unsafe: bool = False,
         json: bool = False, memory: str = DEFAULT_MEMORY, debug: bool = False,
         image_seconds: Optional[float] = None,
         record: Optional[Callable[[Any, manifest.Capture], None]] = None,
         gpus: bool = False) -> LoadReport:
    """Run the loader in the environment image and return its report (does not raise on a
    failed load: the report carries it, ``exit_code(report)`` maps it).

    ``json``: the caller prints the report as JSON, so nothing may be streamed to the terminal.
    ``record``: called with (image_info, capture) after the run; defaults to updating the images
    index (``envrepro images``), which never fails the load.
    ``gpus``: pass the host's GPUs into the container (the image should be a GPU one).
    """
    capture = prepare(model_path)
    paths = container_paths(capture)
    plan = make_plan(capture, paths, unsafe=unsafe)
    args = run_args(capture, paths, plan, memory=memory,
                    extra_env={"ENVREPRO_DEBUG": "1"} if debug else None, gpus=gpus)
    t0 = time.perf_counter()
    # --debug streams the container's output live, to stderr: stdout stays for the report.
    stream = bool(debug and not json)
    code, out, err = engine.run(image_info.tag, launch.container_argv(python_in(image_info), "loader"), **args,
                                stream=stream, on_output=_to_stderr if stream else None)
    run_seconds = time.perf_counter() - t0
    out, err = _text(out), _text(err)
    data = parse_report(out) or no_report(code, err)
    img = image_dict(image_info)
    report = LoadReport(
        model=str(capture.model_path), capture=str(capture.root), image=img, loader=data,
        container_exit=code, stderr_tail="\n".join(err.splitlines()[-20:]),
        timings={"image": image_seconds if image_seconds is not None else img.get("seconds"),
                 "run": round(run_seconds, 3)},
        unsafe=unsafe)
    try:
        (record or _record_default)(image_info, capture)
    except (OSError, ValueError) as e:
        report.warnings.append(f"images index not updated ({e})")
    return report


def _to_stderr(_name: str, text: str) -> None:
    sys.stderr.write(text)


def _record_default(image_info: Any, capture: manifest.Capture) -> None:
    from envrepro.build import imageindex as images_cmd

    images_cmd.record_use(image_info, capture)


def run_command(model_path: "os.PathLike[str] | str", engine: Any, image_info: Any,
                command: Sequence[str], memory: str = DEFAULT_MEMORY, unsafe: bool = False,
                gpus: bool = False) -> int:
    """``envrepro run MODEL -- CMD...``: the user's command in the same sandbox, output streamed.

    The model is at ``$ENVREPRO_MODEL`` (``/envrepro/model/<name>``), the snapshot on PYTHONPATH,
    the working directory the tmpfs ``/tmp``.
    """
    if not command:
        raise errors.EnvreproError("no command to run", None, "envrepro run MODEL -- python predict.py")
    capture = prepare(model_path)
    args = run_args(capture, memory=memory, unsafe=unsafe, gpus=gpus)
    code, _out, _err = engine.run(image_info.tag, list(command), **args, stream=True)
    return int(code)


DEFAULT_SHELL = ["/bin/sh", "-c", "command -v bash >/dev/null 2>&1 && exec bash || exec sh"]


def shell_argv(model_path: "os.PathLike[str] | str", image_info: Any,
               command: Optional[Sequence[str]] = None, memory: str = DEFAULT_MEMORY,
               unsafe: bool = False, tty: Optional[bool] = None, gpus: bool = False) -> List[str]:
    """``docker run -it`` with the sandbox of ``run_args`` (the SDK can't attach a TTY)."""
    capture = prepare(model_path)
    args = run_args(capture, memory=memory, unsafe=unsafe, gpus=gpus)
    return docker_run_argv(image_info.tag, list(command or DEFAULT_SHELL), args, interactive=True, tty=tty)


def shell(model_path: "os.PathLike[str] | str", image_info: Any,
          command: Optional[Sequence[str]] = None, memory: str = DEFAULT_MEMORY,
          unsafe: bool = False, runner: Callable[[List[str]], int] = subprocess.call,
          gpus: bool = False) -> int:
    """``envrepro shell MODEL``: an interactive shell in the reproduced environment."""
    docker = shutil.which("docker")
    if docker is None:
        raise errors.NoEngine("the docker command line is not installed (needed for a TTY shell)",
                              None, "install the Docker CLI, or use `envrepro run MODEL -- CMD`")
    argv = shell_argv(model_path, image_info, command, memory=memory, unsafe=unsafe, gpus=gpus)
    argv[0] = docker
    return int(runner(argv))
