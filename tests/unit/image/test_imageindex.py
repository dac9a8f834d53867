"""The images index and prune (envrepro.image.inventory) with the fake engine."""
from envrepro.image import inventory as images_cmd
from envrepro.image import ownership, usage
from envrepro.sidecar import manifest
from envrepro.sidecar import writer

try:
    from .fakes import FakeEngine, cache_home, image, image_info, make_capture
except ImportError:
    from fakes import FakeEngine, cache_home, image, image_info, make_capture


def docker_image(key, tag, size=100_000_000):
    return image(tag, {images_cmd.LABEL_KEY: key}, size=size, created=1_700_000_000,
                 image_id=f"sha256:{key[:4]}{'0' * 60}")


def env_key(cap, base="python:3.8-slim"):
    """The key image.spec gives this capture's environment on ``base``."""
    from envrepro.image.spec import image_key

    return image_key(base, str(cap.get("python.version")), cap.lock_path.read_text())


def used(cap, base="python:3.8-slim"):
    key = env_key(cap, base)
    usage.record_use(image_info(key, base_image=base), cap)
    return key


def test_record_and_list(tmp_path):
    a = make_capture(tmp_path / "a")
    b = make_capture(tmp_path / "b", name="other")
    k1 = used(a)
    assert used(b) == k1  # same lock, same base: one image serves both
    k2 = used(b, base="registry.local/py:3.8")
    eng = FakeEngine([docker_image(k1, "envrepro-env:1"), docker_image(k2, "envrepro-env:2"),
                             docker_image("k3" * 16, "envrepro-env:3")])
    rows = {r.key: r for r in images_cmd.list_images(eng)}
    assert rows[k1].captures == sorted([str(a.root), str(b.root)])
    assert rows[k2].captures == [str(b.root)] and rows["k3" * 16].captures == []
    assert rows[k1].tag == "envrepro-env:1" and rows[k1].size == 100_000_000
    assert rows[k1].created.startswith("2023-11-14")
    text = images_cmd.render_images(list(rows.values()))
    assert "100.0 MB" in text and "unused" in text
    assert images_cmd.render_images([]) == "no envrepro images\n"


def test_rows_from_inspect_shaped_images():
    row = images_cmd._row({"Id": "sha256:abc", "RepoTags": ["t:1"], "Config": {"Labels": {images_cmd.LABEL_KEY: "kk"}}})
    assert (row.key, row.tag, row.size) == ("kk", "t:1", 0)


def test_prune_removes_images_no_capture_uses(tmp_path):
    import shutil

    a = make_capture(tmp_path / "a")
    gone = make_capture(tmp_path / "gone")
    changed = make_capture(tmp_path / "changed")
    changed.data["python"] = {"version": "3.8.17"}
    writer.write_manifest(changed.root, dict(changed.data))
    changed = manifest.read(changed.root)
    k_a = used(a)
    k_gone = used(gone, base="python:3.8-bookworm")
    k_changed = used(changed)
    shutil.rmtree(gone.root)
    # captured again into another environment: a new lock
    (changed.root / "requirements.lock").write_text("tensorflow-cpu==2.21.0\n")
    writer.write_manifest(changed.root, dict(changed.data))
    orphan = "f" * 32  # built (say by `envrepro build`) but never loaded
    tags = {k_a: "envrepro-env:a", k_gone: "envrepro-env:gone", k_changed: "envrepro-env:changed",
            orphan: "envrepro-env:orphan"}
    eng = FakeEngine([docker_image(k, t) for k, t in tags.items()])

    dry = images_cmd.prune(eng, dry_run=True)
    assert sorted(r.tag for r in dry.removed) == ["envrepro-env:changed", "envrepro-env:gone", "envrepro-env:orphan"]
    assert eng.removed == []
    assert "would remove 3 image(s)" in images_cmd.render_prune(dry)
    changed_row = next(r for r in dry.removed if r.key == k_changed)
    assert "now uses image key" in changed_row.stale[str(changed.root)]
    gone_row = next(r for r in dry.removed if r.key == k_gone)
    assert gone_row.stale[str(gone.root)] == "capture folder is gone"
    before = usage.index_path().read_text()

    eng.fail_remove.add("envrepro-env:orphan")
    res = images_cmd.prune(eng)
    assert sorted(r.tag for r in res.removed) == ["envrepro-env:changed", "envrepro-env:gone"]
    assert [r.key for r in res.kept] == [k_a]
    assert "envrepro-env:orphan" in res.failed
    assert "could not remove envrepro-env:orphan" in images_cmd.render_prune(res)
    assert len(eng.removed) == 2
    idx = usage.read_index()
    assert set(idx["images"]) == {k_a} and before != usage.index_path().read_text()
    assert res.to_dict()["freed_bytes"] == 200_000_000


