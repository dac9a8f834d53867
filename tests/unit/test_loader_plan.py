"""Loading without Docker or TensorFlow: plan, sandbox arguments, docker argv, report parsing and
rendering, exit codes, the images index and prune (fake engine), and the loader's pure parts."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from envrepro import errors
from envrepro.build import imageindex as images_cmd
from envrepro.sandbox import run as load
from envrepro.sidecar import manifest
from envrepro.engine.docker import Mount
from envrepro.runtime import launch, loader as rt

LOADER = Path(rt.__file__).resolve()


# --- fixtures --------------------------------------------------------------------------------

def make_capture(tmp_path, name="my_model", fmt="savedmodel", **overrides):
    """A real capture on disk (model folder + sidecar with a valid manifest)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    model = tmp_path / name
    if fmt == "savedmodel":
        model.mkdir()
        (model / "saved_model.pb").write_bytes(b"pb")
    else:
        model.write_bytes(b"\x89HDF\r\n\x1a\n" if fmt == "h5" else b"PK\x03\x04")
    root = manifest.sidecar_for(model)
    (root / "snapshot").mkdir(parents=True)
    (root / "snapshot" / "custom_layers.py").write_text("X = 1\n")
    (root / "reference").mkdir()
    np.save(root / "reference" / "input_0.npy", np.zeros((2, 3), "float32"))
    np.save(root / "reference" / "output_0.npy", np.zeros((2, 1), "float32"))
    (root / "requirements.lock").write_text("tensorflow-cpu==2.4.1\n")
    data = {
        "schema": manifest.SCHEMA,
        "model": {"name": name, "format": fmt, "sha256": "x"},
        "python": {"version": "3.8.18"},
        "frameworks": {"tensorflow": "2.4.1", "keras": "2.4.0", "keras_flavor": "tf.keras", "tf_keras": None},
        "env": {"TF_USE_LEGACY_KERAS": "1", "KERAS_BACKEND": None},
        "load": {"compile": True,
                 "custom_objects": {"MyCustomLayer": "custom_layers:MyCustomLayer",
                                    "team>Huberish": "losses:Huberish"},
                 "modules": ["custom_layers"]},
        "snapshot": {"files": [{"path": "snapshot/custom_layers.py", "module": "custom_layers"}]},
        "reference": {"inputs": ["reference/input_0.npy"], "outputs": ["reference/output_0.npy"],
                      "input_structure": "single", "input_names": ["x"], "output_structure": "single",
                      "output_names": ["y"], "tolerance": {"atol": 1e-05, "rtol": 0.0001}},
        "optimizer": {"class": "Adam", "config": {"lr": 0.001}, "iterations": 12, "state_saved": True,
                      "num_weights": 5},
    }
    data.update(overrides)
    manifest.write_manifest(root, data)
    # Capture writes the manifest 0600 (mkstemp); the sandbox user needs to read it.
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0))
    return manifest.read(root)


