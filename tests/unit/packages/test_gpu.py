"""``--gpus`` builds TensorFlow's GPU build (envrepro.packages.gpu, ``platforms.translate(gpu=True)``),
with a fake resolver and index (tests/unit/fakes.py): a tensorflow-cpu 2.4.1 capture gets
``tensorflow==2.4.1`` on the CUDA base with Python built from source; a 2.15.1 capture gets
``tensorflow[and-cuda]==2.15.1`` (CUDA as pip wheels) on plain ``python:3.11-slim``; the other
pins are constraints, the report lists every difference, and the GPU image never shares the CPU
image's key. The real resolution is tests/integration/test_gpu_pypi.py; the GPU image running
on a CPU, tests/e2e/test_gpu_e2e.py."""
import json

import pytest

from envrepro.image import bases, ensure as images, spec, usage
from envrepro.packages import gpu, platforms, translation
from envrepro.packages.pipconfig import PipSettings
from envrepro.errors import PlatformError
from envrepro.sandbox import report as reports
from envrepro.sidecar import lockfile
from envrepro.sidecar.manifest import Capture

try:
    from .fakes import FakeEngine, context_files, fake_lookup, image, translate_into_cache
    from .test_dockerfile import check_snapshot
except ImportError:
    from fakes import FakeEngine, context_files, fake_lookup, image, translate_into_cache
    from test_dockerfile import check_snapshot

H = lambda c: "sha256:" + c * 64  # noqa: E731

LOCK_241 = f"""absl-py==0.15.0 \\
    --hash={H("a")}
    # via tensorflow-cpu
h5py==2.10.0 \\
    --hash={H("b")}
    # via tensorflow-cpu
numpy==1.19.5 \\
    --hash={H("c")}
    # via
    #   h5py
    #   pandas
    #   tensorflow-cpu
pandas==1.1.5 \\
    --hash={H("d")}
    # via -r requirements.in
six==1.15.0 \\
    --hash={H("e")}
    # via
    #   absl-py
    #   tensorflow-cpu
tensorflow-cpu==2.4.1 \\
    --hash={H("f")}
    # via -r requirements.in

# The following packages are considered to be unsafe in a requirements file:
# setuptools==56.0.0
"""
# What pip-compile answers for the GPU requirements (no hashes, --no-header).
RESOLVED_241 = """absl-py==0.15.0
    # via tensorflow
h5py==2.10.0
    # via tensorflow
numpy==1.19.5
    # via
    #   -c constraints.txt
    #   h5py
    #   pandas
    #   tensorflow
pandas==1.1.5
    # via -r requirements.in
six==1.15.0
    # via
    #   absl-py
    #   tensorflow
tensorflow==2.4.1
    # via -r requirements.in
"""
LOCK_2151 = f"""keras==2.15.0 \\
    --hash={H("1")}
    # via tensorflow-cpu
ml-dtypes==0.2.0 \\
    --hash={H("2")}
    # via tensorflow-cpu
numpy==1.26.4 \\
    --hash={H("3")}
    # via
    #   ml-dtypes
    #   tensorflow-cpu
tensorflow-cpu==2.15.1 \\
    --hash={H("4")}
    # via -r requirements.in
"""
RESOLVED_2151 = """keras==2.15.0
    # via tensorflow
ml-dtypes==0.2.0
    # via tensorflow
numpy==1.26.4
    # via
    #   -c constraints.txt
    #   ml-dtypes
    #   tensorflow
nvidia-cublas-cu12==12.2.5.6
    # via
    #   nvidia-cudnn-cu12
    #   tensorflow
nvidia-cudnn-cu12==8.9.4.25
    # via tensorflow
tensorflow[and-cuda]==2.15.1
    # via -r requirements.in
"""
CUDA_24 = "nvidia/cuda:11.0.3-cudnn8-runtime-ubuntu20.04"