def test_prune_without_a_recorded_base_compares_the_lock(tmp_path):
    a = make_capture(tmp_path / "a")
    usage.record_use(image_info("k1", base_image=None), a)
    eng = FakeEngine([docker_image("k1", "envrepro-env:k1")])
    assert images_cmd.prune(eng, dry_run=True).removed == []
    (a.root / "requirements.lock").write_text("numpy==2.0.0\n")
    writer.write_manifest(a.root, dict(a.data))
    res = images_cmd.prune(eng, dry_run=True)
    assert [r.key for r in res.removed] == ["k1"]
    assert res.removed[0].stale[str(a.root)] == "capture was taken again into another environment"


def test_prune_with_exact_key_function(tmp_path):
    a = make_capture(tmp_path / "a")
    usage.record_use(image_info("k1"), a)
    eng = FakeEngine([docker_image("k1", "envrepro-env:k1")])
    assert images_cmd.prune(eng, dry_run=True, key_for=lambda c: "k1").removed == []
    res = images_cmd.prune(eng, dry_run=True, key_for=lambda c: "k9")
    assert [r.key for r in res.removed] == ["k1"]
    assert "now uses image key k9" in res.removed[0].stale[str(a.root)]


def test_index_is_a_cache(tmp_path, cache_home):
    p = usage.index_path()
    assert p == cache_home / "envrepro" / "index.json"
    assert usage.read_index() == {"version": 1, "images": {}}
    p.parent.mkdir(parents=True)
    p.write_text("{not json")
    assert usage.read_index()["images"] == {}
    usage.record_use(image_info("k1"), make_capture(tmp_path))
    assert list(usage.read_index()["images"]) == ["k1"]
    assert not [f for f in p.parent.iterdir() if f.name.endswith(".tmp")]


def test_prune_cache_removes_untagged_builder_stages_only():
    builder = image(None, {"org.envrepro.stage": "builder"}, size=740_000_000, created=1,
                    image_id="sha256:" + "b" * 64)
    tagged_builder = image("keep:me", {"org.envrepro.stage": "builder"}, size=1, created=1,
                           image_id="sha256:" + "d" * 64)
    eng = FakeEngine([builder, tagged_builder])
    dry = images_cmd.prune(eng, dry_run=True, cache=True)
    assert [c["id"] for c in dry.cache] == [builder["Id"]] and eng.removed == []
    assert "would remove builder cache bbbbbbbbbbbb (740.0 MB)" in images_cmd.render_prune(dry)
    res = images_cmd.prune(eng, cache=True)
    assert eng.removed == [builder["Id"]] and res.freed == 740_000_000
    assert images_cmd.prune(FakeEngine([builder])).cache == []   # only with cache=True


def test_prune_with_a_missing_or_corrupt_index_removes_nothing(tmp_path):
    """read_index treats a missing or corrupt index as empty; prune must not take that to mean
    that no capture uses any image."""
    import pytest

    from envrepro.errors import EXIT_BAD_INPUT, EnvreproError

    a = make_capture(tmp_path / "a")
    key = used(a)
    eng = FakeEngine([docker_image(key, "envrepro-env:a")])
    path = usage.index_path()
    for damage in (lambda: path.unlink(), lambda: path.write_text("{half"), lambda: path.write_text("[]")):
        damage()
        with pytest.raises(EnvreproError) as e:
            images_cmd.prune(eng)
        assert e.value.exit_code == EXIT_BAD_INPUT and "none was removed" in str(e.value)
        assert eng.removed == []
        assert [r.tag for r in images_cmd.prune(eng, dry_run=True).removed] == ["envrepro-env:a"]
    assert images_cmd.prune(FakeEngine([])).removed == []     # no images: nothing to protect


