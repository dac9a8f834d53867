"""The fidelity matrix's training environments: real virtualenvs, one per TensorFlow release that
envrepro promises to reproduce, each with the pins that make that release install today and with
envrepro from this checkout (for the save hook).

Each venv is cached under the developer cache, keyed by the interpreter and the pins, so a later
run on the same machine reuses it (and a changed pin builds a new one). Nothing here depends on a
cache being warm: a fresh machine builds every env from PyPI.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from support import DEV_CACHE, REPO, pyenv_python  # noqa: E402


@dataclass(frozen=True)
class TrainingEnv:
    name: str            # "tf2.4-py3.8": the matrix's row label
    python: str          # "3.8": pyenv minor version
    pins: Tuple[str, ...]
    formats: Tuple[str, ...]          # the formats this release writes: h5, savedmodel, keras
    addons: Optional[str] = None      # a tensorflow-addons pin that works with this release
    keras3: bool = False

    @property
    def tensorflow(self) -> str:
        return self.pins[0].split("==")[1]

    @property
    def all_pins(self) -> Tuple[str, ...]:
        return self.pins + ((self.addons,) if self.addons else ())


ENVS = (
    TrainingEnv("tf2.4-py3.8", "3.8", ("tensorflow-cpu==2.4.1",), ("h5", "savedmodel"),
                addons="tensorflow-addons==0.12.1"),
    # TF 2.8's own requirements admit protobuf 4 and numpy 1.24, which break it today.
    TrainingEnv("tf2.8-py3.9", "3.9", ("tensorflow-cpu==2.8.4", "protobuf<4", "numpy<1.24"),
                ("h5", "savedmodel"), addons="tensorflow-addons==0.17.1"),
    TrainingEnv("tf2.12-py3.10", "3.10", ("tensorflow-cpu==2.12.1",), ("h5", "savedmodel", "keras"),
                addons="tensorflow-addons==0.21.0"),
    TrainingEnv("tf2.15-py3.11", "3.11", ("tensorflow-cpu==2.15.1",), ("h5", "savedmodel", "keras"),
                addons="tensorflow-addons==0.23.0"),
    # Keras 3: no tensorflow-addons (it stopped at Keras 2), no SavedModel through load_model.
    TrainingEnv("tf2.21-py3.11", "3.11", ("tensorflow-cpu==2.21.0",), ("keras", "h5"), keras3=True),
)
BY_NAME = {e.name: e for e in ENVS}


def _key(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode())
    return h.hexdigest()[:12]


def _pip(py: str, *args: str) -> None:
    proc = subprocess.run([py, "-m", "pip", "-q", *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"pip {' '.join(args)} failed under {py}:\n{proc.stderr[-3000:]}")


def venv_dir(env: TrainingEnv) -> Path:
    base = pyenv_python(env.python)
    return DEV_CACHE / f"matrix-{env.name}-{_key(base, *env.all_pins)}"


def ensure_env(env: TrainingEnv) -> str:
    """The env's python, creating the venv if it is missing or broken. Returns the interpreter
    path; raises RuntimeError with pip's output when an install fails."""
    base = pyenv_python(env.python)
    if not base:
        raise RuntimeError(f"no Python {env.python} interpreter (pyenv's build) found")
    venv = venv_dir(env)
    py = str(venv / "bin" / "python")
    imports = "tensorflow, yaml" + (", tensorflow_addons" if env.addons else "")
    ok = Path(py).exists() and subprocess.run(
        [py, "-c", f"import {imports}, envrepro"], capture_output=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")).returncode == 0
    if not ok:
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        _pip(py, "install", *env.all_pins)
        # envrepro from this checkout (the save hook), its dependencies resolved for this Python,
        # with the env's own pins held so that envrepro's dependencies cannot move them.
        constraints = venv / "pins.txt"
        constraints.write_text("\n".join(env.all_pins) + "\n")
        _pip(py, "install", "-c", str(constraints), "-e", str(REPO))
    else:
        # The editable install may point at another checkout: repoint it (no dependency changes).
        _pip(py, "install", "--no-deps", "-e", str(REPO))
    return py


if __name__ == "__main__":
    for e in ENVS if len(sys.argv) < 2 else [BY_NAME[n] for n in sys.argv[1:]]:
        print(e.name, ensure_env(e), flush=True)
