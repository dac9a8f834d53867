"""envrepro.sidecar.manifest: reading a capture, validation and tamper detection."""
import pytest
import yaml

from envrepro.errors import InvalidCapture
from envrepro.sidecar import layout, manifest, writer


def make_capture(tmp_path, files=None):
    model = tmp_path / "m.h5"
    model.write_bytes(b"\x89HDF\r\n\x1a\n" + b"0" * 32)
    root = layout.sidecar_for(model)
    root.mkdir()
    for rel, text in (files or {"requirements.lock": "six==1.16.0\n", "snapshot/layers.py": "X = 1\n"}).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    writer.write_manifest(root, {"schema": layout.SCHEMA, "model": {"name": "m.h5"}})
    return model, root


def test_roundtrip_and_files_hashed(tmp_path):
    _, root = make_capture(tmp_path)
    cap = manifest.read(root)
    assert set(cap.data["files"]) == {"requirements.lock", "snapshot/layers.py"}
    assert cap.get("model.name") == "m.h5"
    assert cap.get("nope.deeper", 7) == 7


def test_edited_snapshot_is_refused_with_the_file_named(tmp_path):
    _, root = make_capture(tmp_path)
    (root / "snapshot" / "layers.py").write_text("X = 2\n")
    with pytest.raises(InvalidCapture) as e:
        manifest.read(root)
    assert "snapshot/layers.py" in str(e.value) and "edited after the capture" in str(e.value)


def test_missing_manifest_reads_as_incomplete(tmp_path):
    _, root = make_capture(tmp_path)
    (root / layout.MANIFEST).unlink()
    with pytest.raises(InvalidCapture, match="incomplete"):
        manifest.read(root)


def test_unknown_schema_and_garbage(tmp_path):
    _, root = make_capture(tmp_path)
    m = root / layout.MANIFEST
    data = yaml.safe_load(m.read_text())
    data["schema"] = "envrepro/v99"
    m.write_text(yaml.safe_dump(data))
    with pytest.raises(InvalidCapture, match="unknown capture schema 'envrepro/v99'"):
        manifest.read(root)
    m.write_text("{{{: not yaml")
    with pytest.raises(InvalidCapture, match="unreadable"):
        manifest.read(root)
    m.write_text("- a list\n")
    with pytest.raises(InvalidCapture, match="not a mapping"):
        manifest.read(root)


def test_added_file_is_refused(tmp_path):
    _, root = make_capture(tmp_path)
    (root / "snapshot" / "evil.py").write_text("import os\n")
    with pytest.raises(InvalidCapture, match="not listed"):
        manifest.read(root)


def test_no_capture(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(InvalidCapture, match="no capture"):
        manifest.read(layout.sidecar_for(tmp_path / "x.h5"))


def test_upgrade_path_is_applied(tmp_path, monkeypatch):
    _, root = make_capture(tmp_path)
    m = root / layout.MANIFEST
    data = yaml.safe_load(m.read_text())
    data["schema"] = "envrepro/v0"
    m.write_text(yaml.safe_dump(data))
    monkeypatch.setitem(manifest.UPGRADES, "envrepro/v0", lambda d: dict(d, schema=layout.SCHEMA, upgraded=True))
    assert manifest.read(root).data["upgraded"] is True


RESUME = {"loss": 0.25, "iterations_before": 8, "iterations": 9, "targets": ["reference/resume_target_0.npy"],
          "target_kind": "perturbed_prediction", "weights_file": "reference/resume_weights.npz",
          "weights_skipped": None,
          "weights": {"arrays": 2, "params": 10, "sum": 1.5, "abs_sum": 3.0, "sha256": "ab" * 32},
          "atol": 1e-05, "rtol": 1e-04, "seed": 1234, "seconds": 0.3}
REFERENCE = {"inputs": ["reference/input_0.npy"], "outputs": ["reference/output_0.npy"]}


def resume_capture(tmp_path, resume, reference=REFERENCE):
    """A capture whose manifest holds ``resume`` (its reference and resume files on disk)."""
    files = {"requirements.lock": "six==1.16.0\n"}
    tmp_path.mkdir(exist_ok=True)
    files.update((rel, "x") for rel in ("reference/input_0.npy", "reference/output_0.npy",
                                         "reference/resume_target_0.npy", "reference/resume_weights.npz"))
    _, root = make_capture(tmp_path, files)
    writer.write_manifest(root, {"schema": layout.SCHEMA, "model": {"name": "m.h5"}, "reference": reference,
                                 "resume_check": resume})
    return root


def test_resume_check_is_optional_and_read_when_valid(tmp_path):
    (tmp_path / "old").mkdir()
    _, root = make_capture(tmp_path / "old")
    assert manifest.read(root).get("resume_check") is None   # a capture from before the resume check
    assert manifest.read(resume_capture(tmp_path / "new", RESUME)).get("resume_check.loss") == 0.25
    skipped = {"skipped": "the model has no optimizer"}
    assert manifest.read(resume_capture(tmp_path / "skip", skipped)).get("resume_check") == skipped
    summary_only = dict(RESUME, weights_file=None, weights_skipped="above the limit")
    assert manifest.read(resume_capture(tmp_path / "sum", summary_only)).get("resume_check.weights_file") is None


@pytest.mark.parametrize("change, why", [
    ("not a mapping", "is not a mapping"),
    ({"skipped": 3}, "'skipped' is not text"),
    ({"loss": "0.25"}, "no finite 'loss'"),
    ({"loss": float("nan")}, "no finite 'loss'"),
    ({"iterations": -1}, "is not a count"),
    ({"seed": True}, "is not a count"),
    ({"atol": -1.0}, "non-negative"),
    ({"weights": {"arrays": 2}}, "is not a summary"),
    ({"targets": []}, "'targets' is not a list"),
    ({"targets": ["../../etc/passwd"]}, "not a file of the capture"),
    ({"targets": ["requirements.lock"]}, "not a file of the capture"),
    ({"weights_file": "/etc/passwd"}, "not a file of the capture"),
    ({"weights_file": "reference/other.npz"}, "not a file of the capture"),
    ({"weights_file": 5}, "'weights_file' is not a file name"),
])
def test_resume_check_values_are_untrusted(tmp_path, change, why):
    resume = change if isinstance(change, str) else dict(RESUME, **change)
    with pytest.raises(InvalidCapture, match="resume_check") as err:
        manifest.read(resume_capture(tmp_path, resume))
    assert why in str(err.value) and "--resume-check" in str(err.value)


def test_resume_check_needs_the_reference(tmp_path):
    with pytest.raises(InvalidCapture, match="needs the reference inputs"):
        manifest.read(resume_capture(tmp_path, RESUME, reference=None))


def test_resume_weights_file_may_not_lead_out_of_the_capture(tmp_path):
    """A listed file that is a link out of the capture (the writer refuses links; an edited
    manifest can still list one) is refused, even with its hash right."""
    root = resume_capture(tmp_path, RESUME)
    outside = tmp_path / "secret.npz"
    outside.write_text("x")
    weights = root / "reference" / "resume_weights.npz"
    weights.unlink()
    weights.symlink_to(outside)
    with pytest.raises(InvalidCapture, match="not a file of the capture"):
        manifest.read(root)