@pytest.fixture
def cap(tmp_path):
    return make_capture(tmp_path)


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    """Never touch the real ~/.cache/envrepro/index.json."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("ENVREPRO_DEBUG", raising=False)
    return tmp_path / "xdg-cache"


class FakeEngine:
    """Records run() calls and answers with a canned (exit, stdout, stderr); holds images."""

    def __init__(self, result=(0, "", ""), images=()):
        self.result = result
        self.calls = []
        self._images = list(images)
        self.removed = []
        self.fail_remove = set()

    def run(self, image, command, **kwargs):
        self.calls.append((image, command, kwargs))
        return self.result

    def images(self, label_filter=None):
        assert label_filter in (images_cmd.LABEL_KEY, images_cmd.BUILDER_LABEL)
        key, _, value = label_filter.partition("=")
        return [dict(i) for i in self._images if i["Id"] not in self.removed
                and key in (i.get("Labels") or {}) and (not value or i["Labels"][key] == value)]

    def remove_image(self, tag, force=False):
        if tag in self.fail_remove:
            raise errors.EnvreproError(f"removing image {tag} failed: conflict: image is being used")
        img = next(i for i in self._images if tag in (i.get("RepoTags") or []) or tag == i["Id"])
        self.removed.append(img["Id"])
        return True


def image_info(key="k1", tag=None, **kw):
    base = dict(tag=tag or f"envrepro/env:{key}", key=key, image_id="sha256:" + "c" * 64, source="built",
                base_image="python:3.8-slim", base_digest="sha256:" + "b" * 64, log_path=None)
    base.update(kw)
    return SimpleNamespace(**base)


def loader_report(**kw):
    rep = {
        "report_version": 1, "ok": True, "stage": "verify", "exit_code": 0, "error": None, "mismatches": [],
        "versions": {"python": "3.8.18", "tensorflow": "2.4.1", "keras": "2.4.0", "keras_module": "tf.keras",
                     "numpy": "1.19.5"},
        "timings": {"import_tf": 2.1, "import_modules": 0.01, "load": 0.8, "predict": 0.3, "total": 3.4},
        "load": {"ok": True, "format": "h5", "compile": True, "safe_mode": True, "custom_objects": ["MyCustomLayer"]},
        "reference": {"checked": True, "max_abs_diff": 3e-08, "allclose": True, "atol": 1e-05, "rtol": 1e-04,
                      "shapes": {"expected": [[2, 1]], "got": [[2, 1]]}, "per_output": []},
        "optimizer": {"expected": {"class": "Adam"}, "restored": "Adam", "iterations": 12, "weights_restored": 5,
                      "ok": True, "problems": []},
        "network": {"interfaces": ["lo"], "non_loopback": [], "route": False, "isolated": True},
    }
    rep.update(kw)
    return rep


def report_stdout(rep):
    return "some noise\nWARNING tf\n" + rt.REPORT_PREFIX + json.dumps(rep) + "\n"


# --- plan ------------------------------------------------------------------------------------

def test_plan_uses_container_paths_and_the_manifest(cap):
    paths = load.container_paths(cap)
    plan = load.make_plan(cap, paths)
    assert plan["model_path"] == "/envrepro/model/my_model"
    assert plan["format"] == "savedmodel" and plan["compile"] is True
    assert plan["custom_objects"] == {"MyCustomLayer": "custom_layers:MyCustomLayer", "team>Huberish": "losses:Huberish"}
    assert plan["modules"] == ["custom_layers"]
    assert plan["snapshot_dir"] == "/envrepro/capture/snapshot"
    assert plan["env"] == {"TF_USE_LEGACY_KERAS": "1"}  # null variables are not set
    assert plan["safe_mode"] is True
    assert plan["keras_flavor"] == "tf.keras"
    ref = plan["reference"]
    assert ref["inputs"] == ["/envrepro/capture/reference/input_0.npy"]
    assert ref["outputs"] == ["/envrepro/capture/reference/output_0.npy"]
    assert (ref["atol"], ref["rtol"]) == (1e-05, 1e-04)
    assert ref["input_structure"] == "single" and ref["output_names"] == ["y"]
    assert plan["optimizer"] == {"class": "Adam", "iterations": 12, "state_saved": True, "num_weights": 5}
    json.dumps(plan)  # travels as JSON


def test_plan_unsafe_and_missing_sections(tmp_path):
    cap = make_capture(tmp_path, name="m.h5", fmt="h5", reference=None, optimizer=None,
                       load={"compile": False})
    plan = load.make_plan(cap, load.container_paths(cap), unsafe=True)
    assert plan["model_path"] == "/envrepro/model/m.h5"  # Keras 3 needs the suffix
    assert plan["safe_mode"] is False
    assert plan["reference"] is None and plan["optimizer"] is None
    assert plan["compile"] is False and plan["custom_objects"] == {} and plan["modules"] == []


def test_plan_default_tolerance(tmp_path):
    cap = make_capture(tmp_path, reference={"inputs": ["reference/input_0.npy"],
                                            "outputs": ["reference/output_0.npy"]})
    ref = load.make_plan(cap, load.container_paths(cap))["reference"]
    assert (ref["atol"], ref["rtol"]) == (load.DEFAULT_ATOL, load.DEFAULT_RTOL)
    assert ref["input_structure"] == "single"


# --- sandbox -----------------------------------------------------------------------------------

def test_run_args_are_the_sandbox(cap):
    args = load.run_args(cap)
    assert args["network_disabled"] is True
    assert args["user"] == "10001:10001"
    assert args["read_only"] is True
    assert args["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=1g"}
    assert args["cap_drop"] == ["ALL"]
    assert args["security_opt"] == ["no-new-privileges"]
    assert args["mem_limit"] == "4g" and args["pids_limit"] == 512
    assert args["workdir"] == "/tmp"
    mounts = {m.target: m for m in args["mounts"]}
    assert set(mounts) == {"/envrepro/model/my_model", "/envrepro/capture", "/envrepro/lib/envrepro_runtime"}
    assert all(isinstance(m, Mount) and m.read_only for m in args["mounts"]), "no writable host mount"
    assert mounts["/envrepro/model/my_model"].source == str(cap.model_path)
    assert mounts["/envrepro/capture"].source == str(cap.root)
    assert Path(mounts["/envrepro/lib/envrepro_runtime"].source, "loader.py").is_file()
    env = args["environment"]
    assert env["PYTHONPATH"] == "/envrepro/capture/snapshot" and env["HOME"] == "/tmp"
    assert env["ENVREPRO_MODEL"] == "/envrepro/model/my_model"
    assert env["TF_USE_LEGACY_KERAS"] == "1" and "KERAS_BACKEND" not in env
    assert json.loads(env["ENVREPRO_PLAN"]) == load.make_plan(cap, load.container_paths(cap))
    assert load.run_args(cap, memory="8g")["mem_limit"] == "8g"


def test_run_args_match_engine_run_signature(cap):
    import inspect

    from envrepro.engine.docker import Engine

    params = inspect.signature(Engine.run).parameters
    assert set(load.run_args(cap)) <= set(params)


def test_docker_argv_carries_every_sandbox_flag(cap):
    argv = load.shell_argv(cap.model_path, image_info(), tty=True)
    assert argv[:4] == ["docker", "run", "--rm", "-i"] and "-t" in argv
    text = " ".join(argv)
    for flag in ("--network none", "--user 10001:10001", "--read-only", "--tmpfs /tmp:rw,nosuid,nodev,size=1g",
                 "--cap-drop ALL", "--security-opt no-new-privileges", "--memory 4g", "--pids-limit 512",
                 "-w /tmp", "-e PYTHONPATH=/envrepro/capture/snapshot", "-e HOME=/tmp"):
        assert flag in text, flag
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "--mount"]
    assert len(mounts) == 3 and all(m.endswith(",readonly") and m.startswith("type=bind,") for m in mounts)
    assert f"type=bind,source={cap.model_path},target=/envrepro/model/my_model,readonly" in mounts
    i = argv.index("envrepro/env:k1")
    assert argv[i + 1:] == load.DEFAULT_SHELL
    plan_arg = next(a for a in argv if a.startswith("ENVREPRO_PLAN="))
    assert json.loads(plan_arg.split("=", 1)[1])["model_path"] == "/envrepro/model/my_model"
    assert "-t" not in load.shell_argv(cap.model_path, image_info(), ["python"], tty=False)


def test_mount_cli_quotes_commas():
    assert load.mount_cli(Mount("/a,b", "/t")) == 'type=bind,"source=/a,b",target=/t,readonly'
    assert load.mount_cli(Mount("/a", "/t", read_only=False)) == "type=bind,source=/a,target=/t"


def test_shell_runs_docker_and_needs_the_cli(cap, monkeypatch):
    seen = []
    monkeypatch.setattr(load.shutil, "which", lambda name: "/usr/bin/docker")
    assert load.shell(cap.model_path, image_info(), ["bash"], runner=lambda argv: seen.append(argv) or 3) == 3
    assert seen[0][0] == "/usr/bin/docker" and seen[0][-1] == "bash"
    monkeypatch.setattr(load.shutil, "which", lambda name: None)
    with pytest.raises(errors.NoEngine):
        load.shell(cap.model_path, image_info(), runner=lambda argv: 0)


def test_run_command_streams_in_the_sandbox(cap):
    eng = FakeEngine(result=(4, "", ""))
    assert load.run_command(cap.model_path, eng, image_info(), ["python", "predict.py"]) == 4
    image, command, kw = eng.calls[0]
    assert command == ["python", "predict.py"] and kw["stream"] is True
    assert kw["network_disabled"] and kw["user"] == "10001:10001" and kw["workdir"] == "/tmp"
    assert kw["environment"]["ENVREPRO_MODEL"] == "/envrepro/model/my_model"
    with pytest.raises(errors.EnvreproError):
        load.run_command(cap.model_path, eng, image_info(), [])


def test_unreadable_model_is_refused_before_running(tmp_path):
    cap = make_capture(tmp_path)
    (cap.model_path / "saved_model.pb").chmod(0o600)
    eng = FakeEngine()
    with pytest.raises(errors.EnvreproError) as e:
        load.load(cap.model_path, eng, image_info())
    assert "saved_model.pb" in str(e.value) and "uid 10001" in str(e.value) and "chmod" in str(e.value)
    assert eng.calls == []


def test_sandbox_needs_to_read_what_it_uses_only(tmp_path):
    cap = make_capture(tmp_path)
    (cap.root / manifest.MANIFEST).chmod(0o600)  # the loader never reads the manifest
    eng = FakeEngine(result=(0, report_stdout(loader_report()), ""))
    assert load.load(cap.model_path, eng, image_info()).ok
    cap.root.chmod(0o700)  # but it must get into the capture folder
    with pytest.raises(errors.EnvreproError) as e:
        load.load(cap.model_path, eng, image_info())
    assert f"chmod a+rX {cap.root}" in str(e.value)
    cap.root.chmod(0o755)
    (cap.root / "snapshot" / "custom_layers.py").chmod(0o600)
    with pytest.raises(errors.EnvreproError) as e:
        load.load(cap.model_path, eng, image_info())
    assert "custom_layers.py" in str(e.value)
    assert len(eng.calls) == 1


def test_edited_snapshot_is_refused_with_the_file_named(cap):
    (cap.root / "snapshot" / "custom_layers.py").write_text("X = 2\n")
    eng = FakeEngine()
    with pytest.raises(errors.InvalidCapture) as e:
        load.load(cap.model_path, eng, image_info())
    assert "custom_layers.py" in str(e.value)
    assert eng.calls == []


# --- report ------------------------------------------------------------------------------------

def test_parse_report_takes_the_last_report_line():
    rep = loader_report()
    assert load.parse_report(report_stdout(rep)) == rep
    assert load.parse_report(report_stdout(rep).encode()) == rep
    assert load.parse_report("no report here\n") is None
    assert load.parse_report(rt.REPORT_PREFIX + "{broken\n") is None
    assert load.parse_report(None) is None


def test_load_ok_report_json_and_render(cap, cache_home):
    eng = FakeEngine(result=(0, report_stdout(loader_report()), "tf noise\n"))
    report = load.load(cap.model_path, eng, image_info(), image_seconds=12.5)
    image, command, kw = eng.calls[0]
    assert image == "envrepro/env:k1" and command == launch.container_argv("python", "loader")
    assert command[:3] == ["python", "-B", "-c"] and "from envrepro_runtime.loader import main" in command[3]
    assert kw["stream"] is False and kw["network_disabled"] and kw["read_only"]
    assert report.ok and load.exit_code(report) == 0
    d = json.loads(report.to_json())
    assert d["ok"] is True and d["exit_code"] == 0
    assert d["image"]["base_digest"].startswith("sha256:") and d["loader"]["reference"]["allclose"]
    text = load.render_report(report)
    for part in ("Python 3.8.18", "TensorFlow 2.4.1", "Keras 2.4.0", "envrepro/env:k1", "built, 12.5 s",
                 "python:3.8-slim@sha256:bbbb", "load         OK", "Adam restored, iterations 12, 5 variables  OK",
                 "max |diff| 3e-08 within atol 1e-05 + rtol 0.0001  OK", "image 12.5 s", "import TF 2.1 s",
                 "load 0.8 s", "predict 0.3 s", "isolated", "result: OK"):
        assert part in text, part
    # every load is remembered in the images index
    idx = json.loads((cache_home / "envrepro" / "index.json").read_text())
    assert str(cap.root) in idx["images"]["k1"]["captures"]


def test_mismatch_report(cap):
    rep = loader_report(ok=False, exit_code=6, mismatches=["reference prediction differs (max |diff| 0.5)"])
    rep["reference"].update(max_abs_diff=0.5, allclose=False)
    report = load.load(cap.model_path, FakeEngine(result=(6, report_stdout(rep), "")), image_info(source="local"))
    assert load.exit_code(report) == errors.EXIT_MISMATCH
    text = load.render_report(report)
    assert "max |diff| 0.5 exceeds atol 1e-05" in text and "MISMATCH" in text and "found locally" in text


def test_optimizer_mismatch_is_exit_6(cap):
    rep = loader_report(ok=False, mismatches=["iterations 0, expected 12"])
    rep["optimizer"].update(iterations=0, ok=False, problems=["iterations 0, expected 12"])
    report = load.load(cap.model_path, FakeEngine(result=(6, report_stdout(rep), "")), image_info())
    assert load.exit_code(report) == 6
    assert "MISMATCH: iterations 0, expected 12" in load.render_report(report)


def test_load_failure_report_is_exit_5_with_the_class(cap):
    err = rt.error_info(TypeError("Could not locate class 'MyLayer'. Make sure custom classes are decorated"), "load")
    rep = loader_report(ok=False, stage="load", error=err, reference=None, optimizer=None,
                        load={"ok": False, "format": "keras"})
    report = load.load(cap.model_path, FakeEngine(result=(5, report_stdout(rep), "")), image_info())
    assert load.exit_code(report) == errors.EXIT_LOAD_FAILED
    text = load.render_report(report)
    assert "FAILED at stage load: TypeError: Could not locate class 'MyLayer'" in text
    assert "known failure (FAILURES.md class 2): unregistered custom object; fix: import the module" in text
    assert "result: FAILED" in text


def test_failure_after_load_is_shown(cap):
    err = rt.error_info(SystemError("unknown opcode"), "predict")
    rep = loader_report(ok=False, stage="predict", error=err, reference=None, optimizer=None)
    report = load.load(cap.model_path, FakeEngine(result=(5, report_stdout(rep), "")), image_info())
    text = load.render_report(report)
    assert load.exit_code(report) == 5
    assert "predict      FAILED at stage predict: SystemError: unknown opcode" in text
    assert "FAILURES.md class 5" in text


def test_no_report_line_oom(cap):
    report = load.load(cap.model_path, FakeEngine(result=(137, "", "Killed\n")), image_info())
    assert load.exit_code(report) == errors.EXIT_LOAD_FAILED
    assert report.error["type"] == "NoReport" and "out of memory" in report.error["message"]
    assert "raise --memory" in load.render_report(report)


def test_plan_error_is_internal():
    report = load.LoadReport(model="m", capture="c", image={}, loader=loader_report(
        ok=False, error={"type": "PlanError", "message": "x", "first_line": "x", "stage": "import"}))
    assert load.exit_code(report) == errors.EXIT_INTERNAL


def test_index_failure_never_fails_the_load(cap):
    def boom(info, capture):
        raise OSError("read-only file system")

    report = load.load(cap.model_path, FakeEngine(result=(0, report_stdout(loader_report()), "")),
                       image_info(), record=boom)
    assert report.ok and "images index not updated" in report.warnings[0]


# --- images index and prune --------------------------------------------------------------------

def docker_image(key, tag, size=100_000_000):
    return {"Id": f"sha256:{key[:4]}{'0' * 60}", "RepoTags": [tag], "Size": size, "Created": 1_700_000_000,
            "Labels": {images_cmd.LABEL_KEY: key}}


def env_key(cap, base="python:3.8-slim"):
    """The key build.py gives this capture's environment on ``base``."""
    from envrepro.build.images import image_key

    return image_key(base, str(cap.get("python.version")), cap.lock_path.read_text())


