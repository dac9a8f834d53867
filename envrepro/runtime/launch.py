"""How the host starts a runtime entry point (probe, loader, serve.main) under a foreign interpreter.

The one place that knows where the runtime lives, on the host and inside a container, and how an
entry point is invoked. Standard library only and Python 3.6 syntax, like the rest of runtime/.

An entry point is a module of the runtime package with a ``main()``, named by its dotted path in
the package (``probe``, ``serve.main``; ``sys.argv[0]`` is its file, ``serve/main.py``). It runs
as that module, imported under the package name ``PACKAGE`` (one no user module can have), not as
a script: the modules share code through relative imports, and a script's folder on sys.path
would let ``loader.py`` or ``probe.py`` shadow a user module of that name. The package is loaded from its folder by path, so neither that folder nor its parent (which
on the host holds the host's own ``envrepro``, maybe another version than the training
environment's) is put on sys.path. The interpreter runs with ``-B`` (no bytecode written next to
the runtime, which is read-only in a container) but not ``-I``: the training PYTHONPATH is part of
what a capture records.
"""
import os

PACKAGE = "envrepro_runtime"
HOST_DIR = os.path.dirname(os.path.abspath(__file__))
CONTAINER_DIR = "/envrepro/lib/" + PACKAGE   # where the sandbox mounts HOST_DIR, read-only

# Run by ``python -B -c``. ``-c`` puts the working directory first on sys.path, which running a
# script would not (the script's folder would be there instead, and the runtime dropped it), so
# it is removed: the user's code sees the sys.path it would see when run.
_BOOTSTRAP = """\
import sys, importlib.util
if sys.path[:1] == [""]:
    del sys.path[0]
spec = importlib.util.spec_from_file_location(%(package)r, %(init)r, submodule_search_locations=[%(root)r])
package = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = package
spec.loader.exec_module(package)
sys.argv[0] = %(script)r
from %(package)s.%(entry)s import main
del spec, package
sys.exit(main())
"""


def script_path(root, entry):
    """The file of ``entry`` under the runtime folder ``root`` (``root/serve/main.py`` for
    ``serve.main``): what the entry point sees as ``sys.argv[0]``."""
    return root + "/" + entry.replace(".", "/") + ".py"


def _argv(python, root, entry, args):
    code = _BOOTSTRAP % {"package": PACKAGE, "root": root, "init": root + "/__init__.py",
                         "script": script_path(root, entry), "entry": entry}
    return [python, "-B", "-c", code] + [str(a) for a in args]


def host_argv(python, entry, args=(), root=None):
    """argv that runs ``entry`` (e.g. "probe", "serve.main") under ``python`` on this machine, from the runtime
    folder ``root`` (default: this package's own; the host passes ``envrepro.shipped.runtime_dir()``,
    which is a real folder even when envrepro is imported from a zip)."""
    return _argv(python, root or HOST_DIR, entry, args)


def container_argv(python, entry, args=(), root=CONTAINER_DIR):
    """argv that runs ``entry`` under ``python`` inside a container with the runtime mounted (at
    ``root``: the sandbox mounts it at CONTAINER_DIR, a serving image copies it elsewhere)."""
    return _argv(python, root, entry, args)
