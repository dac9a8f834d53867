"""Registry push and pull by content key (envrepro.image.registry, envrepro.image.push) with the
fake engine: the registry setting checked, the refs push writes and load pulls, a pulled image
refused when a label differs from the capture, the load report naming the ref it pulled, and no
credential from Docker's config ever reaching an output or a file. No Docker, no network."""
import json
import re

import pytest

from envrepro import cli, commandbase, commands, render
from envrepro.image import registry as reg
from envrepro.image import ensure as images, spec
from envrepro.image.push import push as do_push
from envrepro.engine.base import PullFailed
from envrepro.engine.docker import DockerEngine, explain
from envrepro.sandbox import report as sandbox_report

try:
    from .fakes import FakeEngine, image, loader_report, make_capture, report_stdout
except ImportError:
    from fakes import FakeEngine, image, loader_report, make_capture, report_stdout

REG = "127.0.0.1:5000/team"
BASE = "python:3.8-slim"
SECRET = "c2VjcmV0LXVzZXI6aHVudGVyMg=="        # base64("secret-user:hunter2")


@pytest.fixture
def cap(tmp_path):
    return make_capture(tmp_path / "models")


def fake(**kw):
    kw.setdefault("run_result", (0, report_stdout(loader_report()), ""))
    return FakeEngine([image(BASE, digest="python@sha256:" + "0" * 64)], **kw)


def expected(cap):
    lock = cap.lock_path.read_text()
    key = spec.capture_key(cap, BASE, lock)
    return key, spec.env_labels(cap, BASE, key, lock)


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def no_engine():
    raise AssertionError("the engine must not be reached")


# -- the registry setting ------------------------------------------------------------------
@pytest.mark.parametrize("value", ["127.0.0.1:5000", "localhost", "localhost:5000/team", "reg.example",
                                   "registry.example.com/team/sub-team", "reg.example:443/a_b/c.d/e__f",
                                   "reg.example/team/"])
def test_registry_values_accepted(value):
    assert reg.check_registry(value) == value.rstrip("/")


@pytest.mark.parametrize("value,why", [
    ("http://reg.example", "drop the scheme"),
    ("user:hunter2@reg.example", "docker login"),
    ("Reg.Example", "lowercase host"),
    ("myregistry/team", "Docker Hub"),
    ("reg.example/Team", "namespace part"),
    ("reg.example/a//b", "namespace part"),
    ("reg.example:99999", "port"),
    ("reg.example:", "port"),
    ("reg example", "lowercase host"),
    ("reg.example/-x", "namespace part"),
    ("", "1 to"),
])
def test_registry_values_refused_with_one_line(value, why):
    with pytest.raises(reg.RegistryError) as e:
        reg.check_registry(value, "--registry")
    text = str(e.value)
    assert why in text and "\n" not in text and e.value.exit_code == 2
    assert "hunter2" not in text


def test_registry_from_the_environment_is_checked_and_named(monkeypatch):
    monkeypatch.setenv("ENVREPRO_REGISTRY", "Bad_Host")
    with pytest.raises(reg.RegistryError) as e:
        reg.resolve(None)
    assert str(e.value).startswith("ENVREPRO_REGISTRY: ")
    monkeypatch.setenv("ENVREPRO_REGISTRY", "reg.example/")
    assert reg.resolve(None) == "reg.example" and reg.resolve("other.example:5000") == "other.example:5000"


def test_push_cli_refuses_a_bad_registry_before_the_engine(capsys, cap, monkeypatch):
    monkeypatch.setattr(commandbase, "default_engine", no_engine)
    code, out, err = run_cli(capsys, "push", cap.model_path, "--registry", "https://u:pw@reg.example")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "drop the scheme" in err and "pw@" not in err
    code, _, err = run_cli(capsys, "push", cap.model_path)
    assert code == 2 and "no registry to push to" in err and "--registry" in err


# -- push ----------------------------------------------------------------------------------
def test_push_builds_if_needed_and_pushes_under_the_ref_load_pulls(cap):
    engine = fake()
    result = do_push(cap, engine, REG)
    key, _ = expected(cap)
    ref = f"{REG}/envrepro-env:{key}"
    assert result.key == key and result.env_source == "built" and len(engine.builds) == 1
    (pushed,) = result.pushed
    assert pushed.kind == "environment" and pushed.ref == ref and pushed.local == spec.image_tag(key)
    assert pushed.digest and pushed.digest.startswith("sha256:") and pushed.size is not None
    assert engine.pushes == [ref] and ref in engine.registry
    assert result.notes and "push never builds it" in result.notes[0]
    # another machine: nothing local, the registry is the one pushed to -> pulled, not built
    other = fake(registry=engine.registry)
    info = images.ensure_image(cap, other, registry=REG, on_progress=lambda line: None)
    assert info.source == "pulled" and info.pulled_from == ref and other.builds == []


