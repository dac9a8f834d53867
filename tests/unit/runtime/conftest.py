"""The in-process model server the serve tests share (serve_fake.in_process), drained after
each test."""
import os
import sys

import pytest

from envrepro.runtime.serve import main as serve
from envrepro.runtime.serve import tensors as servetensors

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from serve_fake import in_process  # noqa: E402


@pytest.fixture
def server():
    """``server(settings=None, **fake)``: a ready server of the fake model (serve_fake.in_process)."""
    servers = []

    def make(settings=None, **fake):
        servers.append(in_process(serve, servetensors, settings, **fake))
        return servers[-1]

    yield make
    for s in servers:
        s.drain(2)
