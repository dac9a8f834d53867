"""``envrepro serve MODEL``: the serving image (built and self-checked if needed), run in the
foreground with its port published, its log on stderr, stopped (drained) on Ctrl-C.

The model's container has no network (``--network none``, as ``envrepro load`` and the self-check):
the capture's code can be reached on the published port and can reach nothing itself. The port is
carried by the engine's relay (``envrepro.engine.services``), which runs envrepro's code only."""
from __future__ import annotations

import sys
from typing import Callable, Optional

from envrepro import errors
from envrepro.engine.base import ContainerEngine
from envrepro.runtime.serve import config as serveconfig
from envrepro.serving import image as serving
from envrepro.serving.proof import service_args
from envrepro.sidecar import manifest

Say = Callable[[str], None]


def urls(host: str, port: int, name: str) -> str:
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    return (f"Serving {name} at {base}\n"
            f"  TensorFlow Serving REST  {base}/v1/models/{name}  (POST {base}/v1/models/{name}:predict)\n"
            f"  Open Inference (V2)      {base}/v2/models/{name}  (POST {base}/v2/models/{name}/infer)\n"
            f"  health                   {base}{serveconfig.LIVE_PATH}, {base}{serveconfig.READY_PATH}\n"
            f"  metrics                  {base}{serveconfig.METRICS_PATH}\n"
            "Ctrl-C stops it (in-flight requests are answered first).")


def serve(capture: manifest.Capture, engine: ContainerEngine, port: int = serveconfig.PORT,
          host: str = "127.0.0.1", name: Optional[str] = None, base_image: Optional[str] = None,
          gpus: bool = False, unsafe: bool = False, memory: str = "4g", say: Optional[Say] = None) -> int:
    say = say or (lambda line: None)
    if not 0 < port < 65536:
        raise errors.EnvreproError(f"port {port} is out of range", None, "pass --port between 1 and 65535")
    built = serving.build(capture, engine, name=name, base_image=base_image, gpus=gpus, unsafe=unsafe,
                          memory=memory, say=say)
    if built.tag is None:
        p = built.proof
        raise errors.EnvreproError(
            f"the serving image did not pass its self-check ({p.verdict if p else 'not run'}: "
            f"{(p.error or '') if p else ''}); not serving it", str(capture.model_path),
            "run `envrepro build MODEL --serve --json` for the details, or `envrepro load MODEL`")
    cid = engine.start(built.tag, ports={serveconfig.PORT: (host, port)}, gpus=gpus, **service_args(memory))
    say("The model runs with no network (only loopback in its container); its port is relayed to it")
    sys.stdout.write(urls(host, port, built.name) + "\n")
    sys.stdout.flush()
    grace = int(serveconfig.setting("ENVREPRO_SERVE_GRACE"))
    try:
        engine.follow_logs(cid, lambda line: say(line))
    except KeyboardInterrupt:
        say(f"Stopping: draining in-flight requests (up to {grace} s)")
    code = engine.stop(cid, timeout=grace + 10)
    return 0 if code in (0, None) else int(code)
