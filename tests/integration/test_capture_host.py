"""Capture with real TensorFlow on the host (tensorflow-cpu 2.21, Keras 3, Python 3.11)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

import envrepro
from envrepro.sidecar import layout, manifest
from envrepro.errors import InvalidCapture

from support import envrepro_cli  # noqa: E402
from tf_helpers import CUSTOM_LAYERS, LOSSES_KERAS3, write_module

pytestmark = pytest.mark.tf

OFFLINE = {"ENVREPRO_OFFLINE": "1"}


@pytest.fixture
def proj(tmp_path, monkeypatch, tf):
    """A user project: custom_layers.py and losses.py importable, like a training repo."""
    src = tmp_path / "proj"
    write_module(src, "custom_layers", CUSTOM_LAYERS)
    write_module(src, "losses", LOSSES_KERAS3)
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.setenv("ENVREPRO_OFFLINE", "1")
    for mod in ("custom_layers", "losses"):
        sys.modules.pop(mod, None)
    return src


def custom_model(tf):
    import custom_layers
    import losses

    model = tf.keras.Sequential([
        tf.keras.Input(shape=(16,)),
        tf.keras.layers.Dense(32, activation="relu"),
        custom_layers.MyCustomLayer(units=64),
        tf.keras.layers.Dense(1),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=0.001), loss=losses.Huberish(delta=0.5))
    rng = np.random.RandomState(0)
    model.fit(rng.rand(64, 16).astype("float32"), rng.rand(64, 1).astype("float32"), epochs=1, verbose=0)
    return model


def test_save_captures_everything(tmp_path, proj, tf):
    model = custom_model(tf)
    x = np.random.RandomState(1).rand(3, 16).astype("float32")
    path = tmp_path / "out" / "custom.keras"
    path.parent.mkdir()
    result = envrepro.save(model, str(path), sample_input=x)
    assert result is not None and path.is_file()
    cap = manifest.read(layout.sidecar_for(path))
    d = cap.data
    assert d["schema"] == "envrepro/v1" and d["model"]["format"] == "keras"
    assert d["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert d["frameworks"]["tensorflow"] == tf.__version__ and d["frameworks"]["keras_flavor"] == "keras3"
    co = d["load"]["custom_objects"]
    assert co["MyCustomLayer"] == "custom_layers:MyCustomLayer"
    assert co["team>Huberish"] == "losses:Huberish"
    assert set(co) <= {"MyCustomLayer", "team>Huberish", "Huberish"}, co  # no methods (Keras 3 wraps build)
    snap = {f["path"] for f in d["snapshot"]["files"]}
    assert {"snapshot/custom_layers.py", "snapshot/losses.py"} <= snap
    lock = cap.lock_path.read_text()
    assert f"==" in lock and "numpy==" in lock and not d["lock"]["hashes"]
    assert (cap.root / "requirements.in").is_file()
    ref = d["reference"]
    x_saved = np.load(cap.root / ref["inputs"][0])
    np.testing.assert_array_equal(x_saved, x)
    np.testing.assert_allclose(np.load(cap.root / ref["outputs"][0]), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    opt = d["optimizer"]
    assert opt["class"] == "Adam" and opt["iterations"] == 2
    # human and JSON summaries
    out = envrepro_cli("inspect", path, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["load"]["custom_objects"]["MyCustomLayer"] == "custom_layers:MyCustomLayer"
    out = envrepro_cli("inspect", path)
    assert "MyCustomLayer = custom_layers:MyCustomLayer" in out.stdout and "Adam" in out.stdout


def test_hook_captures_model_save_and_checkpoints(tmp_path, proj, tf):
    model = custom_model(tf)
    patched = envrepro.install_hook()
    try:
        assert patched, "no Model class patched"
        h5 = tmp_path / "hooked.h5"
        model.save(str(h5))
        assert manifest.read(layout.sidecar_for(h5)).data["model"]["format"] == "h5"
        ckpt = tmp_path / "ckpt.keras"
        cb = tf.keras.callbacks.ModelCheckpoint(str(ckpt), save_weights_only=False)
        rng = np.random.RandomState(0)
        model.fit(rng.rand(32, 16).astype("float32"), rng.rand(32, 1).astype("float32"), epochs=1, verbose=0,
                  callbacks=[cb])
        cap = manifest.read(layout.sidecar_for(ckpt))
        assert cap.data["optimizer"]["iterations"] >= 3
    finally:
        envrepro.uninstall_hook()
    plain = tmp_path / "plain.keras"
    model.save(str(plain))
    assert not layout.sidecar_for(plain).exists()


def test_capture_failure_never_fails_the_save(tmp_path, proj, tf, monkeypatch):
    import envrepro.capturing.capture as capmod

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(capmod, "run_probe_inprocess", boom)
    model = custom_model(tf)
    path = tmp_path / "m.keras"
    with pytest.warns(RuntimeWarning, match="saved, but its environment was not captured.*disk on fire"):
        assert envrepro.save(model, str(path)) is None
    assert path.is_file()
    assert not layout.sidecar_for(path).exists()
    assert not list(tmp_path.glob(".m.keras.envrepro.tmp-*"))


def test_cli_capture_with_python_and_code_path(tmp_path, proj, tf):
    model = custom_model(tf)
    path = tmp_path / "cli.keras"
    model.save(str(path))
    out = envrepro_cli("capture", path, "--python", sys.executable, "--code-path", proj, "--module", "losses",
                       env=OFFLINE)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    d = manifest.read(layout.sidecar_for(path)).data
    assert d["load"]["custom_objects"]["team>Huberish"] == "losses:Huberish"
    assert d["load"]["custom_objects"]["MyCustomLayer"] == "custom_layers:MyCustomLayer"
    assert d["reference"] and d["reference"]["seeded"]


def test_bad_inputs_one_line_exit_2(tmp_path, proj, tf):
    out = envrepro_cli("capture", tmp_path / "nope.keras", env=OFFLINE)
    assert out.returncode == 2 and "no model at this path" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    model = custom_model(tf)
    path = tmp_path / "t.keras"
    envrepro.save(model, str(path))
    snap = layout.sidecar_for(path) / "snapshot" / "custom_layers.py"
    snap.write_text(snap.read_text() + "\n# edited\n")
    out = envrepro_cli("inspect", path)
    assert out.returncode == 2 and "snapshot/custom_layers.py" in out.stderr and "edited" in out.stderr
    assert "Traceback" not in out.stderr
    (layout.sidecar_for(path) / "envrepro.yaml").write_text("schema: envrepro/v9\n")
    out = envrepro_cli("inspect", path)
    assert out.returncode == 2 and "unknown capture schema" in out.stderr
    out = envrepro_cli("capture", path, "--python", "/nonexistent/python", env=OFFLINE)
    assert out.returncode == 2 and "interpreter not found" in out.stderr


def test_concurrent_captures_serialise(tmp_path, proj, tf):
    model = custom_model(tf)
    path = tmp_path / "c.keras"
    model.save(str(path))
    procs = [subprocess.Popen([sys.executable, "-m", "envrepro", "capture", str(path), "--code-path", str(proj)],
                              env=dict(os.environ, **OFFLINE), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()
    cap = manifest.read(layout.sidecar_for(path))  # verifies every file against the manifest
    assert cap.data["load"]["custom_objects"]["MyCustomLayer"] == "custom_layers:MyCustomLayer"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".c.keras.envrepro.") and not p.name.endswith(".lock")]


KILLER = r'''
import sys, os, time
os.environ["ENVREPRO_OFFLINE"] = "1"
sys.path.insert(0, sys.argv[2])
import envrepro.capturing.capture as c
facts_tag = sys.argv[3]
real = c.run_probe_inprocess
def slow_probe(*a, **k):
    facts = real(*a, **k)
    facts["warnings"] = facts.get("warnings", []) + [facts_tag]
    return facts
c.run_probe_inprocess = slow_probe
c.capture(sys.argv[1], code_paths=[sys.argv[2]])
'''


def test_killed_capture_is_old_new_or_incomplete(tmp_path, proj, tf):
    """Kill captures at random points: the result is the old capture, the new one or none."""
    model = custom_model(tf)
    path = tmp_path / "k.keras"
    model.save(str(path))
    envrepro_cli("capture", path, "--code-path", proj, env=OFFLINE)
    rng = np.random.RandomState(7)
    outcomes = {"old": 0, "new": 0, "none": 0}
    for i in range(8):
        tag = f"run-{i}"
        p = subprocess.Popen([sys.executable, "-c", KILLER, str(path), str(proj), tag],
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(2.0, 9.0)))
        p.send_signal(signal.SIGKILL)
        p.wait()
        try:
            cap = manifest.read(layout.sidecar_for(path))
        except InvalidCapture as e:
            assert "no capture" in str(e) or "incomplete" in str(e), str(e)
            outcomes["none"] += 1
            continue
        outcomes["new" if tag in (cap.data.get("warnings") or []) else "old"] += 1
    assert sum(outcomes.values()) == 8