def make_capture(tmp_path, lock, python, tf, name="m"):
    root = tmp_path / f"{name}.envrepro"
    root.mkdir(parents=True)
    (root / "requirements.lock").write_text(lock)
    dist = next((e.name for e in lockfile.parse_lock(lock) if e.name.startswith("tensorflow")), None)
    return Capture(root=root, data={"python": {"version": python, "sys_platform": "linux"},
                                    "frameworks": {"tensorflow": tf, "tensorflow_distribution": dist}})


@pytest.fixture
def cap24(tmp_path):
    return make_capture(tmp_path, LOCK_241, "3.8.18", "2.4.1")


@pytest.fixture
def cap215(tmp_path):
    return make_capture(tmp_path, LOCK_2151, "3.11.7", "2.15.1")


def entry(name, version):
    return lockfile.LockEntry(name, version, (), None)


# -- the table ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name,version,others,wanted", [
    ("tensorflow-cpu", "2.4.1", [], "tensorflow"),
    ("tensorflow-cpu", "2.13.1", [], "tensorflow"),
    ("tensorflow-cpu", "2.14.0", [], "tensorflow[and-cuda]"),
    ("tensorflow-cpu", "2.15.1", [], "tensorflow[and-cuda]"),
    ("tensorflow", "2.15.1", [], "tensorflow[and-cuda]"),
    ("tensorflow", "2.15.1", [entry("nvidia-cudnn-cu12", "8.9.4.25")], None),   # installed [and-cuda]
    ("tensorflow", "2.8.4", [], None),            # GPU-capable since 2.1, CUDA from the base
    ("tensorflow", "1.15.5", [], "tensorflow-gpu"),
    ("tensorflow-cpu", "2.0.0", [], "tensorflow-gpu"),
    ("tensorflow-gpu", "2.4.1", [], None),
    ("numpy", "1.19.5", [], None),
])
def test_gpu_build_of_each_tensorflow_pin(name, version, others, wanted):
    e = entry(name, version)
    assert gpu.mapped_for_gpu(e, [e] + others) == wanted


@pytest.mark.parametrize("tf,wheels", [("2.4.1", False), ("2.13.1", False), ("2.14.0", True),
                                       ("2.15.1", True), ("2.21.0", True), ("", False)])
def test_cuda_as_pip_wheels_from_2_14(tf, wheels):
    assert gpu.cuda_as_wheels(tf) is wheels


def test_windows_lock_for_gpus_asks_for_the_cuda_wheels():
    win = [lockfile.LockEntry("tensorflow", "2.15.0", (H("1"),), None, ("-r requirements.in",)),
           lockfile.LockEntry("tensorflow-intel", "2.15.0", (H("2"),), None, ("tensorflow",)),
           lockfile.LockEntry("pywin32", "306", (H("3"),), None, ("-r requirements.in",))]
    plan = platforms.make_plan(win, "win32", lambda v: "tensorflow", lambda n, v: True, gpu=True)
    assert plan.requirements == ["tensorflow[and-cuda]==2.15.0"]
    assert "tensorflow 2.15.0 -> tensorflow[and-cuda] 2.15.0 (CUDA and cuDNN as pip wheels)" in \
        [c.text() for c in plan.changes]


def test_macos_build_for_gpus_names_where_cuda_comes_from():
    mac = [lockfile.LockEntry("tensorflow-macos", "2.12.0", (), None, ("-r requirements.in",))]
    plan = platforms.make_plan(mac, "darwin", lambda v: "tensorflow", lambda n, v: True, gpu=True)
    assert plan.requirements == ["tensorflow==2.12.0"]
    assert plan.changes[0].text() == ("tensorflow-macos 2.12.0 -> tensorflow 2.12.0 (Linux GPU build of "
                                      "the macOS TensorFlow, CUDA and cuDNN from the base image)")


