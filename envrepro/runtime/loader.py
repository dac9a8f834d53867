"""Load a captured model inside its reproduced environment and prove the reproduction.

Runs INSIDE the container, under the captured interpreter (Python 3.6 .. 3.13, TensorFlow
2.4 .. 2.21), where none of envrepro's own dependencies exist: standard library, numpy and
TensorFlow only, Python 3.6 syntax. Started as a module of the runtime package (see launch.py):

    python -B -c "<launch bootstrap>" --plan /path/plan.json     # or the plan in $ENVREPRO_PLAN

The host (envrepro/sandbox/run.py) writes the plan; this module imports the custom modules, calls
load_model, re-runs the reference prediction, checks the restored optimizer and prints exactly one
line to stdout, ``ENVREPRO-REPORT {json}``. Everything else (TensorFlow logs, Keras progress bars,
prints in user modules, C-level writes) is pushed to stderr at the file-descriptor level, so the
report line can always be parsed. Exit codes: 0 ok, 5 load failure, 6 verification mismatch,
70 unusable plan (a bug on the host side).
"""
import json
import os
import platform
import socket
import sys
import time
import traceback

from .facts import accepts
from .kerasflavor import keras_version, pick_keras
from .optimizer import check_optimizer
from .reference import FLOAT_TOLERANCE, assemble_inputs, compare, flatten_outputs, predict

REPORT_PREFIX = "ENVREPRO-REPORT "
REPORT_VERSION = 1
EXIT_OK = 0
EXIT_LOAD_FAILED = 5
EXIT_MISMATCH = 6
EXIT_INTERNAL = 70
STAGES = ("import", "load", "predict", "verify")

# (substring of the error text, FAILURES.md class, short name, fix). First match wins; the order
# puts specific messages before the generic ones they contain.
FAILURE_CLASSES = [
    ("File format not supported", "1", "legacy SavedModel under Keras 3",
     "load with tf-keras and TF_USE_LEGACY_KERAS=1, or use keras.layers.TFSMLayer"),
    ("legacy SavedModel format is not supported", "1", "legacy SavedModel under Keras 3",
     "load with tf-keras and TF_USE_LEGACY_KERAS=1, or use keras.layers.TFSMLayer"),
    ("Could not locate class", "2", "unregistered custom object",
     "import the module defining it, pass custom_objects, or register it"),
    ("Unknown layer", "2", "unregistered custom object",
     "import the module defining it, pass custom_objects, or register it"),
    ("Unknown optimizer: Custom>", "4a", "new optimizer loaded by an older TF",
     "load with compile=False and compile again"),
    ("Unknown optimizer", "2", "unregistered custom object", "pass custom_objects"),
    ("Unknown metric", "2", "unregistered custom object", "pass custom_objects"),
    ("Unknown loss", "2", "unregistered custom object", "pass custom_objects"),
    ("Unknown decay", "4c", "Keras-2 compile config in Keras 3", "load with compile=False"),
    ("has no attribute 'decode'", "3", "h5py 3 with TF <= 2.4", "pin h5py<3"),
    ("restore a checkpoint from a legacy Keras optimizer", "4b",
     "legacy optimizer checkpoint in a v2.11+ optimizer", "use tf.keras.optimizers.legacy"),
    ("weight_decay is not a valid argument", "4a", "new optimizer loaded by an older TF",
     "load with compile=False and compile again"),
    ("Argument(s) not recognized", "4c", "Keras-2 compile config in Keras 3",
     "load with compile=False, then compile"),
    ("Could not locate function", "4c", "Keras-2 compile config in Keras 3",
     "load with compile=False, then compile"),
    ("is not a KerasSaveable subclass", "4c", "Keras-2 compile config in Keras 3",
     "load with compile=False, then compile"),
    ("bad marshal data", "5", "Lambda bytecode from another Python minor",
     "load under the saving Python minor"),
    ("unknown opcode", "5", "Lambda bytecode from another Python minor",
     "load under the saving Python minor"),
    ("safe_mode", "5", "Lambda layer refused by Keras safe_mode",
     "pass --unsafe if you trust this model"),
    ("compiled using NumPy 1.x", "6a", "NumPy ABI mismatch", "pin numpy<2 or upgrade TF"),
    ("_ARRAY_API not found", "6a", "NumPy ABI mismatch", "pin numpy<2 or upgrade TF"),
    ("module 'numpy' has no attribute", "6a", "NumPy too new for this TF", "pin numpy<1.24"),
    ("Descriptors cannot be created directly", "6b", "protobuf too new for this TF",
     "pin protobuf<=3.20.*"),
    ("Op type not registered 'Addons>", "6c", "TensorFlow Addons op missing",
     "import tensorflow_addons (TF <= 2.15)"),
    ("Addons>", "6c", "TensorFlow Addons object missing", "import tensorflow_addons (TF <= 2.15)"),
    ("Op type not registered", "7a", "op missing in this TF build",
     "import the plugin package or load with the saving TF"),
    ("No OpKernel was registered", "7b", "GPU-only kernel on a CPU host",
     "export on CPU or ship .keras/H5"),
    ("DNN library initialization failed", "7c", "cuDNN/CUDA mismatch",
     "install the CUDA/cuDNN TensorFlow was built with"),
    ("Unrecognized keyword arguments: ['batch_shape']", "8a", "Keras 3 file in Keras 2",
     "load with Keras 3"),
    ("keras.src.models", "8a", "Keras 3 file in Keras 2", "load with Keras 3"),
    ("keras.src.engine", "8b", "Keras 2.13-2.15 .keras file in Keras 3",
     "load with tf-keras, save H5, reload"),
    ("Unknown layer: Functional", "8c", "model saved by TF >= 2.3 loaded by older Keras",
     "load with a newer TF"),
    ("No model config found", "8e", "not a model file (weights only?)",
     "rebuild the model and load_weights"),
    ("SavedModel file does not exist", "8e", "not a model this TF can read",
     "check the file (git lfs pull?) or load with a newer TF"),
    ("No module named", "import", "a module the model needs is missing",
     "capture the module (snapshot) or add its distribution to the lock"),
]