def used(cap, base="python:3.8-slim"):
    key = env_key(cap, base)
    images_cmd.record_use(image_info(key, base_image=base), cap)
    return key


def test_record_and_list(tmp_path):
    a = make_capture(tmp_path / "a")
    b = make_capture(tmp_path / "b", name="other")
    k1 = used(a)
    assert used(b) == k1  # same lock, same base: one image serves both
    k2 = used(b, base="registry.local/py:3.8")
    eng = FakeEngine(images=[docker_image(k1, "envrepro-env:1"), docker_image(k2, "envrepro-env:2"),
                             docker_image("k3" * 16, "envrepro-env:3")])
    rows = {r.key: r for r in images_cmd.list_images(eng)}
    assert rows[k1].captures == sorted([str(a.root), str(b.root)])
    assert rows[k2].captures == [str(b.root)] and rows["k3" * 16].captures == []
    assert rows[k1].tag == "envrepro-env:1" and rows[k1].size == 100_000_000
    assert rows[k1].created.startswith("2023-11-14")
    text = images_cmd.render_images(list(rows.values()))
    assert "100.0 MB" in text and "unused" in text
    assert images_cmd.render_images([]) == "no envrepro images\n"


def test_rows_from_inspect_shaped_images():
    row = images_cmd._row({"Id": "sha256:abc", "RepoTags": ["t:1"], "Config": {"Labels": {images_cmd.LABEL_KEY: "kk"}}})
    assert (row.key, row.tag, row.size) == ("kk", "t:1", 0)


