"""Serving containers and their owner (envrepro.serving.orphans): the labels ``envrepro serve``
puts on what it starts, who is alive, orphaned or elsewhere, the sweep the next serve and
``envrepro images prune`` run, ``envrepro images`` listing them; the engine's side
(``ServiceOwnership``) in DockerEngine against a stub SDK and in the fake. No Docker."""
import inspect
import json
import os
import subprocess
import sys
import time
from io import StringIO

import pytest

from envrepro import commands
from envrepro.engine.base import ServiceOwnership
from envrepro.engine.docker import DockerEngine
from envrepro.image.spec import LABEL_KEY
from envrepro.render import emit
from envrepro.serving import orphans, watcher

try:
    from .fakes import FakeEngine, cache_home, image  # noqa: F401 - cache_home: an autouse fixture
    from .test_docker_engine import _StubWorld
except ImportError:
    from fakes import FakeEngine, cache_home, image  # noqa: F401
    from test_docker_engine import _StubWorld

HERE = orphans.Host.current()
ME = orphans.Owner.current()


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def labels_of(pid, started="", role="serve", **where):
    host = orphans.Host(**{**HERE.__dict__, **where})
    return orphans.Owner(pid, started, host).labels(role)


# --- who owns a container ----------------------------------------------------------------------

def test_the_labels_name_this_process_and_where_it_runs():
    labels = ME.labels("serve", watcher=77)
    assert labels[orphans.PID] == str(os.getpid()) and labels[orphans.HOST] == HERE.host
    assert labels[orphans.ROLE] == "serve" and labels[orphans.WATCHER] == "77"
    if sys.platform.startswith("linux"):
        assert labels[orphans.STARTED].isdigit() and labels[orphans.BOOT] and labels[orphans.PIDNS].startswith("pid:")
    assert all(k.startswith("org.envrepro.owner.") for k in labels) and ME.owns(labels)
    assert not orphans.Owner(os.getpid(), "1", HERE).owns(labels)


def test_alive_orphaned_and_elsewhere():
    assert orphans.judge(ME.labels("serve"), HERE) == orphans.ALIVE
    assert orphans.judge(labels_of(dead_pid()), HERE) == orphans.ORPHANED
    assert orphans.judge(labels_of(os.getpid(), started="1"), HERE) == orphans.ORPHANED     # a reused pid
    assert orphans.judge(labels_of(dead_pid(), host="another-host"), HERE) == orphans.ELSEWHERE
    assert orphans.judge(labels_of(dead_pid(), pidns="pid:[1]"), HERE) == orphans.ELSEWHERE   # a container's client
    assert orphans.judge(labels_of(dead_pid(), machine="f" * 32), HERE) == orphans.ELSEWHERE
    assert orphans.judge(labels_of(os.getpid(), boot="an-earlier-boot"), HERE) == orphans.ORPHANED
    assert orphans.judge(dict(labels_of(1), **{orphans.PID: "x"}), HERE) == orphans.ELSEWHERE


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_zombie_is_gone():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        end = time.time() + 20
        while (orphans.process(proc.pid) or ("Z",))[0] != "Z" and time.time() < end:
            time.sleep(0.05)
        assert orphans.pid_alive(proc.pid) is False
        assert orphans.judge(labels_of(proc.pid, started=orphans.process(proc.pid)[1]), HERE) == orphans.ORPHANED
    finally:
        proc.wait()


def test_the_process_status_line_is_read_past_a_name_with_parentheses(monkeypatch):
    monkeypatch.setattr(orphans, "_read", lambda path: "12 (a) b (c)) S " + " ".join(str(i) for i in range(4, 30)))
    assert orphans.process(12) == ("S", "22")


# --- the engine's side -------------------------------------------------------------------------

