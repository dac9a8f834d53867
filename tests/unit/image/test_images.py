"""Getting an environment image (envrepro.image.ensure) with the fake engine: the local -> registry
-> build order, labels, logs and build failures. No Docker, no network."""
import io
import re

import pytest

from envrepro.image import ensure as images, spec
from envrepro.packages.pipconfig import PipSettings
from envrepro.errors import EXIT_BUILD_FAILED, BuildFailed
from envrepro.sidecar.manifest import Capture

try:
    from .fakes import LOCK, FakeEngine, context_files, dockerfile_of, image
except ImportError:
    from fakes import LOCK, FakeEngine, context_files, dockerfile_of, image


NO_PIP = PipSettings()


@pytest.fixture
def capture(tmp_path):
    root = tmp_path / "m.envrepro"
    root.mkdir()
    (root / "requirements.lock").write_text(LOCK)
    return Capture(root=root, data={"python": {"version": "3.8.18"},
                                    "frameworks": {"tensorflow": "2.4.1"}})


def base_image(tag="python:3.8-slim", digest="python@sha256:" + "0" * 64):
    return image(tag, digest=digest)


def ensure(capture, engine, **kw):
    lines = []
    kw.setdefault("pip", NO_PIP)
    info = images.ensure_image(capture, engine, on_progress=lines.append, **kw)
    return info, lines


def test_gpu_dockerfile_builds_python_on_the_cuda_base(capture):
    text = images.dockerfile_for(capture, gpus=True)
    assert "FROM nvidia/cuda:11.0.3-cudnn8-runtime-ubuntu20.04 AS envrepro-python-build" in text
    assert "Python-3.8.18.tgz" in text and 'org.envrepro.base="nvidia/cuda:11.0.3' in text


def test_local_image_is_used_without_pull_or_build(capture):
    key = spec.image_key("python:3.8-slim", "3.8.18", LOCK)
    engine = FakeEngine([image(spec.image_tag(key), {"org.envrepro.key": key})])
    info, lines = ensure(capture, engine)
    assert info.source == "local" and info.tag == spec.image_tag(key)
    assert engine.builds == [] and engine.pulls == []


def test_build_when_missing_labels_and_logs(capture, tmp_path):
    engine = FakeEngine([base_image()])
    info, lines = ensure(capture, engine)
    assert info.source == "built" and info.built and engine.pulls == []  # local base: never pulled
    labels = engine.inspect_image(info.tag)["Config"]["Labels"]
    assert labels["org.envrepro.key"] == info.key
    assert labels["org.envrepro.python"] == "3.8.18"
    assert labels["org.envrepro.tensorflow"] == "2.4.1"
    assert labels["org.envrepro.base"] == "python:3.8-slim"
    assert labels["org.envrepro.base-digest"] == "python@sha256:" + "0" * 64
    assert labels["org.envrepro.runtime-version"] == spec.RUNTIME_VERSION
    assert len(labels["org.envrepro.lock-sha256"]) == 64
    assert info.log_path and str(info.log_path).startswith(str(tmp_path / "cache" / "envrepro" / "logs"))
    assert "Step 2/2 : RUN pip install" in info.log_path.read_text()
    assert any(line.startswith("Building envrepro-env:") for line in lines)
    assert info.python == "/opt/envrepro/venv/bin/python"


def test_local_only_base_records_its_image_id(capture):
    engine = FakeEngine([base_image(digest=None)])
    info, _ = ensure(capture, engine)
    assert info.base_digest == engine.inspect_image("python:3.8-slim")["Id"]


def test_missing_base_is_pulled(capture):
    engine = FakeEngine(registry={"python:3.8-slim": base_image()})
    info, _ = ensure(capture, engine)
    assert engine.pulls == ["python:3.8-slim"] and info.source == "built"


def test_missing_base_that_cannot_be_pulled(capture):
    engine = FakeEngine()
    engine.raise_pull("python:3.8-slim")
    with pytest.raises(BuildFailed) as e:
        ensure(capture, engine)
    assert "python:3.8-slim" in str(e.value) and "--base-image" in str(e.value)
    assert e.value.exit_code == EXIT_BUILD_FAILED and engine.builds == []


