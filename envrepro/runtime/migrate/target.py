"""``envrepro migrate``, step 2: in the target environment (normally TF 2.21 + Keras 3, any
TF >= 2.12), turn what the source wrote into artifacts this environment loads natively, and
prove each one on the sample.

Entry point ``migrate.target`` (launch.py). The plan: ``source_dir`` (the source's folder,
read-only, untrusted), ``out`` (writable, empty), ``name`` (artifact base name),
``custom_objects`` (``{"Name": "module:attr"}``), ``snapshot_dir`` (put on sys.path), ``modules``
(imported first), ``reference`` (null or ``{"outputs": [paths], "atol", "rtol"}``: the capture's
reference outputs; the inputs are the source's sample.npz), ``safe_mode``, ``formats``.

Each artifact (``keras``: rebuild.py; ``savedmodel``: the source's inference SavedModel, copied
and called; ``onnx``: toonnx.py) is made and judged independently: one failing never stops the
others. ``verified``: its prediction on the sample matches the capture's reference;
``matches_source``: it matches the source's own prediction. Exit 0 when one is verified (with no
reference: when one matches the source), 6 when none, 5 when nothing could be attempted, 70 on a
bad plan. One line on stdout: ``ENVREPRO-MIGRATE {json}``. Python 3.6 syntax.
"""
import os
import platform
import shutil
import sys
import time
import traceback

from ..comparison import compare, flatten_outputs
from ..facts import short_error
from ..planload import PlanError, entry_arguments, resolve_attr
from ..reference import FLOAT_TOLERANCE, assemble_inputs, predict
from ..resume import replay
from ..samples import storable
from . import lambdas, rebuild, savedmodel, toonnx
from .common import EXIT_LOAD_FAILED, EXIT_MISMATCH, EXIT_OK, inside, load_npz, plan_from, \
    read_json, run_entry

FORMATS = ("keras", "savedmodel", "onnx")
SUFFIX = {"keras": ".keras", "savedmodel": ".savedmodel", "onnx": ".onnx"}


class SourceUnusable(Exception):
    """The source's folder can't be used: nothing can be attempted."""


def new_artifact(fmt, name):
    return {"format": fmt, "path": name + SUFFIX[fmt], "written": False, "verified": False,
            "matches_source": None, "max_abs_diff": None, "why_not": None, "custom_objects": {},
            "translated": [], "replaced": [], "compare": None, "seconds": None}


def pick_keras(tf):
    """Keras 3 when ``import keras`` is Keras 3, else TensorFlow's Keras 2; and its major."""
    try:
        import keras

        version = str(getattr(keras, "__version__", ""))
        if version[:1].isdigit() and int(version.split(".")[0]) >= 3:
            return keras, 3, version
    except ImportError:
        pass
    kmod = tf.keras
    version = str(getattr(kmod, "__version__", "") or "2")
    return kmod, 2, version


def copy_tree(src, dst):
    """Copy a folder of regular files and folders only (a link in the untrusted source is
    refused, not followed)."""
    os.makedirs(dst)
    for entry in sorted(os.listdir(src)):
        s, d = os.path.join(src, entry), os.path.join(dst, entry)
        if os.path.islink(s):
            raise ValueError("%s is a link" % entry)
        if os.path.isdir(s):
            copy_tree(s, d)
        elif os.path.isfile(s):
            shutil.copyfile(s, d)
        else:
            raise ValueError("%s is not a regular file" % entry)


def used_names(values):
    """Every string in ``values`` (a config, the optimizer's facts): the custom objects a
    ``.keras`` needs are the ones its config names."""
    out, stack = set(), list(values)
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            out.add(v)
            out.add(v.split(">")[-1])
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return out


