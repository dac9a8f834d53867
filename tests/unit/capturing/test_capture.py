"""envrepro.capturing.capture on bad input: ``envrepro capture`` (a separate process, through the
real proberunner, with fake probes standing in for the training interpreter) and the in-process
save path. Each failure is one line (one warning in-process), exit 2, and nothing written: no
sidecar, no temp folder or lock beside the model, an existing capture untouched."""
import json
import os
import sys
import warnings

import pytest

import envrepro
from envrepro.capturing import capture as capmod
from envrepro.capturing import hook
from envrepro.fsutil import sha256_tree
from envrepro.sidecar import layout, manifest, writer
from fake_probes import fake_probe
from support import envrepro_cli

HDF5 = b"\x89HDF\r\n\x1a\n" + b"0" * 32


def listing(folder):
    """Every entry below ``folder`` with its content hash: what a failed capture must not change."""
    return {p.relative_to(folder).as_posix(): sha256_tree(p) if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def models(tmp_path):
    """A folder holding a model (HDF5 by its magic) and the capture of an earlier save."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "m.h5").write_bytes(HDF5)

    def fill(root):
        (root / layout.LOCK_FILE).write_text("six==1.16.0\n")
        return {"model": {"name": "m.h5"}}

    writer.write_capture(folder / "m.h5", fill)
    return folder


def one_error_line(out):
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("envrepro: error: ")
    return lines[0]


PROBES = {
    "crash": ("raise ModuleNotFoundError(\"No module named 'foo'\")\n",
              "the capture probe failed under {py}: ModuleNotFoundError: No module named 'foo'"),
    "killed": ("os.kill(os.getpid(), signal.SIGKILL)\n",
               "the capture probe under {py} was killed by SIGKILL"),
    "hang": ("subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
             "time.sleep(60)\n",
             "the capture probe under {py} gave no answer after 2 s"),
    "garbage": ("open(os.path.join(out, 'facts.json'), 'w').write('<html>proxy error</html>')\n",
                "the capture probe under {py} exited 0 but its facts.json is not JSON"),
}


@pytest.mark.parametrize("case", sorted(PROBES))
def test_cli_failed_probe_is_one_line_exit_2_and_writes_nothing(tmp_path, models, case):
    body, cause = PROBES[case]
    python = fake_probe(tmp_path, body)
    before = listing(models)
    out = envrepro_cli("capture", models / "m.h5", "--python", python, "--timeout", "2",
                       "--no-hashes", timeout=120)
    line = one_error_line(out)
    assert line.startswith(f"envrepro: error: {models / 'm.h5'}: " + cause.format(py=python)), line
    assert "(" in line and line.endswith(")")   # what to do
    assert listing(models) == before


def test_cli_missing_module_in_the_real_probe(tmp_path, models):
    before = listing(models)
    out = envrepro_cli("capture", models / "m.h5", "--python", sys.executable, "--module",
                       "no_such_module", "--no-hashes", timeout=120)
    line = one_error_line(out)
    assert f"{models / 'm.h5'}: the capture probe failed under {sys.executable}: cannot import " \
           "module no_such_module: ModuleNotFoundError: No module named 'no_such_module' " \
           "(check --module and add its folder with --code-path; rerun with --debug" in line
    assert listing(models) == before


def test_cli_debug_shows_the_probe_s_full_output(tmp_path, models):
    python = fake_probe(tmp_path, "sys.stderr.write('loading...\\n')\nraise ValueError('bad')\n")
    out = envrepro_cli("--debug", "capture", models / "m.h5", "--python", python, "--no-hashes")
    assert out.returncode == 2
    assert "loading...\nTraceback (most recent call last)" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(
        f"envrepro: error: {models / 'm.h5'}: the capture probe failed under {python}: "
        "ValueError: bad")


def test_cli_bad_timeout_is_refused_before_anything_runs(tmp_path, models):
    before = listing(models)
    out = envrepro_cli("capture", models / "m.h5", "--python", sys.executable, "--timeout", "0")
    assert "--timeout: probe timeout 0.0 is not a positive number of seconds" in one_error_line(out)
    assert listing(models) == before


@pytest.mark.parametrize("name, content, what", [
    ("notes.txt", b"hello", "not a Keras model file (neither HDF5 nor .keras zip)"),
    ("empty.h5", b"", "file is empty"),
    ("model.h5", b"<html>404</html>", "named like an HDF5 model but is not an HDF5 file"),
    ("model.keras", b"{\"config\": 1}", "named like a .keras model but is not a zip archive"),
    ("emptydir", None, "folder is not a SavedModel (no saved_model.pb)"),
])
def test_cli_unknown_format_is_one_line_and_writes_nothing(tmp_path, name, content, what):
    folder = tmp_path / "models"
    folder.mkdir()
    path = folder / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    before = listing(folder)
    for python in ([], ["--python", sys.executable]):
        line = one_error_line(envrepro_cli("capture", path, *python, "--no-hashes"))
        assert line.startswith(f"envrepro: error: {path}: {what}") and "(pass " in line
        assert listing(folder) == before


class FakeModel:
    """Stands in for a Keras model: ``save`` writes ``content`` (the user's data)."""

    def __init__(self, content):
        self.content = content

    def save(self, path, **kwargs):
        with open(path, "wb") as fh:
            fh.write(self.content)


def saved_with_one_warning(save, path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save()
    assert [w.category for w in caught] == [RuntimeWarning], [str(w.message) for w in caught]
    msg = str(caught[0].message)
    assert msg.startswith("envrepro: the model was saved, but its environment was not captured: "
                          f"{path}: ") and "\n" not in msg
    return msg


def test_save_of_an_unknown_format_warns_once_and_keeps_the_file(tmp_path):
    path = tmp_path / "m.h5"
    msg = saved_with_one_warning(lambda: envrepro.save(FakeModel(b"not hdf5"), str(path)), path)
    assert "not an HDF5 file" in msg
    assert path.read_bytes() == b"not hdf5" and [p.name for p in tmp_path.iterdir()] == ["m.h5"]


def test_a_crashing_in_process_probe_warns_once_and_leaves_the_old_capture(models, monkeypatch):
    from envrepro.runtime import probe

    def crash(*args, **kwargs):
        raise MemoryError("no room for the reference prediction")

    monkeypatch.setattr(probe, "collect", crash)
    path = models / "m.h5"
    before, old_capture = listing(models), sha256_tree(layout.sidecar_for(path))
    msg = saved_with_one_warning(lambda: envrepro.save(FakeModel(HDF5 + b"v2"), str(path)), path)
    assert "probe failed: MemoryError: no room for the reference prediction" in msg
    after = listing(models)
    assert path.read_bytes() == HDF5 + b"v2"
    assert after.pop("m.h5") != before.pop("m.h5")          # the new save is there, intact
    assert after == before and sha256_tree(layout.sidecar_for(path)) == old_capture


def test_the_save_hook_warns_once_and_returns_the_save(tmp_path, monkeypatch):
    monkeypatch.setattr(capmod, "run_probe_inprocess",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("probe crashed")))
    saver = hook._wrap(lambda self, filepath: self.save(filepath) or "saved")
    path = tmp_path / "m.h5"
    model = FakeModel(HDF5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert saver(model, str(path)) == "saved"
    assert len(caught) == 1 and "probe crashed" in str(caught[0].message)
    assert path.read_bytes() == HDF5 and [p.name for p in tmp_path.iterdir()] == ["m.h5"]


def test_cli_capture_lists_the_files_its_snapshot_left_out(tmp_path, models):
    """Through the CLI, with a probe that names a package holding secrets and a FIFO: the capture
    finishes, says what it left out, keeps that in the manifest, and its hashes verify."""
    pkg = tmp_path / "src" / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "layers.py").write_text("class L: pass\n")
    (pkg / "vocab.txt").write_text("a\nb\n")
    (pkg / ".env").write_text("TOKEN=SENTINEL\n")
    (pkg / "id_rsa").write_text("SENTINEL\n")
    os.mkfifo(pkg / "pipe")
    facts = {"probe_version": 1,
             "python": {"version": "3.11.4", "implementation": "CPython", "sys_platform": "linux",
                        "machine": "x86_64"},
             "frameworks": {}, "model": {"class_name": "Sequential"}, "distributions": [],
             "modules": [{"module": "mypkg.layers", "file": str(pkg / "layers.py"), "distribution": None,
                          "top": "mypkg", "root": str(pkg), "source_root": str(pkg.parent)}],
             "custom_objects": [{"name": "L", "module": "mypkg.layers", "attr": "L"}]}
    python = fake_probe(tmp_path, f"open(os.path.join(out, 'facts.json'), 'w').write({json.dumps(facts)!r})\n")
    out = envrepro_cli("capture", models / "m.h5", "--python", python, "--timeout", "60", "--no-hashes",
                       timeout=120)
    assert out.returncode == 0, out.stderr
    line = ("snapshot: skipped 3 files: mypkg/.env (looks like a secret), mypkg/id_rsa (looks like a "
            "secret), mypkg/pipe (FIFO, not a regular file); move or rename any the model needs")
    assert f"warning: {line}" in out.stderr.splitlines()
    cap = manifest.read(models / "m.h5", verify=True)     # every snapshot hash checks out
    assert line in cap.data["warnings"]
    assert sorted(f["path"] for f in cap.data["snapshot"]["files"]) == [
        "snapshot/mypkg/__init__.py", "snapshot/mypkg/layers.py", "snapshot/mypkg/vocab.txt"]
    assert (layout.sidecar_for(models / "m.h5") / "snapshot/mypkg/vocab.txt").read_text() == "a\nb\n"
    assert not any("SENTINEL" in p.read_text(errors="replace")
                   for p in layout.sidecar_for(models / "m.h5").rglob("*") if p.is_file())


def test_cli_sample_that_does_not_fit_is_its_own_line_exit_2_and_writes_nothing(tmp_path, models):
    """The probe refused --sample (runtime/samples.py, error.json kind "sample"): the line is the
    sample's problem, not "the capture probe failed"."""
    error = {"error": "sample /s.json, input 'text': the model expects strings (dtype string), got "
                      "numbers (float64)", "fix": "pass one array per model input", "kind": "sample"}
    python = fake_probe(tmp_path, f"open(os.path.join(out, 'error.json'), 'w').write({json.dumps(error)!r})\n"
                                  "sys.exit(2)\n")
    before = listing(models)
    out = envrepro_cli("capture", models / "m.h5", "--python", python, "--sample", tmp_path / "s.json",
                       "--timeout", "60", "--no-hashes", timeout=120)
    assert one_error_line(out) == (f"envrepro: error: {models / 'm.h5'}: {error['error']} "
                                   "(pass one array per model input)")
    assert listing(models) == before


def test_cli_capture_without_a_reference_says_why_in_one_warning(tmp_path, models):
    reason = ("input 'blob' (float32) has an unknown rank; pass one with --sample FILE (.npy, .npz "
              "or .json) or envrepro.save(..., sample_input=...)")
    facts = {"probe_version": 1, "python": {"version": "3.11.4"}, "frameworks": {},
             "model": {"class_name": "Functional"}, "distributions": [], "modules": [],
             "custom_objects": [], "reference": None, "reference_skipped": reason}
    python = fake_probe(tmp_path, f"open(os.path.join(out, 'facts.json'), 'w').write({json.dumps(facts)!r})\n")
    out = envrepro_cli("capture", models / "m.h5", "--python", python, "--timeout", "60", "--no-hashes",
                       timeout=120)
    assert out.returncode == 0, out.stderr
    line = f"no reference prediction, so `envrepro load` can't verify the model: {reason}"
    assert [w for w in out.stderr.splitlines() if "reference" in w] == [f"warning: {line}"]
    cap = manifest.read(models / "m.h5", verify=True)
    assert cap.data["reference"] is None and cap.data["reference_skipped"] == reason
    assert line in cap.data["warnings"]


def test_in_process_sample_file_that_cannot_be_read_is_one_line(tmp_path, models):
    bad = tmp_path / "s.json"
    bad.write_text("{not json")
    before = listing(models)
    with pytest.raises(envrepro.errors.CaptureError) as exc:
        capmod.capture(models / "m.h5", sample_file=str(bad), hashes=False)
    assert str(exc.value).startswith(f"{models / 'm.h5'}: cannot read sample {bad}: JSONDecodeError: ")
    assert listing(models) == before