def test_prune_removes_images_no_capture_uses(tmp_path):
    import shutil

    a = make_capture(tmp_path / "a")
    gone = make_capture(tmp_path / "gone")
    changed = make_capture(tmp_path / "changed")
    changed.data["python"] = {"version": "3.8.17"}
    manifest.write_manifest(changed.root, dict(changed.data))
    changed = manifest.read(changed.root)
    k_a = used(a)
    k_gone = used(gone, base="python:3.8-bookworm")
    k_changed = used(changed)
    shutil.rmtree(gone.root)
    # captured again into another environment: a new lock
    (changed.root / "requirements.lock").write_text("tensorflow-cpu==2.21.0\n")
    manifest.write_manifest(changed.root, dict(changed.data))
    orphan = "f" * 32  # built (say by `envrepro build`) but never loaded
    tags = {k_a: "envrepro-env:a", k_gone: "envrepro-env:gone", k_changed: "envrepro-env:changed",
            orphan: "envrepro-env:orphan"}
    eng = FakeEngine(images=[docker_image(k, t) for k, t in tags.items()])

    dry = images_cmd.prune(eng, dry_run=True)
    assert sorted(r.tag for r in dry.removed) == ["envrepro-env:changed", "envrepro-env:gone", "envrepro-env:orphan"]
    assert eng.removed == []
    assert "would remove 3 image(s)" in images_cmd.render_prune(dry)
    changed_row = next(r for r in dry.removed if r.key == k_changed)
    assert "now uses image key" in changed_row.stale[str(changed.root)]
    gone_row = next(r for r in dry.removed if r.key == k_gone)
    assert gone_row.stale[str(gone.root)] == "capture folder is gone"
    before = images_cmd.index_path().read_text()

    eng.fail_remove.add("envrepro-env:orphan")
    res = images_cmd.prune(eng)
    assert sorted(r.tag for r in res.removed) == ["envrepro-env:changed", "envrepro-env:gone"]
    assert [r.key for r in res.kept] == [k_a]
    assert "envrepro-env:orphan" in res.failed
    assert "could not remove envrepro-env:orphan" in images_cmd.render_prune(res)
    assert len(eng.removed) == 2
    idx = images_cmd.read_index()
    assert set(idx["images"]) == {k_a} and before != images_cmd.index_path().read_text()
    assert res.to_dict()["freed_bytes"] == 200_000_000