def test_prune_keeps_an_image_a_container_was_created_from(tmp_path):
    """No capture on record uses it, but a container (running or stopped) does: kept, said."""
    a = make_capture(tmp_path / "a")
    k_a = used(a)
    orphan, inuse = "f" * 32, "e" * 32
    eng = FakeEngine([docker_image(k_a, "envrepro-env:a"), docker_image(orphan, "envrepro-env:orphan"),
                      docker_image(inuse, "envrepro-env:inuse")])
    eng.containers = {f"{inuse[:4]}{'0' * 8}": ["serving-1"]}   # the short id, as listed
    res = images_cmd.prune(eng)
    assert [r.tag for r in res.removed] == ["envrepro-env:orphan"]
    assert sorted(r.tag for r in res.kept) == ["envrepro-env:a", "envrepro-env:inuse"]
    assert "kept envrepro-env:inuse: used by container(s) serving-1" in images_cmd.render_prune(res)
    assert eng.removed == [f"sha256:{orphan[:4]}{'0' * 60}"]


# --- whose images prune removes: envrepro's own tags only, never what an image stands on --------

def env_image(key, tag=None, size=100_000_000, **labels):
    """An environment image as envrepro builds it: its labels, one layer on a base."""
    labels = dict({images_cmd.LABEL_KEY: key, ownership.LABEL + "base": "python:3.8-slim"}, **labels)
    return image(tag or f"envrepro-env:{key[:16]}", labels, size=size, created=1_700_000_000,
                 image_id=f"sha256:{key[:4]}{'0' * 60}", on=image("python:3.8-slim"))


def test_only_envrepro_tags_are_envrepro_s():
    from envrepro.image import commitbuild, spec
    from envrepro.serving import context

    assert ownership.OWN_REPOS == (spec.IMAGE_REPO, context.SERVE_REPO, commitbuild.HEAVY_REPO)
    assert ownership.SERVE_KEY_LABEL == context.LABEL + "key"
    labels = {images_cmd.LABEL_KEY: "a" * 32, ownership.SERVE_KEY_LABEL: "b" * 32}
    for tag in ("envrepro-env:aaaa", "envrepro-serve:bbbb-unverified", "envrepro-heavy:cccc",
                "registry.example:5000/team/envrepro-env:" + "a" * 32,     # what push and pull leave
                "registry.example/envrepro-serve:" + "b" * 32):
        assert ownership.own_tag(tag, labels), tag
    for tag in ("team/model:1", "envrepro-env-fork:1", "team/envrepro-env:latest",
                "registry.example/envrepro-env:" + "c" * 32, "localhost:5000/envrepro-env"):
        assert not ownership.own_tag(tag, labels), tag


def test_a_user_tag_on_an_envrepro_image_stays_only_envrepro_s_tag_goes(tmp_path):
    usage.record_use(image_info("k0"), make_capture(tmp_path / "a"))   # an index to trust
    both = env_image("e" * 32)
    both["RepoTags"].append("team/model:1")          # `docker tag envrepro-env:eeee... team/model:1`
    eng = FakeEngine([both])
    dry = images_cmd.prune(eng, dry_run=True)
    assert [r.tags for r in dry.untagged] == [["envrepro-env:" + "e" * 16]] and dry.removed == []
    assert "would untag envrepro-env:eeeeeeeeeeeeeeee (image kept: tagged team/model:1)" in images_cmd.render_prune(dry)
    assert eng.inspect_image("envrepro-env:" + "e" * 16) is not None
    res = images_cmd.prune(eng)
    assert [r.other_tags for r in res.untagged] == [["team/model:1"]] and res.freed == 0
    assert eng.removed == [] and eng.inspect_image("team/model:1")["RepoTags"] == ["team/model:1"]
    assert images_cmd.list_images(eng) == []         # no longer envrepro's: the user's image


