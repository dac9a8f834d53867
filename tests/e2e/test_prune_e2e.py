"""``envrepro images prune`` on a real Docker engine: labels are inherited through ``FROM``, so the
user's image built on an environment image carries ``org.envrepro.key`` too; prune removes only
envrepro's own tags and never an image another image is built on.

Cheap images, no TensorFlow: the docker CLI builds them on the local ``python:3.11-slim``
stand-in (tests/e2e/standins.py), unique to this run:

- ``envrepro-env:<parent>``, labelled as an environment image, and the user's
  ``userteam/model-<run>:1`` built FROM it (a LABEL step, then a RUN layer: its Parent is the
  LABEL step's intermediate image, so only the layer chain says what it stands on);
- ``envrepro-env:<lone>``: labelled the same, nothing built on it;
- ``envrepro-env:<alias>``, also tagged ``userteam/alias-<run>:1`` by the user.

HOME and XDG_CACHE_HOME point at a temporary folder whose images index records no capture, so
every envrepro image looks unused. The installed CLI lists and dry-runs (read-only). The real
prune runs through ``commands.images_prune`` on the same engine, listing only this run's images:
the engine is shared (a CI run, the developer's environments), and with an empty index a prune
of everything would remove their images too.
"""
from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from support import installed_cli as cli  # noqa: E402

from envrepro import commands

pytestmark = pytest.mark.e2e

RUN = uuid.uuid4().hex[:8]
RUN_LABEL = "envrepro-e2e.prune-run"      # on every image this module makes (inherited by FROM)


def docker(*args, check=True, stdin=None, timeout=600):
    proc = subprocess.run(["docker", *map(str, args)], input=stdin, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def image_id(ref):
    proc = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def env_dockerfile(base, key):
    """An environment image as far as prune can tell: envrepro's labels, a layer of its own."""
    labels = {"org.envrepro.key": key, "org.envrepro.python": "3.11", "org.envrepro.base": base,
              "org.envrepro.runtime-version": "2", RUN_LABEL: RUN}
    return (f"FROM {base}\n" + "".join(f'LABEL {k}="{v}"\n' for k, v in labels.items())
            + f"RUN echo {key} > /envrepro-e2e-env\n")


class ThisRunOnly:
    """The real engine, whose listings hold only this run's images (every other call is the
    engine's own): prune looks at, inspects and removes nothing of anyone else's."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def images(self, label_filter=None):
        wanted = [label_filter] if isinstance(label_filter, str) else list(label_filter or [])
        return self._engine.images(wanted + [f"{RUN_LABEL}={RUN}"])


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An own HOME and cache whose images index records nothing (prune refuses without one)."""
    cache = tmp_path / "cache"
    (cache / "envrepro").mkdir(parents=True)
    (cache / "envrepro" / "index.json").write_text('{"version": 1, "images": {}}\n')
    env = {"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(cache),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def made(engine, standin_311, request):
    """This run's images (see the module's docstring), removed afterwards whatever happened."""
    keys = {name: uuid.uuid4().hex for name in ("parent", "lone", "alias")}
    tags = {name: f"envrepro-env:{key[:16]}" for name, key in keys.items()}
    tags["user"] = f"userteam/model-{RUN}:1"
    tags["user_alias"] = f"userteam/alias-{RUN}:1"
    ids = []

    def cleanup():
        for tag in (tags["user"], tags["user_alias"], tags["alias"], tags["lone"], tags["parent"]):
            docker("rmi", tag, check=False)
        for iid in reversed(ids):               # what lost its tags on the way (children first)
            docker("rmi", iid, check=False)
        left = [t for t in tags.values() if image_id(t)] + [i for i in ids if image_id(i)]
        assert not left, f"images left behind: {left}"

    request.addfinalizer(cleanup)
    for name in ("parent", "lone", "alias"):
        docker("build", "-q", "-t", tags[name], "-", stdin=env_dockerfile(standin_311, keys[name]))
        ids.append(image_id(tags[name]))
    docker("build", "-q", "-t", tags["user"], "-",
           stdin=f"FROM {tags['parent']}\nLABEL userteam.model=\"{RUN}\"\nRUN echo model > /model.txt\n")
    ids.append(image_id(tags["user"]))
    docker("tag", tags["alias"], tags["user_alias"])
    user = json.loads(docker("image", "inspect", tags["user"]).stdout)[0]
    assert user["Config"]["Labels"]["org.envrepro.key"] == keys["parent"]     # inherited through FROM
    assert user["Parent"] != ids[0]          # the LABEL step's intermediate: the layers tell
    return tags


def test_prune_keeps_the_user_s_image_and_what_it_stands_on(made, home, engine):
    tags = made
    parent, lone, alias = tags["parent"], tags["lone"], tags["alias"]

    listed = cli("images", "--json", env=home, timeout=600)
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = {r["tag"]: r for r in json.loads(listed.stdout)}
    assert not any(t.startswith("userteam/") for t in rows)        # the user's images aren't envrepro's
    assert rows[parent]["children"] == [tags["user"]] and rows[parent]["in_use"] is False
    assert rows[alias]["other_tags"] == [tags["user_alias"]] and rows[lone]["children"] == []

    dry = cli("images", "prune", "--dry-run", env=home, timeout=600)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert f"would remove {lone} (" in dry.stdout
    assert f"kept {parent}: {tags['user']} is built on it" in dry.stdout
    assert f"would untag {alias} (image kept: tagged {tags['user_alias']})" in dry.stdout
    assert not [line for line in dry.stdout.splitlines() if line.startswith(("would remove userteam/",
                                                                           "would untag userteam/"))]
    assert all(image_id(t) for t in tags.values())                   # a dry run changes nothing
    assert "Traceback" not in dry.stderr

    lone_id, alias_id = image_id(lone), image_id(alias)
    res = commands.images_prune(engine_factory=lambda: ThisRunOnly(engine))
    assert [r.tag for r in res.removed] == [lone] and [r.tags for r in res.untagged] == [[alias]]
    assert [(r.tag, r.children) for r in res.kept] == [(parent, [tags["user"]])] and res.failed == {}
    assert image_id(tags["user"]) and image_id(parent)               # both survive
    assert image_id(lone) is None and image_id(lone_id) is None       # the lone one is gone
    assert image_id(alias) is None and image_id(tags["user_alias"]) == alias_id   # untagged only

    after = cli("images", "--json", env=home, timeout=600)
    assert after.returncode == 0, after.stderr[-2000:]
    rows = {r["tag"]: r for r in json.loads(after.stdout)}
    assert parent in rows and lone not in rows and alias not in rows
