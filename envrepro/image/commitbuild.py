"""The wheelhouse builder: an environment image installed from the host's wheelhouse in
containers with no network, each committed as one layer. The default way ``ensure_image`` builds.

Why containers and commits rather than a Dockerfile build: the Docker SDK's classic builder has no
build-time mounts, so wheels sent in the build context would land in a layer (or need a builder
stage, whose copy the engine keeps: each environment then occupied about twice its image size), and
serving them over loopback HTTP would need ``--network host`` for the build and a port in the RUN
line (which defeats the layer cache). A container can bind-mount the wheelhouse read-only and run
with ``--network none``, so the install provably reaches no index, and what it commits is exactly
the files the install wrote (mounts and the /tmp tmpfs are not committed).

Two layers on the base, as the Dockerfile builder makes them:

- ``envrepro-heavy:<key>``: the envrepro user, the venv, the captured setuptools/wheel and
  TensorFlow's dependency closure, keyed by what goes into it, so every environment with the same
  closure on the same base reuses it;
- the environment image: the rest of the lock on top, committed with the image config (user,
  working directory, environment, labels) the runtime relies on.

The install containers are hardened like the load sandbox as far as installing allows: root (the
venv and the envrepro user belong to root's files), but every capability dropped except, for the
heavy step, CHOWN, DAC_OVERRIDE and FOWNER (``useradd`` chowns the new home and copies
/etc/skel into it: without them the committed files differ), none for the rest; no-new-privileges;
memory, pids and wall-clock limits (``INSTALL_LIMITS``, ``ENVREPRO_BUILD_MEMORY``/``_PIDS``/
``_TIMEOUT``); a 1 GB noexec /tmp. Each container's output goes line by line into the build log
(at most ``LOG_LINES`` lines); the engine keeps only its last lines in memory.

One step runs pip more than once (tools.lock then heavy.lock; rest.lock then unverified.lock), and
each run starts the venv's interpreter, which runs the ``.pth`` files the earlier runs installed.
Splitting the runs into containers would not stop that (the venv is committed between them, so
the rest step already runs the heavy step's ``.pth`` files), nor would ``python -I`` (isolated
mode skips the user site and PYTHON* variables, not site-packages' ``.pth`` files; only ``-S``
does). pip is started by the templates (``images/pip.sh``), which are hashed into every image key,
so that is left as it is: such code runs as root in a container with no network, no capability
but the three above, the limits and a read-only wheelhouse, and only ever belongs to a pin of
the same lock (the image's key), whose code the image runs anyway.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from envrepro import progress
from envrepro.image.dockerfile import label_lines
from envrepro.image.spec import HEAVY_LABEL, LABEL, RUNTIME_VERSION, templates_digest
from envrepro.image.templates import USER_UID, VENV, WHEELS_DIR, fill, template_text
from envrepro.engine.base import ContainerEngine, Limits, Mount, image_labels
from envrepro.errors import BuildFailed
from envrepro.packages.wheelhouse.prepare import Wheelhouse
from envrepro.packages.wheelhouse.store import WheelStore, link_or_copy

HEAVY_REPO = "envrepro-heavy"
BUILDER_LABEL = LABEL + "builder"
# pip installs wheels without running anything from /tmp; TensorFlow 2.21's closure left it empty
TMPFS = {"/tmp": "rw,size=1g"}               # Docker adds noexec, nosuid, nodev
INSTALL = ["sh", "/mnt/install.sh"]
# Measured with the real engine against the default set: the heavy step's useradd needs CHOWN
# (groupadd fails without it), DAC_OVERRIDE and FOWNER (else /etc/skel is not copied into the new
# home); the rest step only writes root's own venv and needs none.
HEAVY_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER")
REST_CAPS: Sequence[str] = ()
# TensorFlow 2.21's closure installed within 1 GB (peak 1.9 GB when allowed, mostly page cache),
# 25 s; ENVREPRO_BUILD_MEMORY, ENVREPRO_BUILD_PIDS, ENVREPRO_BUILD_TIMEOUT (seconds) override.
INSTALL_LIMITS = Limits(memory="4g", pids=512, seconds=3600.0)
LOG_LINES = 20000         # lines of one container's output written to the build log, at most
Say = Callable[[str], None]


def _config(base_info: Dict[str, Any]) -> Dict[str, Any]:
    return dict(base_info.get("Config") or {})


def environment(base_info: Dict[str, Any]) -> Dict[str, str]:
    """The image's environment: the venv first on the base's PATH."""
    path = next((e.split("=", 1)[1] for e in _config(base_info).get("Env") or [] if e.startswith("PATH=")),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return {"VIRTUAL_ENV": VENV, "PATH": f"{VENV}/bin:{path}", "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/home/envrepro"}


def label_change(key: str, value: str) -> str:
    """One ``LABEL`` instruction for ``docker commit --change`` (quoted as the Dockerfile's are)."""
    return label_lines({key: value})


def _restore_command(base_info: Dict[str, Any]) -> List[str]:
    """The base's CMD and ENTRYPOINT again (a commit would keep the install command)."""
    cfg = _config(base_info)
    return [f"CMD {json.dumps(cfg.get('Cmd') or ['python3'])}",
            f"ENTRYPOINT {json.dumps(cfg.get('Entrypoint') or [])}"]


def heavy_key(base: str, base_info: Dict[str, Any], wh: Wheelhouse, runtime_version: str) -> str:
    fields = {"base": base, "base_id": str(base_info.get("Id", "")), "target": wh.target.ident(),
              "tools": wh.plan.tools, "heavy": wh.plan.heavy, "hashes": wh.plan.require_hashes,
              "templates": templates_digest(), "runtime": runtime_version}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


class _Install:
    """``on_line`` of one install container: pip's lines into the log, its progress onto a step
    (a package per ``Processing`` line, then the long unpack), and once pip has installed the
    container's last lock file (``last``), the commit as a step of its own."""

    def __init__(self, say: Say, title: str, total: int, last: str, tag: str):
        self.say, self.last, self.tag = say, last, tag
        self.step = progress.step(say, title, total=total, unit="packages")
        self.commit: Optional[progress.Step] = None
        self.current = ""
        self.lines = 0

    def __call__(self, line: str) -> None:
        self.lines += 1
        if self.lines <= LOG_LINES:
            progress.log(self.say, line)
        text = line.strip()
        m = re.match(r"envrepro: installing (\S+)", text)
        if m:
            self.current = m.group(1)
            self.step.update(detail=f"pip install -r {self.current}")
        elif text.startswith("Processing "):
            name = text.split()[1].rsplit("/", 1)[-1]
            self.step.advance(1, detail="-".join(name.split("-")[:2]))
        elif text.startswith("Installing collected packages:"):
            n = len([p for p in text.split(":", 1)[1].split(",") if p.strip()])
            self.step.update(detail=f"unpacking and installing {n} packages")
        elif text.startswith("Successfully installed") and self.current == self.last and self.commit is None:
            self.step.done()
            self.commit = progress.step(self.say, f"Committing {self.tag}")

    def run(self, engine: ContainerEngine, image: str, command: List[str], mounts: List[Mount],
            env: Dict[str, str], changes: List[str], caps: Sequence[str]) -> str:
        """``engine.commit_run`` with this as its ``on_line``, capabilities ``caps`` and the
        install limits; the image id."""
        limits = INSTALL_LIMITS.from_env("ENVREPRO_BUILD")
        try:
            image_id = engine.commit_run(image, command, self.tag, mounts, env, changes, TMPFS, on_line=self,
                                         timeout=limits.seconds, cap_add=tuple(caps), mem_limit=limits.memory,
                                         pids_limit=limits.pids)
        except BaseException as e:
            (self.commit or self.step).fail()
            if isinstance(e, BuildFailed) and "still running after" in e.what:
                e.fix = f"{e.fix}: ENVREPRO_BUILD_TIMEOUT=SECONDS (now {limits.seconds:g})"
            elif isinstance(e, BuildFailed) and "ran out of memory" in (e.fix or ""):
                e.fix = f"{e.fix}: ENVREPRO_BUILD_MEMORY (e.g. 8g)"
            raise
        finally:
            if self.lines > LOG_LINES:
                progress.log(self.say, f"envrepro: {self.lines - LOG_LINES} more lines of this step not logged")
        self.step.done()          # pip said nothing of its last file: the commit was in the step
        if self.commit is not None:
            self.commit.done()
        return image_id


def _last_file(wh: Wheelhouse, names: List[str]) -> str:
    files = wh.plan.files()
    return next((n for n in reversed(names) if n in files), names[-1])


def build(engine: ContainerEngine, base: str, base_info: Dict[str, Any], wh: Wheelhouse, staging: Path,
          tag: str, labels: Dict[str, str], say: Say, capture_wheels: Optional[Path] = None,
          runtime_version: str = RUNTIME_VERSION, reuse_heavy: bool = True) -> str:
    """Build the environment image ``tag`` from the staged wheelhouse; its image id."""
    env = environment(base_info)
    hkey = heavy_key(base, base_info, wh, runtime_version)
    heavy_tag = f"{HEAVY_REPO}:{hkey}"
    mounts = [Mount(str(staging), "/mnt")]
    found = engine.inspect_image(heavy_tag)
    if reuse_heavy and found and image_labels(found).get(HEAVY_LABEL) == hkey:
        progress.note(say, f"Using {heavy_tag} (TensorFlow's closure, installed before)")
    else:
        progress.log(say, f"Installing TensorFlow's closure from the wheelhouse into {heavy_tag} (no network)")
        heavy = _Install(say, "Installing TensorFlow's closure",
                         wh.plan.packages("tools.lock", "heavy.lock"), _last_file(wh, ["tools.lock", "heavy.lock"]),
                         heavy_tag)
        heavy.run(engine, base, INSTALL + ["heavy"], mounts, env,
                  [label_change(HEAVY_LABEL, hkey)] + _restore_command(base_info), HEAVY_CAPS)
    if capture_wheels is not None and capture_wheels.is_dir():
        mounts.append(Mount(str(capture_wheels), WHEELS_DIR))
    changes = [f"USER {USER_UID}:{USER_UID}", "WORKDIR /home/envrepro"] + _restore_command(base_info)
    all_labels = dict(labels, **{HEAVY_LABEL: hkey, BUILDER_LABEL: "wheelhouse"})
    changes += [label_change(k, v) for k, v in sorted(all_labels.items())]
    progress.log(say, f"Installing the rest of the lock into {tag} (no network)")
    rest = _Install(say, "Installing the rest of the lock", wh.plan.packages("rest.lock", "unverified.lock"),
                    _last_file(wh, ["rest.lock", "unverified.lock"]), tag)
    return rest.run(engine, heavy_tag, INSTALL + ["rest"], mounts, env, changes, REST_CAPS)


def engine_is_local() -> bool:
    """Bind mounts need the wheelhouse on the engine's machine: a local socket, not a remote host."""
    host = os.environ.get("DOCKER_HOST", "")
    return not host or host.startswith(("unix://", "npipe://"))


def stage(wh: Wheelhouse, store: WheelStore) -> Path:
    """A private folder for the build containers to mount read-only at /mnt: the install script,
    pip.sh, the lock files of each step and, in wheels/, links to exactly the stored files the
    lock pins. The caller removes it (``shutil.rmtree``) after the build."""
    folder = store.tmp_dir()
    wheels = folder / "wheels"
    wheels.mkdir()
    for path in sorted(set(wh.files.values())):
        link_or_copy(path, wheels / path.name)
    texts = dict(wh.plan.files())
    texts["install.sh"] = fill("wheelhouse-install.sh")
    texts["pip.sh"] = template_text("pip.sh")
    if wh.plan.require_hashes:
        texts["require-hashes"] = ""
    if wh.plan.unverified_names:
        texts["unverified-names"] = ", ".join(wh.plan.unverified_names) + "\n"
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    for dirpath, dirs, names in os.walk(folder):
        os.chmod(dirpath, 0o755)
        for n in names:
            os.chmod(os.path.join(dirpath, n), 0o644)
    return folder