@pytest.mark.parametrize("engine", [DockerEngine, FakeEngine], ids=["DockerEngine", "FakeEngine"])
@pytest.mark.parametrize("name", ["label_services", "services"])
def test_engines_implement_service_ownership_with_its_signatures(engine, name):
    want = inspect.signature(getattr(ServiceOwnership, name))
    got = inspect.signature(getattr(engine, name))
    assert [(p.name, p.kind, p.default, str(p.annotation)) for p in got.parameters.values()] == \
        [(p.name, p.kind, p.default, str(p.annotation)) for p in want.parameters.values()]
    assert str(got.return_annotation) == str(want.return_annotation)


def test_docker_engine_labels_the_service_its_relay_and_their_volume(monkeypatch):
    pytest.importorskip("docker")
    from envrepro.engine import services

    monkeypatch.setattr(services, "RELAY_START_SECONDS", 0.0)
    world = _StubWorld()
    eng = DockerEngine(client=world)
    eng.label_services(ME.labels("serve"))
    cid = eng.start("envrepro-serve:k", ports={8501: ("127.0.0.1", 0)})
    service, relay = world.made
    assert service.kwargs["labels"] == ME.labels("serve")
    assert relay.kwargs["labels"][services.RELAY_FOR] == cid and ME.owns(relay.kwargs["labels"])
    assert ME.owns(world.volumes_made[0]["labels"])
    eng.label_services({})
    eng.start("img", network_disabled=False)
    assert "labels" not in world.made[-1].kwargs


def test_docker_engine_finds_services_by_their_own_labels():
    """A label inherited unchanged from the image is not the container's (an image committed
    from a labelled container); a service's ports are its relay's; IPv6 twins count once."""
    pytest.importorskip("docker")
    own = ME.labels("serve")

    class API:
        def containers(self, all=False, filters=None):
            assert all and filters == {"label": [orphans.PID]}
            return [
                {"Id": "a" * 64, "Names": ["/svc"], "Image": "envrepro-serve:k", "ImageID": "sha256:img",
                 "State": "running", "Status": "Up 3 minutes", "Labels": dict(own, **{LABEL_KEY: "k"}), "Ports": []},
                {"Id": "b" * 64, "Names": ["/relay"], "Image": "envrepro-serve:k", "ImageID": "sha256:img",
                 "State": "running", "Status": "Up 3 minutes", "Ports": [
                     {"PrivatePort": 8501, "PublicPort": 8080, "Type": "tcp", "IP": "127.0.0.1"},
                     {"PrivatePort": 8501, "PublicPort": 8080, "Type": "tcp", "IP": "::1"}],
                 "Labels": dict(own, **{"org.envrepro.relay-for": "a" * 64})},
                {"Id": "c" * 64, "Names": ["/committed"], "Image": "team/copy", "ImageID": "sha256:copy",
                 "State": "running", "Status": "Up", "Labels": dict(own), "Ports": []},
            ]

        def inspect_image(self, image_id):
            return {"Config": {"Labels": {LABEL_KEY: "k"} if image_id == "sha256:img" else dict(own)}}

    found = DockerEngine(client=type("C", (), {"api": API()})()).services(orphans.PID)
    assert [s["name"] for s in found] == ["svc", "relay"]
    svc, relay = found
    assert svc["labels"] == own and svc["running"] and svc["relay_for"] == "" and relay["relay_for"] == "a" * 64
    assert svc["ports"] == [{"port": 8501, "host": "127.0.0.1", "host_port": 8080}] == relay["ports"]


# --- listing and sweeping ---------------------------------------------------------------------

def engine_with(*specs):
    """A fake engine with services: (id, labels, relay_for)."""
    eng = FakeEngine()
    for cid, labels, relay_for in specs:
        eng.add_service(cid, "envrepro-serve:k", labels, relay_for=relay_for,
                        ports=[{"port": 8501, "host": "127.0.0.1", "host_port": 8080}] if relay_for else [],
                        image_id="sha256:" + "e" * 64)
    return eng