def serve_image(tag, env_key, model_sha, serve_key, verdict=None):
    labels = {"org.envrepro.serve.key": serve_key, "org.envrepro.serve.env-key": env_key,
              "org.envrepro.serve.model-sha256": model_sha}
    if verdict:
        labels["org.envrepro.serve.verdict"] = verdict
    return image(tag, labels, size=918_000_000)


def test_push_pushes_only_existing_self_checked_serving_images_of_this_model(cap):
    engine = fake()
    key, _ = expected(cap)
    sha = cap.get("model.sha256")
    engine.store += [serve_image("my-serve:1", key, sha, "a" * 32, "verified"),
                     serve_image("envrepro-serve:bbbb-unverified", key, sha, "b" * 32),
                     serve_image("other-model:1", key, "0" * 64, "c" * 32, "verified"),
                     serve_image("evil:1", key, sha, "../../x:y", "verified")]
    result = do_push(cap, engine, REG)
    assert [(p.kind, p.ref) for p in result.pushed] == [
        ("environment", f"{REG}/envrepro-env:{key}"), ("serving", f"{REG}/envrepro-serve:{'a' * 32}")]
    assert result.pushed[1].local == "my-serve:1" and result.pushed[1].size == 918_000_000
    assert result.notes == [] and len(engine.builds) == 1     # the env image only: no serving build


def test_push_cli_text_and_json(capsys, cap, monkeypatch):
    engine = fake()
    monkeypatch.setattr(commandbase, "default_engine", lambda: engine)
    code, out, err = run_cli(capsys, "push", cap.model_path, "--registry", REG, "--json")
    assert code == 0, err
    data = json.loads(out)
    key, _ = expected(cap)
    assert data["registry"] == REG and data["key"] == key
    assert data["pushed"][0]["ref"] == f"{REG}/envrepro-env:{key}" and data["pushed"][0]["digest"]
    code, out, err = run_cli(capsys, "push", cap.model_path, "--registry", REG)
    assert code == 0 and f"{REG}/envrepro-env:{key}" in out and "sha256:" in out and " MB" in out
    assert "Pushing" in err


def test_push_denied_is_one_line_with_what_to_do_and_exit_4(capsys, cap, monkeypatch):
    engine = fake()
    key, _ = expected(cap)
    ref = f"{REG}/envrepro-env:{key}"
    reason = "denied: requested access to the resource is denied"
    engine.push_error = {ref: PullFailed(f"pushing {ref} failed: {reason}", None, explain(reason))}
    monkeypatch.setattr(commandbase, "default_engine", lambda: engine)
    code, out, err = run_cli(capsys, "push", cap.model_path, "--registry", REG, "--json")
    assert code == 4 and out == ""
    *steps, error = err.strip().splitlines()        # --json: plain step lines, then the error
    assert "docker login" in error and ref in error and error.startswith("envrepro: error: ")
    assert steps and all(re.match(r"\[(step| ok |fail)\] ", line) for line in steps), steps


# -- pull: labels checked ------------------------------------------------------------------
@pytest.mark.parametrize("label,value", [
    ("org.envrepro.python", "3.8.17"), ("org.envrepro.tensorflow", "2.4.0"),
    ("org.envrepro.base", "evil/python:3.8"), ("org.envrepro.runtime-version", "1"),
    ("org.envrepro.lock-sha256", "0" * 64), ("org.envrepro.key", "f" * 32),
    ("org.envrepro.translated-from", "macOS"), ("org.envrepro.python", None)])
def test_pulled_image_whose_labels_differ_is_refused_removed_and_built_instead(cap, label, value):
    key, labels = expected(cap)
    ref = f"{REG}/envrepro-env:{key}"
    labels = dict(labels, **{label: value})
    if value is None:
        del labels[label]
    engine = fake(registry={ref: image(ref, labels, image_id="sha256:" + "e" * 64)})
    lines = []
    info = images.ensure_image(cap, engine, registry=REG, on_progress=lines.append)
    assert info.source == "built" and info.pulled_from is None and len(engine.builds) == 1
    assert info.registry["outcome"] == "refused" and label in info.registry["reason"]
    assert not engine.image_exists(ref) and "sha256:" + "e" * 64 in engine.removed
    assert engine.inspect_image(info.tag)["Id"] != "sha256:" + "e" * 64
    assert any(line.startswith(f"Refusing {ref}") for line in lines)
    text = sandbox_report.render_report(sandbox_report.LoadReport(
        "m", "m.envrepro", sandbox_report.image_dict(info), loader_report()))
    assert f"{ref} refused: its labels do not match the capture" in text


