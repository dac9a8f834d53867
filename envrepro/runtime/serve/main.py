"""The model server's process: serve a captured model from inside its reproduced environment.

Runs INSIDE the serving image, under the captured interpreter (Python 3.6 .. 3.13, TensorFlow
2.4 .. 2.21): standard library, numpy and TensorFlow only, Python 3.6 syntax. Started as the
runtime entry point ``serve.main`` (config.ENTRY; see launch.py and config.server_argv):

    python -B -c "<launch bootstrap>" --plan /opt/envrepro/serve/plan.json [--name NAME]

Startup: read the plan (envrepro/sandbox/loadplan.py's, with image paths), start listening (liveness
answers from then on), load the model exactly as the loader does (planload.py) in a background
thread, warm it up with one prediction (model.py), then start the prediction workers and
answer ready. SIGTERM or SIGINT: readiness answers 503, the listening socket closes, the requests
in flight are answered within ENVREPRO_SERVE_GRACE seconds, exit 0 (a second signal stops
waiting). A model that fails to load or warm up: one log line, then exit 5, as TF Serving exits,
so the orchestrator restarts it and shows the failure. A prediction worker that dies (the model
raised SystemExit...): its request is answered 500, readiness turns off, the requests in flight
are answered (queued ones 503), then exit 75, to be restarted. Logs go to stderr, one line per
request (client, method, path, status, milliseconds) and per event; never a payload or a traceback
(ENVREPRO_DEBUG=1 prints the traceback of a failed load). Exit codes: config.EXIT_CODES.
"""
from __future__ import absolute_import, division, print_function

import os
import platform
import signal
import sys
import threading
import time
import traceback

from ..facts import short_error
from ..planload import PlanError, PlanLoad, entry_arguments, read_plan
from . import batching, config
from .app import App, State
from .http import HTTPServer
from .metrics import Metrics
from .queue import clock

EXIT_OK = config.EXIT_CODES["ok"]
EXIT_USAGE = config.EXIT_CODES["usage"]
EXIT_LISTEN = config.EXIT_CODES["listen"]
EXIT_LOAD_FAILED = config.EXIT_CODES["load_failed"]
EXIT_WORKER_DIED = config.EXIT_CODES["worker_died"]
EXIT_PLAN = config.EXIT_CODES["plan"]

_log_lock = threading.Lock()


def log(message):
    """One line on stderr: UTC time, ``envrepro-serve:``, the message."""
    line = "%s envrepro-serve: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), message)
    with _log_lock:
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except Exception:
            pass


class UsageError(Exception):
    """Bad arguments or settings."""


_INTS = {"ENVREPRO_SERVE_PORT": ("port", 0, 65535), "ENVREPRO_SERVE_WORKERS": ("workers", 1, 1024),
         "ENVREPRO_SERVE_QUEUE": ("queue", 0, 1000000), "ENVREPRO_SERVE_MAX_BODY": ("max_body", 0, 1 << 40),
         "ENVREPRO_SERVE_MAX_CONNECTIONS": ("max_connections", 1, 100000),
         "ENVREPRO_SERVE_REQUEST_MEMORY": ("memory", 1 << 20, 1 << 44),
         "ENVREPRO_SERVE_MAX_ELEMENTS": ("max_elements", 1, 1 << 40),
         "ENVREPRO_SERVE_MAX_BATCH": ("max_batch", 1, 1 << 40),
         "ENVREPRO_SERVE_BATCH_MAX_SIZE": ("batch_max_size", 0, 1 << 40)}
_FLOATS = {"ENVREPRO_SERVE_DEADLINE": ("deadline", 0.001), "ENVREPRO_SERVE_GRACE": ("grace", 0.0),
           "ENVREPRO_SERVE_BATCH_TIMEOUT_MS": ("batch_timeout_ms", 0.0)}
_FLAGS = {"--plan": "plan", "--name": "ENVREPRO_SERVE_NAME", "--host": "ENVREPRO_SERVE_HOST",
          "--port": "ENVREPRO_SERVE_PORT"}