def classify(text):
    """Map an error text to a FAILURES.md class so the host can name the fix, or None."""
    for needle, ident, name, fix in FAILURE_CLASSES:
        if needle in text:
            return {"id": ident, "name": name, "fix": fix}
    return None


def error_info(exc, stage):
    """The report's error: type, message, first line, stage and failure class."""
    message = str(exc)
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    first = lines[0] if lines else type(exc).__name__
    text = "%s: %s" % (type(exc).__name__, message)
    return {
        "type": type(exc).__name__,
        "message": message[:4000],
        "first_line": first[:500],
        "stage": stage,
        "failure_class": classify(text),
    }


class PlanError(Exception):
    """The plan is unusable: a bug or version skew on the host side, not the model's fault."""


def read_plan(argv, environ):
    """The plan from ``--plan FILE`` or ``$ENVREPRO_PLAN``; PlanError when unusable."""
    path = None
    if "--plan" in argv:
        i = argv.index("--plan")
        if i + 1 >= len(argv):
            raise PlanError("--plan needs a file")
        path = argv[i + 1]
    try:
        if path is not None:
            with open(path, "r") as f:
                plan = json.load(f)
        elif environ.get("ENVREPRO_PLAN"):
            plan = json.loads(environ["ENVREPRO_PLAN"])
        else:
            raise PlanError("no plan: pass --plan FILE or set ENVREPRO_PLAN")
    except (OSError, ValueError) as e:
        raise PlanError("unreadable plan: %s" % e)
    if not isinstance(plan, dict) or not plan.get("model_path"):
        raise PlanError("plan has no model_path")
    return plan


def network_check():
    """Informative: does this process see a network? Sends no packet (a UDP connect only routes)."""
    try:
        names = sorted(os.listdir("/sys/class/net"))
    except OSError:
        names = []
    route = False
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: a route lookup, nothing is sent
        route = True
    except OSError:
        route = False
    finally:
        s.close()
    others = [n for n in names if n != "lo"]
    return {"interfaces": names, "non_loopback": others, "route": route,
            "isolated": not others and not route}