def test_an_image_built_on_an_envrepro_image_keeps_it_and_is_never_touched(tmp_path):
    """The review's repro: labels are inherited through FROM, so the user's image carries
    org.envrepro.key; prune removed it and its parent."""
    usage.record_use(image_info("k0"), make_capture(tmp_path / "a"))
    key, lone = "f" * 32, "d" * 32
    eng = FakeEngine([env_image(key), env_image(lone)])
    eng.build(dockerfile_context(f"FROM envrepro-env:{key[:16]}\nRUN pip install flask\n"), "team/model:1")
    user = eng.inspect_image("team/model:1")
    assert user["Config"]["Labels"][images_cmd.LABEL_KEY] == key       # inherited, as in Docker

    rows = {r.tag: r for r in images_cmd.list_images(eng)}
    assert sorted(rows) == ["envrepro-env:" + lone[:16], "envrepro-env:" + key[:16]]   # not the user's
    assert rows["envrepro-env:" + key[:16]].children == ["team/model:1"]
    assert "unused, kept: team/model:1 is built on it" in images_cmd.render_images(list(rows.values()))

    dry = images_cmd.prune(eng, dry_run=True)
    text = images_cmd.render_prune(dry)
    assert [r.tag for r in dry.removed] == ["envrepro-env:" + lone[:16]]
    assert f"would remove envrepro-env:{lone[:16]} (100.0 MB)" in text
    assert f"kept envrepro-env:{key[:16]}: team/model:1 is built on it" in text
    assert "would remove 1 image(s), 100.0 MB; kept 1 in use or built on" in text and eng.removed == []

    res = images_cmd.prune(eng)
    assert [r.tag for r in res.removed] == ["envrepro-env:" + lone[:16]]
    assert eng.removed == [f"sha256:{lone[:4]}{'0' * 60}"]
    assert eng.inspect_image("team/model:1") and eng.inspect_image("envrepro-env:" + key[:16])
    assert [r.children for r in res.kept if r.key == key] == [["team/model:1"]]


def test_a_child_found_by_its_layers_alone_or_untagged_keeps_its_parent(tmp_path):
    """A pulled or loaded image has no Parent: its layer chain tells what it is built on. An
    untagged (dangling) image is not provably envrepro's: left alone, and it keeps its parent."""
    usage.record_use(image_info("k0"), make_capture(tmp_path / "a"))
    a, b = env_image("a" * 32), env_image("b" * 32)
    loaded = image("team/loaded:2", a["Config"]["Labels"], on=a)
    loaded.pop("Parent")
    dangling = image(None, b["Config"]["Labels"], on=b, image_id="sha256:" + "9" * 64)
    metadata_only = image("team/labelled:1", a["Config"]["Labels"], on=a, layer=False)  # FROM + LABEL
    metadata_only.pop("Parent")
    eng = FakeEngine([a, b, loaded, dangling, metadata_only])
    res = images_cmd.prune(eng)
    assert res.removed == [] and eng.removed == []
    kept = {r.tag: r.children for r in res.kept}
    assert kept == {"envrepro-env:" + "a" * 16: ["team/labelled:1", "team/loaded:2"],
                    "envrepro-env:" + "b" * 16: ["an untagged image (999999999999)"]}
    assert res.dangling == ["999999999999"]
    assert "left 1 untagged image(s) with envrepro's labels (999999999999)" in images_cmd.render_prune(res)
    # two of envrepro's own images with the same layers are siblings (one install, two keys)
    twin = image("envrepro-env:" + "t" * 16, {images_cmd.LABEL_KEY: "t" * 32}, image_id="sha256:" + "7" * 64)
    twin["RootFS"] = a["RootFS"]
    eng = FakeEngine([a, twin])
    assert sorted(r.tag for r in images_cmd.prune(eng).removed) == ["envrepro-env:" + "a" * 16,
                                                                    "envrepro-env:" + "t" * 16]