def test_listing_folds_relays_into_their_service():
    gone = labels_of(dead_pid())
    eng = engine_with(("svc1", gone, ""), ("rel1", gone, "svc1"), ("svc2", ME.labels("serve"), ""),
                      ("rel9", gone, "svc-removed-by-hand"))
    got = {c.id: c for c in orphans.listing(eng, HERE)}
    assert sorted(got) == ["rel9", "svc1", "svc2"]
    assert got["svc1"].state == "orphaned" and got["svc1"].relays == ["rel1"] and got["svc1"].ports == ["127.0.0.1:8080"]
    assert got["svc2"].state == "alive" and got["rel9"].role == "relay"


def test_the_sweep_removes_orphans_with_their_relays_and_nothing_else():
    gone = labels_of(dead_pid())
    eng = engine_with(("svc1", gone, ""), ("rel1", gone, "svc1"), ("svc2", ME.labels("serve"), ""),
                      ("svc3", labels_of(dead_pid(), host="elsewhere"), ""))
    said = []
    assert [c.id for c in orphans.sweep(eng, HERE, dry_run=True)] == ["svc1"] and not getattr(eng, "stopped", [])
    assert [c.id for c in orphans.sweep(eng, HERE, say=said.append)] == ["svc1"]
    assert eng.stopped == [("svc1", orphans.SWEEP_SECONDS)]
    assert sorted(c["id"] for c in eng.services(orphans.PID)) == ["svc2", "svc3"]
    assert said and "svc1" in said[0] and "gone" in said[0]


def test_a_container_removed_meanwhile_counts_as_removed_a_refusal_is_reported():
    gone = labels_of(dead_pid())
    eng = engine_with(("svc1", gone, ""), ("svc2", gone, ""))

    def stop(cid, timeout):
        if cid == "svc1":                          # another sweep (its watcher) was first
            eng.service_containers = [c for c in eng.service_containers if c["id"] != "svc1"]
        else:
            raise orphans.errors.EnvreproError("stopping container svc2 failed: permission denied")

    eng.on_stop = stop
    failed = {}
    assert [c.id for c in orphans.sweep(eng, HERE, failed=failed)] == ["svc1"]
    assert list(failed) == ["svc2"] and "permission denied" in failed["svc2"]


def test_remove_owned_takes_only_this_very_process_s_containers():
    eng = engine_with(("mine", ME.labels("serve"), ""), ("myrelay", ME.labels("serve"), "mine"),
                      ("lone", ME.labels("self-check"), "gone-service"),
                      ("reused", labels_of(os.getpid(), started="1"), ""))
    removed, failed = orphans.remove_owned(eng, ME)
    assert sorted(removed) == ["lone", "mine"] and failed == {}
    assert [c["id"] for c in eng.services(orphans.PID)] == ["reused"]


# --- envrepro images / envrepro images prune --------------------------------------------------

def images_engine():
    eng = FakeEngine(local=[image("envrepro-serve:k", {LABEL_KEY: "k"}, size=10, image_id="sha256:" + "e" * 64)])
    gone = labels_of(dead_pid())
    eng.add_service("svc1" + "0" * 60, "envrepro-serve:k", gone, image_id="sha256:" + "e" * 64,
                    ports=[])
    eng.add_service("rel1" + "0" * 60, "envrepro-serve:k", gone, relay_for="svc1" + "0" * 60,
                    image_id="sha256:" + "e" * 64, ports=[{"port": 8501, "host": "127.0.0.1", "host_port": 8502}])
    eng.add_service("svc2" + "0" * 60, "team/other:1", ME.labels("serve"), image_id="sha256:" + "f" * 64)
    return eng


def test_images_lists_serving_containers_alive_and_orphaned():
    eng = images_engine()
    result = commands.images_list(engine_factory=lambda: eng)
    out = StringIO()
    code = emit(result, out=out)
    text = out.getvalue()
    assert code == 0 and "serving containers (envrepro serve):" in text
    line = next(l for l in text.splitlines() if l.strip().startswith("svc10000"))
    assert "envrepro-serve:k  127.0.0.1:8502  serve, running  ORPHANED: envrepro serve pid" in line
    assert f"envrepro serve pid {os.getpid()} runs" in text
    out = StringIO()
    emit(result, as_json=True, out=out)
    rows = {r["tag"]: r for r in json.loads(out.getvalue())}
    (svc,) = rows["envrepro-serve:k"]["serving"]
    assert svc["state"] == "orphaned" and svc["ports"] == ["127.0.0.1:8502"] and svc["relays"] == ["rel100000000"]
    assert svc["pid"] and svc["role"] == "serve" and svc["id"] == "svc100000000"
    assert rows["team/other:1"]["serving"][0]["state"] == "alive"        # an image not envrepro's: a row of its own