# -- TensorFlow 2.4.1: tensorflow on the CUDA base, Python built from source ---------------------
def test_gpu_lock_of_a_tensorflow_cpu_2_4_capture(cap24):
    before = cap24.lock_path.read_text()
    t, resolver = translate_into_cache(cap24, RESOLVED_241)
    requirements, constraints, xy = resolver.calls[0]
    assert xy == "3.8"
    assert requirements.splitlines() == ["-c constraints.txt", "pandas==1.1.5", "tensorflow==2.4.1"]
    assert set(constraints.splitlines()) == {"absl-py==0.15.0", "h5py==2.10.0", "numpy==1.19.5",
                                             "pandas==1.1.5", "six==1.15.0", "setuptools==56.0.0"}
    assert [c.text() for c in t.changes] == [
        "tensorflow-cpu 2.4.1 -> tensorflow 2.4.1 (GPU build of the same version, CUDA and cuDNN "
        "from the base image)"]
    entries = {e.name: e for e in lockfile.parse_lock(t.lock_text)}
    assert set(entries) == {"absl-py", "h5py", "numpy", "pandas", "six", "tensorflow"}
    assert all(e.hashes for e in entries.values())
    assert t.target == "linux-gpu" and t.lock_path.parent.name == "gpu"
    assert t.summary().startswith("translated for Linux with GPUs: tensorflow-cpu 2.4.1 -> tensorflow")
    assert cap24.lock_path.read_text() == before                        # the capture is not written
    # the image: the CUDA base, Python built from source, its own key
    assert spec.lock_for(cap24, gpus=True)[0] == t.lock_text
    assert spec.lock_for(cap24) == (before, None)
    assert bases.resolve_base(cap24, gpus=True) == CUDA_24 and bases.cuda_base_needed(cap24, None, True)
    text = images.dockerfile_for(cap24, gpus=True)
    assert f"FROM {CUDA_24} AS envrepro-python-build" in text and "Python-3.8.18.tgz" in text
    assert 'org.envrepro.translated-for="linux-gpu"' in text
    assert spec.capture_key(cap24, CUDA_24, t.lock_text) != spec.capture_key(cap24, "python:3.8-slim", before)
    assert spec.capture_key(cap24, CUDA_24, t.lock_text) != spec.capture_key(cap24, CUDA_24, before)


def test_a_capture_that_pins_tensorflow_2_8_keeps_its_lock_on_the_cuda_base(tmp_path):
    cap = make_capture(tmp_path, "tensorflow==2.8.4\n    # via -r requirements.in\n", "3.9.18", "2.8.4")
    assert not gpu.needs_gpu_lock(cap)
    assert spec.lock_for(cap, gpus=True) == (cap.lock_path.read_text(), None)
    assert "AS envrepro-python-build" in images.dockerfile_for(cap, gpus=True)


def test_a_base_image_the_user_chose_gets_no_python_build(cap24):
    translate_into_cache(cap24, RESOLVED_241)
    text = images.dockerfile_for(cap24, base_image="registry.example/cuda-python:11.0", gpus=True)
    assert "envrepro-python" not in text and "FROM registry.example/cuda-python:11.0 AS heavy-builder" in text


