"""The serving contract: the names the model server (runtime, inside the image) and the host side
(``envrepro dockerfile --serve``, ``build --serve``, ``serve``, ``k8s``) both use.

Standard library only, Python 3.6 syntax: the server imports it inside the reproduced environment,
the host imports it to write Dockerfiles, probes and manifests that point at endpoints the server
really has.
"""
import os

from .. import launch

ENTRY = "serve.main"            # runtime entry point (serve/main.py): ``server_argv(python)`` below
PORT = 8501                     # TF Serving's REST port, the default of ``envrepro serve --port``

# Where the serving image holds what it serves (copied in by the serving Dockerfile).
ROOT = "/opt/envrepro/serve"
RUNTIME_DIR = ROOT + "/lib/envrepro_runtime"    # the runtime package (launch.PACKAGE)
PLAN_FILE = ROOT + "/plan.json"                  # the loader's plan, with the paths below
MODEL_DIR = ROOT + "/model"                      # the model, as MODEL_DIR/<file or folder name>
CAPTURE_DIR = ROOT + "/capture"                  # snapshot/ and reference/ of the capture

# Endpoints (Open Inference Protocol / KServe V2, TF Serving REST v1, Prometheus).
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"
METRICS_PATH = "/metrics"
# Per-model endpoints, ``.format(name=NAME)`` (NAME: model_name() below or ENVREPRO_SERVE_NAME).
MODEL_READY_PATH = "/v2/models/{name}/ready"
V2_INFER_PATH = "/v2/models/{name}/infer"
V1_STATUS_PATH = "/v1/models/{name}"
V1_PREDICT_PATH = "/v1/models/{name}:predict"
# The served model's one version: the VERSION of ``.../versions/VERSION`` in both protocols' URLs
# (any other is 404) and in their answers.
MODEL_VERSION = "1"

# The server process's environment in the image (a captured variable of the same name wins):
# glibc's malloc serves blocks of 4 MiB and more (request bodies, their decoded text) with mmap,
# returned to the system when freed. Its default threshold rises to the largest block freed, so
# after a burst of large requests their memory stayed in the heap: 8 concurrent 7 MB bodies left
# 108 MB resident (342 MB peak), against 46 MB (259 MB peak) with the threshold fixed.
PROCESS_ENV = {"MALLOC_MMAP_THRESHOLD_": str(4 * 1024 * 1024)}

# Settings: environment variables of the serving container, with their defaults.
SETTINGS = {
    "ENVREPRO_SERVE_HOST": "0.0.0.0",        # listen address inside the container
    "ENVREPRO_SERVE_PORT": str(PORT),
    "ENVREPRO_SERVE_NAME": "",               # model name in the URLs ("" = from the model file)
    "ENVREPRO_SERVE_WORKERS": "1",           # threads running predictions
    "ENVREPRO_SERVE_QUEUE": "32",            # requests waiting for a worker; more -> 503
    "ENVREPRO_SERVE_DEADLINE": "30",         # seconds per request from its first byte: reading
                                             # (over -> 408), queue and prediction (over -> 504)
    "ENVREPRO_SERVE_MAX_BODY": str(32 * 1024 * 1024),   # bytes; more -> 413, before reading
    "ENVREPRO_SERVE_MAX_CONNECTIONS": "1000",  # connections open at once; more -> 503
    "ENVREPRO_SERVE_REQUEST_MEMORY": str(512 * 1024 * 1024),   # bytes for request bodies (1/4) and
                                             # their parsed JSON and inputs (3/4); full -> 503
    "ENVREPRO_SERVE_MAX_ELEMENTS": str(4 * 1024 * 1024),   # JSON values per body; more -> 413
    "ENVREPRO_SERVE_MAX_BATCH": "65536",     # rows per input; more -> 413
    "ENVREPRO_SERVE_BATCH_MAX_SIZE": "0",  # rows per merged model call; 0 = batching off
                                             # (the default: see docs/serving.md, Batching)
    "ENVREPRO_SERVE_BATCH_TIMEOUT_MS": "2",  # ms the first request waits for others to merge
    "ENVREPRO_SERVE_GRACE": "20",            # seconds to drain in-flight requests on SIGTERM
    "ENVREPRO_SERVE_LOCK": "",               # the capture's lock sha256 for envrepro_build_info
                                             # ("" = the plan's PLAN_LOCK_KEY)
}

# Plan keys the server reads besides the loader's (envrepro/sandbox/loadplan.py make_plan), both
# optional: the capture's lock sha256 (envrepro_build_info's ``lock`` label; ENVREPRO_SERVE_LOCK
# wins) and envrepro's version (``GET /v2``'s ``version``).
PLAN_LOCK_KEY = "lock_sha256"
PLAN_VERSION_KEY = "envrepro_version"

# The server's exit codes. A model that fails to load or warm up exits (after one log line), as
# TF Serving does: the orchestrator restarts it and the failure is visible.
EXIT_CODES = {
    "ok": 0,             # stopped by SIGTERM/SIGINT after draining
    "usage": 2,          # bad arguments or ENVREPRO_SERVE_* values
    "listen": 3,         # the address can't be listened on (port in use...)
    "load_failed": 5,    # the model failed to load or to warm up (as the loader's exit 5)
    "worker_died": 75,   # a prediction worker died (the model raised SystemExit...): restart me
    "plan": 70,          # no plan or an unusable one (a host-side bug, as the loader's exit 70)
}


def setting(name, environ=None):
    """The value of setting ``name`` (a key of SETTINGS) from ``environ`` or its default."""
    env = os.environ if environ is None else environ
    value = env.get(name)
    return SETTINGS[name] if value in (None, "") else value


def model_name(model_path):
    """The default NAME in the URLs: the model's file or folder name without its extension
    (``my_model`` for ``my_model/``, ``m`` for ``m.h5``)."""
    base = os.path.basename(os.path.normpath(str(model_path)))
    for ext in (".h5", ".hdf5", ".keras"):
        if base.lower().endswith(ext) and len(base) > len(ext):
            return base[:-len(ext)]
    return base


def server_argv(python, plan_file=PLAN_FILE, args=()):
    """The serving container's command: the server under ``python``, with the runtime at
    RUNTIME_DIR (not the sandbox's mount point) and the plan at ``plan_file``."""
    return launch.container_argv(python, ENTRY, ["--plan", plan_file] + list(args), root=RUNTIME_DIR)
