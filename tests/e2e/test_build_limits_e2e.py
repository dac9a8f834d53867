"""The wheelhouse builder's containers, as a real Docker engine runs them: what the kernel says
they got (capabilities, no-new-privileges, memory and pids cgroup limits, /tmp, the user), the
wall-clock limit, and one container per sdist with its tools read-only (docs/threat-model.md).

Cheap on purpose: six (a wheel) and termcolor 1.1.0 (sdist-only) on the local ``python:3.8-slim``
stand-in (tests/e2e/standins.py). The install containers run a spy ``install.sh`` that prints the
facts from inside, then runs the real script, so the build still has to succeed with what the
container was given; the sdist container gets the same facts printed before its build command.
"""
from __future__ import annotations

import re
import shutil
import uuid

import pytest

from envrepro.engine.base import TimedOut
from envrepro.errors import BuildFailed
from envrepro.image import commitbuild
from envrepro.image.wheelhouse_builder import wheelhouse_for
from envrepro.packages.pipconfig import host_pip_settings
from envrepro.packages.wheelhouse import sdists
from envrepro.packages.wheelhouse.store import WheelStore
from envrepro.sidecar.lockfile import as_lock

pytestmark = pytest.mark.e2e

SIX = ("six==1.16.0 \\\n"
       "    --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254\n")
