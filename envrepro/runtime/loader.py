"""Load a captured model inside its reproduced environment and prove the reproduction.

Runs INSIDE the container, under the captured interpreter (Python 3.6 .. 3.13, TensorFlow
2.4 .. 2.21), where none of envrepro's own dependencies exist: standard library, numpy and
TensorFlow only, Python 3.6 syntax.

    python /envrepro/runtime/loader.py --plan /path/plan.json     # or the plan in $ENVREPRO_PLAN

The host (envrepro/load.py) writes the plan; this script imports the custom modules, calls
load_model, re-runs the reference prediction, checks the restored optimizer and prints exactly one
line to stdout, ``ENVREPRO-REPORT {json}``. Everything else (TensorFlow logs, Keras progress bars,
prints in user modules, C-level writes) is pushed to stderr at the file-descriptor level, so the
report line can always be parsed. Exit codes: 0 ok, 5 load failure, 6 verification mismatch,
70 unusable plan (a bug on the host side).
"""
import json
import math
import os
import platform
import socket
import sys
import time
import traceback

REPORT_PREFIX = "ENVREPRO-REPORT "
REPORT_VERSION = 1
EXIT_OK = 0
EXIT_LOAD_FAILED = 5
EXIT_MISMATCH = 6
EXIT_INTERNAL = 70
STAGES = ("import", "load", "predict", "verify")

from .failures import classify  # noqa: E402 - one failure table for runtime and host (runtime/failures.py)


def error_info(exc, stage):
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


def finite(x):
    """JSON has no inf/nan: keep them readable as strings."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return x


class PlanError(Exception):
    """The plan is unusable: a bug or version skew on the host side, not the model's fault."""


def read_plan(argv, environ):
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


def pick_keras(tf, flavor):
    """The Keras that saved the model: Keras 3, tf_keras (legacy Keras 2) or TF's own tf.keras."""
    if flavor == "keras3":
        import keras

        return keras, "keras"
    if flavor == "tf_keras":
        try:
            import tf_keras

            return tf_keras, "tf_keras"
        except ImportError:
            pass
    return tf.keras, "tf.keras"


def keras_version(kmod, tf):
    v = getattr(kmod, "__version__", None)
    if v:
        return str(v)
    try:
        import keras

        return str(getattr(keras, "__version__", "")) or None
    except Exception:
        return getattr(getattr(tf, "keras", None), "__version__", None)


def accepts(func, name):
    """Whether ``func`` names the parameter (a bare ``**kwargs`` may reject it: not counted)."""
    import inspect

    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def build_inputs(np, ref):
    arrays = [np.load(p, allow_pickle=False) for p in ref.get("inputs") or []]
    structure = ref.get("input_structure") or "single"
    if structure == "dict":
        names = ref.get("input_names") or []
        if len(names) != len(arrays):
            raise PlanError("reference has %d inputs but %d input names" % (len(arrays), len(names)))
        return dict(zip(names, arrays)), arrays
    if structure == "list":
        return list(arrays), arrays
    if len(arrays) != 1:
        raise PlanError("reference input_structure 'single' with %d inputs" % len(arrays))
    return arrays[0], arrays


def flatten_outputs(np, out, ref):
    """Model output -> list of arrays in the order of the reference outputs."""
    if isinstance(out, dict):
        names = ref.get("output_names") or sorted(out)
        out = [out[n] for n in names]
    elif isinstance(out, (list, tuple)):
        out = list(out)
    else:
        out = [out]
    return [np.asarray(getattr(o, "numpy", lambda: o)()) for o in out]


def compare(np, got, expected, atol, rtol):
    """Max |diff| over all outputs and numpy.allclose per output, NaN equal to NaN."""
    shapes = {"expected": [list(a.shape) for a in expected], "got": [list(a.shape) for a in got]}
    result = {"checked": True, "max_abs_diff": None, "allclose": False, "atol": atol,
              "rtol": rtol, "shapes": shapes, "per_output": []}
    if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected)):
        result["problem"] = "output shapes differ from the reference"
        return result
    worst = 0.0
    close = True
    for g, e in zip(got, expected):
        gf = g.astype("float64")
        ef = e.astype("float64")
        both_nan = np.isnan(gf) & np.isnan(ef)
        diff = np.abs(gf - ef)
        diff[both_nan] = 0.0
        diff[np.isnan(diff)] = np.inf
        m = float(diff.max()) if diff.size else 0.0
        ok = bool(np.allclose(gf, ef, rtol=rtol, atol=atol, equal_nan=True))
        result["per_output"].append({"max_abs_diff": finite(m), "allclose": ok})
        worst = max(worst, m)
        close = close and ok
    result["max_abs_diff"] = finite(worst)
    result["allclose"] = close
    return result


