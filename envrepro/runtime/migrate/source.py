"""``envrepro migrate``, step 1: in the capture's own environment, load the model exactly as the
loader does, re-check its reference, and write what another Keras needs to rebuild it.

Entry point ``migrate.source`` (launch.py). The plan is the loader's (sandbox/loadplan.py
``make_plan``) plus ``"migrate": {"out": FOLDER, "seed": 0}``. The loader's ``Run`` loads the
model and checks the reference (and the optimizer, resume and drift checks the plan asks for):
an error is exit 5, any mismatch exit 6, and then only ``source.json`` is written. Otherwise
FOLDER receives (docs/migrate.md): ``architecture.json``, ``weights.npz``, ``optimizer.npz``,
``inference.savedmodel/``, ``sample.npz``, ``prediction.npz`` and ``source.json``; a file that
can't be written is said in source.json (``why_not``), not a failed run. The report line,
``ENVREPRO-MIGRATE {json}``, carries source.json's dict. Python 3.6 syntax.
"""
import json
import os
import sys
import time
import traceback

from .. import reference as refs
from ..comparison import compare, flatten_outputs
from ..facts import ProbeFailure, short_error
from ..loader import Run, build_inputs, error_info
from ..planload import PlanError, entry_arguments, read_plan
from ..samples import storable
from . import optstate, savedmodel
from .common import EXIT_LOAD_FAILED, EXIT_INTERNAL, EXIT_MISMATCH, EXIT_OK, run_entry, \
    save_npz, write_json
from .parts import addons_activations, describe, layer_weights, loss_of, vocabularies

FILES = {"architecture": "architecture.json", "weights": "weights.npz",
         "optimizer": "optimizer.npz", "savedmodel": savedmodel.DIRNAME, "sample": "sample.npz",
         "prediction": "prediction.npz", "source": "source.json"}


class KeepingRun(Run):
    """The loader's Run, keeping the model its PlanLoad returns."""

    def __init__(self, plan):
        Run.__init__(self, plan)
        self.model = None
        load = self.loading.run

        def run_and_keep():
            self.model = load()
            return self.model

        self.loading.run = run_and_keep


CRASHED = ("the source environment's TensorFlow crashed writing it (the process died; a "
           "TensorFlow bug of that release)")


def new_report(run):
    rep = run.report
    return {"ok": False, "error": None, "exit_code": None, "versions": rep["versions"],
            "load": rep["load"], "timings": rep["timings"], "reference": None, "mismatches": [],
            "checks": {}, "model": None, "files": {}, "savedmodel": {"written": False,
                                                                    "why_not": None},
            "optimizer": None, "sample": None}