def test_the_refused_image_is_not_removed_when_another_tag_holds_it(cap):
    """Untagging the ref leaves an image the user had under another name alone."""
    key, labels = expected(cap)
    ref = f"{REG}/envrepro-env:{key}"
    mine = image("mine:1", dict(labels, **{"org.envrepro.base": "other"}))
    engine = fake(registry={ref: dict(mine)})
    engine.store.append(mine)
    images.ensure_image(cap, engine, registry=REG, on_progress=lambda line: None)
    assert engine.image_exists("mine:1") and not engine.image_exists(ref)


def test_load_report_says_pulled_from_the_ref(cap, capsys):
    key, labels = expected(cap)
    ref = f"{REG}/envrepro-env:{key}"
    engine = fake(registry={ref: image(ref, labels)})
    rep = commands.load(str(cap.model_path), registry=REG, quiet=True, engine_factory=lambda: engine)
    assert engine.builds == [] and engine.runs[-1]["image"] == spec.image_tag(key)
    text = render.to_text(rep)
    assert f"envrepro-env:{key[:16]} (pulled from {ref}" in text
    data = json.loads(render.to_json(rep))
    assert data["image"]["source"] == "pulled" and data["image"]["pulled_from"] == ref
    assert data["image"]["registry"] == {"ref": ref, "outcome": "pulled", "reason": None}


def test_load_with_a_local_image_never_asks_the_registry(cap):
    key, labels = expected(cap)
    engine = fake()
    engine.store.append(image(spec.image_tag(key), labels))
    rep = commands.load(str(cap.model_path), registry=REG, quiet=True, engine_factory=lambda: engine)
    assert engine.pulls == [] and rep.image["source"] == "local" and rep.image["pulled_from"] is None


# -- credentials ---------------------------------------------------------------------------
def test_docker_credentials_never_reach_an_output_or_a_file(cap, capsys, monkeypatch, tmp_path):
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": {"127.0.0.1:5000": {"auth": SECRET}}}))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DOCKER_CONFIG", str(home / ".docker"))
    engine = fake()
    monkeypatch.setattr(commandbase, "default_engine", lambda: engine)
    outputs = []
    for args in (["push", cap.model_path, "--registry", REG], ["push", cap.model_path, "--registry", REG, "--json"],
                 ["load", cap.model_path, "--registry", REG, "--json"]):
        outputs.append(run_cli(capsys, *args))
    engine.store = [i for i in engine.store if not i.get("RepoTags") or BASE in i["RepoTags"]]   # pull it back
    outputs.append(run_cli(capsys, "load", cap.model_path, "--registry", REG))
    assert "pulled from" in outputs[-1][1]
    for code, out, err in outputs:
        assert code == 0, err
        assert SECRET not in out + err and "hunter2" not in out + err
    files = [p for root in (cap.root, cap.model_path, tmp_path / "cache") for p in root.rglob("*") if p.is_file()]
    assert any("cache" in p.parts for p in files)          # build logs, the images index
    assert files and not [p for p in files if SECRET.encode() in p.read_bytes()]
    assert not [img for img in engine.registry.values() if SECRET in json.dumps(img)]
    assert not any(SECRET in json.dumps(run, default=str) for run in engine.runs)


class RecordingApi:
    """The low-level Docker API client, as far as push and pull use it."""

    def __init__(self, items):
        self.items, self.calls = items, []

    def push(self, repo, **kw):
        self.calls.append(("push", repo, kw))
        return iter(self.items)

    def pull(self, repo, **kw):
        self.calls.append(("pull", repo, kw))
        return iter(self.items)


def test_docker_engine_push_and_pull_leave_auth_to_the_client():
    """Docker's own credentials only: no auth_config is ever passed (docker-py then reads the
    client's config, and the engine its credential helpers)."""
    from types import SimpleNamespace

    api = RecordingApi([{"status": "Pushing"}, {"aux": {"Digest": "sha256:" + "1" * 64}}])
    engine = DockerEngine(client=SimpleNamespace(api=api))
    engine.push("127.0.0.1:5000/envrepro-env:" + "a" * 32)
    assert engine.pull("127.0.0.1:5000/envrepro-env:" + "a" * 32)
    for _, repo, kw in api.calls:
        assert repo == "127.0.0.1:5000/envrepro-env" and kw["tag"] == "a" * 32 and "auth_config" not in kw
    denied = RecordingApi([{"error": "unauthorized: authentication required"}])
    with pytest.raises(PullFailed) as e:
        DockerEngine(client=SimpleNamespace(api=denied)).push("127.0.0.1:5000/envrepro-env:x")
    assert "docker login" in str(e.value) and e.value.exit_code == 4