def test_prune_without_a_recorded_base_compares_the_lock(tmp_path):
    a = make_capture(tmp_path / "a")
    images_cmd.record_use(image_info("k1", base_image=None), a)
    eng = FakeEngine(images=[docker_image("k1", "envrepro-env:k1")])
    assert images_cmd.prune(eng, dry_run=True).removed == []
    (a.root / "requirements.lock").write_text("numpy==2.0.0\n")
    manifest.write_manifest(a.root, dict(a.data))
    res = images_cmd.prune(eng, dry_run=True)
    assert [r.key for r in res.removed] == ["k1"]
    assert res.removed[0].stale[str(a.root)] == "capture was taken again into another environment"


def test_prune_with_exact_key_function(tmp_path):
    a = make_capture(tmp_path / "a")
    images_cmd.record_use(image_info("k1"), a)
    eng = FakeEngine(images=[docker_image("k1", "envrepro-env:k1")])
    assert images_cmd.prune(eng, dry_run=True, key_for=lambda c: "k1").removed == []
    res = images_cmd.prune(eng, dry_run=True, key_for=lambda c: "k9")
    assert [r.key for r in res.removed] == ["k1"]
    assert "now uses image key k9" in res.removed[0].stale[str(a.root)]


def test_index_is_a_cache(tmp_path, cache_home):
    p = images_cmd.index_path()
    assert p == cache_home / "envrepro" / "index.json"
    assert images_cmd.read_index() == {"version": 1, "images": {}}
    p.parent.mkdir(parents=True)
    p.write_text("{not json")
    assert images_cmd.read_index()["images"] == {}
    images_cmd.record_use(image_info("k1"), make_capture(tmp_path))
    assert list(images_cmd.read_index()["images"]) == ["k1"]
    assert not [f for f in p.parent.iterdir() if f.name.endswith(".tmp")]