def test_images_prune_removes_the_orphans_first():
    from envrepro.image import usage

    usage.index_path().parent.mkdir(parents=True)
    usage.write_index(usage.index_path(), usage._empty())       # an index that knows no capture
    eng = images_engine()
    dry = commands.images_prune(dry_run=True, engine_factory=lambda: eng)
    assert [c["id"] for c in dry.orphans] == ["svc100000000"] and not getattr(eng, "stopped", [])
    out = StringIO()
    emit(dry, out=out)
    assert "would remove orphaned serving container svc100000000 (envrepro-serve:k, serve; its envrepro serve pid" in out.getvalue()
    res = commands.images_prune(engine_factory=lambda: eng)
    assert [c["id"] for c in res.orphans] == ["svc100000000"] and res.to_dict()["orphans"][0]["state"] == "orphaned"
    assert [c["id"] for c in eng.services(orphans.PID)] == ["svc2" + "0" * 60]
    assert [r.tag for r in res.removed] == ["envrepro-serve:k"]          # its image went with it


# --- the watcher ------------------------------------------------------------------------------

@pytest.mark.skipif(os.name == "nt", reason="no watcher on Windows")
def test_the_watcher_wakes_as_soon_as_its_lifeline_closes(monkeypatch):
    """The pipe's write end closes (as when its serve dies, SIGKILL included): the watcher reads
    EOF at once and goes to remove what that serve left, here through an engine it can't reach
    (exit 3: no Docker is touched by this test)."""
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    spawned = watcher.spawn(orphans.Owner(dead_pid(), "", HERE), 0)
    assert spawned is not None
    try:
        time.sleep(0.5)
        assert spawned.proc.poll() is None                 # waiting on its lifeline
        t0 = time.monotonic()
        spawned.close()
        assert spawned.proc.wait(60) == 3 and time.monotonic() - t0 < 60
    finally:
        if spawned.proc.poll() is None:
            spawned.proc.kill()


def test_a_service_being_removed_elsewhere_is_waited_for_and_its_relay_still_goes(monkeypatch):
    """The first signal's stop was cut short while Docker removed the model container: removing
    it again is refused ("removal in progress") and it is still listed; its relay must not be
    left to the watcher, and the container counts as removed once it is gone."""
    monkeypatch.setattr(orphans, "ROUND_WAIT", 0.01)
    eng = engine_with(("mine", ME.labels("serve"), ""), ("myrelay", ME.labels("serve"), "mine"))
    calls = []

    def stop(cid, timeout):
        calls.append(cid)
        if cid == "mine":
            if calls.count("mine") == 1:
                raise orphans.errors.EnvreproError("removal of container mine is already in progress")
        elif cid == "myrelay":   # the in-progress removal of the service finishes meanwhile
            eng.service_containers = [c for c in eng.service_containers if c["id"] != "mine"]

    eng.on_stop = stop
    removed, failed = orphans.remove_owned(eng, ME)
    assert failed == {} and sorted(removed) == ["mine", "myrelay"]
    assert eng.services(orphans.PID) == []


def test_a_container_that_stays_is_reported_after_a_bounded_wait(monkeypatch):
    monkeypatch.setattr(orphans, "ROUND_WAIT", 0.01)
    eng = engine_with(("stuck", ME.labels("serve"), ""))

    def stop(cid, timeout):
        raise orphans.errors.EnvreproError("stopping container stuck failed: permission denied")

    eng.on_stop = stop
    removed, failed = orphans.remove_owned(eng, ME)
    assert removed == [] and list(failed) == ["stuck"]
