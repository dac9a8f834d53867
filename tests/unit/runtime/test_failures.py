"""runtime/failures.py: the one failure table, read by the loader (in containers) and the doctor."""
from pathlib import Path

from envrepro.diagnose import catalogue
from envrepro.runtime import failures, loader


def test_ids_are_unique_and_every_class_is_complete():
    ids = [f.id for f in failures.FAILURES]
    assert len(ids) == len(set(ids)) and set(failures.EXTRA_IDS) <= set(ids)
    for f in failures.FAILURES:
        assert f.title and f.message and f.fix and f.versions, f.id
        assert f.id in failures.EXTRA_IDS or (f.sources and f.needles), f.id


def test_the_longest_needle_wins():
    assert failures.classify("ValueError: Unknown layer: Functional")["id"] == "8c"
    assert failures.classify("ValueError: Unknown layer: 'Addons>InstanceNormalization'")["id"] == "6c"
    assert failures.classify("ValueError: Unknown optimizer: Custom>Adam")["id"] == "4a"
    assert failures.classify("ValueError: Unknown optimizer: Fancy")["id"] == "2"
    assert failures.classify("all fine") is None


def test_loader_and_doctor_classify_alike():
    hit = loader.error_info(TypeError("Could not locate class 'MyLayer'"), "load")["failure_class"]
    cls = catalogue.get(catalogue.classify_exception("TypeError", "Could not locate class 'MyLayer'"))
    assert hit == {"id": cls.id, "name": cls.title, "fix": cls.fix}


def test_every_numbered_class_has_a_detector():
    numbered = [f.id for f in failures.FAILURES if f.id not in failures.EXTRA_IDS]
    assert list(catalogue.DETECTORS) == numbered



def test_docs_describe_every_class():
    """docs/failures.md is the human side of the table: one section per class id."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "failures.md").read_text(encoding="utf-8")
    headings = {line[3:].split(" ", 1)[0] for line in doc.splitlines() if line.startswith("## ")}
    assert {f.id for f in failures.FAILURES} <= headings
