"""envrepro.serving.context / image: the serving Dockerfile, its files and key, no engine."""
import json
import os

import pytest

from envrepro.runtime import launch
from envrepro.runtime.serve import config as serveconfig
from envrepro.serving import context as sc
from envrepro.serving import image as serving

try:
    from .fakes import cache_home, make_capture
except ImportError:
    from fakes import cache_home, make_capture


def test_name_defaults_to_the_model_and_is_checked(tmp_path):
    cap = make_capture(tmp_path, name="m.h5", fmt="h5")
    assert sc.serve_name(cap) == "m"
    assert sc.serve_name(cap, "resnet-v2.1") == "resnet-v2.1"
    for bad in ("", "a b", "x\nFROM evil", "../x", "a/b", "-x"):
        with pytest.raises(sc.ServeError):
            sc.serve_name(cap, bad)


def test_plan_points_inside_the_image_and_drops_replays(tmp_path):
    cap = make_capture(tmp_path)
    plan = sc.serve_plan(cap, "my_model")
    assert plan["model_path"] == f"{serveconfig.MODEL_DIR}/my_model"
    assert plan["snapshot_dir"] == f"{serveconfig.CAPTURE_DIR}/snapshot"
    assert plan["reference"]["inputs"] == [f"{serveconfig.CAPTURE_DIR}/reference/input_0.npy"]
    assert plan["resume_check"] is None and plan["drift"] is False and plan["safe_mode"] is True
    assert plan["serve"]["name"] == "my_model" and len(plan["serve"]["lock_sha256"]) == 64


def test_files_layers_and_key(tmp_path):
    cap = make_capture(tmp_path)
    ctx = sc.serve_context(cap, "e" * 32)
    names = [n for n, _ in ctx.files]
    assert "serve/model/my_model/saved_model.pb" in names
    assert "serve/capture/snapshot/custom_layers.py" in names
    assert "serve/capture/reference/input_0.npy" in names
    assert f"serve/lib/{launch.PACKAGE}/serve/config.py" in names
    assert not [n for n in names if "manifest" in n or n.endswith((".lock", "pip.conf", "ca.crt"))]
    assert json.loads(dict(ctx.files)["serve/plan.json"])["serve"]["name"] == "my_model"
    assert ctx.key == sc.serve_context(cap, "e" * 32).key            # stable
    assert ctx.key != sc.serve_context(cap, "f" * 32).key            # another environment
    assert ctx.key != sc.serve_context(cap, "e" * 32, name="other").key
    (cap.model_path / "saved_model.pb").write_bytes(b"another model")
    assert ctx.key != sc.serve_context(cap, "e" * 32).key            # another model


def test_dockerfile_serving_layers(tmp_path):
    cap = make_capture(tmp_path)
    ctx = sc.serve_context(cap, "e" * 32)
    text = sc.dockerfile(ctx, env_image="envrepro-env:abc")
    assert text.startswith("FROM envrepro-env:abc\n")
    order = [text.index(f"COPY serve/{p}") for p in ("lib/", "capture/", "plan.json", "model/")]
    assert order == sorted(order)                       # the model is the last layer
    assert f"EXPOSE {serveconfig.PORT}" in text and "STOPSIGNAL SIGTERM" in text
    assert f"http://127.0.0.1:{serveconfig.PORT}{serveconfig.LIVE_PATH}" in text   # HEALTHCHECK
    entry = json.loads(next(l for l in text.splitlines() if l.startswith("ENTRYPOINT "))[len("ENTRYPOINT "):])
    assert entry[:3] == ["python", "-B", "-c"] and entry[-2:] == ["--plan", serveconfig.PLAN_FILE]
    assert f"from {launch.PACKAGE}.{serveconfig.ENTRY} import main" in entry[3]
    assert 'ENVREPRO_SERVE_NAME="my_model"' in text and 'TF_USE_LEGACY_KERAS="1"' in text
    assert 'MALLOC_MMAP_THRESHOLD_="4194304"' in text   # large request buffers go back to the system
    assert f'org.envrepro.serve.key="{ctx.key}"' in text
    for secret in ("pip.conf", "ca.crt", "PIP_", "password"):
        assert secret not in text.split("\n\n", 1)[1]


@pytest.mark.parametrize("bad", ["link", "fifo"])
def test_a_model_with_a_link_or_special_file_is_refused(tmp_path, bad):
    cap = make_capture(tmp_path)
    target = cap.model_path / "variables"
    if bad == "link":
        os.symlink("/etc/passwd", target)
    else:
        os.mkfifo(target)
    with pytest.raises(sc.ServeError) as e:
        sc.serve_context(cap, "e" * 32)
    assert "serving copies regular files and folders only" in str(e.value)


def test_self_contained_context_builds_without_envrepro(tmp_path, monkeypatch):
    """-o DIR: the environment's own Dockerfile then the serving layers; credentials are not
    written to disk; a non-empty folder is refused."""
    from envrepro.packages.pipconfig import PipSettings

    cap = make_capture(tmp_path / "c")
    pip = PipSettings(index_url="https://user:s3cret@pypi.example/simple")
    out = tmp_path / "ctx"
    ctx = serving.write_context(cap, out, pip=pip)
    text = (out / "Dockerfile").read_text()
    assert text.index("AS envrepro-base") < text.index("COPY serve/lib/")
    assert (out / "serve" / "model" / "my_model" / "saved_model.pb").read_bytes() == b"pb"
    assert (out / "requirements.lock").is_file() or any(out.glob("*.lock"))
    conf = (out / "build" / "pip.conf").read_text()
    assert "s3cret" not in conf and "pypi.example/simple" in conf
    assert oct((out / "serve" / "plan.json").stat().st_mode & 0o777) == "0o644"
    assert ctx.tag.startswith("envrepro-serve:")
    with pytest.raises(sc.ServeError, match="not empty"):
        serving.write_context(cap, out, pip=pip)


def test_tag_validation():
    assert serving.check_tag("my/model:1") == "my/model:1"
    for bad in ("a b", "x\nRUN id", "UPPER:1", ":x"):
        with pytest.raises(sc.ServeError):
            serving.check_tag(bad)