# --- the in-container loader's pure parts ------------------------------------------------------

def test_loader_compare_and_nan():
    a = np.array([[1.0, np.nan], [3.0, 4.0]], "float32")
    r = rt.compare(np, [a + 1e-7], [a], 1e-5, 1e-4)
    assert r["allclose"] and r["max_abs_diff"] < 1e-6
    r = rt.compare(np, [a + 0.5], [a], 1e-5, 1e-4)
    assert not r["allclose"] and r["max_abs_diff"] == pytest.approx(0.5)
    b = a.copy()
    b[1, 1] = np.nan
    r = rt.compare(np, [b], [a], 1e-5, 1e-4)
    assert not r["allclose"] and r["max_abs_diff"] == "inf"
    r = rt.compare(np, [a[:1]], [a], 1e-5, 1e-4)
    assert not r["allclose"] and r["shapes"] == {"expected": [[2, 2]], "got": [[1, 2]]} and "problem" in r


def test_loader_inputs_and_outputs(tmp_path):
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"in{i}.npy"))
        np.save(paths[-1], np.full((1, 2), i))
    x, _ = rt.build_inputs(np, {"inputs": paths, "input_structure": "dict", "input_names": ["a", "b"]})
    assert sorted(x) == ["a", "b"] and x["b"][0, 0] == 1
    x, _ = rt.build_inputs(np, {"inputs": paths, "input_structure": "list"})
    assert len(x) == 2
    with pytest.raises(rt.PlanError):
        rt.build_inputs(np, {"inputs": paths, "input_structure": "single"})
    out = rt.flatten_outputs(np, {"y": np.ones(1), "z": np.zeros(1)}, {"output_names": ["z", "y"]})
    assert out[0][0] == 0 and out[1][0] == 1
    assert len(rt.flatten_outputs(np, (np.ones(1), np.ones(2)), {})) == 2


