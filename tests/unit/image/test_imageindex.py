"""The images index and prune (envrepro.image.inventory) with the fake engine."""
from envrepro.image import inventory as images_cmd
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
    images_cmd.record_use(image_info(key, base_image=base), cap)
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
    before = images_cmd.index_path().read_text()

    eng.fail_remove.add("envrepro-env:orphan")
    res = images_cmd.prune(eng)
    assert sorted(r.tag for r in res.removed) == ["envrepro-env:changed", "envrepro-env:gone"]
    assert [r.key for r in res.kept] == [k_a]
    assert "envrepro-env:orphan" in res.failed
    assert "could not remove envrepro-env:orphan" in images_cmd.render_prune(res)
    assert len(eng.removed) == 2
    idx = images_cmd.read_index()
    assert set(idx["images"]) == {k_a} and before != images_cmd.index_path().read_text()
    assert res.to_dict()["freed_bytes"] == 200_000_000


def test_prune_without_a_recorded_base_compares_the_lock(tmp_path):
    a = make_capture(tmp_path / "a")
    images_cmd.record_use(image_info("k1", base_image=None), a)
    eng = FakeEngine([docker_image("k1", "envrepro-env:k1")])
    assert images_cmd.prune(eng, dry_run=True).removed == []
    (a.root / "requirements.lock").write_text("numpy==2.0.0\n")
    writer.write_manifest(a.root, dict(a.data))
    res = images_cmd.prune(eng, dry_run=True)
    assert [r.key for r in res.removed] == ["k1"]
    assert res.removed[0].stale[str(a.root)] == "capture was taken again into another environment"


def test_prune_with_exact_key_function(tmp_path):
    a = make_capture(tmp_path / "a")
    images_cmd.record_use(image_info("k1"), a)
    eng = FakeEngine([docker_image("k1", "envrepro-env:k1")])
    assert images_cmd.prune(eng, dry_run=True, key_for=lambda c: "k1").removed == []
    res = images_cmd.prune(eng, dry_run=True, key_for=lambda c: "k9")
    assert [r.key for r in res.removed] == ["k1"]
    assert "now uses image key k9" in res.removed[0].stale[str(a.root)]


def test_index_is_a_cache(tmp_path, cache_home):
    p = images_cmd.index_path()
    assert p == cache_home / "envrepro" / "index.json"
    assert images_cmd.read_index() == {"version": 1, "images": {}}
    p.parent.mkdir(parents=True)
    p.write_text("{not json")
    assert images_cmd.read_index()["images"] == {}
    images_cmd.record_use(image_info("k1"), make_capture(tmp_path))
    assert list(images_cmd.read_index()["images"]) == ["k1"]
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
    path = images_cmd.index_path()
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
