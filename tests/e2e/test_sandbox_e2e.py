"""The load-time sandbox against a real Docker engine (docs/threat-model.md): from
inside, only ``lo`` exists, a socket can't connect, the model mount and ``/`` are read-only,
``/tmp`` is writable, the user is not root. Then the whole ``load()`` path through the real
engine: plan in the environment, report line parsed, index updated.

Base image: the local stand-in ``python:3.11-slim`` (tests/e2e/standins.py; no registry is
reachable from the test machines). Skips without an engine, fails with CI=true (conftest.py).
"""
import json
import os
import stat
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from envrepro import errors
from envrepro.sandbox import policy
from envrepro.sandbox import report as reports
from envrepro.sandbox import container as load
from envrepro.sidecar import layout, manifest, writer
pytestmark = pytest.mark.e2e

# Runs inside the sandbox; prints one JSON line of facts. A TCP connect is tried only when the
# namespace has nothing but loopback, so a broken sandbox can never send traffic anywhere.
PROBE = textwrap.dedent('''
    import json, os, socket
    facts = {"uid": os.getuid(), "gid": os.getgid(), "interfaces": sorted(os.listdir("/sys/class/net"))}
    def fails(fn):
        try:
            fn()
            return None
        except OSError as e:
            return e.__class__.__name__ + ": " + str(e)
    def udp():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.connect(("192.0.2.1", 9))
        finally:
            s.close()
    def tcp():
        s = socket.create_connection(("192.0.2.1", 80), timeout=2)
        s.close()
    def write(path):
        return lambda: open(path, "w").write("x")
    facts["udp_connect"] = fails(udp)
    if facts["interfaces"] == ["lo"]:
        facts["tcp_connect"] = fails(tcp)
    model = os.environ["ENVREPRO_MODEL"]
    facts["write_model"] = fails(write(model + "/evil.txt"))
    facts["write_capture"] = fails(write("/envrepro/capture/evil.txt"))
    facts["write_root"] = fails(write("/evil.txt"))
    facts["write_tmp"] = fails(write("/tmp/ok.txt"))
    facts["model_readable"] = sorted(os.listdir(model))
    status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
    facts["cap_eff"] = status.get("CapEff", "").strip()
    facts["no_new_privs"] = status.get("NoNewPrivs", "").strip()
    facts["cwd"] = os.getcwd()
    facts["env"] = {k: os.environ.get(k) for k in ("HOME", "PYTHONPATH", "ENVREPRO_MODEL")}
    facts["plan"] = json.loads(os.environ["ENVREPRO_PLAN"])["model_path"]
    for path in ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"):
        if os.path.exists(path):
            facts["memory_limit"] = open(path).read().strip()
    for path in ("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"):
        if os.path.exists(path):
            facts["pids_max"] = open(path).read().strip()
    print(json.dumps(facts))
''')


@pytest.fixture(scope="module")
def image(standin_311):
    """The bare stand-in base image (engine and stand-in fixtures: tests/e2e/conftest.py)."""
    return SimpleNamespace(tag=standin_311, key="e2e-sandbox-test", base_image=standin_311,
                           base_digest=None, source="local", seconds=0.0, python="python3")


