"""The wheelhouse builder through ``ensure_image`` with the fake engine: two committed layers
from containers with no network, nothing of the host's pip configuration in them, the shared
closure image reused, the Dockerfile builder when the wheelhouse can't be used, and prune."""
import hashlib
import json
import os
from pathlib import Path

import pytest

from envrepro.image import inventory as imageindex, ensure as images
from envrepro.packages.pipconfig import PipSettings
from envrepro.sidecar.manifest import Capture
from envrepro.packages.wheelhouse import prepare as plan

try:
    from .fakes import FakeEngine, image
    from .test_wheelhouse import FILES, LOCK, FakePip
except ImportError:
    from fakes import FakeEngine, image
    from test_wheelhouse import FILES, LOCK, FakePip

SDIST_SHA = hashlib.sha256(FILES["termcolor-1.1.0.tar.gz"]).hexdigest()
PROBE = json.dumps({"version": "3.8.18", "machine": "x86_64", "implementation": "CPython",
                    "abiflags": "", "libc": "glibc 2.36"})
PIP = PipSettings(index_url="https://user:s3cret@index.example/simple", cert="/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture
def capture(tmp_path, monkeypatch):
    root = tmp_path / "m.envrepro"
    root.mkdir()
    # LOCK without its sdist-only pin (test_wheelhouse covers building it)
    (root / "requirements.lock").write_text("".join(line + "\n" for line in LOCK.splitlines()
                                                    if "termcolor" not in line and SDIST_SHA not in line))
    real = plan.fetching.fetch
    monkeypatch.setattr(plan.fetching, "fetch", lambda *a, **k: real(*a, **dict(k, run=FakePip())))
    return Capture(root=root, data={"python": {"version": "3.8.18"}, "frameworks": {"tensorflow": "2.4.1"}})


def engine_with_base():
    eng = FakeEngine([dict(image("python:3.8-slim"), Config={"Labels": {}, "Cmd": ["python3"],
                                                             "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]})],
                     run_result=(0, PROBE, ""))
    seen = []
    real = eng.commit_run

    def commit_run(img, command, tag, mounts=(), *args, **kwargs):
        staged = next(m.source for m in mounts if m.target == "/mnt")
        seen.append(sorted(str(p.relative_to(staged)) for p in Path(staged).rglob("*")))
        return real(img, command, tag, mounts, *args, **kwargs)
    eng.commit_run = commit_run
    return eng, seen


def test_the_image_is_installed_from_the_wheelhouse_in_two_committed_layers(capture):
    eng, staged = engine_with_base()
    lines = []
    info = images.ensure_image(capture, eng, pip=PIP, on_progress=lines.append)
    assert info.source == "built" and info.builder == "wheelhouse" and eng.builds == []
    heavy, final = eng.commits
    assert heavy["image"] == "python:3.8-slim" and heavy["command"][-1] == "heavy"
    assert final["image"] == heavy["tag"] and final["tag"] == info.tag and final["command"][-1] == "rest"
    for c in (heavy, final):
        assert all(m.read_only for m in c["mounts"]) and c["tmpfs"] == {"/tmp": "rw,size=1g"}   # noexec
        assert (c["mem_limit"], c["pids_limit"], c["timeout"]) == ("4g", 512, 3600.0)
        env = json.dumps(c["environment"])
        assert "s3cret" not in env and "PIP_" not in env and "ca-certificates" not in env
        assert c["environment"]["PATH"] == "/opt/envrepro/venv/bin:/usr/local/bin:/usr/bin:/bin"
    assert "USER 10001:10001" in final["changes"] and 'CMD ["python3"]' in final["changes"]
    # useradd needs CHOWN, DAC_OVERRIDE and FOWNER in the heavy step; the rest step gets no capability
    assert heavy["cap_add"] == ["CHOWN", "DAC_OVERRIDE", "FOWNER"] and final["cap_add"] == []
    labels = eng.inspect_image(info.tag)["Config"]["Labels"]
    assert labels["org.envrepro.key"] == info.key and labels["org.envrepro.builder"] == "wheelhouse"
    assert labels["org.envrepro.heavy"] == heavy["tag"].split(":")[1]
    # the staging folder: the script, the locks, and exactly the pinned wheels, no pip.conf or CA
    assert sorted(staged[0]) == sorted(["heavy.lock", "install.sh", "pip.sh", "require-hashes", "tools.lock",
                                        "wheels"] + ["wheels/" + f for f in FILES if f.endswith(".whl")])
    assert "termcolor" not in capture.lock_path.read_text()
    assert info.wheelhouse["downloaded"] == 4 and info.wheelhouse["built_from_source"] == [] and images.summarize(info)["builder"] == "wheelhouse"
    assert not any("s3cret" in line for line in lines)


def test_a_second_environment_on_the_same_closure_reuses_its_layer_and_prune_removes_orphans(capture):
    eng, _ = engine_with_base()
    first = images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None)
    eng.remove_image(first.tag)
    again = images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None)
    assert len(eng.commits) == 3 and eng.commits[2]["command"][-1] == "rest"
    fresh = images.ensure_image(capture, FakeEngine(eng.store, run_result=(0, PROBE, "")), pip=PIP,
                                on_progress=lambda line: None, nocache=True)
    assert fresh.source == "local"                      # present: nocache only matters for builds
    heavy_tag = eng.commits[0]["tag"]
    assert images_in(eng, heavy_tag)
    kept = imageindex.prune(eng, dry_run=True, cache=True)
    assert kept.cache == []                              # the env image still stands on it
    eng.remove_image(again.tag)
    assert imageindex.prune(eng).cache == [] and images_in(eng, heavy_tag)   # the build cache stays
    res = imageindex.prune(eng, cache=True)
    assert [c["tag"] for c in res.cache] == [heavy_tag] and not images_in(eng, heavy_tag)
    assert "shared closure image " + heavy_tag in imageindex.render_prune(res)


def images_in(eng, tag):
    return eng.inspect_image(tag) is not None


@pytest.mark.parametrize("env, why", [({"ENVREPRO_BUILDER": "dockerfile"}, "ENVREPRO_BUILDER=dockerfile"),
                                      ({"DOCKER_HOST": "tcp://10.0.0.5:2376"}, "the engine is remote")])
def test_the_dockerfile_builder_is_used_when_asked_or_when_the_engine_cannot_mount(capture, monkeypatch, env, why):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    eng, _ = engine_with_base()
    # PIP's index URL carries credentials: refused, nothing built, unless the user lets them in
    with pytest.raises(images.EnvreproError, match="pip settings carry credentials") as e:
        images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None)
    assert e.value.exit_code == 2 and "s3cret" not in str(e.value) and "index.example/simple" in str(e.value)
    assert "ENVREPRO_DOCKERFILE_PIP_CREDENTIALS=1" in str(e.value) and eng.builds == []
    monkeypatch.setenv("ENVREPRO_DOCKERFILE_PIP_CREDENTIALS", "1")
    lines = []
    info = images.ensure_image(capture, eng, pip=PIP, on_progress=lines.append)
    assert info.builder == "dockerfile" and len(eng.builds) == 1 and not getattr(eng, "commits", [])
    assert any(why in line for line in lines)


def test_a_lock_with_a_vcs_checkout_is_refused_and_never_reaches_the_dockerfile_builder(capture, monkeypatch):
    capture.lock_path.write_text(capture.lock_path.read_text() + "mylib @ git+https://example.com/mylib.git@abc\n")
    eng, _ = engine_with_base()
    with pytest.raises(images.EnvreproError, match="is a direct reference") as e:
        images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None)
    assert e.value.exit_code == 2 and "--allow-direct-references" in str(e.value)
    monkeypatch.setenv("ENVREPRO_ALLOW_DIRECT_REFERENCES", "1")
    with pytest.raises(images.EnvreproError, match="VCS checkout .* can't be hash-checked"):
        images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None)
    assert eng.builds == [] and not getattr(eng, "commits", []) and eng.runs == []