class Source(object):
    def __init__(self, plan, debug):
        self.plan, self.debug = plan, debug
        opts = plan.get("migrate")
        if not isinstance(opts, dict) or not opts.get("out"):
            raise PlanError("the plan has no migrate.out")
        self.out = opts["out"]
        self.seed = int(opts.get("seed", 0) or 0)
        self.run = KeepingRun(plan)
        self.report = new_report(self.run)

    def note(self, key, exc):
        if self.debug:
            traceback.print_exc(file=sys.stderr)
        return short_error(exc)

    def execute(self):
        rep, run = self.report, self.run
        try:
            run.execute()
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            if self.debug:
                traceback.print_exc(file=sys.stderr)
            rep["error"] = error_info(e, run.report["stage"])
            return self.finish(EXIT_INTERNAL if isinstance(e, PlanError) else EXIT_LOAD_FAILED)
        rep["reference"] = run.report["reference"]
        rep["mismatches"] = list(run.report["mismatches"])
        rep["checks"] = dict((k, run.report[k]) for k in ("optimizer", "resume_check", "drift")
                             if run.report.get(k) is not None)
        if rep["mismatches"]:
            return self.finish(EXIT_MISMATCH)
        t = time.time()
        self.export(run.model)
        rep["timings"]["migrate_export"] = round(time.time() - t, 4)
        return self.finish(EXIT_OK)

    def finish(self, code):
        if not os.path.isdir(self.out):
            os.makedirs(self.out)
        self.report["files"]["source"] = FILES["source"]
        self.report["exit_code"] = code
        self.report["ok"] = code == EXIT_OK
        write_json(os.path.join(self.out, FILES["source"]), self.report)
        return self.report, code

    def path(self, key):
        return os.path.join(self.out, FILES[key])

    def export(self, model):
        loading = self.run.loading
        np, tf, kmod = loading.np, loading.tf, loading.kmod
        rep = self.report
        keras3 = str(rep["versions"].get("keras") or "").startswith("3")
        if not os.path.isdir(self.out):
            os.makedirs(self.out)
        rep["files"]["why_not"] = {}
        why = rep["files"]["why_not"]
        try:
            rep["model"] = describe(model, kmod, rep["versions"], self.plan)
        except Exception as e:
            rep["model"] = {"class_name": type(model).__name__, "layers": None,
                            "why_not": self.note("model", e)}
        try:
            config = json.loads(model.to_json())
            notes = addons_activations(model, config) + vocabularies(model, config)
            if notes:
                rep["files"]["architecture_notes"] = notes
            write_json(self.path("architecture"), config)
            rep["files"]["architecture"] = FILES["architecture"]
        except Exception as e:
            why["architecture"] = "model.to_json() failed: %s" % self.note("architecture", e)
        try:
            save_npz(np, self.path("weights"), layer_weights(np, model))
            rep["files"]["weights"] = FILES["weights"]
        except Exception as e:
            why["weights"] = self.note("weights", e)
        try:
            if not self.run.compiled:
                raise optstate.NotCarried(
                    "the model loads in its own environment only with compile=False (recipe %s): "
                    "there is no optimizer to carry" % rep.get("load", {}).get("recipe"))
            optstate.restore_lazy_state(np, model, self.plan.get("model_path"),
                                        self.plan.get("format"))
            facts, arrays = optstate.read_state(np, model)
            facts["loss"] = loss_of(model)
            save_npz(np, self.path("optimizer"), arrays)
            rep["optimizer"] = facts
            rep["files"]["optimizer"] = FILES["optimizer"]
        except optstate.NotCarried as e:
            rep["optimizer"] = {"why_not": str(e), "class": type(getattr(
                model, "optimizer", None)).__name__ if getattr(model, "optimizer", None) else None}
        except Exception as e:
            rep["optimizer"] = {"why_not": self.note("optimizer", e)}
        try:
            sample = self.sample(np, model)
        except Exception as e:
            why["sample"] = self.note("sample", e)
            return
        # A checkpoint: what the target needs is written. Some releases crash (SIGSEGV) writing
        # the inference SavedModel of some models (TF 2.4 with lookup tables); the host then
        # goes on with this source.json, the SavedModel said not written, and why.
        rep["savedmodel"] = {"written": False, "why_not": CRASHED, "checkpoint": True}
        self.finish(EXIT_OK)
        self.savedmodel(np, tf, kmod, model, sample, keras3)

    def sample(self, np, model):
        """The sample (the reference inputs, else seeded ones) and the prediction on it."""
        rep, ref = self.report, self.plan.get("reference")
        if ref and ref.get("inputs"):
            x, arrays = build_inputs(np, ref)
            structure = ref.get("input_structure") or "single"
            names = list(ref.get("input_names") or [])
            out = refs.predict(model, x)
            origin = "reference"
        else:
            structure, names, arrays, out = seeded(model, self.seed, self.plan.get("model_path"))
            origin = "seeded"
        keys = list(names) if structure == "dict" else ["x%d" % i for i in range(len(arrays))]
        output_names = output_names_of(out, model, ref)
        flat = [storable(a) for a in flatten_outputs(np, out, {"output_names": output_names})]
        save_npz(np, self.path("sample"), dict(zip(keys, [storable(np.asarray(a))
                                                          for a in arrays])))
        save_npz(np, self.path("prediction"), dict(("y%d" % i, a) for i, a in enumerate(flat)))
        rep["files"]["sample"], rep["files"]["prediction"] = FILES["sample"], FILES["prediction"]
        rep["sample"] = {"keys": keys, "from": origin, "structure": structure, "names": names,
                         "outputs": ["y%d" % i for i in range(len(flat))],
                         "output_names": output_names,
                         "shapes": [list(np.asarray(a).shape) for a in arrays]}
        if isinstance(rep["model"], dict):
            rep["model"]["output_names"] = output_names
        return {"keys": keys, "arrays": dict(zip(keys, [storable(np.asarray(a)) for a in arrays])),
                "structure": structure, "names": names, "prediction": flat,
                "output_names": output_names}

    def savedmodel(self, np, tf, kmod, model, sample, keras3):
        rep = self.report["savedmodel"]
        path = self.path("savedmodel")
        try:
            _, in_names, specs, _, _ = refs.model_inputs(model, self.plan.get("model_path"))
            names = sample["names"] or in_names or sample["keys"]
            if specs is not None and sample["structure"] == "dict":
                by_name = dict(zip(in_names or [], specs))   # the sample's order, not the model's
                specs = [by_name.get(n) for n in names]
            if specs is None or len(specs) != len(sample["keys"]) or None in specs:
                specs = [(list(sample["arrays"][k].shape), _spec_dtype(sample["arrays"][k]))
                         for k in sample["keys"]]
            plan = savedmodel.signature_plan(sample["structure"], names, specs, sample["keys"],
                                             sample["output_names"])
            via = savedmodel.write(tf, kmod, model, path, plan, keras3)
            loaded, sig, inputs, outputs = savedmodel.read_signature(tf, path)
            if plan.pop("inputs_from_file", False):
                savedmodel.match_inputs(plan, inputs)
            order = savedmodel.output_order(outputs, plan["outputs"])
            got = savedmodel.call(tf, np, sig, inputs, plan["inputs"], sample["arrays"], order)
            check = compare(np, [storable(g) for g in got], sample["prediction"], 1e-5, 1e-4)
            del loaded
            rep.update({"written": True, "why_not": None, "via": via,
                        "signature": {"inputs": plan["inputs"], "outputs": order,
                                      "output_names": plan["output_names"],
                                      "input_specs": inputs},
                        "check": check})
            self.report["files"]["savedmodel"] = FILES["savedmodel"]
        except Exception as e:
            rep.update({"written": os.path.isdir(path), "why_not": self.note("savedmodel", e)})


