"""envrepro runtime probe: record what a saved Keras model needs, from inside the training Python.

Why this file looks the way it does:

* It runs inside the user's *training* interpreter, which can be anything from Python 3.6 with
  TensorFlow 2.4 to Python 3.13 with Keras 3, and where envrepro itself (and its dependencies) may
  be absent. So the runtime package is standard library only, Python 3.6 syntax, and imports
  TensorFlow, Keras, numpy and h5py lazily inside the functions that need them. Importing this
  module never imports TensorFlow.
* It is used two ways: in-process by the save hook (``collect(path, out, model=model)``, the live
  model is passed so nothing is re-loaded, except a SavedModel with custom objects: its file is
  loaded to choose the recipe, see modelload.file_recipe, and a small saved file is loaded once
  to read what load_model restores of the optimizer, see restored.py), and as an entry point
  (``launch.host_argv(python, "probe", ["--model", PATH, "--out", DIR])``) run with the training
  interpreter from outside.
* Installed distributions are read without importlib.metadata (see distributions.py); the hook's
  budget is a fraction of a second.
* Every part (distributions, custom objects, reference prediction, optimizer) is guarded: a
  failure becomes an entry in ``warnings``; the probe never takes the training job down.

The output (``facts.json``) is the contract consumed by envrepro's capture code; see ``collect``.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import sys

from .customobjects import custom_object_facts
from .distributions import Distributions, cached_distributions
from .facts import ProbeFailure, python_facts, short_error, truthy
from .kerasflavor import framework_facts
from .modelformat import detect_format, h5_static, is_compiled, keras_zip_static
from .modelload import file_recipe, import_modules, load_model
from .optimizer import optimizer_facts
from .providers import import_providers
from .reference import DEFAULT_SEED, REFERENCE_DIR, load_sample, reference_facts
from .samples import SampleMismatch
from .restored import capture_restored
from .resume import capture_facts as resume_facts

PROBE_VERSION = 1
FACTS_FILE = "facts.json"
ERROR_FILE = "error.json"   # on failure: {"error": what, "fix": fix}, what the host reports


def _write_json_atomic(path, data):
    """Write through a temp file so a reader never sees half a facts.json."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=repr)
        fh.write("\n")
    os.replace(tmp, path)


