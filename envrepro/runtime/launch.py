"""How the host starts a runtime entry point (probe, loader) under a foreign interpreter.

The one place that knows where the runtime lives, on the host and inside a container, and how an
entry point is invoked. Standard library only and Python 3.6 syntax, like the rest of runtime/.
"""
import os

HOST_DIR = os.path.dirname(os.path.abspath(__file__))
CONTAINER_DIR = "/envrepro/runtime"   # where the sandbox mounts HOST_DIR, read-only


def host_argv(python, entry, args=()):
    """argv that runs ``entry`` (e.g. "probe") under ``python`` on this machine."""
    return [python, os.path.join(HOST_DIR, entry + ".py")] + [str(a) for a in args]


def container_argv(python, entry, args=()):
    """argv that runs ``entry`` under ``python`` inside a container with the runtime mounted."""
    return [python, CONTAINER_DIR + "/" + entry + ".py"] + [str(a) for a in args]
