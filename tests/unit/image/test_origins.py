"""Which images came from a bundle (envrepro.image.origins), and push refusing them
(envrepro.image.push) unless ``allow_bundle_image``: the fake engine, no Docker."""
import json

import pytest

from envrepro.image import origins, spec
from envrepro.image.push import BundleImageRefused, push as do_push, refuse_bundle_image

from fakes import FakeEngine, image, make_capture

REG = "127.0.0.1:5000/team"
BASE = "python:3.8-slim"


def test_record_and_read_back_under_the_cache(tmp_path):
    iid = "sha256:" + "a" * 64
    assert origins.bundle_origin(iid) is None and origins.bundle_origin(None) is None
    origins.record_bundle_image(iid, "/ship/m.tar", "b" * 64, "envrepro-env:0123", "0123" * 8)
    origins.record_bundle_image("sha256:" + "c" * 64, "/ship/other.tar", "d" * 64, "envrepro-env:4567", "4567" * 8)
    got = origins.bundle_origin(iid)
    assert got["bundle"] == "/ship/m.tar" and got["image_archive_sha256"] == "b" * 64 and got["loaded"]
    path = origins.origins_path()
    assert path.parent.name == "envrepro" and str(path).startswith(str(tmp_path / "cache"))
    assert sorted(json.loads(path.read_text())["images"]) == ["sha256:" + "a" * 64, "sha256:" + "c" * 64]


@pytest.mark.parametrize("content", ["not json", "[]", '{"images": 3}'])
def test_an_unreadable_record_marks_nothing(content):
    origins.origins_path().parent.mkdir(parents=True)
    origins.origins_path().write_text(content)
    assert origins.bundle_origin("sha256:" + "a" * 64) is None
    origins.record_bundle_image("sha256:" + "a" * 64, "/b.tar", "0" * 64, "t:1", "k")
    assert origins.bundle_origin("sha256:" + "a" * 64)["bundle"] == "/b.tar"


def test_push_refuses_a_bundle_image_with_one_line_and_pushes_it_when_allowed(tmp_path):
    cap = make_capture(tmp_path / "models")
    engine = FakeEngine([image(BASE, digest="python@sha256:" + "0" * 64)])
    first = do_push(cap, engine, REG)                  # built here: pushed
    (pushed,) = first.pushed
    origins.record_bundle_image(pushed.image_id, "/ship/m.tar", "0" * 64, pushed.local, first.key)
    with pytest.raises(BundleImageRefused) as e:
        do_push(cap, engine, REG)
    text = str(e.value)
    assert e.value.exit_code == 2 and "\n" not in text
    assert f"{pushed.local} was loaded from bundle /ship/m.tar" in text and "--allow-bundle-image" in text
    assert len(engine.pushes) == 1
    again = do_push(cap, engine, REG, allow_bundle_image=True)
    assert [p.ref for p in again.pushed] == [pushed.ref] and len(engine.pushes) == 2
    refuse_bundle_image("sha256:" + "9" * 64, "x:1")   # an image from nowhere in particular: fine
    assert spec.image_tag(first.key) == pushed.local