def test_unused_images_built_on_each_other_go_together_children_first(tmp_path):
    """An unused serving image on an unused environment: both go, the serving image first. A
    serving image a container runs from keeps its environment."""
    usage.record_use(image_info("k0"), make_capture(tmp_path / "a"))
    env, env2 = env_image("c" * 32), env_image("e" * 32)
    serving = image("envrepro-serve:" + "5" * 16, dict(env["Config"]["Labels"], **{ownership.SERVE_KEY_LABEL: "5" * 32}),
                    on=env, size=50)
    running = image("envrepro-serve:" + "6" * 16, env2["Config"]["Labels"], on=env2, size=60)
    eng = FakeEngine([env, serving, env2, running])
    eng.containers = {running["Id"].split(":")[1][:12]: ["served"]}
    res = images_cmd.prune(eng)
    assert [r.tag for r in res.removed] == ["envrepro-serve:" + "5" * 16, "envrepro-env:" + "c" * 16]
    assert eng.removed == [serving["Id"], env["Id"]]
    text = images_cmd.render_prune(res)
    assert f"kept envrepro-env:{'e' * 16}: envrepro-serve:{'6' * 16} is built on it" in text
    assert f"kept envrepro-serve:{'6' * 16}: used by container(s) served" in text


def test_the_review_repro_a_user_tagged_serving_image_survives_prune(tmp_path):
    """M4: `envrepro build --serve -t team/my-model:1` on envrepro-env:fff..., nothing recorded
    for it: prune removed both. Now neither: the serving image is the user's, built on the env."""
    usage.record_use(image_info("k0"), make_capture(tmp_path / "other"))
    env = env_image("f" * 32)
    served = image("team/my-model:1", dict(env["Config"]["Labels"], **{ownership.SERVE_KEY_LABEL: "7" * 32}),
                   on=env)
    eng = FakeEngine([env, served])
    res = images_cmd.prune(eng)
    assert res.removed == [] and res.untagged == [] and eng.removed == []
    assert sorted(eng.local) == ["envrepro-env:" + "f" * 16, "team/my-model:1"]


def test_prune_cache_keeps_a_closure_image_something_is_built_on(tmp_path):
    heavy_labels = {images_cmd.HEAVY_LABEL: "h" * 16}
    orphan = image("envrepro-heavy:" + "h" * 16, heavy_labels, size=7, on=image("python:3.8-slim"))
    used = image("envrepro-heavy:" + "u" * 16, {images_cmd.HEAVY_LABEL: "u" * 16}, size=8, on=image("python:3.8-slim"))
    user = image("team/on-closure:1", dict(used["Config"]["Labels"], other="x"), on=used)
    user["Config"]["Labels"][images_cmd.HEAVY_LABEL] = "relabelled"     # the layers still tell
    tagged = image("envrepro-heavy:" + "t" * 16, {images_cmd.HEAVY_LABEL: "t" * 16}, size=9,
                   on=image("python:3.8-slim"))
    tagged["RepoTags"].append("team/closure:1")
    eng = FakeEngine([orphan, used, user, tagged])
    res = images_cmd.prune(eng, cache=True)
    assert [c["tag"] for c in res.cache] == ["envrepro-heavy:" + "h" * 16]
    assert [r.tags for r in res.untagged] == [["envrepro-heavy:" + "t" * 16]]
    assert sorted(eng.local) == ["envrepro-heavy:" + "u" * 16, "team/closure:1", "team/on-closure:1"]


def dockerfile_context(text):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text.encode())
        tar.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


# --- build --serve and serve record use, as load does ------------------------------------------

def serving_setup(tmp_path, monkeypatch):
    """A capture, its environment image (found locally) in a fake engine, and an index that
    records another capture only."""
    from envrepro.image import ensure
    from envrepro.image.ensure import ImageInfo

    cap = make_capture(tmp_path / "served")
    usage.record_use(image_info("k0"), make_capture(tmp_path / "other"))
    key = env_key(cap)
    env = env_image(key)
    monkeypatch.setattr(ensure, "ensure_image", lambda *a, **k: ImageInfo(
        f"envrepro-env:{key[:16]}", key, env["Id"], "local", "python:3.8-slim", "", dict(env["Config"]["Labels"])))
    return cap, key, FakeEngine([env])