# -- TensorFlow 2.15.1: tensorflow[and-cuda] on python:3.11-slim ---------------------------------
def test_gpu_lock_of_a_tensorflow_cpu_2_15_capture(cap215):
    t, resolver = translate_into_cache(cap215, RESOLVED_2151)
    requirements, constraints, xy = resolver.calls[0]
    assert xy == "3.11" and requirements.splitlines() == ["-c constraints.txt", "tensorflow[and-cuda]==2.15.1"]
    assert set(constraints.splitlines()) == {"keras==2.15.0", "ml-dtypes==0.2.0", "numpy==1.26.4"}
    assert [c.text() for c in t.changes] == [
        "tensorflow-cpu 2.15.1 -> tensorflow[and-cuda] 2.15.1 (GPU build of the same version, CUDA and "
        "cuDNN as pip wheels)",
        "nvidia-cublas-cu12 12.2.5.6 added (needed by the GPU build)",
        "nvidia-cudnn-cu12 8.9.4.25 added (needed by the GPU build)"]
    entries = {e.name: e for e in lockfile.parse_lock(t.lock_text)}
    assert entries["tensorflow"].requirement == "tensorflow==2.15.1"   # distributions, no extras
    assert "tensorflow-cpu" not in entries and all(e.hashes for e in entries.values())
    heavy, rest = lockfile.split_closure(t.lock_text)
    assert {"tensorflow", "nvidia-cudnn-cu12", "nvidia-cublas-cu12"} <= {e.name for e in heavy} and not rest
    # plain python:3.11-slim, no Python built from source
    assert bases.resolve_base(cap215, gpus=True) == "python:3.11-slim"
    assert not bases.cuda_base_needed(cap215, None, True)
    text = images.dockerfile_for(cap215, gpus=True)
    assert "envrepro-python" not in text and "python.org" not in text
    assert [line for line in text.splitlines() if line.startswith("FROM python")] == [
        "FROM python:3.11-slim AS envrepro-base", "FROM python:3.11-slim AS heavy-builder"]


def test_dockerfile_gpus_snapshot_for_cuda_wheels(cap215):
    """What ``envrepro dockerfile MODEL --gpus`` prints (``commands.dockerfile`` calls
    ``dockerfile_for``) for a tensorflow-cpu 2.15.1 capture."""
    translate_into_cache(cap215, RESOLVED_2151)
    check_snapshot("env-gpu-cuda-wheels.Dockerfile", images.dockerfile_for(cap215, gpus=True))


def test_cpu_and_gpu_images_of_one_capture_differ(cap215):
    t, _ = translate_into_cache(cap215, RESOLVED_2151)
    engine = FakeEngine([image("python:3.11-slim", digest="python@sha256:" + "0" * 64)])
    lines = []
    gpu_info = images.ensure_image(cap215, engine, gpus=True, on_progress=lines.append, pip=PipSettings())
    cpu_info = images.ensure_image(cap215, engine, on_progress=lines.append, pip=PipSettings())
    assert gpu_info.key != cpu_info.key and gpu_info.source == cpu_info.source == "built"
    assert gpu_info.base_image == cpu_info.base_image == "python:3.11-slim"
    gpu_heavy = context_files(engine.builds[0][0])["heavy.lock"].decode()
    cpu_heavy = context_files(engine.builds[1][0])["heavy.lock"].decode()
    assert "tensorflow==2.15.1" in gpu_heavy and "nvidia-cudnn-cu12==8.9.4.25" in gpu_heavy
    assert "tensorflow-cpu==2.15.1" in cpu_heavy and "nvidia" not in cpu_heavy
    assert gpu_info.translation == t.to_dict() and cpu_info.translation is None
    assert any(line.startswith("translated for Linux with GPUs: tensorflow-cpu 2.15.1") for line in lines)
    labels = engine.inspect_image(gpu_info.tag)["Config"]["Labels"]
    assert labels["org.envrepro.translated-for"] == "linux-gpu" and labels["org.envrepro.translated-from"] == "linux"
    # loaded again with --gpus: the same key, found locally
    assert images.ensure_image(cap215, engine, gpus=True, on_progress=lines.append).source == "local"


def test_load_report_lists_every_difference(cap215):
    t, _ = translate_into_cache(cap215, RESOLVED_2151)
    img = {"tag": "envrepro-env:abc", "source": "built", "base_image": "python:3.11-slim",
           "translation": t.to_dict()}
    report = reports.LoadReport(model="m", capture="c", image=img, loader={"ok": True, "load": {"ok": True}})
    text = reports.render_report(report)
    assert "translated   for Linux with GPUs from a Linux capture: 3 package(s) differ from the capture" in text
    for change in t.to_dict()["changes"]:
        assert change in text
    assert report.to_dict()["image"]["translation"]["for"] == "Linux with GPUs"