def test_loader_optimizer_check():
    class Var:
        def __init__(self, v):
            self.v = v

        def numpy(self):
            return self.v

    class Adam:  # OptimizerV2 style: weights property, variables() method
        iterations = Var(12)
        weights = [1, 2, 3, 4, 5]

        def variables(self):
            return self.weights

    model = SimpleNamespace(optimizer=Adam())
    ok = rt.check_optimizer(model, {"class": "Adam", "iterations": 12, "state_saved": True, "num_weights": 5})
    assert ok["ok"] and ok["restored"] == "Adam" and ok["iterations"] == 12 and ok["weights_restored"] == 5
    assert rt.check_optimizer(model, {"class": "Custom>Adam", "iterations": 12})["ok"]
    bad = rt.check_optimizer(model, {"class": "SGD", "iterations": 3, "state_saved": True, "num_weights": 7})
    assert not bad["ok"] and len(bad["problems"]) == 3
    none = rt.check_optimizer(SimpleNamespace(optimizer=None), {"class": "Adam"})
    assert not none["ok"]


def test_loader_classifies_known_failures():
    assert rt.classify("ValueError: File format not supported: filepath=x")["id"] == "1"
    assert rt.classify("ModuleNotFoundError: No module named 'custom_layers'")["id"] == "import"
    assert rt.classify("ValueError: bad marshal data (unknown type code)")["id"] == "5"
    assert rt.classify("NotFoundError: Op type not registered 'Addons>Mish' in binary")["id"] == "6c"
    assert rt.classify("all fine") is None
    info = rt.error_info(ValueError("first\nsecond"), "load")
    assert info["first_line"] == "first" and info["stage"] == "load" and info["type"] == "ValueError"