def test_a_failed_install_step_names_the_log_and_tags_nothing(capture):
    eng, _ = engine_with_base()
    eng.commit_error = True
    eng.commit_lines = ["ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE."]
    with pytest.raises(images.BuildFailed) as e:
        images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None)
    assert "full build log" in str(e.value) and "hash check failed" in (e.value.fix or "")
    assert [t for i in eng.store for t in i.get("RepoTags") or [] if t.startswith("envrepro-env:")] == []
    assert not os.listdir(Path(os.environ["XDG_CACHE_HOME"]) / "envrepro" / "wheels" / "tmp")


def test_install_limits_come_from_the_environment_and_a_chatty_step_is_logged_in_bounded_lines(capture, monkeypatch):
    from envrepro.image import commitbuild
    from envrepro.errors import EnvreproError

    monkeypatch.setenv("ENVREPRO_BUILD_MEMORY", "12g")
    monkeypatch.setenv("ENVREPRO_BUILD_PIDS", "2048")
    monkeypatch.setenv("ENVREPRO_BUILD_TIMEOUT", "7200")
    monkeypatch.setattr(commitbuild, "LOG_LINES", 3)
    eng, _ = engine_with_base()
    eng.commit_lines = [f"line {i}" for i in range(10)]
    lines = []
    images.ensure_image(capture, eng, pip=PIP, on_progress=lines.append)
    for c in eng.commits:
        assert (c["mem_limit"], c["pids_limit"], c["timeout"]) == ("12g", 2048, 7200.0)
    assert "line 2" in lines and "line 3" not in lines
    assert lines.count("envrepro: 7 more lines of this step not logged") == 2
    monkeypatch.setenv("ENVREPRO_BUILD_MEMORY", "a lot")
    eng, _ = engine_with_base()
    with pytest.raises(EnvreproError, match="ENVREPRO_BUILD_MEMORY='a lot' is not an amount of memory"):
        images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None, nocache=True)


@pytest.mark.parametrize("error, fix", [
    (images.BuildFailed("image build failed: the install step was still running after 3600 s and was stopped",
                        None, "a slow disk or a very large lock: allow it more time"),
     "allow it more time: ENVREPRO_BUILD_TIMEOUT=SECONDS (now 3600)"),
    (images.BuildFailed("image build failed: the install step returned a non-zero code: 137", None,
                        "it ran out of memory (the limit is 4g): allow it more"),
     "allow it more: ENVREPRO_BUILD_MEMORY (e.g. 8g)"),
])
def test_a_step_stopped_by_its_limits_names_the_setting_to_raise(capture, error, fix):
    eng, _ = engine_with_base()

    def stopped(*args, **kwargs):
        raise error
    eng.commit_run = stopped
    with pytest.raises(images.BuildFailed) as e:
        images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None)
    assert fix in (e.value.fix or "")
