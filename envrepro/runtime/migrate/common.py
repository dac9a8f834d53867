"""What the two halves of ``envrepro migrate`` share: the one report line, exit codes, and the
files they exchange (JSON and ``.npz`` only, never pickle).

Everything the target reads was written by the source, in the model's own environment, which ran
the user's code: it is untrusted. JSON is parsed with size limits, arrays are loaded with
``allow_pickle=False``, and names from it are only used as dict keys and relative file names
checked to stay inside their folder. Python 3.6 syntax, standard library at import.
"""
import json
import os
import sys
import time
import traceback

from ..loader import error_info, stdout_to_stderr
from ..planload import PlanError, plan_json

PREFIX = "ENVREPRO-MIGRATE "
EXIT_OK = 0
EXIT_LOAD_FAILED = 5
EXIT_MISMATCH = 6
EXIT_INTERNAL = 70
JSON_LIMIT = 64 * 1024 * 1024      # architecture.json of a large model is a few MB


def read_json(path, limit=JSON_LIMIT):
    """A JSON file of at most ``limit`` bytes."""
    size = os.path.getsize(path)
    if size > limit:
        raise ValueError("%s is %d bytes (more than %d)" % (os.path.basename(path), size, limit))
    with open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, sort_keys=True, indent=1, default=str)


def inside(folder, name):
    """``folder/name`` when ``name`` is a plain relative file name that stays inside ``folder``;
    ValueError otherwise (the name came from an untrusted file)."""
    if not isinstance(name, str) or not name or name.startswith(("/", "\\")) or "\0" in name:
        raise ValueError("unusable file name %r" % (name,))
    path = os.path.normpath(os.path.join(folder, name))
    root = os.path.normpath(folder)
    if path != root and not path.startswith(root + os.sep):
        raise ValueError("file name %r leaves its folder" % (name,))
    return path


def save_npz(np, path, arrays):
    """``np.savez`` of plain arrays only: an object array would be pickled, so it is refused."""
    for key, arr in arrays.items():
        if arr.dtype.kind == "O":
            raise ValueError("array %s holds Python objects; not saved (it would need pickle)"
                             % key)
    np.savez(path, **arrays)


def load_npz(np, path):
    """Every array of an ``.npz``, read now (``allow_pickle=False``), in file order."""
    out = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            out[key] = data[key]
    return out


def plan_from(argv, environ, required):
    """The plan of a migrate entry point: ``--plan FILE`` or ``$ENVREPRO_PLAN``, a JSON object
    with the ``required`` keys; PlanError when unusable."""
    plan = plan_json(argv, environ)
    if not isinstance(plan, dict):
        raise PlanError("the plan is not a JSON object")
    missing = [k for k in required if not plan.get(k)]
    if missing:
        raise PlanError("the plan has no %s" % ", ".join(missing))
    return plan


def run_entry(work, debug, partial=None):
    """Run ``work()`` -> ``(report, exit code)`` with fd 1 pointed at stderr (only the report
    line may reach stdout), then print ``ENVREPRO-MIGRATE {json}``; returns the exit code.
    Whatever escapes ``work`` becomes the error of the report ``partial()`` returns (the one
    filled so far; 70 for PlanError, else 5)."""
    # What is written goes into a staging folder the host owns and removes: files the host user
    # (not the sandbox user) can delete, whatever uid the sandbox writes them with.
    os.umask(0)
    t0 = time.time()
    with stdout_to_stderr():
        try:
            report, code = work()
        except BaseException as e:  # user modules may call sys.exit(); TF may raise anything
            if isinstance(e, KeyboardInterrupt):
                raise
            if debug:
                traceback.print_exc(file=sys.stderr)
            report = (partial() if partial is not None else None) or {}
            report.update(ok=False, error=error_info(e, "plan" if isinstance(e, PlanError)
                                                     else report.get("stage", "migrate")))
            code = EXIT_INTERNAL if isinstance(e, PlanError) else EXIT_LOAD_FAILED
        report["exit_code"] = code
        report["ok"] = code == EXIT_OK
        report.setdefault("timings", {})["total"] = round(time.time() - t0, 4)
        line = PREFIX + json.dumps(report, sort_keys=True, default=str) + "\n"
    os.write(1, line.encode("utf-8"))
    return code