def test_registry_image_is_pulled_and_tagged(capture, monkeypatch):
    key = spec.image_key("python:3.8-slim", "3.8.18", LOCK)
    ref = f"reg.example/envrepro-env:{key}"
    labels = spec.env_labels(capture, "python:3.8-slim", key, LOCK)   # a pulled image must match them all
    engine = FakeEngine(registry={ref: image(ref, labels)})
    monkeypatch.setenv("ENVREPRO_REGISTRY", "reg.example")
    info, _ = ensure(capture, engine)
    assert info.source == "pulled" and engine.builds == [] and info.pulled_from == ref
    assert engine.image_exists(spec.image_tag(key))


def test_unreachable_registry_falls_back_to_building(capture):
    key = spec.image_key("python:3.8-slim", "3.8.18", LOCK)
    engine = FakeEngine([base_image()])
    engine.raise_pull(f"reg.example/envrepro-env:{key}")
    info, lines = ensure(capture, engine, registry="reg.example")
    assert info.source == "built"
    assert any("Could not pull" in line and "no such host" in line for line in lines)


def test_registry_image_with_the_wrong_key_is_not_trusted(capture):
    key = spec.image_key("python:3.8-slim", "3.8.18", LOCK)
    ref = f"reg.example/envrepro-env:{key}"
    engine = FakeEngine([base_image()], registry={ref: image(ref, {"org.envrepro.key": "other"})})
    info, _ = ensure(capture, engine, registry="reg.example")
    assert info.source == "built"


def test_build_failure_names_the_log_and_its_tail(capture):
    engine = FakeEngine([base_image()], build_lines=[
        "Step 5/13 : RUN pip install -r heavy.lock", " ---> Running in 0123", "Collecting six==1.16.0",
        "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.",
        "    six==1.16.0 from https://files/six.whl:", "        Expected sha256 0000", "             Got        8abb"],
        build_error="The command '/bin/sh -c pip install' returned a non-zero code: 1")
    with pytest.raises(BuildFailed) as e:
        ensure(capture, engine)
    msg = str(e.value)
    assert "full build log: " in msg and "envrepro/logs/build-" in msg
    assert "DO NOT MATCH THE HASHES" in msg and "hash check failed" in msg
    assert "---> Running in" not in msg
    assert not any(t.startswith("envrepro-env:") for t in engine.local)  # nothing tagged


def test_context_carries_pip_settings_and_ca_in_the_build_stage_only(capture, tmp_path, monkeypatch):
    monkeypatch.setenv("ENVREPRO_DOCKERFILE_PIP_CREDENTIALS", "1")   # credentials let in (else refused)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nSENTINEL\n")
    pip = PipSettings(extra_index_urls=("https://u:TOKEN@idx.example/simple",), cert=str(ca))
    engine = FakeEngine([base_image()])
    ensure(capture, engine, pip=pip)
    files = context_files(engine.builds[0][0])
    assert files["build/ca.crt"] == ca.read_bytes()
    assert b"TOKEN" in files["build/pip.conf"] and b"TOKEN" not in files["Dockerfile"]
    assert "cert = /etc/envrepro-build/ca.crt" in files["build/pip.conf"].decode()
    assert "rest.lock" in dockerfile_of(engine.builds[0][0])


def test_second_identical_build_gives_identical_context(capture):
    a, b = FakeEngine([base_image()]), FakeEngine([base_image()])
    ensure(capture, a)
    ensure(capture, b)
    assert a.builds[0][0] == b.builds[0][0]


def test_console_progress_without_a_terminal_prints_plain_step_lines():
    """Off a terminal a Docker step is a plain line when it starts and one when it ends; what
    Docker prints in between is the build log's, not the screen's (envrepro.progress)."""
    out = io.StringIO()
    p = images.ConsoleProgress(out)
    p("Step 3/12 : RUN pip install")
    p("Collecting six==1.16.0")
    p("")
    p("Successfully built 0123abcd")
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[step] Step 3/12 : RUN pip install" and len(lines) == 2
    assert re.fullmatch(r"\[ ok \] Step 3/12 : RUN pip install \(\d+\.\d s\)", lines[1])