def collect(model_path, out_dir, model=None, sample_input=None, modules=(), code_paths=(),
            load=True, seed=DEFAULT_SEED, loaded_by_probe=False, import_tf=None,
            warnings=None, dists=None, load_outcome=None, resume_check=False,
            sample_source="sample_input"):
    """Probe everything; write ``out_dir/facts.json`` and ``out_dir/reference/*.npy``.

    ``model`` is the live model (the save hook); without it the model is loaded here when
    ``load`` is true. Only an unwritable ``out_dir`` raises: every other failure is a warning,
    so a capture never breaks training, except a ``sample_input`` (named ``sample_source``) that
    doesn't fit the model's inputs: SampleMismatch, bad input. Returns the facts dict.

    Script mode passes the model it loaded (``loaded_by_probe=True``), the warnings of that load
    and its distribution scan, so nothing is done twice; ``load_outcome`` is the recipe that
    loaded it (modelload.load_model), recorded as ``facts["load"]``: None for a live model.

    ``resume_check`` also runs one training step on a fresh copy loaded from ``model_path``
    (runtime/resume.py), never on ``model``; its targets and updated weights go beside the
    reference.
    """
    warnings = list(warnings or [])
    model_path = os.path.abspath(model_path)
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)

    errors = import_modules(modules, code_paths, permanent=loaded_by_probe)
    for name, exc in errors:
        warnings.append("cannot import module %s: %s" % (name, short_error(exc)))
    fmt = detect_format(model_path) if os.path.exists(model_path) else None
    if fmt is None:
        lower = model_path.lower()
        fmt = "h5" if lower.endswith((".h5", ".hdf5")) else (
            "keras" if lower.endswith(".keras") else "savedmodel")
        if not os.path.exists(model_path):
            warnings.append("model path %s does not exist; format guessed from its name"
                            % model_path)

    if dists is None:
        try:
            dists = cached_distributions()
        except Exception as exc:  # should not happen: every read is guarded
            warnings.append("distribution scan failed: %s" % short_error(exc))
            dists = Distributions([])

    if model is None and load and os.path.exists(model_path):
        load_outcome = {}
        modules = list(modules) + provider_modules(model_path, fmt, modules, warnings, dists)
        try:
            model, fmt = load_model(model_path, modules, warnings, dists, load_outcome)
            loaded_by_probe = True
        except ProbeFailure as exc:
            warnings.append(str(exc))
        except Exception as exc:
            warnings.append("loading the model failed: %s" % short_error(exc))

    facts = {"probe_version": PROBE_VERSION}
    facts["python"] = python_facts()
    try:
        facts["frameworks"] = framework_facts(
            dists, model, import_tf=bool(import_tf if import_tf is not None else model is None))
    except Exception as exc:
        warnings.append("framework versions unavailable: %s" % short_error(exc))
        facts["frameworks"] = None
    facts["env"] = {"TF_USE_LEGACY_KERAS": os.environ.get("TF_USE_LEGACY_KERAS"),
                    "KERAS_BACKEND": os.environ.get("KERAS_BACKEND")}
    facts["distributions"] = dists.public()
    facts["load"] = load_outcome if model is not None and load_outcome else None

    model_facts = {"path": model_path, "format": fmt,
                   "class_name": type(model).__name__ if model is not None else None,
                   "loaded_by_probe": bool(loaded_by_probe and model is not None),
                   "compile": False}
    try:
        model_facts["compile"] = is_compiled(model)
    except Exception as exc:
        warnings.append("compile state unknown: %s" % short_error(exc))
    if model is None:
        static = {}
        if fmt == "h5":
            static = h5_static(model_path)
        elif fmt == "keras":
            static = keras_zip_static(model_path)
        model_facts["class_name"] = static.get("class_name")
        model_facts["compile"] = bool(static.get("compile", False))
    facts["model"] = model_facts

    lambdas = []
    try:
        objs, mods, unresolved = custom_object_facts(model, dists, modules, warnings,
                                                     recipe=(facts["load"] or {}).get("recipe"),
                                                     lambdas=lambdas)
    except Exception as exc:
        warnings.append("custom object discovery failed: %s" % short_error(exc))
        objs, mods, unresolved = [], [], []
    facts["lambdas"] = lambdas
    facts["custom_objects"] = objs
    facts["modules"] = mods
    facts["unresolved_custom_objects"] = unresolved
    if model is not None and not loaded_by_probe and load and fmt == "savedmodel" \
            and os.path.exists(model_path):
        # A live model can't say how its SavedModel loads (revival): the file is loaded.
        try:
            facts["load"] = file_recipe(model_path, objs, warnings, dists)
        except Exception as exc:
            warnings.append("loading the saved file to choose its recipe failed: %s"
                            % short_error(exc))

    reference, skipped = None, None
    if model is None:
        skipped = "model not loaded (--no-load or load failed)"
    else:
        try:
            reference, skipped = reference_facts(
                model, out_dir, sample_input, seed, allow_stateful=loaded_by_probe,
                model_path=model_path if fmt == "savedmodel" else None,
                sample_source=sample_source)
        except SampleMismatch:
            raise       # the user's sample doesn't fit the model: bad input, no capture
        except Exception as exc:
            skipped = "reference prediction failed: %s" % short_error(exc)
    # The capture says why in one warning (capturing/capture.py), the manifest keeps it.
    facts["reference"] = reference
    facts["reference_skipped"] = skipped

    try:
        facts["optimizer"] = optimizer_facts(model, model_path, fmt, warnings,
                                             fresh=loaded_by_probe)
    except Exception as exc:
        warnings.append("optimizer facts unavailable: %s" % short_error(exc))
        facts["optimizer"] = None
    if facts["optimizer"] and not facts["optimizer"]["state_saved_exact"]:
        warnings.append("optimizer state_saved could not be read from the %s file; approximated "
                        "as compiled and the optimizer has variables" % fmt)
    load_copy = copy_loader(model_path, modules, objs, dists)
    if facts["optimizer"] and (load or loaded_by_probe):
        record_restored(facts["optimizer"], model, loaded_by_probe, model_path, fmt, load_copy,
                        warnings)
    facts["resume_check"] = None
    if resume_check and model is None:
        facts["resume_check"] = {"skipped": "the model was not loaded"}
    elif resume_check:
        facts["resume_check"] = resume_facts(facts, load_copy, model_path, fmt,
                                             out_dir, REFERENCE_DIR, seed, warnings)
    facts["warnings"] = warnings
    _write_json_atomic(os.path.join(out_dir, FACTS_FILE), facts)
    return facts


def copy_loader(model_path, modules, objs, dists):
    """A function loading a fresh copy of the model from its file, with the modules of its
    custom objects imported (the resume check's and the in-process ``restored``'s copy)."""
    copy_modules = list(modules) + [o["module"] for o in objs
                                    if o.get("module") and o["module"] not in modules]
    return lambda: load_model(model_path, copy_modules, [], dists)[0]


def record_restored(opt_facts, model, loaded_by_probe, model_path, fmt, load_copy, warnings):
    """The optimizer facts' ``restored``: what this environment's own load_model restores from
    the file (runtime/restored.py), or ``restored_skipped`` saying why it was not read."""
    try:
        restored, skipped = capture_restored(model, loaded_by_probe, opt_facts, model_path, fmt,
                                             load_copy)
    except Exception as exc:
        restored, skipped = None, "reading it failed: %s" % short_error(exc)
        warnings.append("what load_model restores of the optimizer is unknown: %s"
                        % short_error(exc))
    if restored is not None:
        opt_facts["restored"] = restored
    elif skipped:
        opt_facts["restored_skipped"] = skipped


