"""The watcher of an ``envrepro serve``: a small process that outlives it by a moment and removes
the containers it leaves when it is killed (SIGKILL, the OOM killer, a crash): ``spawn``.

The lifeline is a pipe, not polling: ``envrepro serve`` holds its only write end; the watcher
blocks reading the other. However the serve process ends, the kernel closes its descriptors and
the watcher reads end-of-file at once; it then removes every container labelled with that
process's identity (``orphans.remove_owned``: SIGTERM, the drain's grace, then removed with its
relays). After an orderly stop there is nothing left and it just exits. It runs in a session of
its own (a Ctrl-C or hang-up meant for the terminal's jobs doesn't reach it; a kill of serve's
process group neither), with no terminal, and holds no pipe of the caller's (its output goes
nowhere: a caller reading serve's stderr to its end is not kept waiting).

If the watcher is killed too (the whole process tree, a reboot), the containers are orphans the
next ``envrepro serve`` or ``envrepro images prune`` removes (``orphans.sweep``).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import List, Optional

import envrepro
from envrepro.serving.orphans import STOP_MARGIN, Host, Owner, remove_owned



class Watcher:
    """A running watcher: ``pid``; ``close()`` lets it go (serve is done)."""

    def __init__(self, proc: "subprocess.Popen[bytes]", fd: int):
        self.proc, self._fd = proc, fd

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1


def spawn(owner: Owner, grace: int) -> Optional[Watcher]:
    """Start the watcher of ``owner`` (this process); None when it can't be started (the
    sweep is then the only clean-up of a killed serve)."""
    if not sys.executable or os.name == "nt":
        return None
    root = os.path.dirname(os.path.dirname(os.path.abspath(envrepro.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    r, w = os.pipe()              # not inherited by anything else this process starts (PEP 446)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "envrepro.serving.watcher", str(r), str(owner.pid), owner.started or "-", str(int(grace))],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(r,),
            start_new_session=True, cwd="/", env=env)
    except OSError:
        os.close(w)
        return None
    finally:
        os.close(r)
    return Watcher(proc, w)


def main(argv: List[str]) -> int:
    """``python -m envrepro.serving.watcher FD PID STARTED GRACE``."""
    fd, pid, started, grace = int(argv[0]), int(argv[1]), argv[2], int(argv[3])
    for name in ("SIGINT", "SIGHUP", "SIGPIPE"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    while True:
        try:
            if not os.read(fd, 64):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    owner = Owner(pid, "" if started == "-" else started, Host.current())
    from envrepro.engine.docker import DockerEngine
    from envrepro.errors import EnvreproError

    try:
        _, failed = remove_owned(DockerEngine().connect(), owner, timeout=grace + STOP_MARGIN)
    except EnvreproError:
        return 3
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
