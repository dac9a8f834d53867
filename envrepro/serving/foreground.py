"""``envrepro serve MODEL``: the serving image (built and self-checked if needed), run in the
foreground with its port published, its log on stderr, stopped (drained) on a signal.

The model's container has no network (``--network none``, as ``envrepro load`` and the self-check):
the capture's code can be reached on the published port and can reach nothing itself. The port is
carried by the engine's relay (``envrepro.engine.services``), which runs envrepro's code only.

Stopping (docs/serving.md, "Stopping, and containers left behind"): SIGINT, SIGTERM and SIGHUP
stop it in every phase (``serving.stopping``): the first drains the server (up to
``ENVREPRO_SERVE_GRACE`` seconds) and removes its container and relay, exit 0; a second kills
them at once. Every container it starts is labelled with this process's identity
(``serving.orphans``): on its way out it removes whatever of its own is still there, its watcher
(``serving.watcher``) does if it is killed, and each ``envrepro serve`` first removes the
containers of serve processes that are gone."""
from __future__ import annotations

import sys
from typing import Any, Callable, Optional

from envrepro import errors
from envrepro.engine.base import ContainerEngine
from envrepro.runtime.serve import config as serveconfig
from envrepro.serving import image as serving
from envrepro.serving import orphans, stopping
from envrepro.serving.proof import service_args
from envrepro.sidecar import manifest

Say = Callable[[str], None]
Watch = Callable[[orphans.Owner, int], Any]     # watcher.spawn: an object with pid and close(), or None


def urls(host: str, port: int, name: str) -> str:
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    return (f"Serving {name} at {base}\n"
            f"  TensorFlow Serving REST  {base}/v1/models/{name}  (POST {base}/v1/models/{name}:predict)\n"
            f"  Open Inference (V2)      {base}/v2/models/{name}  (POST {base}/v2/models/{name}/infer)\n"
            f"  health                   {base}{serveconfig.LIVE_PATH}, {base}{serveconfig.READY_PATH}\n"
            f"  metrics                  {base}{serveconfig.METRICS_PATH}\n"
            "Ctrl-C stops it (in-flight requests are answered first; a second Ctrl-C stops at once).")


def grace_seconds() -> int:
    """``ENVREPRO_SERVE_GRACE`` as set here (the server in the container is given the same)."""
    text = str(serveconfig.setting("ENVREPRO_SERVE_GRACE")).strip()
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 3600:
        raise errors.EnvreproError(f"ENVREPRO_SERVE_GRACE={text!r} is not a number of seconds", None,
                                   "set it between 0 and 3600 (default 20)")
    return value


def serve(capture: manifest.Capture, engine: ContainerEngine, port: int = serveconfig.PORT,
          host: str = "127.0.0.1", name: Optional[str] = None, base_image: Optional[str] = None,
          gpus: bool = False, unsafe: bool = False, memory: str = "4g", say: Optional[Say] = None,
          watch: Optional[Watch] = None, signals: Optional[stopping.Signals] = None) -> int:
    """Serve until a signal (exit 0 after the stop) or until the server exits by itself (its
    exit code). ``watch``: starts the watcher of this process (``watcher.spawn``; None: none).
    ``signals``: the handlers to use (tests), else ``stopping.Signals`` for the drain's grace."""
    say = say or (lambda line: None)
    if not 0 < port < 65536:
        raise errors.EnvreproError(f"port {port} is out of range", None, "pass --port between 1 and 65535")
    grace = grace_seconds()
    owner = orphans.Owner.current()
    own = orphans.ownership(engine)
    run = _Run(engine, owner, grace, say)
    with (signals or stopping.Signals(grace)) as sig:
        try:
            try:
                try:
                    sig.arm()
                    if own is not None:
                        orphans.sweep(engine, owner.where, say=say)
                        run.watcher = watch(owner, grace) if watch else None
                        own.label_services(owner.labels("self-check", run.watcher_pid))
                    return run.serve(capture, port, host, name, base_image, gpus, unsafe, memory)
                except stopping.Stopped as first:
                    return run.stopped(first)
            except stopping.Stopped:       # a second signal while the first one's stop ran
                run.say_hurry()
                return 0
            finally:
                with sig.deferred():
                    run.clean_up(hurry=sig.hurry)
        except stopping.Stopped:           # the second one came just before the clean-up: again
            with sig.deferred():           # (only two signals ever raise)
                run.say_hurry()
                run.clean_up(hurry=True)
            return 0


