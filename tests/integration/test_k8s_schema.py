"""What `envrepro k8s` prints, validated offline and strictly against Kubernetes' own OpenAPI
schemas (kubernetes-validate --strict: an unknown or misplaced field fails), for the oldest, a
middle and the newest Kubernetes version the tool bundles.

kubernetes-validate lives in its own virtualenv, cached in the dev cache and keyed by its pinned
version, never in the dev venv: its dependencies (jsonschema, referencing, rpds-py, a newer
packaging...) stay out of the environment envrepro is tested in, and its ~140 MB of schemas out
of envrepro's test extras. The first run installs it from the index (hence the network mark):
without it the tests skip locally and fail under CI=true.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from support import DEV_CACHE, envrepro_cli, need  # noqa: E402
from fakes import make_capture  # noqa: E402

pytestmark = pytest.mark.network

TOOL_VERSION = "1.37.0"
# The oldest and newest Kubernetes the pinned tool has schemas for, and one in between.
KUBERNETES = ("1.25.0", "1.30.0", "1.37.0")
KINDS = ("deployment", "service", "horizontalpodautoscaler", "networkpolicy")
IMAGE = "registry.example/team/model-serve:1.0"


def _tool_version(python: Path) -> str:
    if not python.exists():
        return ""
    proc = subprocess.run([str(python), "-m", "kubernetes_validate", "--version"],
                          capture_output=True, text=True, timeout=120)
    return proc.stdout.strip() if proc.returncode == 0 else ""


@pytest.fixture(scope="session")
def kubernetes_validate():
    """The python of ``DEV_CACHE/kubernetes-validate-VERSION``, made on first use: a venv of this
    interpreter, filled in a scratch folder and renamed into place once it works, so an
    interrupted install is never mistaken for a complete one."""
    venv = DEV_CACHE / f"kubernetes-validate-{TOOL_VERSION}"
    python = venv / "bin" / "python"
    if _tool_version(python) == TOOL_VERSION:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    scratch = venv.with_name(f"{venv.name}.partial-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        made = subprocess.run([sys.executable, "-m", "venv", str(scratch)], capture_output=True, text=True)
        need(made.returncode == 0, f"python -m venv failed: {made.stderr.strip()[-500:]}")
        pip = subprocess.run([str(scratch / "bin" / "python"), "-m", "pip", "install", "-q",
                              "--disable-pip-version-check", f"kubernetes-validate=={TOOL_VERSION}"],
                             capture_output=True, text=True, timeout=900)
        need(pip.returncode == 0, f"pip install kubernetes-validate=={TOOL_VERSION} failed "
                                  f"(index unreachable?): {pip.stderr.strip()[-800:]}")
        try:
            scratch.rename(venv)
        except OSError:   # another session finished first: use its venv
            pass
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert _tool_version(python) == TOOL_VERSION
    return python


def validate(python, path):
    """(exit code, output lines) of ``kubernetes-validate --strict`` on ``path``, for every
    version in KUBERNETES."""
    args = [str(python), "-m", "kubernetes_validate", "--strict"]
    for version in KUBERNETES:
        args += ["--kubernetes-version", version]
    proc = subprocess.run(args + [str(path)], capture_output=True, text=True, timeout=300)
    return proc.returncode, (proc.stdout + proc.stderr).splitlines()


def all_passed(lines, name):
    """Every resource passed against every version, and none was skipped for want of a schema
    (kubernetes-validate only warns, exit 0, for a kind or apiVersion it has no schema for)."""
    expected = {f"passed for resource {kind}/{name} against version {v.rsplit('.', 1)[0]}"
                for kind in KINDS for v in KUBERNETES}
    seen = {line.split(" ", 2)[2] for line in lines if line.startswith("INFO ")}
    assert [line for line in lines if not line.startswith("INFO ")] == []
    assert seen == expected


@pytest.mark.parametrize("flags, name", [
    ((), "my-model"),
    (("--name", "fraud-v2", "--namespace", "ml-prod", "--replicas", "3", "--max-replicas", "9",
      "--cpu", "500m:1500m", "--memory", "1Gi:3g", "--cpu-target", "55", "--grace", "45",
      "--startup-seconds", "600", "--prestop-seconds", "0"), "fraud-v2"),
    (("--image", "localhost:5000/m@sha256:" + "ab" * 32, "--cpu", "2", "--memory", "8Gi"), "my-model"),
])
def test_manifests_validate_strictly(kubernetes_validate, tmp_path, flags, name):
    make_capture(tmp_path, name="my_model.keras", fmt="keras")
    proc = envrepro_cli("k8s", tmp_path / "my_model.keras", "--image", IMAGE, *flags, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "manifests.yaml"
    out.write_text(proc.stdout)
    assert len(list(yaml.safe_load_all(proc.stdout))) == len(KINDS)
    code, lines = validate(kubernetes_validate, out)
    assert code == 0, "\n".join(lines)
    all_passed(lines, name)


def test_control_strict_validation_rejects_an_unknown_field(kubernetes_validate, tmp_path):
    """The validator really reads the manifests: one misplaced field fails it."""
    make_capture(tmp_path, name="my_model.keras", fmt="keras")
    proc = envrepro_cli("k8s", tmp_path / "my_model.keras", "--image", IMAGE, timeout=120)
    assert proc.returncode == 0, proc.stderr
    docs = list(yaml.safe_load_all(proc.stdout))
    docs[0]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUserName"] = "x"
    out = tmp_path / "bad.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    code, lines = validate(kubernetes_validate, out)
    assert code == 1
    assert any(line.startswith("ERROR") and "deployment/my-model" in line and "runAsUserName" in line
               for line in lines), lines