def test_loader_read_plan(tmp_path):
    p = tmp_path / "plan.json"
    p.write_text(json.dumps({"model_path": "/m"}))
    assert rt.read_plan(["--plan", str(p)], {})["model_path"] == "/m"
    assert rt.read_plan([], {"ENVREPRO_PLAN": '{"model_path": "/e"}'})["model_path"] == "/e"
    for argv, env in (([], {}), (["--plan"], {}), ([], {"ENVREPRO_PLAN": "{"}), ([], {"ENVREPRO_PLAN": "{}"})):
        with pytest.raises(rt.PlanError):
            rt.read_plan(argv, env)


def test_loader_without_plan_reports_on_stdout_only():
    env = {k: v for k, v in os.environ.items() if k != "ENVREPRO_PLAN"}
    proc = subprocess.run(launch.host_argv(sys.executable, "loader"), capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == rt.EXIT_INTERNAL
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(rt.REPORT_PREFIX)
    rep = json.loads(lines[0][len(rt.REPORT_PREFIX):])
    assert rep["ok"] is False and rep["error"]["type"] == "PlanError" and rep["exit_code"] == 70
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(launch.host_argv(sys.executable, "loader"), capture_output=True, text=True,
                          env=dict(env, ENVREPRO_DEBUG="1"), timeout=60)
    assert "Traceback" in proc.stderr and len(proc.stdout.splitlines()) == 1


def test_loader_network_check_sends_nothing():
    net = rt.network_check()
    assert set(net) == {"interfaces", "non_loopback", "route", "isolated"}
    assert isinstance(net["route"], bool)


def test_loader_is_python36_syntax():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from support import need, pyenv_python

    found = pyenv_python("3.6")
    need(found, "no Python 3.6 interpreter (pyenv's 3.6 build)")
    py36 = Path(found)
    for path in sorted(LOADER.parent.glob("*.py")):  # the loader imports the whole runtime package
        proc = subprocess.run([str(py36), "-c", "import ast,sys; ast.parse(open(sys.argv[1]).read())", str(path)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, (path, proc.stderr)


def test_build_image_info_is_understood(cap):
    from envrepro.build.images import ImageInfo

    info = ImageInfo("envrepro-env:abc", "abc" * 10, "sha256:1", "pulled", "python:3.8-slim", "sha256:d")
    d = load.image_dict(info)
    assert d["source"] == "pulled" and d["base_digest"] == "sha256:d" and d["key"] == "abc" * 10
    report = load.load(cap.model_path, FakeEngine(result=(0, report_stdout(loader_report()), "")), info)
    text = load.render_report(report)
    assert "envrepro-env:abc (pulled" in text, text
    assert load.python_in(info) == info.python  # the environment's interpreter, not the base one


def test_prune_cache_removes_untagged_builder_stages_only():
    builder = {"Id": "sha256:" + "b" * 64, "RepoTags": None, "Size": 740_000_000, "Created": 1,
               "Labels": {"org.envrepro.stage": "builder"}}
    tagged_builder = {"Id": "sha256:" + "d" * 64, "RepoTags": ["keep:me"], "Size": 1, "Created": 1,
                      "Labels": {"org.envrepro.stage": "builder"}}
    eng = FakeEngine(images=[builder, tagged_builder])
    dry = images_cmd.prune(eng, dry_run=True, cache=True)
    assert [c["id"] for c in dry.cache] == [builder["Id"]] and eng.removed == []
    assert "would remove builder cache bbbbbbbbbbbb (740.0 MB)" in images_cmd.render_prune(dry)
    res = images_cmd.prune(eng, cache=True)
    assert eng.removed == [builder["Id"]] and res.freed == 740_000_000
    assert images_cmd.prune(FakeEngine(images=[builder])).cache == []   # only with cache=True
