"""render.emit: every command result prints as text and as JSON, with the command's exit code."""
import io
import json
import re

from envrepro import commands, render
from envrepro.image import inventory as imageindex
from envrepro.capturing.capture import CaptureResult
from envrepro.diagnose import doctor
from envrepro.sandbox import container as sandbox
from envrepro.sidecar.manifest import Capture


def emit(result, as_json=False):
    out = io.StringIO()
    code = render.emit(result, as_json=as_json, out=out)
    return code, out.getvalue()


MANIFEST = {"schema": "envrepro/v1", "created": "2026-01-01T00:00:00Z",
            "model": {"name": "m.h5", "format": "h5", "class_name": "Sequential", "sha256": "ab" * 32},
            "python": {"version": "3.8.18", "implementation": "CPython", "sys_platform": "linux"},
            "frameworks": {"tensorflow": "2.4.1", "keras": "2.4.0", "keras_flavor": "tf.keras"},
            "lock": {"file": "requirements.lock", "distributions": 40, "hashes": True},
            "load": {"compile": True, "custom_objects": {"Scale": "layers:Scale"}},
            "snapshot": {"files": [{"path": "snapshot/layers.py", "origin": "/src/layers.py"}]}}


def test_capture_result_text_and_json(tmp_path):
    res = CaptureResult(sidecar=tmp_path / "m.h5.envrepro", manifest=MANIFEST, seconds={"total": 0.5})
    code, text = emit(res)
    assert code == 0
    assert text.startswith(f"captured m.h5 -> {tmp_path / 'm.h5.envrepro'}\n")
    assert "40 pins (hashed); 1 snapshot files; 1 custom objects; 0.50 s" in text
    code, out = emit(res, as_json=True)
    assert code == 0 and json.loads(out) == MANIFEST


def test_inspect_of_a_capture(tmp_path):
    cap = Capture(root=tmp_path / "m.h5.envrepro", data=MANIFEST)
    code, text = emit(commands.Inspection("m.h5", capture=cap))
    assert code == 0 and text.startswith(f"envrepro capture of {tmp_path / 'm.h5'}")
    assert "Scale = layers:Scale" in text and "snapshot/layers.py" in text
    code, out = emit(commands.Inspection("m.h5", capture=cap), as_json=True)
    d = json.loads(out)
    assert d["capture_path"] == str(cap.root) and d["model_path"] == str(tmp_path / "m.h5")
    assert d["model"] == MANIFEST["model"]
    assert "recipe" not in text  # a capture from before recipes


def test_inspect_shows_the_load_recipe(tmp_path):
    data = dict(MANIFEST, load={"compile": True, "custom_objects": {}, "recipe": "revive",
                                "recipes_failed": [{"recipe": "custom_objects",
                                                    "error": "KeyError: 'layers'"}]})
    _, text = emit(commands.Inspection("m.h5", capture=Capture(root=tmp_path / "m.h5.envrepro", data=data)))
    assert "recipe" in text and "revive" in text
    assert "custom_objects failed  KeyError: 'layers'" in text


def test_inspect_shows_what_load_model_restores_of_the_optimizer(tmp_path):
    opt = {"class": "LossScaleOptimizerV3", "iterations": 2, "state_saved": True,
           "restored": {"class": "LossScaleOptimizerV3", "iterations": 0, "variables": 9}}
    _, text = emit(commands.Inspection("m.h5", capture=Capture(root=tmp_path / "m.h5.envrepro",
                                                               data=dict(MANIFEST, optimizer=opt))))
    assert "load_model restores  LossScaleOptimizerV3, iterations 0, 9 variables" in text
    skipped = {"class": "Adam", "restored_skipped": "the saved model takes 1 bytes"}
    _, text = emit(commands.Inspection("m.h5", capture=Capture(root=tmp_path / "m.h5.envrepro",
                                                               data=dict(MANIFEST, optimizer=skipped))))
    assert "load_model restores  not read: the saved model takes 1 bytes" in text


def test_inspect_shows_where_a_text_reference_was_drawn_from(tmp_path):
    ref = {"inputs": ["input_0.npy"], "outputs": ["output_0.npy"], "tolerance": {"atol": 1e-5, "rtol": 1e-5},
           "vocabularies": {"text": "text_vectorization (TextVectorization, 12 tokens)"}, "free_dimension": 8}
    _, text = emit(commands.Inspection("m", capture=Capture(root=tmp_path / "m.envrepro",
                                                            data=dict(MANIFEST, reference=ref))))
    assert re.search(r"text of text +drawn from text_vectorization \(TextVectorization, 12 tokens\)", text)
    assert re.search(r"free dimensions +given length 8", text)


def test_dockerfile_exited_and_images():
    assert emit(commands.DockerfileText("FROM python:3.8-slim\n")) == (0, "FROM python:3.8-slim\n")
    assert emit(commands.Exited(7)) == (7, "")
    assert json.loads(emit(commands.Exited(7), as_json=True)[1]) == {"exit_code": 7}
    row = imageindex.ImageRow(tag="envrepro-env:k", id="abc", key="k", size=2_000_000, created="2026",
                              captures=["/c/m.h5.envrepro"])
    code, text = emit(commands.ImageList([row]))
    assert code == 0 and "envrepro-env:k  abc  2.0 MB" in text and "/c/m.h5.envrepro" in text
    assert json.loads(emit(commands.ImageList([row]), as_json=True)[1])[0]["in_use"] is True
    assert emit(commands.ImageList([])) == (0, "no envrepro images\n")


def test_prune_exit_code_says_whether_something_could_not_be_removed():
    row = imageindex.ImageRow(tag="envrepro-env:k", id="abc", key="k", size=10, created="")
    ok = imageindex.PruneResult(removed=[row])
    assert emit(ok)[0] == 0 and "removed 1 image(s)" in emit(ok)[1]
    failed = imageindex.PruneResult(failed={"envrepro-env:k": "in use by a container"})
    code, text = emit(failed)
    assert code == 1 and "could not remove envrepro-env:k: in use by a container" in text


def test_doctor_report_exit_code_is_its_verdict():
    rep = doctor.DoctorReport(model="m.h5", format="h5", captured=False, inferred=True, saved={}, target={},
                              findings=[doctor.Finding(doctor.ERROR, "Keras 3 refuses it", "why", "fix")])
    code, text = emit(rep)
    assert code == 2 and "Keras 3 refuses it" in text
    code, out = emit(rep, as_json=True)
    assert code == 2 and json.loads(out)["verdict"] == "will fail"


def test_load_report_text_json_and_exit_codes():
    ok = sandbox.LoadReport(model="m.h5", capture="m.h5.envrepro", image={}, loader={"ok": True})
    assert emit(ok)[0] == 0
    assert json.loads(emit(ok, as_json=True)[1])["exit_code"] == 0
    mismatch = sandbox.LoadReport(model="m.h5", capture="c", image={},
                                  loader={"ok": False, "mismatches": ["reference: max |diff| 0.5"]})
    code, text = emit(mismatch)
    assert code == 6 and text.endswith("\n")
    failed = sandbox.LoadReport(model="m.h5", capture="c", image={},
                                loader={"ok": False, "error": {"type": "ValueError", "message": "bad"}})
    assert emit(failed)[0] == 5