@pytest.fixture
def capture(tmp_path, monkeypatch):
    """A small capture on disk: a SavedModel-shaped folder, a snapshot module, a reference."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tmp_path / "my_model"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"not really a graph")
    root = layout.sidecar_for(model)
    (root / "snapshot").mkdir(parents=True)
    (root / "snapshot" / "custom_layers.py").write_text("VALUE = 42\n")
    (root / "reference").mkdir()
    np.save(root / "reference" / "input_0.npy", np.zeros((1, 2), "float32"))
    np.save(root / "reference" / "output_0.npy", np.zeros((1, 1), "float32"))
    writer.write_manifest(root, {
        "schema": layout.SCHEMA, "model": {"name": "my_model", "format": "savedmodel"},
        "python": {"version": "3.11.7"}, "frameworks": {"tensorflow": "2.21.0", "keras_flavor": "keras3"},
        "env": {"TF_USE_LEGACY_KERAS": None, "KERAS_BACKEND": None},
        "load": {"compile": True, "custom_objects": {}, "modules": ["custom_layers"]},
        "reference": {"inputs": ["reference/input_0.npy"], "outputs": ["reference/output_0.npy"]},
        "optimizer": None})
    os.chmod(root, 0o755)  # what a capture must leave: the sandbox user reads as "other"
    return manifest.read(root)


def test_sandbox_from_inside(engine, image, capture):
    args = policy.run_args(capture)
    code, out, err = engine.run(image.tag, ["python3", "-c", PROBE], **args, stream=False)
    assert code == 0, err
    facts = json.loads(out.strip().splitlines()[-1])
    assert facts["interfaces"] == ["lo"], "only loopback inside the sandbox"
    assert facts["udp_connect"] and "unreachable" in facts["udp_connect"].lower()
    assert facts["tcp_connect"], "a TCP connect must fail"
    assert facts["write_model"] and facts["write_capture"] and facts["write_root"], facts
    assert "Read-only file system" in facts["write_model"] and "Read-only file system" in facts["write_root"]
    assert facts["write_tmp"] is None, "/tmp must be writable (tmpfs)"
    assert facts["model_readable"] == ["saved_model.pb"]
    assert facts["uid"] == 10001 and facts["gid"] == 10001
    assert int(facts["cap_eff"], 16) == 0 and facts["no_new_privs"] == "1"
    assert facts["cwd"] == "/tmp"
    assert facts["env"] == {"HOME": "/tmp", "PYTHONPATH": "/envrepro/capture/snapshot",
                            "ENVREPRO_MODEL": "/envrepro/model/my_model"}
    assert facts["plan"] == "/envrepro/model/my_model"
    if "memory_limit" in facts:
        assert int(facts["memory_limit"]) == 4 * 1024 ** 3
    if "pids_max" in facts:
        assert facts["pids_max"] == "512"
    assert not (capture.model_path / "evil.txt").exists() and not (capture.root / "evil.txt").exists()


def test_load_through_the_engine_reports_the_failure(engine, image, capture, tmp_path):
    """No TensorFlow in the bare base image: the loader must still report (exit 5, classified)."""
    report = load.load(capture.model_path, engine, image)
    assert report.container_exit == errors.EXIT_LOAD_FAILED
    assert reports.exit_code(report) == errors.EXIT_LOAD_FAILED
    err = report.error
    assert err["type"] == "ModuleNotFoundError" and "tensorflow" in err["first_line"]
    assert err["stage"] == "import" and err["failure_class"]["id"] == "import"
    assert report.loader["network"]["isolated"] is True and report.loader["network"]["interfaces"] == ["lo"]
    assert report.loader["versions"]["python"].startswith("3.11.")
    text = reports.render_report(report)
    assert "FAILED at stage import" in text and "network      isolated" in text
    index = json.loads((tmp_path / "cache" / "envrepro" / "index.json").read_text())
    assert str(capture.root) in index["images"]["e2e-sandbox-test"]["captures"]


def test_run_command_exit_code_and_snapshot_on_path(engine, image, capture, capfd):
    """Output streamed live, exit code passed through. Guarded by a thread so that a streaming
    run that never returns fails this test instead of hanging the suite."""
    import threading

    result = {}
    command = ["python3", "-c", "import custom_layers, sys; print('value', custom_layers.VALUE); sys.exit(3)"]
    worker = threading.Thread(target=lambda: result.update(
        code=load.run_command(capture.model_path, engine, image, command)), daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "DockerEngine.run(stream=True) never returned"
    assert result["code"] == 3
    assert "value 42" in capfd.readouterr().out


def test_shell_argv_runs_with_the_same_sandbox(engine, image, capture):
    """The TTY shell's docker argv, run non-interactively: same isolation as the SDK path."""
    import shutil
    import subprocess

    assert shutil.which("docker"), "the docker CLI comes with the engine"
    argv = load.shell_argv(capture.model_path, image,
                           ["python3", "-c", "import os; print(os.getuid(), sorted(os.listdir('/sys/class/net')))"],
                           tty=False)
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "10001 ['lo']"


def test_sidecar_mode_0700_is_refused_before_docker(engine, image, capture):
    os.chmod(capture.root, stat.S_IRWXU)
    with pytest.raises(errors.EnvreproError) as e:
        load.load(capture.model_path, engine, image)
    assert "uid 10001" in str(e.value) and str(capture.root) in str(e.value)