class Target(object):
    def __init__(self, plan, debug):
        self.plan, self.debug = plan, debug
        self.src, self.out = plan["source_dir"], plan["out"]
        self.name = str(plan.get("name") or "model")
        if "/" in self.name or "\\" in self.name or self.name in (".", ".."):
            raise PlanError("name %r is not a plain file name" % self.name)
        self.formats = list(plan.get("formats") or FORMATS)
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise PlanError("unknown formats %s" % unknown)
        self.custom_specs = dict(plan.get("custom_objects") or {})
        self.report = {"ok": False, "error": None, "exit_code": None, "stage": "import",
                       "versions": {"python": platform.python_version()}, "artifacts": [],
                       "optimizer": None, "reference": None, "agree": {}, "timings": {},
                       "problems": []}
        self.predictions = {}

    def note(self, exc):
        if self.debug:
            traceback.print_exc(file=sys.stderr)
        return short_error(exc)

    # -- setup ---------------------------------------------------------------------------------

    def setup(self):
        snap = self.plan.get("snapshot_dir")
        if snap and snap not in sys.path:
            sys.path.insert(0, snap)
        import numpy as np
        import tensorflow as tf

        self.np, self.tf = np, tf
        self.kmod, self.major, kver = pick_keras(tf)
        self.report["versions"].update({"tensorflow": tf.__version__, "keras": kver,
                                        "numpy": np.__version__})
        import importlib

        for name in self.plan.get("modules") or []:
            try:
                importlib.import_module(name)
            except Exception as exc:
                self.report["problems"].append("module %s: %s" % (name, self.note(exc)))
        self.custom, self.custom_problems = {}, []
        for name, spec in sorted(self.custom_specs.items()):
            try:
                self.custom[name] = resolve_attr(spec)
            except Exception as exc:
                self.custom_problems.append("custom object %s (%s): %s"
                                            % (name, spec, self.note(exc)))
        self.report["problems"].extend(self.custom_problems)

    def read_source(self):
        np = self.np
        try:
            self.source = read_json(inside(self.src, "source.json"))
            if not isinstance(self.source, dict) or not self.source.get("ok"):
                raise ValueError("the source did not succeed (source.json ok is %r)"
                                 % (self.source.get("ok") if isinstance(self.source, dict)
                                    else None))
            info = self.source.get("sample") or {}
            if not info.get("keys"):
                raise ValueError("the source wrote no sample: %s" % (
                    ((self.source.get("files") or {}).get("why_not") or {}).get("sample")))
            self.sample = load_npz(np, inside(self.src, "sample.npz"))
            self.keys = [str(k) for k in info["keys"]]
            missing = [k for k in self.keys if k not in self.sample]
            if missing:
                raise ValueError("sample.npz lacks %s" % missing)
            pred = load_npz(np, inside(self.src, "prediction.npz"))
            self.prediction = [pred[str(k)] for k in info.get("outputs") or sorted(pred)]
        except Exception as exc:
            raise SourceUnusable("the source's folder can't be used: %s" % self.note(exc))
        self.structure = info.get("structure") or "single"
        self.names = list(info.get("names") or [])
        self.output_names = list(info.get("output_names") or [])
        ref = self.plan.get("reference")
        self.atol, self.rtol = FLOAT_TOLERANCE["atol"], FLOAT_TOLERANCE["rtol"]
        self.expected = None
        if ref and ref.get("outputs"):
            try:
                self.expected = [np.load(p, allow_pickle=False) for p in ref["outputs"]]
            except (OSError, ValueError) as exc:
                raise PlanError("the plan's reference outputs can't be read: %s"
                                % short_error(exc))
            self.atol = float(ref.get("atol", self.atol))
            self.rtol = float(ref.get("rtol", self.rtol))
        self.report["reference"] = "capture" if self.expected is not None else "source-prediction"

    # -- judging -------------------------------------------------------------------------------

    def judge(self, art, got):
        np = self.np
        got = [storable(np.asarray(g)) for g in got]
        self.predictions[art["format"]] = got
        mine = compare(np, got, self.prediction, self.atol, self.rtol)
        art["matches_source"] = mine["allclose"]
        result = mine if self.expected is None else compare(np, got, self.expected, self.atol,
                                                            self.rtol)
        art["compare"] = result
        art["max_abs_diff"] = result["max_abs_diff"]
        art["verified"] = self.expected is not None and bool(result["allclose"])
        if self.expected is None:
            art["source_max_abs_diff"] = mine["max_abs_diff"]

    def model_input(self):
        return assemble_inputs(self.structure, self.names, [self.sample[k] for k in self.keys])

    # -- the artifacts -------------------------------------------------------------------------

    def keras(self, art):
        files = self.source.get("files") or {}
        if "architecture" not in files or "weights" not in files:
            why = (files.get("why_not") or {})
            raise rebuild.RebuildFailed("the source wrote no %s: %s" % (
                "architecture" if "architecture" not in files else "weights",
                why.get("architecture") or why.get("weights")))
        arch = read_json(inside(self.src, "architecture.json"))
        named = used_names([arch, self.source.get("optimizer")])
        art["custom_objects"] = dict((k, v) for k, v in self.custom_specs.items()
                                     if k in self.custom and (k in named or
                                                              k.split(">")[-1] in named))
        weights = load_npz(self.np, inside(self.src, "weights.npz"))
        opt_arrays = load_npz(self.np, inside(self.src, "optimizer.npz")) \
            if "optimizer" in files else None
        rebuilt = self.lambda_functions(art, arch)
        try:
            model, opt = rebuild.rebuild(self.kmod, arch, self.source, weights, opt_arrays,
                                         self.custom, self.major, art,
                                         lambda m: predict(m, self.model_input()),
                                         lambdas=rebuilt)
        except rebuild.RebuildFailed as exc:
            # A custom object that didn't import matters only when the rebuild needed it.
            raise rebuild.RebuildFailed("; ".join([str(exc)] + self.custom_problems))
        self.report["optimizer"] = opt
        path = os.path.join(self.out, art["path"])
        model.save(path)
        art["written"] = True
        del model
        fresh = rebuild.reload(self.kmod, path, rebuild.by_short_names(self.custom),
                               self.plan.get("safe_mode", True) is not False)
        out = predict(fresh, self.model_input())
        self.judge(art, flatten_outputs(self.np, out, {"output_names": self.output_names}))
        if opt.get("carried"):
            try:
                opt["reloaded_iterations"] = int(self.np.asarray(fresh.optimizer.iterations))
            except Exception as exc:
                opt["reloaded_iterations"] = None
                opt["reload_note"] = self.note(exc)
        del fresh
        opt["resume_check"] = self.resume_check(path, opt)

    def resume_check(self, path, opt):
        """The capture's training step replayed on a fresh copy of the written ``.keras``: the
        carried optimizer state gives the same loss, weights and iteration count as at capture.
        None when the capture recorded none; ``{"skipped": why}`` when it can't be checked."""
        expected = self.plan.get("resume_check")
        if not expected:
            return None
        if expected.get("skipped"):
            return {"skipped": "the capture's resume check was skipped: %s" % expected["skipped"]}
        if not opt.get("carried"):
            return {"skipped": "the optimizer state was not carried"}
        if (self.source.get("sample") or {}).get("from") != "reference":
            return {"skipped": "the source's sample is not the capture's reference batch"}
        custom = rebuild.by_short_names(self.custom)
        safe = self.plan.get("safe_mode", True) is not False
        result = replay(expected, self.model_input(),
                        lambda: rebuild.reload(self.kmod, path, custom, safe), path, "keras")
        if result.get("problems"):
            self.report["problems"].extend("resume check: %s" % p for p in result["problems"])
        return result

    def lambda_functions(self, art, arch):
        """The Lambda layers' functions rebuilt from the capture's recorded source, written as
        ``NAME_lambdas.py`` beside the ``.keras`` and imported (Keras 3 targets only): translate's
        ``lambdas``; the module's functions join the artifact's custom objects."""
        records = [r for r in self.plan.get("lambdas") or [] if isinstance(r, dict)]
        if self.major < 3 or "Lambda" not in used_names([arch]):
            return {}
        modname = lambdas.module_name(self.name)
        text, functions, why_not = lambdas.generate(records, self.name, modname)
        out = dict((layer, {"why_not": why}) for layer, why in why_not.items())
        if not functions:
            return out
        try:
            module, _ = lambdas.write_and_import(self.out, modname, text)
        except Exception as exc:
            why = "the module rebuilt from the recorded source doesn't import here: %s" \
                % self.note(exc)
            return dict((layer, {"why_not": why}) for layer in list(functions) + list(why_not))
        art["code"] = modname + ".py"
        sources = dict((r.get("layer"), r.get("source")) for r in records)
        for layer, fname in functions.items():
            fn = getattr(module, fname)
            ref = self.kmod.saving.serialize_keras_object(fn)
            registered = ref.get("config") if isinstance(ref, dict) else None
            out[layer] = {"function": ref, "source": sources.get(layer)}
            if registered:
                art["custom_objects"][registered] = "%s:%s" % (modname, fname)
                self.custom[registered] = fn
        return out

    def signature_info(self):
        sm = self.source.get("savedmodel") or {}
        if not sm.get("written") or not sm.get("signature"):
            raise ValueError("the source wrote no inference SavedModel: %s" % sm.get("why_not"))
        return sm["signature"]

    def savedmodel(self, art):
        info = self.signature_info()
        dst = os.path.join(self.out, art["path"])
        copy_tree(inside(self.src, savedmodel.DIRNAME), dst)
        art["written"] = True
        self.judge(art, self.call_signature(dst, info))

    def call_signature(self, path, info):
        loaded, sig, inputs, outputs = savedmodel.read_signature(self.tf, path)
        order = savedmodel.output_order(outputs, info.get("outputs"))
        got = savedmodel.call(self.tf, self.np, sig, inputs, info["inputs"], self.sample, order)
        del loaded
        return got

    def onnx(self, art):
        """The SavedModel's signature converted by tf2onnx, read back by onnxruntime and judged
        like the others. Why not, in one line: tf2onnx/onnxruntime missing, an op or a string
        input ONNX can't take (``toonnx.NotConvertible``, no traceback)."""
        why = toonnx.missing()
        if why is not None:
            raise rebuild.RebuildFailed(why)
        info = self.signature_info()
        folder = os.path.join(self.out, self.name + SUFFIX["savedmodel"])
        if not os.path.isdir(folder):
            folder = inside(self.src, savedmodel.DIRNAME)
        loaded, sig, inputs, outputs = savedmodel.read_signature(self.tf, folder)
        order = savedmodel.output_order(outputs, info.get("outputs"))
        path = os.path.join(self.out, art["path"])
        try:
            got, facts = toonnx.convert_and_run(self.tf, self.np, sig, info["inputs"],
                                                self.sample, order, path)
        except toonnx.NotConvertible as exc:
            if os.path.exists(path):
                os.remove(path)
            raise rebuild.RebuildFailed("not convertible to ONNX: %s" % exc)
        finally:
            del loaded
        art.update(facts)
        art["written"] = True
        self.judge(art, got)

    # -- the run -------------------------------------------------------------------------------

    def execute(self):
        rep = self.report
        t = time.time()
        self.setup()
        rep["timings"]["setup"] = round(time.time() - t, 4)
        rep["stage"] = "source"
        try:
            self.read_source()
        except SourceUnusable as exc:
            rep["error"] = {"type": "SourceUnusable", "message": str(exc), "stage": "source",
                            "first_line": str(exc)[:500]}
            return rep, EXIT_LOAD_FAILED
        rep["stage"] = "artifacts"
        if not os.path.isdir(self.out):
            os.makedirs(self.out)
        for fmt in self.formats:
            art = new_artifact(fmt, self.name)
            t = time.time()
            try:
                getattr(self, fmt)(art)
            except Exception as exc:
                art["why_not"] = str(exc) if isinstance(exc, rebuild.RebuildFailed) \
                    else self.note(exc)
                art["written"] = art["written"] or os.path.exists(
                    os.path.join(self.out, art["path"]))
            art["seconds"] = round(time.time() - t, 4)
            rep["artifacts"].append(art)
        self.agree()
        rep["stage"] = "done"
        good = "verified" if self.expected is not None else "matches_source"
        return rep, EXIT_OK if any(a.get(good) for a in rep["artifacts"]) else EXIT_MISMATCH

    def agree(self):
        done = [a["format"] for a in self.report["artifacts"] if a["format"] in self.predictions]
        for i, a in enumerate(done):
            for b in done[i + 1:]:
                result = compare(self.np, self.predictions[a], self.predictions[b], self.atol,
                                 self.rtol)
                self.report["agree"]["%s~%s" % (a, b)] = result.get("problem") or \
                    result["max_abs_diff"]


def main(argv=None, environ=None):
    argv, environ, debug = entry_arguments(argv, environ)

    made = []

    def work():
        made.append(Target(plan_from(argv, environ, ("source_dir", "out")), debug))
        return made[0].execute()

    return run_entry(work, debug, lambda: made[0].report if made else None)


if __name__ == "__main__":
    sys.exit(main())