def options(argv, environ):
    """The settings (config.SETTINGS from ``environ``, ``--name/--host/--port`` over them) and
    ``--plan``, as a dict; UsageError names the bad one."""
    env = dict((k, config.setting(k, environ)) for k in config.SETTINGS)
    opts = {"plan": None}
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag not in _FLAGS or not args:
            raise UsageError("usage: serve --plan FILE [--name NAME] [--host HOST] [--port PORT] "
                             "(got %r)" % flag)
        value = args.pop(0)
        if _FLAGS[flag] == "plan":
            opts["plan"] = value
        else:
            env[_FLAGS[flag]] = value
    opts["host"], opts["name"] = env["ENVREPRO_SERVE_HOST"], env["ENVREPRO_SERVE_NAME"]
    opts["lock"] = env.get("ENVREPRO_SERVE_LOCK", "")
    for key, (name, low, high) in _INTS.items():
        try:
            opts[name] = int(env[key])
            if not low <= opts[name] <= high:
                raise ValueError()
        except ValueError:
            raise UsageError("%s must be an integer from %d to %d" % (key, low, high))
    for key, (name, low) in _FLOATS.items():
        try:
            opts[name] = float(env[key])
            if not opts[name] >= low:
                raise ValueError()
        except ValueError:
            raise UsageError("%s must be a number (%s) >= %g" % (key, "ms" if key.endswith("_MS") else "seconds", low))
    if opts["memory"] < 4 * opts["max_body"]:
        raise UsageError("ENVREPRO_SERVE_REQUEST_MEMORY (%d) must be at least 4 x ENVREPRO_SERVE_MAX_BODY "
                         "(%d): a quarter of it holds the bodies being read" % (opts["memory"], opts["max_body"]))
    return opts


def plan_servable(plan):
    """Load the plan's model the loader's way and wrap it for serving. An exception says the
    stage it failed at (``serve_stage``)."""
    from .model import KerasServable

    loading = PlanLoad(plan)
    try:
        model = loading.run()
        return KerasServable(model, plan, loading.state["versions"])
    except BaseException as exc:
        try:
            exc.serve_stage = loading.state["stage"]
        except Exception:
            pass
        raise


LIMIT_OPTIONS = ("deadline", "max_body", "max_elements", "max_batch", "memory")


class Serving(object):
    """One server: HTTP listener, state, metrics, and the model loaded by ``load()`` (a callable
    returning a model.Servable) in a background thread."""

    def __init__(self, opts, load, name, version="", lock="", debug=False):
        self.opts = opts
        self.load = load
        self.name = name
        self.debug = debug
        self.state = State()
        self.metrics = Metrics(queue_depth=self._depth, ready=self.state.ready)
        self.metrics.build_info = {"python": platform.python_version(), "tensorflow": "",
                                   "keras": "", "lock": lock or ""}
        self.app = App(name, dict((k, opts[k]) for k in LIMIT_OPTIONS), self.metrics, self.state, version)
        self.http = None
        self.failed = None          # the exit code once loading failed or a prediction worker died
        self._loader = None

    def _depth(self):
        queue = self.state.queue
        return queue.depth() if queue is not None else 0

    @property
    def port(self):
        return self.http.server_address[1]

    def listen(self):
        """Bind and accept connections (OSError when the address can't be used)."""
        self.http = HTTPServer((self.opts["host"], self.opts["port"]), self.app, self.metrics, log,
                               self.opts["max_connections"])
        self.http.start()
        log("listening on %s:%d for model '%s' (live: %s, ready: %s)"
            % (self.opts["host"], self.port, self.name, config.LIVE_PATH, config.READY_PATH))

    def start_loading(self):
        self._loader = threading.Thread(target=self._load, name="envrepro-load")
        self._loader.daemon = True
        self._loader.start()

    def _load(self):
        t0 = clock()
        stage = "load"
        try:
            servable = self.load()
            stage = "warm-up"
            for line in servable.warmup():
                log(line)
            queue = batching.make_queue(servable, self.opts, self.metrics.expired, self._worker_died,
                                        self.metrics.ran)
            queue.start()
            info = getattr(servable, "info", None) or {}
            for key in ("tensorflow", "keras"):
                self.metrics.build_info[key] = info.get(key) or ""
            self.metrics.load_seconds = round(clock() - t0, 3)
            self.state.serve(servable, queue)
            log("ready in %.1fs: %s; %d worker(s), queue %d, deadline %gs, %s"
                % (clock() - t0, servable.signature.describe(), self.opts["workers"],
                   self.opts["queue"], self.opts["deadline"], batching.describe(self.opts)))
        except BaseException as exc:  # user modules may call sys.exit(); TF may raise anything
            stage = getattr(exc, "serve_stage", None) or stage
            message = short_error(exc)
            self.state.fail(message)
            log("the model failed to %s: %s" % ("warm up" if stage == "warm-up" else
                                                "load (stage %s)" % stage, message))
            if self.debug:
                traceback.print_exc(file=sys.stderr)
            self.failed = EXIT_LOAD_FAILED

    def _worker_died(self, message):
        """A prediction worker died: readiness off for good, and the server exits (run())."""
        self.state.broken(message)
        log("%s: readiness off; the server exits (%d) to be restarted" % (message, EXIT_WORKER_DIED))
        self.failed = EXIT_WORKER_DIED

    def watch(self):
        """Notice a prediction worker thread gone without a word (the queue says so once)."""
        queue = self.state.queue
        if queue is not None and self.failed is None and not queue.alive() and queue.dead is None:
            queue.die("a prediction worker died: its thread ended")

    def loading(self):
        return self._loader is not None and self._loader.is_alive()

    def drain(self, grace, abort=None):
        """Readiness off, no new connections, the requests in flight answered within ``grace``
        seconds; True when none was left unanswered."""
        self.state.drain()
        self.http.stop_accepting()
        idle = self.http.wait_idle(grace, abort)
        if self.state.queue is not None:
            self.state.queue.stop()
        return idle

    def close(self):
        if self.http is not None:
            self.http.stop_accepting()


