"""Helpers for tests that run real TensorFlow: model sources written as files, CLI runs, the
loader run on the host."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from envrepro.runtime import launch
from envrepro.sandbox import loadplan as plans
from envrepro.sandbox import report as reports

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

CUSTOM_LAYERS = (EXAMPLES / "custom_layers.py").read_text()

LOSSES_KERAS3 = textwrap.dedent('''
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="team")
    class Huberish(keras.losses.Loss):
        def __init__(self, delta=1.0, **kwargs):
            super().__init__(**kwargs)
            self.delta = delta

        def call(self, y_true, y_pred):
            err = ops.abs(y_true - y_pred)
            return ops.mean(ops.where(err < self.delta, 0.5 * err * err, self.delta * (err - 0.5 * self.delta)), axis=-1)

        def get_config(self):
            return {**super().get_config(), "delta": self.delta}
''')


def write_module(folder, name, source):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(source)
    return folder / f"{name}.py"


def run_py(python, code, cwd=None, env=None, timeout=900):
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(EXAMPLES))
    if env:
        full_env.update(env)
    proc = subprocess.run([python, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


def run_loader(python, capture, tmp_path, unsafe=False):
    """make_plan with host paths, then the loader exactly as the container runs it."""
    paths = plans.ContainerPaths(model=str(capture.model_path), capture=str(capture.root),
                                 runtime=launch.HOST_DIR)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plans.make_plan(capture, paths, unsafe=unsafe)))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ENVREPRO_PLAN", "ENVREPRO_DEBUG")}
    proc = subprocess.run(launch.host_argv(python, "loader", ["--plan", plan_file]), capture_output=True, text=True,
                          env=dict(env, HOME=str(tmp_path)), timeout=600, cwd=str(tmp_path))
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"stdout must hold only the report:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    report = reports.parse_report(proc.stdout)
    assert report is not None
    assert report["exit_code"] == proc.returncode
    return proc.returncode, report