def _spec_dtype(arr):
    return "string" if arr.dtype.kind in "US" else str(arr.dtype)


def seeded(model, seed, model_path):
    """Seeded inputs (reference.py's, with lengths for free dimensions) and the prediction on
    them: ``(structure, names, arrays, outputs)``."""
    attempts = refs._seeded_attempts(model, seed, model_path)
    failure = None
    for structure, names, arrays, _, _ in attempts:
        try:
            out = refs.predict(model, refs.assemble_inputs(structure, names, arrays))
            return structure, names, arrays, out
        except Exception as exc:
            failure = failure or exc
    raise ProbeFailure("the prediction on seeded inputs failed: %s" % short_error(failure))


def output_names_of(out, model, ref):
    """The outputs' names, in the order the reference lists them (flatten_outputs' order)."""
    if ref and ref.get("output_names"):
        return list(ref["output_names"])
    if isinstance(out, dict):
        return sorted(str(k) for k in out)
    return refs._split_structure(out, model, "output")[1]


def main(argv=None, environ=None):
    argv, environ, debug = entry_arguments(argv, environ)

    made = []

    def work():
        made.append(Source(read_plan(argv, environ), debug))
        return made[0].execute()

    return run_entry(work, debug, lambda: made[0].report if made else None)


if __name__ == "__main__":
    sys.exit(main())