class _Run:
    """One ``envrepro serve``: the container it serves from (``cid``) and what it started."""

    def __init__(self, engine: ContainerEngine, owner: orphans.Owner, grace: int, say: Say):
        self.engine, self.owner, self.grace, self.say = engine, owner, grace, say
        self.cid: Optional[str] = None
        self.watcher: Any = None
        self.hurried = False

    @property
    def watcher_pid(self) -> Optional[int]:
        return getattr(self.watcher, "pid", None)

    def serve(self, capture: manifest.Capture, port: int, host: str, name: Optional[str],
              base_image: Optional[str], gpus: bool, unsafe: bool, memory: str) -> int:
        built = serving.build(capture, self.engine, name=name, base_image=base_image, gpus=gpus, unsafe=unsafe,
                              memory=memory, say=self.say)
        if built.tag is None:
            p = built.proof
            raise errors.EnvreproError(
                f"the serving image did not pass its self-check ({p.verdict if p else 'not run'}: "
                f"{(p.error or '') if p else ''}); not serving it", str(capture.model_path),
                "run `envrepro build MODEL --serve --json` for the details, or `envrepro load MODEL`")
        own = orphans.ownership(self.engine)
        if own is not None:
            own.label_services(self.owner.labels("serve", self.watcher_pid))
        self.cid = self.engine.start(built.tag, ports={serveconfig.PORT: (host, port)}, gpus=gpus,
                                     environment={"ENVREPRO_SERVE_GRACE": str(self.grace)}, **service_args(memory))
        self.say("The model runs with no network (only loopback in its container); its port is relayed to it")
        sys.stdout.write(urls(host, port, built.name) + "\n")
        sys.stdout.flush()
        self.engine.follow_logs(self.cid, self.say)
        # the server exited by itself (it failed to load, a worker died): its code, then removed
        code = self.engine.stop(self.cid, timeout=self.grace + orphans.STOP_MARGIN)
        self.cid = None
        return 0 if code in (0, None) else int(code)

    def stopped(self, first: stopping.Stopped) -> int:
        """The first signal: drain the server (a second signal raises out of here)."""
        if first.hurry:
            self.say_hurry()
            return 0
        if self.cid is None:
            self.say(f"Stopping ({first.name}): the server was not started yet")
            return 0
        self.say(f"Stopping ({first.name}): draining in-flight requests (up to {self.grace} s; "
                 "a second Ctrl-C stops at once)")
        cid, self.cid = self.cid, None
        try:
            code = self.engine.stop(cid, timeout=self.grace + orphans.STOP_MARGIN)
        except errors.EnvreproError as e:
            self.say(f"Stopping: {e}")
            self.cid = cid                # clean_up tries again, at once
            return 0
        if code not in (0, None):
            self.say(f"The server exited with code {code} while draining")
        return 0 if code in (0, None) else int(code)

    def say_hurry(self) -> None:
        if not self.hurried:
            self.hurried = True
            self.say("Stopping at once: the requests in flight are cut short")

    def clean_up(self, hurry: bool) -> None:
        """Everything of this process's still there goes (killed: the drain is over or was cut
        short), then the watcher is let go. Signals are deferred here (the deadline still holds)."""
        try:
            removed, failed = orphans.remove_owned(self.engine, self.owner, timeout=0)
            if self.cid is not None and self.cid not in removed and orphans.ownership(self.engine) is None:
                self.engine.stop(self.cid, timeout=0)
        except errors.EnvreproError as e:
            removed, failed = [], {"?": str(e)}
        if removed and hurry:
            self.say(f"Removed {len(removed)} container(s) of this envrepro serve")
        for cid, why in failed.items():
            self.say(f"Could not remove container {cid[:12]} ({why}); "
                     + ("its watcher removes it" if self.watcher is not None else
                        "the next `envrepro serve` or `envrepro images prune` removes it"))
        if self.watcher is not None:
            self.watcher.close()