def optimizer_variables(opt):
    """Optimizer variables across APIs: OptimizerV2.weights/variables(), Keras 3 .variables."""
    for name in ("variables", "weights"):
        try:
            v = getattr(opt, name, None)
            if callable(v):
                v = v()
        except Exception:
            v = None
        if v is not None:
            return list(v)
    return []


def short_class(name):
    """'Custom>Adam', 'keras.optimizers.Adam' -> 'Adam'."""
    name = str(name or "")
    return name.replace(">", ".").split(".")[-1]


def restore_savedmodel_optimizer(model, model_path):
    """Keras 2 does not restore a SavedModel's optimizer state in load_model: the optimizer's
    variables are created lazily, after the restore has passed. Loading the SavedModel's own
    checkpoint again and creating the slots brings it back, as a user resuming training would."""
    status = model.load_weights(os.path.join(model_path, "variables", "variables"))
    getattr(status, "expect_partial", lambda: None)()
    opt = model.optimizer
    if hasattr(opt, "_create_all_weights"):  # OptimizerV2 (TF <= 2.10, tf_keras legacy)
        opt._create_all_weights(model.trainable_variables)
    elif hasattr(opt, "build"):
        opt.build(model.trainable_variables)


def read_optimizer(opt, out):
    try:
        out["iterations"] = int(getattr(opt.iterations, "numpy", lambda: opt.iterations)())
    except Exception as e:
        out["problems"].append("can't read iterations (%s)" % e)
    out["weights_restored"] = len(optimizer_variables(opt))


def check_optimizer(model, expected, model_path=None, fmt=None):
    out = {"expected": expected, "restored": None, "iterations": None, "weights_restored": None,
           "ok": False, "problems": [], "restored_via": "load_model"}
    opt = getattr(model, "optimizer", None)
    if opt is None:
        out["problems"].append("the loaded model has no optimizer")
        return out
    if fmt == "savedmodel" and expected.get("state_saved") and model_path:
        first = {"problems": []}
        read_optimizer(opt, first)
        if first["iterations"] != expected.get("iterations") or \
                first["weights_restored"] != expected.get("num_weights"):
            try:
                restore_savedmodel_optimizer(model, model_path)
                out["restored_via"] = "load_weights"
                out["note"] = ("load_model left the optimizer state behind (iterations %s, %s "
                               "variables); restored with model.load_weights(<model>/variables/"
                               "variables)" % (first["iterations"], first["weights_restored"]))
            except Exception as e:
                out["note"] = "restoring the SavedModel optimizer state failed: %s" % e
        opt = model.optimizer
    inner = getattr(opt, "inner_optimizer", None)  # LossScaleOptimizer wraps the real one
    shown = inner if inner is not None and expected.get("class") != type(opt).__name__ else opt
    out["restored"] = type(shown).__name__
    read_optimizer(opt, out)
    if expected.get("class") and short_class(expected["class"]) != short_class(out["restored"]):
        out["problems"].append("optimizer class %s, expected %s" % (out["restored"], expected["class"]))
    if expected.get("iterations") is not None and out["iterations"] != int(expected["iterations"]):
        out["problems"].append("iterations %s, expected %s" % (out["iterations"], expected["iterations"]))
    if expected.get("state_saved") and expected.get("num_weights") is not None \
            and out["weights_restored"] != int(expected["num_weights"]):
        out["problems"].append("%s optimizer variables restored, expected %s"
                               % (out["weights_restored"], expected["num_weights"]))
    out["ok"] = not out["problems"]
    return out


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
            rep["reference"] = compare(np, got, expected, float(ref.get("atol", 1e-5)),
                                       float(ref.get("rtol", 1e-4)))
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
        """Predict the way the capture did (``model(x, training=False)``, ``predict`` as the
        fallback), so a difference means the environment, not the call path."""
        x, _ = build_inputs(np, ref)
        try:
            out = model(x, training=False)
        except Exception:
            out = model.predict(x, verbose=0) if accepts(model.predict, "verbose") else model.predict(x)
        expected = [np.load(p, allow_pickle=False) for p in ref.get("outputs") or []]
        return flatten_outputs(np, out, ref), expected


def finish(report, t0):
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
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    debug = environ.get("ENVREPRO_DEBUG") == "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if debug else "2")
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    # The runtime folder must not shadow user modules (a snapshot module named like a script here).
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]

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
