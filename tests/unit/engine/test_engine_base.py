"""The ContainerEngine protocol (envrepro.engine.base) is what the rest of envrepro may call: the
real engine and the unit tests' fake must both implement every method, with the same signature,
so a test passing against the fake says something about DockerEngine."""
import inspect

import pytest

from envrepro.engine.base import ContainerEngine, Mount, as_mount, image_labels
from envrepro.engine.docker import DockerEngine

try:
    from .fakes import FakeEngine
except ImportError:
    from fakes import FakeEngine

PROTOCOL_METHODS = sorted(name for name, member in vars(ContainerEngine).items()
                          if callable(member) and not name.startswith("_"))


def _signature(method):
    """Parameters (name, kind, default) and the return annotation as text (the modules use
    ``from __future__ import annotations``, so annotations are strings everywhere)."""
    sig = inspect.signature(method)
    params = [(p.name, p.kind, p.default, str(p.annotation)) for p in sig.parameters.values()]
    return params, str(sig.return_annotation)


def test_the_protocol_declares_what_envrepro_calls():
    assert PROTOCOL_METHODS == ["build", "commit_run", "connect", "container_logs", "container_state",
                                "containers_using", "follow_logs", "host_port", "image_exists", "images",
                                "inspect_image", "load_images", "pull", "push", "remove_image", "run",
                                "save_image", "start", "stop", "tag"]


@pytest.mark.parametrize("engine", [DockerEngine, FakeEngine], ids=["DockerEngine", "FakeEngine"])
@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_engines_implement_every_method_with_its_signature(engine, name):
    assert callable(getattr(engine, name, None)), f"{engine.__name__} has no {name}()"
    want_params, want_return = _signature(getattr(ContainerEngine, name))
    got_params, got_return = _signature(getattr(engine, name))
    assert [p[:3] for p in got_params] == [p[:3] for p in want_params], f"{engine.__name__}.{name}"
    if name != "connect":   # returns its own class
        assert [p[3] for p in got_params] == [p[3] for p in want_params], f"{engine.__name__}.{name}"
        assert got_return == want_return, f"{engine.__name__}.{name}"


def test_mount_shapes_and_labels():
    assert as_mount(("/a", "/b")) == Mount("/a", "/b", True)
    assert as_mount({"source": "/a", "target": "/b", "read_only": False}) == Mount("/a", "/b", False)
    assert image_labels(None) == {} and image_labels({"Config": {"Labels": None}}) == {}
    assert image_labels({"Config": {"Labels": {"k": "v"}}}) == {"k": "v"}