def provider_modules(model_path, fmt, modules, warnings, dists):
    """The installed modules behind the registered-name prefixes the model's config uses
    (providers.py), imported, for the manifest's modules like a --module."""
    try:
        found = import_providers(model_path, fmt, dists, warnings, skip=modules)
    except Exception as exc:
        warnings.append("registered-name providers unavailable: %s" % short_error(exc))
        return []
    return [m for m in found if m not in modules]


def _write_error(out_dir, what, fix, kind=None):
    """Leave the failure for the host as data (``ERROR_FILE``), beside where the facts would be:
    the stderr line is for people. ``kind`` "sample": the user's sample is what is wrong, not the
    probe. Best effort: an unwritable folder keeps only the line."""
    data = {"error": what, "fix": fix}
    if kind:
        data["kind"] = kind
    try:
        if not os.path.isdir(out_dir):
            os.makedirs(out_dir)
        _write_json_atomic(os.path.join(out_dir, ERROR_FILE), data)
    except Exception:
        pass


# ---------------------------------------------------------------------------------------------
# Script entry point
# ---------------------------------------------------------------------------------------------

def _parse_args(argv):
    import argparse

    parser = argparse.ArgumentParser(
        prog="probe.py",
        description="Record the environment a saved Keras model needs (envrepro runtime probe).")
    parser.add_argument("--model", required=True, help="SavedModel folder, .h5 or .keras file")
    parser.add_argument("--out", required=True, help="folder for facts.json and reference/")
    parser.add_argument("--module", action="append", default=[],
                        help="module to import first (custom objects, registrations)")
    parser.add_argument("--code-path", action="append", default=[],
                        help="folder to put on sys.path (where those modules live)")
    parser.add_argument("--sample", help=".npy, .npz or .json input for the reference prediction")
    parser.add_argument("--no-load", action="store_true",
                        help="don't load the model: environment facts only")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--resume-check", action="store_true",
                        help="record one training step on a fresh copy (runtime/resume.py)")
    return parser.parse_args(argv)


def _run(args):
    """Script mode proper: check the arguments, import, load, collect; returns facts.json's path."""
    model_path = os.path.abspath(args.model)
    if not os.path.exists(model_path):
        raise ProbeFailure("no model at %s" % model_path, "pass the path given to model.save()")
    for path in args.code_path:
        full = os.path.abspath(path)
        if not os.path.isdir(full):
            raise ProbeFailure("code path %s is not a folder" % full,
                               "pass the folder that holds your modules")
        if full not in sys.path:
            sys.path.insert(0, full)
    for name, exc in import_modules(args.module, (), permanent=True):
        raise ProbeFailure("cannot import module %s: %s" % (name, short_error(exc)),
                           "check --module and add its folder with --code-path")
    sample = None
    if args.sample:
        try:
            sample = load_sample(args.sample)
        except Exception as exc:
            raise SampleMismatch("cannot read sample %s: %s" % (args.sample, short_error(exc)),
                                 "pass a .npy or .npz file saved with numpy, or a .json list "
                                 "or object of input name -> nested lists")
    warnings = []
    dists = Distributions()
    model = None
    outcome = {}
    modules = list(args.module)
    if not args.no_load:
        modules += provider_modules(model_path, detect_format(model_path), modules, warnings,
                                    dists)
        model, _ = load_model(model_path, modules, warnings, dists, outcome)
    collect(model_path, args.out, model=model, sample_input=sample, modules=modules,
            load=False, seed=args.seed, loaded_by_probe=model is not None,
            import_tf=not args.no_load,
            warnings=warnings, dists=dists, load_outcome=outcome, resume_check=args.resume_check,
            sample_source="sample %s" % args.sample if args.sample else "sample_input")
    return os.path.join(os.path.abspath(args.out), FACTS_FILE)


def main(argv=None):
    """Script mode: exit 0 and print the facts.json path; on failure one line on stderr, the
    same in ``--out``'s error.json, exit 2.

    stdout is reserved for that path: TensorFlow's Python-level chatter during import and
    loading is redirected to stderr, and its C++ logging is turned down before import.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    debug = truthy(os.environ.get("ENVREPRO_DEBUG"))
    args = _parse_args(argv)
    real_stdout = sys.stdout
    saved_fd = None
    try:
        try:
            sys.stdout.flush()
            saved_fd = os.dup(1)
            os.dup2(2, 1)
        except (OSError, AttributeError, ValueError):
            saved_fd = None
        sys.stdout = sys.stderr
        try:
            out_path = _run(args)
        finally:
            sys.stdout = real_stdout
            if saved_fd is not None:
                try:
                    sys.stderr.flush()
                    os.dup2(saved_fd, 1)
                    os.close(saved_fd)
                except OSError:
                    pass
    except ProbeFailure as exc:
        if debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write("envrepro-probe: error: %s\n" % exc)
        _write_error(args.out, exc.what, exc.fix,
                     "sample" if isinstance(exc, SampleMismatch) else None)
        return 2
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write("envrepro-probe: error: %s (set ENVREPRO_DEBUG=1 for the traceback)\n"
                         % short_error(exc))
        _write_error(args.out, short_error(exc), None)
        return 2
    real_stdout.write(out_path + "\n")
    real_stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