class Signals(object):
    """SIGTERM and SIGINT recorded (the handler only appends: the main thread polls)."""

    def __init__(self):
        self.received = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        self.received.append(signum)


def run(opts, load, name, version="", lock="", debug=False):
    """Serve until SIGTERM/SIGINT (exit 0), a failed load (exit 5) or a dead prediction worker
    (the requests in flight answered, then exit 75). Must run in the main thread (signals)."""
    serving = Serving(opts, load, name, version, lock, debug)
    try:
        serving.listen()
    except (OSError, OverflowError) as exc:
        log("cannot listen on %s:%s: %s" % (opts["host"], opts["port"], short_error(exc)))
        return EXIT_LISTEN
    signals = Signals()
    serving.start_loading()
    while not signals.received and serving.failed is None:
        serving.watch()
        time.sleep(0.05)
    if serving.failed == EXIT_LOAD_FAILED and not signals.received:
        serving.close()
        return serving.failed
    if signals.received:
        signame = "SIGTERM" if signals.received[0] == signal.SIGTERM else "SIGINT"
        code, why = EXIT_OK, signame
    else:
        code, why = serving.failed, "prediction worker died"
    log("%s: draining %d request(s) in flight, up to %gs (ENVREPRO_SERVE_GRACE)"
        % (why, serving.http.in_flight(), opts["grace"]))
    idle = serving.drain(opts["grace"], abort=lambda: len(signals.received) > (1 if code == EXIT_OK else 0))
    if idle:
        log("drained; exiting")
    else:
        log("stopped waiting with %d request(s) unanswered; exiting" % serving.http.in_flight())
    queue = serving.state.queue
    if (serving.loading() or (queue is not None and (queue.busy() or queue.dead is not None))
            or "tensorflow" in sys.modules):
        # A thread inside TensorFlow can't be interrupted, and TensorFlow's C++ runtime can abort
        # while the interpreter tears down ("terminate called without an active exception",
        # exit 139, seen with TF 2.4 after a drain): every answer is sent, so exit without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(argv=None, environ=None):
    """Read the settings and the plan, then serve; returns the exit code."""
    argv, environ, debug = entry_arguments(argv, environ)
    try:
        opts = options(argv, environ)
    except UsageError as exc:
        log(str(exc))
        return EXIT_USAGE
    try:
        plan = read_plan(["--plan", opts["plan"]] if opts["plan"] else [], environ)
    except PlanError as exc:
        log("unusable plan: %s" % exc)
        return EXIT_PLAN
    name = opts["name"] or config.model_name(plan["model_path"])
    lock = opts["lock"] or plan.get(config.PLAN_LOCK_KEY) or ""
    log("serving %s as '%s' (Python %s)" % (plan["model_path"], name, platform.python_version()))
    return run(opts, lambda: plan_servable(plan), name,
               version=plan.get(config.PLAN_VERSION_KEY) or "", lock=lock, debug=debug)


if __name__ == "__main__":
    sys.exit(main())
