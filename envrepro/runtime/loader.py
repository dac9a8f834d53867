"""Load a captured model inside its reproduced environment and prove the reproduction.

Runs INSIDE the container, under the captured interpreter (Python 3.6 .. 3.13, TensorFlow
2.4 .. 2.21), where none of envrepro's own dependencies exist: standard library, numpy and
TensorFlow only, Python 3.6 syntax. Started as a module of the runtime package (see launch.py):

    python -B -c "<launch bootstrap>" --plan /path/plan.json     # or the plan in $ENVREPRO_PLAN

The host (envrepro/sandbox/container.py) writes the plan; this module imports the custom modules, calls
load_model (planload.py: the one way of loading a plan's model, shared with the model server
serve.py), re-runs the reference prediction (an inferred capture has none: its source tree is
compared with the SavedModel's traced graphs instead, drift.py), checks the restored optimizer,
replays the training step a capture recorded (resume.py) and prints exactly one line to stdout,
``ENVREPRO-REPORT {json}``. Everything else (TensorFlow logs, Keras progress bars, prints in user
modules, C-level writes) is pushed to stderr at the file-descriptor level, so the report line can
always be parsed. Exit codes: 0 ok, 5 load failure, 6 verification mismatch,
70 unusable plan (a bug on the host side).
"""
import contextlib
import json
import os
import socket
import sys
import time
import traceback

from . import drift
from .facts import short_error
from .failures import classify
from .optimizer import check_optimizer
from .planload import PlanError, PlanLoad, entry_arguments, new_state, read_plan, resolve_attr  # noqa: F401
from .comparison import compare, flatten_outputs, mismatch_message
from .reference import DEFAULT_SEED, FLOAT_TOLERANCE, assemble_inputs, predict
from .resume import replay

REPORT_PREFIX = "ENVREPRO-REPORT "
REPORT_VERSION = 1
EXIT_OK = 0
EXIT_LOAD_FAILED = 5
EXIT_MISMATCH = 6
EXIT_INTERNAL = 70
STAGES = ("import", "load", "predict", "verify")


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


def build_inputs(np, ref):
    """The saved reference inputs, in the structure the model takes (text, saved as ``U``/``S``
    arrays, as bytes: reference.assemble_inputs); a plan whose reference doesn't fit together is
    the host's bug (PlanError)."""
    arrays = [np.load(p, allow_pickle=False) for p in ref.get("inputs") or []]
    structure = ref.get("input_structure") or "single"
    names = ref.get("input_names") or []
    if structure == "dict" and len(names) != len(arrays):
        raise PlanError("reference has %d inputs but %d input names" % (len(arrays), len(names)))
    if structure not in ("dict", "list") and len(arrays) != 1:
        raise PlanError("reference input_structure 'single' with %d inputs" % len(arrays))
    return assemble_inputs(structure, names, arrays), arrays


class Run(object):
    """One load attempt: the report it fills in step by step, and the clock. Loading itself is
    planload.PlanLoad's, shared with the model server; the report is its state."""

    def __init__(self, plan):
        self.plan = plan
        self.t0 = time.time()
        state = new_state(plan)
        self.report = {
            "report_version": REPORT_VERSION, "ok": False, "stage": state["stage"], "exit_code": None,
            "error": None, "mismatches": [],
            "versions": state["versions"],
            "timings": state["timings"],
            "load": state["load"],
            "reference": None, "optimizer": None, "resume_check": None, "network": None,
            "drift": None,
        }
        self.loading = PlanLoad(plan, self.report)

    @property
    def compiled(self):
        return self.loading.compiled

    def timed(self, key, func, *args):
        return self.loading.timed(key, func, *args)

    def execute(self):
        plan, rep = self.plan, self.report
        rep["network"] = network_check()
        model = self.loading.run()
        np, kmod, custom = self.loading.np, self.loading.kmod, self.loading.custom

        ref = plan.get("reference")
        if ref and ref.get("inputs"):
            rep["stage"] = "predict"
            got, expected = self.timed("predict", self.predict, np, model, ref)
            rep["stage"] = "verify"
            rep["reference"] = compare(np, got, expected,
                                       float(ref.get("atol", FLOAT_TOLERANCE["atol"])),
                                       float(ref.get("rtol", FLOAT_TOLERANCE["rtol"])))
            if not rep["reference"]["allclose"]:
                rep["mismatches"].append(mismatch_message(rep["reference"], ref.get("atol"),
                                                          ref.get("rtol")))
        rep["stage"] = "verify"
        if plan.get("drift"):
            rep["drift"] = self.timed("drift", self.check_drift, np, kmod, model)
            if rep["drift"].get("checked") and not rep["drift"].get("ok"):
                rep["mismatches"].append(drift.message(rep["drift"]))
        expected_opt = plan.get("optimizer")
        if expected_opt and self.compiled:
            rep["optimizer"] = self.timed("optimizer", check_optimizer, model, expected_opt,
                                          plan["model_path"], plan.get("format"))
            rep["mismatches"].extend(rep["optimizer"]["problems"])
        elif expected_opt:
            # compile=False restores no optimizer at all: nothing to compare, not a mismatch.
            rep["optimizer"] = {"expected": expected_opt, "ok": None,
                                "skipped": "loaded with compile=False" + (
                                    " (recipe %s): no optimizer restored" % rep["load"]["recipe"]
                                    if rep["load"].get("recipe") else "")}
        resume = plan.get("resume_check")
        if resume:
            rep["resume_check"] = self.timed("resume_check", self.replay, np, kmod, custom, resume)
            rep["mismatches"].extend(rep["resume_check"]["problems"])

    def check_drift(self, np, kmod, model):
        """runtime/drift.py on the loaded model; a failure of the check itself is said in the
        report, never a failed load."""
        try:
            return drift.check(np, kmod.models.load_model, model, self.plan["model_path"],
                               self.plan.get("format"), sorted(self.plan.get("custom_objects") or {}),
                               DEFAULT_SEED)
        except Exception as exc:
            return {"checked": False, "reason": "the check failed: %s" % short_error(exc)}

    def load_model(self, kmod, custom):
        """planload.PlanLoad.load_model: the recorded recipe first, then the others."""
        return self.loading.load_model(kmod, custom)

    def replay(self, np, kmod, custom, resume):
        """The training step recorded at capture, on a fresh copy loaded the same way
        (runtime/resume.py); the model loaded above is not trained."""
        x, _ = build_inputs(np, self.plan.get("reference") or {})
        return replay(resume, x, lambda: self.load_model(kmod, custom), self.plan["model_path"],
                      self.plan.get("format"))

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


@contextlib.contextmanager
def stdout_to_stderr():
    """Only a report line may reach stdout: fd 1 points at stderr inside this block (TensorFlow
    logs, Keras progress bars, prints in user modules, C-level writes), and back after it, so
    the caller then writes its one line. Shared by the loader and the migrate entry points."""
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        os.dup2(real_stdout, 1)
        os.close(real_stdout)


def main(argv=None, environ=None):
    """Run the plan and print the one report line; returns the exit code."""
    argv, environ, debug = entry_arguments(argv, environ)
    t0 = time.time()
    run = None
    with stdout_to_stderr():
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
    os.write(1, line.encode("utf-8"))
    return code


if __name__ == "__main__":
    sys.exit(main())
