"""runtime/probe.py as an entry point, without TensorFlow: one-line errors and exit 2, --no-load
facts, user modules not shadowed by the runtime, and the same under Python 3.6."""
import json
import os
import subprocess
import sys
from pathlib import Path

from envrepro.runtime import launch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from support import need, pyenv_python  # noqa: E402


def test_module_does_not_import_tensorflow_or_numpy():
    code = ("import sys; sys.path.insert(0, %r); import envrepro.runtime.probe, envrepro.runtime.loader; "
            "bad = [m for m in ('tensorflow', 'keras', 'numpy', 'h5py') if m in sys.modules]; "
            "assert not bad, bad" % str(REPO))
    subprocess.run([sys.executable, "-c", code], check=True)


def _script(*args, env=None, python=sys.executable):
    full = dict(os.environ)
    full.pop("ENVREPRO_DEBUG", None)
    full.update(env or {})
    return subprocess.run(launch.host_argv(python, "probe", args),
                          capture_output=True, text=True, env=full, timeout=120)


def _empty_model(path):
    path.write_bytes(b"")
    return path


def test_script_missing_model_is_one_line_exit_2(tmp_path):
    proc = _script("--model", tmp_path / "nope.h5", "--out", tmp_path / "out")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("envrepro-probe: error: no model at ")
    assert "(" in lines[0] and lines[0].endswith(")")


def test_script_bad_module_and_debug_traceback(tmp_path):
    model = _empty_model(tmp_path / "m.h5")
    proc = _script("--model", model, "--out", tmp_path / "out", "--module", "no_such_mod_xyz")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "cannot import module no_such_mod_xyz" in proc.stderr and "--code-path" in proc.stderr
    # the same failure as data, for the host (proberunner.py)
    assert json.loads((tmp_path / "out" / "error.json").read_text()) == {
        "error": "cannot import module no_such_mod_xyz: ModuleNotFoundError: No module named "
                 "'no_such_mod_xyz'", "fix": "check --module and add its folder with --code-path"}
    proc = _script("--model", model, "--out", tmp_path / "out", "--module", "no_such_mod_xyz",
                   env={"ENVREPRO_DEBUG": "1"})
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_script_no_load_writes_environment_facts(tmp_path):
    """--no-load never imports a Keras model: facts of the environment only."""
    model = _empty_model(tmp_path / "m.keras")
    out = tmp_path / "out"
    proc = _script("--model", model, "--out", out, "--no-load")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "facts.json")
    facts = json.loads((out / "facts.json").read_text())
    assert facts["probe_version"] == 1
    assert facts["model"]["loaded_by_probe"] is False and facts["reference"] is None
    assert facts["reference_skipped"]
    assert any(d["name"].lower() == "pytest" for d in facts["distributions"])


def test_script_does_not_let_runtime_folder_shadow_user_modules(tmp_path):
    """The runtime's own loader.py must not shadow a user module named ``loader``."""
    model = _empty_model(tmp_path / "m.keras")
    code = tmp_path / "code"
    code.mkdir()
    (code / "loader.py").write_text("WHO = 'user'\n")
    out = tmp_path / "out"
    proc = _script("--model", model, "--out", out, "--no-load", "--module", "loader",
                   "--code-path", code)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads((out / "facts.json").read_text())
    mods = {m["module"]: m for m in facts["modules"]}
    assert mods["loader"]["file"] == str(code / "loader.py")
    assert mods["loader"]["root"] == str(code / "loader.py")
    assert mods["loader"]["source_root"] == str(code) and mods["loader"]["distribution"] is None



def test_probe_runs_without_tensorflow_under_python36(tmp_path):
    """The environment half of the probe works on the oldest supported Python, started the way
    the host starts it (the runtime package's entry point)."""
    py36 = pyenv_python("3.6")
    need(py36, "no Python 3.6 interpreter (pyenv's 3.6 build)")
    model = _empty_model(tmp_path / "m.h5")
    proc = _script("--model", model, "--out", tmp_path / "o", "--no-load", python=py36)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads((tmp_path / "o" / "facts.json").read_text())
    assert facts["python"]["version"].startswith("3.6.")
