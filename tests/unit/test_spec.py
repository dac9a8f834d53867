"""Image keys, tags and labels (envrepro.build.spec): what identifies an environment image."""
import pytest

from envrepro.build import spec

try:
    from .fakes import LOCK
except ImportError:
    from fakes import LOCK


def test_image_key_is_stable():
    key = spec.image_key("python:3.8-slim", "3.8.18", LOCK, "1")
    assert key == spec.image_key("python:3.8-slim", "3.8.18", "# header\n" + LOCK.replace("    # via -r requirements.in\n", ""), "1")
    assert len(key) == 32 and int(key, 16) >= 0
    # A fixed value: if this changes, every user's images are rebuilt. Change it on purpose only.
    assert key == "6fd7534fafd7cbe8a88a9d448559e4b4"


@pytest.mark.parametrize("change", [
    dict(base_image="python:3.8-slim-bullseye"), dict(python_version="3.8.17"),
    dict(lock_text=LOCK.replace("1.16.0", "1.15.0")), dict(runtime_version="2"),
])
def test_image_key_changes_with_each_input(change):
    args = dict(base_image="python:3.8-slim", python_version="3.8.18", lock_text=LOCK, runtime_version="1")
    assert spec.image_key(**{**args, **change}) != spec.image_key(**args)


def test_image_tag():
    assert spec.image_tag("0123456789abcdef0123") == "envrepro-env:0123456789abcdef"