def resolve_attr(spec):
    """'pkg.mod:Outer.Inner' -> the object (imports the module)."""
    import importlib

    if ":" not in spec:
        raise PlanError("custom object %r is not 'module:attr'" % spec)
    mod_name, attr = spec.split(":", 1)
    obj = importlib.import_module(mod_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def build_inputs(np, ref):
    """The saved reference inputs, in the structure the model takes; a plan whose reference
    doesn't fit together is the host's bug (PlanError)."""
    arrays = [np.load(p, allow_pickle=False) for p in ref.get("inputs") or []]
    structure = ref.get("input_structure") or "single"
    names = ref.get("input_names") or []
    if structure == "dict" and len(names) != len(arrays):
        raise PlanError("reference has %d inputs but %d input names" % (len(arrays), len(names)))
    if structure not in ("dict", "list") and len(arrays) != 1:
        raise PlanError("reference input_structure 'single' with %d inputs" % len(arrays))
    return assemble_inputs(structure, names, arrays), arrays


class Run(object):
    """One load attempt: the report it fills in step by step, and the clock."""

    def __init__(self, plan):
        self.plan = plan
        self.t0 = time.time()
        self.report = {
            "report_version": REPORT_VERSION, "ok": False, "stage": "import", "exit_code": None,
            "error": None, "mismatches": [],
            "versions": {"python": platform.python_version(), "tensorflow": None, "keras": None,
                         "keras_module": None, "numpy": None},
            "timings": {},
            "load": {"ok": False, "format": plan.get("format"), "compile": bool(plan.get("compile", True)),
                     "safe_mode": plan.get("safe_mode"),
                     "custom_objects": sorted((plan.get("custom_objects") or {}).keys())},
            "reference": None, "optimizer": None, "network": None,
        }

    def timed(self, key, func, *args):
        t = time.time()
        try:
            return func(*args)
        finally:
            self.report["timings"][key] = round(time.time() - t, 4)

    def execute(self):
        plan, rep = self.plan, self.report
        rep["network"] = network_check()
        # Environment switches must be set before TensorFlow is imported.
        for k, v in (plan.get("env") or {}).items():
            if v is not None:
                os.environ[str(k)] = str(v)
        snap = plan.get("snapshot_dir")
        if snap and snap not in sys.path:
            sys.path.insert(0, snap)

        rep["stage"] = "import"
        tf = self.timed("import_tf", __import__, "tensorflow")
        import numpy as np

        rep["versions"]["tensorflow"] = getattr(tf, "__version__", None)
        rep["versions"]["numpy"] = np.__version__
        kmod, kname = pick_keras(tf, plan.get("keras_flavor"))
        rep["versions"]["keras_module"] = kname
        rep["versions"]["keras"] = keras_version(kmod, tf)
        self.timed("import_modules", self.import_modules)
        custom = self.timed("resolve_custom_objects", self.custom_objects)

        rep["stage"] = "load"
        model = self.timed("load", self.load_model, kmod, custom)
        rep["load"]["ok"] = True

        ref = plan.get("reference")
        if ref and ref.get("inputs"):
            rep["stage"] = "predict"
            got, expected = self.timed("predict", self.predict, np, model, ref)
            rep["stage"] = "verify"
            rep["reference"] = compare(np, got, expected,
                                       float(ref.get("atol", FLOAT_TOLERANCE["atol"])),
                                       float(ref.get("rtol", FLOAT_TOLERANCE["rtol"])))
            if not rep["reference"]["allclose"]:
                rep["mismatches"].append("reference prediction differs (max |diff| %s, atol %s, rtol %s)"
                                         % (rep["reference"]["max_abs_diff"], ref.get("atol"),
                                            ref.get("rtol")))
        rep["stage"] = "verify"
        expected_opt = plan.get("optimizer")
        if expected_opt and plan.get("compile", True):
            rep["optimizer"] = self.timed("optimizer", check_optimizer, model, expected_opt,
                                          plan["model_path"], plan.get("format"))
            rep["mismatches"].extend(rep["optimizer"]["problems"])
        elif expected_opt:
            rep["optimizer"] = {"expected": expected_opt, "ok": None,
                                "skipped": "loaded with compile=False"}

    def import_modules(self):
        import importlib

        for name in self.plan.get("modules") or []:
            importlib.import_module(name)

    def custom_objects(self):
        return dict((name, resolve_attr(spec))
                    for name, spec in sorted((self.plan.get("custom_objects") or {}).items()))

    def load_model(self, kmod, custom):
        load = kmod.models.load_model
        kwargs = {"custom_objects": custom, "compile": bool(self.plan.get("compile", True))}
        if self.plan.get("safe_mode") is not None and accepts(load, "safe_mode"):
            kwargs["safe_mode"] = bool(self.plan["safe_mode"])
        return load(self.plan["model_path"], **kwargs)

    def predict(self, np, model, ref):
        """Predict the way the capture did (reference.predict) on the saved inputs."""
        x, _ = build_inputs(np, ref)
        out = predict(model, x)
        expected = [np.load(p, allow_pickle=False) for p in ref.get("outputs") or []]
        return flatten_outputs(np, out, ref), expected


def finish(report, t0):
    """Total time, exit code and ok flag: the last fields of the report."""
    report["timings"]["total"] = round(time.time() - t0, 4)
    if report["error"] is not None:
        code = EXIT_INTERNAL if report["error"]["type"] == "PlanError" else EXIT_LOAD_FAILED
    elif report["mismatches"]:
        code = EXIT_MISMATCH
    else:
        code = EXIT_OK
    report["exit_code"] = code
    report["ok"] = code == EXIT_OK
    return code


def main(argv=None, environ=None):
    """Run the plan and print the one report line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    debug = environ.get("ENVREPRO_DEBUG") == "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if debug else "2")
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")

    # Only the report may reach stdout: point fd 1 at stderr for everything else.
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    t0 = time.time()
    run = None
    try:
        try:
            plan = read_plan(argv, environ)
            run = Run(plan)
            run.execute()
            report = run.report
        except BaseException as e:  # user modules may call sys.exit(); TF may raise anything
            if isinstance(e, KeyboardInterrupt):
                raise
            report = run.report if run is not None else Run({}).report
            report["error"] = error_info(e, report["stage"])
            if debug:
                traceback.print_exc(file=sys.stderr)
        code = finish(report, t0)
        line = REPORT_PREFIX + json.dumps(report, sort_keys=True, default=str) + "\n"
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        os.dup2(real_stdout, 1)
        os.close(real_stdout)
    os.write(1, line.encode("utf-8"))
    return code


if __name__ == "__main__":
    sys.exit(main())
