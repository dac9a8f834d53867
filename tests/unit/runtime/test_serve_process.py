"""The model server as a process (runtime/serve/main.py run/main): SIGTERM drains the requests in flight
and exits 0 with readiness 503 meanwhile, a failed warm-up exits 5 after one log line, bad
settings and plans exit 2 and 70, and the whole server runs under Python 3.6 (numpy 1.19)."""
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from envrepro.runtime import launch
from envrepro.runtime.serve import config as serveconfig
from envrepro.runtime.serve import main as serve

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from support import http_json, need, pyenv_python  # noqa: E402

FAKE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "serve_fake.py")
GOOD = {"instances": [[1, 2, 3]]}
SERVE_MODULES = sorted("serve." + f[:-3] for f in os.listdir(os.path.join(launch.HOST_DIR, "serve"))
                       if f.endswith(".py") and f != "__init__.py")


class Server(object):
    """The fake model served by serve_fake.py under ``python``; stderr collected line by line."""

    def __init__(self, python, env=None):
        full = {k: v for k, v in os.environ.items() if not k.startswith(("ENVREPRO_", "FAKE_"))}
        full.update({"ENVREPRO_SERVE_HOST": "127.0.0.1", "ENVREPRO_SERVE_PORT": "0"}, **(env or {}))
        self.proc = subprocess.Popen([python, FAKE, launch.HOST_DIR], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=full)
        self.lines = []
        self.port = None
        threading.Thread(target=self._read, daemon=True).start()
        end = time.time() + 30
        while self.port is None:
            assert self.proc.poll() is None and time.time() < end, self.stderr()
            time.sleep(0.02)

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))

    def stderr(self):
        return "".join(self.lines)

    def call(self, method, path, body=None, conn=None):
        status, _headers, payload = http_json(self.port, method, path, body, conn=conn, timeout=20)
        return status, payload

    def wait_ready(self, timeout=30):
        end = time.time() + timeout
        while self.call("GET", serveconfig.READY_PATH)[0] != 200:
            assert self.proc.poll() is None and time.time() < end, self.stderr()
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def servers():
    made = []

    def make(python=sys.executable, env=None):
        made.append(Server(python, env))
        return made[-1]

    yield make
    for s in made:
        s.stop()


def test_sigterm_drains_in_flight_requests_and_exits_0(servers):
    s = servers(env={"FAKE_DELAY": "0.8", "ENVREPRO_SERVE_WORKERS": "2", "ENVREPRO_SERVE_GRACE": "10"})
    s.wait_ready()
    probe = http.client.HTTPConnection("127.0.0.1", s.port, timeout=20)   # a keep-alive connection
    assert s.call("GET", serveconfig.READY_PATH, conn=probe)[0] == 200
    results = []
    clients = [threading.Thread(target=lambda: results.append(s.call("POST", "/v1/models/fake:predict", GOOD)))
               for _ in range(2)]
    for t in clients:
        t.start()
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    assert s.proc.poll() is None   # still draining
    status, payload = s.call("GET", serveconfig.READY_PATH, conn=probe)
    assert status == 503 and payload == {"ready": False}
    with pytest.raises(OSError):   # the listening socket is closed
        socket.create_connection(("127.0.0.1", s.port), timeout=2).close()
    for t in clients:
        t.join()
    assert results == [(200, {"predictions": [[2.0, 4.0]]})] * 2
    assert s.proc.wait(15) == 0
    err = s.stderr()
    assert "SIGTERM: draining" in err and "drained; exiting" in err and "Traceback" not in err
    assert err.count("POST /v1/models/fake:predict 200") == 2


def test_sigint_with_nothing_in_flight_exits_0_at_once(servers):
    """Nothing in flight: exit at once, even with an idle keep-alive connection open."""
    s = servers()
    s.wait_ready()
    idle = http.client.HTTPConnection("127.0.0.1", s.port, timeout=20)
    assert s.call("GET", serveconfig.LIVE_PATH, conn=idle)[0] == 200
    t = time.time()
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(10) == 0 and time.time() - t < 3
    assert "SIGINT: draining 0 request(s)" in s.stderr()
    idle.close()


def test_failed_warm_up_exits_5_after_one_line(servers):
    s = servers(env={"FAKE_WARM_FAIL": "1"})
    assert s.proc.wait(15) == serveconfig.EXIT_CODES["load_failed"] == 5
    time.sleep(0.1)
    err = s.stderr()
    assert "the model failed to warm up: RuntimeError: warm-up exploded" in err
    assert "Traceback" not in err and "second line" not in err


@pytest.mark.parametrize("args, env, code, words", [
    ([], {}, 70, "unusable plan: no plan"),
    (["--plan", "/nonexistent/plan.json"], {}, 70, "unusable plan"),
    (["--bogus"], {}, 2, "usage: serve --plan FILE"),
    ([], {"ENVREPRO_SERVE_WORKERS": "zero"}, 2, "ENVREPRO_SERVE_WORKERS must be an integer"),
    ([], {"ENVREPRO_SERVE_DEADLINE": "-1"}, 2, "ENVREPRO_SERVE_DEADLINE must be a number"),
])
def test_main_refuses_bad_settings_and_plans(args, env, code, words):
    full = {k: v for k, v in os.environ.items() if not k.startswith("ENVREPRO_")}
    full.update(env)
    proc = subprocess.run(launch.host_argv(sys.executable, serveconfig.ENTRY, args), capture_output=True, text=True,
                          env=full, timeout=60)
    assert proc.returncode == code and words in proc.stderr, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr


def test_port_in_use_exits_3(servers):
    s = servers()
    proc = subprocess.run([sys.executable, FAKE, launch.HOST_DIR, "--port", str(s.port), "--host", "127.0.0.1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == serveconfig.EXIT_CODES["listen"] and "cannot listen on 127.0.0.1" in proc.stderr


def test_options_and_server_argv():
    opts = serve.options(["--name", "n", "--port", "9000"], {"ENVREPRO_SERVE_QUEUE": "0", "ENVREPRO_SERVE_LOCK": "abc"})
    assert (opts["name"], opts["port"], opts["queue"], opts["lock"], opts["workers"]) == ("n", 9000, 0, "abc", 1)
    assert opts["deadline"] == 30.0 and opts["max_body"] == 32 * 1024 * 1024 and opts["grace"] == 20.0
    assert (opts["max_connections"], opts["memory"], opts["max_elements"], opts["max_batch"]) == \
        (1000, 512 * 1024 * 1024, 4 * 1024 * 1024, 65536)
    argv = serveconfig.server_argv("/usr/local/bin/python")
    assert argv[:3] == ["/usr/local/bin/python", "-B", "-c"] and argv[-2:] == ["--plan", serveconfig.PLAN_FILE]
    assert serveconfig.RUNTIME_DIR + "/__init__.py" in argv[3] and "from envrepro_runtime.serve.main import main" in argv[3]
    assert serveconfig.model_name("/m/my_model.keras") == "my_model"


@pytest.mark.parametrize("minor", ["3.6", "3.13"])
def test_server_modules_import_under_bare_pythons(minor):
    """Every serve module imports under the oldest and newest Python without numpy (numpy is
    imported lazily) and every runtime file byte-compiles."""
    python = pyenv_python(minor)
    need(python, "no Python %s interpreter (pyenv's build)" % minor)
    code = ("import importlib.util, sys\n"
            "root = sys.argv[1]\n"
            "spec = importlib.util.spec_from_file_location('envrepro_runtime', root + '/__init__.py', "
            "submodule_search_locations=[root])\n"
            "pkg = importlib.util.module_from_spec(spec); sys.modules[spec.name] = pkg; spec.loader.exec_module(pkg)\n"
            "import importlib\n"
            "for name in sys.argv[2:]:\n"
            "    importlib.import_module('envrepro_runtime.' + name)\n"
            "assert 'numpy' not in sys.modules\n"
            "import py_compile, glob, os, shutil, tempfile\n"
            "out = tempfile.mkdtemp()\n"
            "for path in glob.glob(root + '/**/*.py', recursive=True):\n"
            "    py_compile.compile(path, cfile=os.path.join(out, os.path.relpath(path, root).replace('/', '_') + 'c'),\n"
            "                       doraise=True)\n"
            "shutil.rmtree(out)\n")
    proc = subprocess.run([python, "-B", "-c", code, launch.HOST_DIR] + SERVE_MODULES + ["planload", "loader"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(SERVE_MODULES) >= 10 and "serve.main" in SERVE_MODULES


def test_fake_model_served_by_python36(servers, py36_numpy):
    s = servers(python=py36_numpy, env={"FAKE_MULTI": "1", "ENVREPRO_SERVE_WORKERS": "2"})
    s.wait_ready()
    rows = {"instances": [{"a": [1, 2, 3], "b": [1, 2], "text": "hi"}]}
    assert s.call("POST", "/v1/models/fake:predict", rows) == \
        (200, {"predictions": [{"y": [2.0, 4.0], "n": 3, "echo_bytes": {"b64": "aGkh"}}]})
    infer = {"inputs": [{"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [[1, 2, 3]]},
                        {"name": "b", "shape": [1, 2], "datatype": "INT64", "data": [4, 5]},
                        {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}],
             "outputs": [{"name": "n"}]}
    status, out = s.call("POST", "/v2/models/fake/infer", infer)
    assert status == 200 and out["outputs"] == [{"name": "n", "datatype": "INT64", "shape": [1], "data": [9]}]
    status, out = s.call("POST", "/v1/models/fake:predict", {"instances": [[[1]]]})
    assert status == 400 and "object keyed by input name" in out["error"]
    status, text = s.call("GET", "/metrics")
    assert status == 200 and 'python="3.6.' in text
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(15) == 0
    assert "Traceback" not in s.stderr()


def test_contract_paths_are_routed():
    from envrepro.runtime.serve.app import App

    app = App("m", {"deadline": 1, "max_body": 10}, None, None)
    for path, endpoint in ((serveconfig.LIVE_PATH, "v2_health_live"), (serveconfig.READY_PATH, "v2_health_ready"),
                           (serveconfig.METRICS_PATH, "metrics"),
                           (serveconfig.MODEL_READY_PATH.format(name="m"), "v2_model_ready"),
                           (serveconfig.V2_INFER_PATH.format(name="m"), "v2_infer"),
                           (serveconfig.V1_STATUS_PATH.format(name="m"), "v1_status"),
                           (serveconfig.V1_PREDICT_PATH.format(name="m"), "v1_predict")):
        route = app.route(path)
        assert route is not None and route.endpoint == endpoint, path
