"""A bundle's wheelhouse (``envrepro bundle --wheels``), out and back in.

Out: the capture's environment is worked out (``image.environment``), the files its lock installs
are put in the host wheelhouse for the base's platform (``image.wheelhouse_builder``), then copied
into the bundle with their index (``packages.wheelhouse.portable.export``). In, on the other
machine: every file is checked against the capture's lock before it enters the local wheelhouse
(``packages.wheelhouse.portable.import_dir``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

from envrepro.engine.base import ContainerEngine
from envrepro.packages.wheelhouse import portable
from envrepro.packages.wheelhouse.portable import import_dir
from envrepro.packages.wheelhouse.store import WheelStore
from envrepro.sidecar.manifest import Capture

__all__ = ["export_for_capture", "import_dir"]


def export_for_capture(capture: Capture, dest_dir: Path, say: Callable[[str], None],
                       engine_factory: Callable[[], ContainerEngine],
                       store: Optional[WheelStore] = None) -> List[Path]:
    """Write the files the capture's image build installs, and ``index.json``, into ``dest_dir``
    (``engine_factory``: the caller's way to reach the engine, which probes the base image)."""
    from envrepro.image.bases import ensure_base
    from envrepro.image.environment import environment_for
    from envrepro.image.wheelhouse_builder import wheelhouse_for
    from envrepro.packages.pipconfig import host_pip_settings

    pip = host_pip_settings()
    env = environment_for(capture, pip=pip, say=say)
    engine = engine_factory()
    base_info = ensure_base(engine, env.base, say)
    wh = wheelhouse_for(env.lock, engine, env.base, base_info, pip, say, store or WheelStore(),
                        portable.scope_of(capture))
    return portable.export(wh, env.lock, Path(dest_dir))