def test_tensorflow_2_15_without_its_cuda_wheels_gets_them(tmp_path):
    cap = make_capture(tmp_path, LOCK_2151.replace("tensorflow-cpu", "tensorflow"), "3.11.7", "2.15.1")
    assert gpu.needs_gpu_lock(cap)
    t, resolver = translate_into_cache(cap, RESOLVED_2151)
    assert "tensorflow[and-cuda]==2.15.1" in resolver.calls[0][0]
    assert t.changes[0].text() == "tensorflow 2.15.1 -> tensorflow[and-cuda] 2.15.1 (CUDA and cuDNN as pip wheels)"


def test_tensorflow_2_15_installed_with_its_cuda_wheels_keeps_its_lock(tmp_path):
    lock = "".join(e.requirement + "\n" for e in lockfile.parse_lock(RESOLVED_2151))
    cap = make_capture(tmp_path, lock.replace("tensorflow[and-cuda]", "tensorflow"), "3.11.7", "2.15.1")
    assert not gpu.needs_gpu_lock(cap)
    assert spec.lock_for(cap, gpus=True) == (cap.lock_path.read_text(), None)
    assert "envrepro-python" not in images.dockerfile_for(cap, gpus=True)


# -- the cache and the refusals -----------------------------------------------------------------
def test_gpu_translation_is_cached_apart_and_redone_for_an_older_version(cap215):
    t, _ = translate_into_cache(cap215, RESOLVED_2151)
    again, resolver = translate_into_cache(cap215, "")       # from the cache: never resolved
    assert resolver.calls == [] and again.lock_text == t.lock_text and again.changes == t.changes
    meta_path = t.lock_path.parent / "translation.json"
    meta = json.loads(meta_path.read_text())
    assert meta["version"] == translation.VERSIONS["linux-gpu"] and meta["target"] == "linux-gpu"
    meta["version"] = 1                                      # made before tensorflow[and-cuda]
    meta_path.write_text(json.dumps(meta))
    redone, resolver = translate_into_cache(cap215, RESOLVED_2151)
    assert len(resolver.calls) == 1 and redone.lock_text == t.lock_text


def test_no_gpu_build_for_the_captured_python_stops_before_resolving(cap24):
    def lookup(pins, facts):
        infos, why = fake_lookup(pins, facts)
        if "tensorflow" in infos:
            infos["tensorflow"] = infos["tensorflow"].__class__({H("9")}, found=True)   # no Linux wheel
        return infos, why
    with pytest.raises(PlatformError) as e:
        translate_into_cache(cap24, RESOLVED_241, lookup=lookup)
    assert "can't be built for Linux with GPUs" in str(e.value)
    assert "tensorflow-cpu 2.4.1: no Linux GPU build of TensorFlow 2.4.1 for this Python" in str(e.value)
    assert "without --gpus" in e.value.fix


def test_a_package_that_requires_tensorflow_cpu_is_refused(cap24):
    resolution = RESOLVED_241 + "tensorflow-cpu==2.4.1\n    # via tf-plugin\n"
    with pytest.raises(PlatformError, match="tf-plugin requires tensorflow-cpu"):
        translate_into_cache(cap24, resolution)


def test_the_images_index_keeps_a_gpu_image_of_a_linux_capture(cap215):
    t, _ = translate_into_cache(cap215, RESOLVED_2151)
    info = images.ImageInfo("envrepro-env:k", "k" * 32, "sha256:1", "built", "python:3.11-slim", "",
                            translation=t.to_dict())
    usage.record_use(info, cap215)
    entry = usage.read_index()["images"]["k" * 32]["captures"][str(cap215.root)]
    assert entry["translated"] is True
    assert usage.key_with_recorded_base(cap215, entry) is None     # the fingerprint decides