TERMCOLOR_SHA = "1d6d69ce66211143803fbc56652b41d73b4a400a2891d7bf7a1cdf4c02de613b"
TERMCOLOR = f"termcolor==1.1.0 \\\n    --hash=sha256:{TERMCOLOR_SHA}\n"
# What a process in the container sees, one "FACT name value" line each (cgroup v1 and v2 paths).
FACTS = r"""
echo "FACT user $(id -u):$(id -g)"
sed -n 's/^\(CapEff\|CapBnd\|NoNewPrivs\):[[:space:]]*/FACT \1 /p' /proc/self/status
for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes \
         /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max; do
  if [ -r "$f" ]; then echo "FACT $(basename "$f") $(cat "$f")"; fi
done
echo "FACT tmp $(awk '$2 == "/tmp" {print $4}' /proc/mounts)"
echo "FACT interfaces $(awk -F: 'NR > 2 {gsub(/ /, "", $1); printf "%s ", $1}' /proc/net/dev)"
if touch /envrepro-root-test 2>/dev/null; then rm -f /envrepro-root-test; echo "FACT root writable"
else echo "FACT root read-only"; fi
"""
CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER = 0, 1, 3


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for var in ("ENVREPRO_BASE_IMAGE", "ENVREPRO_REGISTRY", "ENVREPRO_BUILDER", "ENVREPRO_BUILD_MEMORY",
                "ENVREPRO_BUILD_PIDS", "ENVREPRO_BUILD_TIMEOUT", "ENVREPRO_SDIST_MEMORY", "ENVREPRO_SDIST_PIDS",
                "ENVREPRO_SDIST_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)


def facts(lines, marker="FACT "):
    """The FACT lines of each container, in order: a list of {name: value}."""
    found, current = [], None
    for line in lines:
        if not line.startswith(marker):
            continue
        name, _, value = line[len(marker):].partition(" ")
        if name == "user":
            current = {}
            found.append(current)
        current[name] = value.strip()
    return found


def caps(hexmask: str) -> set:
    mask = int(hexmask, 16)
    return {bit for bit in range(64) if mask >> bit & 1}


def memory_limit(f) -> int:
    return int(f.get("memory.max") or f["memory.limit_in_bytes"])


def spy_stage(wh, store, script: str):
    """The staged wheelhouse with ``install.sh`` replaced by ``script`` (the real one stays as
    real-install.sh, so ``script`` may run it)."""
    staging = commitbuild.stage(wh, store)
    (staging / "install.sh").rename(staging / "real-install.sh")
    (staging / "install.sh").write_text(script)
    (staging / "install.sh").chmod(0o644)
    return staging


def remove_tags(engine, *tags):
    for tag in tags:
        engine.remove_image(tag, force=True)


def test_install_containers_get_only_the_capabilities_and_limits_commitbuild_asks_for(engine, standin_38, tmp_path):
    store = WheelStore()
    base_info = engine.inspect_image(standin_38)
    wh = wheelhouse_for(as_lock(SIX), engine, standin_38, base_info, host_pip_settings(), lambda line: None, store)
    staging = spy_stage(wh, store, "set -e\n" + FACTS + 'exec sh /mnt/real-install.sh "$@"\n')
    runtime = f"test-limits-{uuid.uuid4().hex[:8]}"          # a heavy layer of its own, removed below
    tag = f"envrepro-test-limits:{runtime}"
    heavy = f"{commitbuild.HEAVY_REPO}:{commitbuild.heavy_key(standin_38, base_info, wh, runtime)}"
    lines = []
    try:
        commitbuild.build(engine, standin_38, base_info, wh, staging, tag, {}, lines.append,
                          runtime_version=runtime, reuse_heavy=False)
        code, out, err = engine.run(tag, ["sh", "-c", "python -c 'import six; print(six.__version__)'; id -un; "
                                                "ls -A /home/envrepro"], stream=False)
    finally:
        remove_tags(engine, tag, heavy)
        shutil.rmtree(staging, ignore_errors=True)
    # the hardened containers still installed, and useradd made the user and its home from /etc/skel
    assert code == 0 and out.split()[:2] == ["1.16.0", "envrepro"] and ".bashrc" in out.split(), (out, err)
    heavy_facts, rest_facts = facts(lines)
    # heavy: root with CHOWN, DAC_OVERRIDE and FOWNER only (useradd); rest: root with nothing
    assert heavy_facts["user"] == rest_facts["user"] == "0:0"
    assert caps(heavy_facts["CapEff"]) == caps(heavy_facts["CapBnd"]) == {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER}
    assert caps(rest_facts["CapEff"]) == caps(rest_facts["CapBnd"]) == set()
    for f in (heavy_facts, rest_facts):
        assert f["NoNewPrivs"] == "1"
        assert memory_limit(f) == 4 << 30
        assert int(f.get("pids.max") or 0) == 512
        opts = f["tmp"].split(",")
        assert "noexec" in opts and "nosuid" in opts and "size=1048576k" in opts
        assert f["interfaces"].split() == ["lo"]
        assert f["root"] == "writable"                         # the install's layer is committed
    assert "Successfully installed six-1.16.0" in lines


def test_an_install_container_is_killed_at_its_deadline(engine, standin_38, monkeypatch):
    monkeypatch.setenv("ENVREPRO_BUILD_TIMEOUT", "4")
    store = WheelStore()
    base_info = engine.inspect_image(standin_38)
    wh = wheelhouse_for(as_lock(SIX), engine, standin_38, base_info, host_pip_settings(), lambda line: None, store)
    staging = spy_stage(wh, store, "echo started; sleep 300\n")
    runtime = f"test-deadline-{uuid.uuid4().hex[:8]}"
    heavy = f"{commitbuild.HEAVY_REPO}:{commitbuild.heavy_key(standin_38, base_info, wh, runtime)}"
    try:
        with pytest.raises(BuildFailed, match="still running after 4 s and was stopped"):
            commitbuild.build(engine, standin_38, base_info, wh, staging, "envrepro-test-deadline:x", {},
                              lambda line: None, runtime_version=runtime, reuse_heavy=False)
        assert not engine.image_exists(heavy)                  # nothing committed
    finally:
        remove_tags(engine, heavy)
        shutil.rmtree(staging, ignore_errors=True)


def test_run_kills_a_container_at_its_deadline(engine, standin_38):
    with pytest.raises(TimedOut) as e:
        engine.run(standin_38, ["sh", "-c", "echo started; sleep 300"], stream=True,
                   on_output=lambda name, text: None, timeout=3)
    assert e.value.seconds == 3 and "started" in e.value.stdout


class SpyEngine:
    """The real engine; an sdist build's command gets FACTS (and a look at its mounts) first."""

    def __init__(self, engine):
        self.engine, self.builds = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def run(self, image, command=None, **kwargs):
        if isinstance(command, list) and command[:2] == ["sh", "-c"] and "pip wheel" in command[-1]:
            self.builds.append(kwargs)
            look = ("for m in src tools out; do echo \"FACT mount-$m $(awk -v m=/mnt/$m '$2 == m {print $4}' "
                    "/proc/mounts)\"; done\necho \"FACT src $(ls /mnt/src)\"\necho \"FACT out $(ls -A /mnt/out | wc -l)\"\n")
            command = ["sh", "-c", FACTS + look + command[-1]]
        return self.engine.run(image, command, **kwargs)


def test_an_sdist_is_built_alone_with_no_capability_its_tools_read_only_and_recorded_with_them(engine, standin_38):
    store = WheelStore()
    spy = SpyEngine(engine)
    lines = []
    base_info = engine.inspect_image(standin_38)
    wh = wheelhouse_for(as_lock(SIX + TERMCOLOR), spy, standin_38, base_info, host_pip_settings(), lines.append, store)
    assert wh.built == ["termcolor"] and wh.files["termcolor"].name == "termcolor-1.1.0-py3-none-any.whl"
    (f,) = facts(lines)
    assert f["user"] == "65534:65534" and caps(f["CapEff"]) == caps(f["CapBnd"]) == set() and f["NoNewPrivs"] == "1"
    assert memory_limit(f) == 4 << 30 and int(f.get("pids.max") or 0) == 512
    assert f["interfaces"].split() == ["lo"] and f["root"] == "read-only"
    assert [f[f"mount-{m}"].split(",")[0] for m in ("src", "tools", "out")] == ["ro", "ro", "rw"]
    assert f["src"] == "termcolor-1.1.0.tar.gz" and f["out"] == "0"
    assert "size=2097152k" in f["tmp"].split(",")
    assert "no network, no host files but the sdist" in "\n".join(lines)
    # the record is keyed by the sdist's hash and the toolset's, and found again without a build
    (record,) = (store.root / "built" / wh.target.ident()).iterdir()
    assert re.fullmatch(TERMCOLOR_SHA + "-[0-9a-f]{64}.json", record.name)
    assert record.name[len(TERMCOLOR_SHA) + 1:-5] in sdists.current_toolsets(store, wh.target)
    again = wheelhouse_for(as_lock(SIX + TERMCOLOR), spy, standin_38, base_info, host_pip_settings(),
                           lambda line: None, store)
    assert again.files["termcolor"] == wh.files["termcolor"] and len(spy.builds) == 1
