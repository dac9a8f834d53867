"""Image keys, tags and labels (envrepro.image.spec): what identifies an environment image."""
from pathlib import Path

import pytest

from envrepro.image import spec

try:
    from .fakes import LOCK, make_capture
except ImportError:
    from fakes import LOCK, make_capture


def test_image_key_is_stable():
    key = spec.image_key("python:3.8-slim", "3.8.18", LOCK, "1")
    assert key == spec.image_key("python:3.8-slim", "3.8.18", "# header\n" + LOCK.replace("    # via -r requirements.in\n", ""), "1")
    assert len(key) == 32 and int(key, 16) >= 0
    # A fixed value: if this changes, every user's images are rebuilt. Change it on purpose only
    # (editing a template in images/ changes it too: the templates are part of the key).
    assert key == "9f50c1ca4f84509e62dbfe423f6021ad"


@pytest.mark.parametrize("change", [
    dict(base_image="python:3.8-slim-bullseye"), dict(python_version="3.8.17"),
    dict(lock_text=LOCK.replace("1.16.0", "1.15.0")), dict(runtime_version="2"),
    dict(wheels={"mylib-0.1-py3-none-any.whl": "a" * 64}),
])
def test_image_key_changes_with_each_input(change):
    args = dict(base_image="python:3.8-slim", python_version="3.8.18", lock_text=LOCK, runtime_version="1")
    assert spec.image_key(**{**args, **change}) != spec.image_key(**args)


def test_image_tag():
    assert spec.image_tag("0123456789abcdef0123") == "envrepro-env:0123456789abcdef"


def test_templates_digest_covers_every_template_in_images():
    """Editing any file the image is rendered from changes every key: the list is complete."""
    images = Path(__file__).resolve().parents[3] / "images"
    on_disk = sorted(p.relative_to(images).as_posix() for p in images.rglob("*")
                     if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts)
    # serve.Dockerfile makes the serving layers, not the environment: the serving key covers it
    assert sorted(spec.TEMPLATES) == [t for t in on_disk if t != "serve.Dockerfile"]


def test_templates_take_part_in_the_key(monkeypatch):
    before = spec.image_key("python:3.8-slim", "3.8.18", LOCK)
    spec.templates_digest.cache_clear()
    monkeypatch.setattr(spec, "template_text", lambda name: "edited " + name)
    try:
        assert spec.image_key("python:3.8-slim", "3.8.18", LOCK) != before
    finally:
        spec.templates_digest.cache_clear()


def _with_wheel(tmp_path, content: bytes):
    cap = make_capture(tmp_path)
    wheels = cap.root / "wheels"
    wheels.mkdir()
    (wheels / "mylib-0.1-py3-none-any.whl").write_bytes(content)
    return cap


def test_captures_whose_local_wheels_differ_get_different_images(tmp_path):
    """Two offline captures with the same lock text but different wheel contents must not share
    an image: the second would load the first one's code."""
    a = _with_wheel(tmp_path / "a", b"PK first build")
    b = _with_wheel(tmp_path / "b", b"PK second build")
    lock = a.lock_path.read_text()
    assert lock == b.lock_path.read_text()
    ka, kb = (spec.capture_key(c, "python:3.8-slim", lock) for c in (a, b))
    assert ka != kb
    assert spec.capture_key(a, "python:3.8-slim", lock) == ka  # stable
    plain = make_capture(tmp_path / "c")
    assert spec.capture_key(plain, "python:3.8-slim", lock) == spec.image_key("python:3.8-slim", "3.8.18", lock)