def test_build_serve_records_use_so_prune_keeps_the_environment_and_the_serving_image(tmp_path, monkeypatch):
    from envrepro import commands

    cap, key, eng = serving_setup(tmp_path, monkeypatch)
    assert [r.tag for r in images_cmd.prune(eng, dry_run=True).removed] == [f"envrepro-env:{key[:16]}"]
    res = commands.build(str(cap.model_path), verify=False, engine_factory=lambda: eng, quiet=True)
    assert res.tag.startswith("envrepro-serve:") and res.env_tag == f"envrepro-env:{key[:16]}"
    entry = usage.read_index()["images"][key]
    assert entry["tag"] == res.env_tag and list(entry["captures"]) == [str(cap.root)]
    assert entry["captures"][str(cap.root)]["base_image"] == "python:3.8-slim"
    out = images_cmd.prune(eng)
    assert out.removed == [] and eng.removed == []
    assert sorted(r.tag for r in out.kept) == sorted([res.env_tag, res.tag])


def test_build_serve_labels_its_self_check_containers_with_their_owner(tmp_path, monkeypatch):
    from envrepro import commands
    from envrepro.serving import orphans

    cap, key, eng = serving_setup(tmp_path, monkeypatch)
    commands.build(str(cap.model_path), verify=False, engine_factory=lambda: eng, quiet=True)
    assert eng.service_labels[orphans.ROLE] == "self-check"
    assert orphans.Owner.current().owns(eng.service_labels)     # a killed build's: swept as orphans


def test_serve_records_use_before_the_server_starts(tmp_path, monkeypatch):
    from envrepro import commands
    from envrepro.serving import foreground

    cap, key, eng = serving_setup(tmp_path, monkeypatch)
    seen = []

    def serve(capture, engine, **kw):          # the foreground server, reduced to its start
        engine.start(f"envrepro-env:{key[:16]}")
        seen.append(usage.read_index()["images"].get(key))
        return 0

    monkeypatch.setattr(foreground, "serve", serve)
    assert commands.serve(str(cap.model_path), engine_factory=lambda: eng).exit_code == 0
    assert eng.started[0]["image"] == f"envrepro-env:{key[:16]}"
    assert seen and list(seen[0]["captures"]) == [str(cap.root)]
    assert images_cmd.prune(eng).removed == []


def test_recording_use_never_fails_the_command(tmp_path, cache_home):
    cap = make_capture(tmp_path / "m")
    eng = FakeEngine([env_image("a" * 32)])
    cache_home.mkdir(parents=True)
    (cache_home / "envrepro").write_text("a file where the cache folder goes")
    why = usage.record_image_use(eng, "envrepro-env:" + "a" * 16, cap)
    assert why.startswith("images index not updated (")
    warned = []
    started = usage.RecordingStarts(eng, cap, warned.append).start("envrepro-env:" + "a" * 16)
    assert started == "ctr1" and warned == [why]
    assert usage.record_image_use(eng, "no/such:image", cap) is None


def test_an_image_untagged_because_the_user_tagged_it_too_still_keeps_its_parent(tmp_path):
    usage.record_use(image_info("k0"), make_capture(tmp_path / "a"))
    env = env_image("c" * 32)
    serving = image("envrepro-serve:" + "5" * 16, env["Config"]["Labels"], on=env)
    serving["RepoTags"].append("team/served:1")
    eng = FakeEngine([env, serving])
    for res in (images_cmd.prune(eng, dry_run=True), images_cmd.prune(eng)):
        assert res.removed == [] and [r.tag for r in res.untagged] == ["envrepro-serve:" + "5" * 16]
        assert [(r.tag, r.children) for r in res.kept] == [("envrepro-env:" + "c" * 16, ["team/served:1"])]
    assert sorted(eng.local) == ["envrepro-env:" + "c" * 16, "team/served:1"] and eng.removed == []


def test_an_image_loaded_from_a_bundle_says_so_in_the_listing(tmp_path, cache_home):
    from envrepro.image import origins

    key = "b1" * 16
    eng = FakeEngine([docker_image(key, "envrepro-env:b1"), docker_image("c2" * 16, "envrepro-env:c2")])
    origins.record_bundle_image(f"sha256:{key[:4]}{'0' * 60}", "/ship/m.tar", "d" * 64, "envrepro-env:b1", key)
    rows = {r.key: r for r in images_cmd.list_images(eng)}
    assert rows[key].bundle == "/ship/m.tar" and rows["c2" * 16].bundle == ""
    lines = images_cmd.render_images([rows[key], rows["c2" * 16]]).splitlines()
    assert lines[0].endswith("loaded from bundle /ship/m.tar") and "bundle" not in lines[1]
