"""A bundle can neither retag nor replace an image (envrepro.bundling.unpack with
envrepro.bundling.imagearchive), with the fake engine, which loads as Docker 20.10 does (the last
manifest.json wins, RepoTags tag): re-sealed bundles whose image archive would tag a victim are
refused with the victim untouched; an existing ``envrepro-env:KEY`` of another id is never
replaced; docker load gets a stream naming no tag; a tag moved anyway is put back; the image is
recorded as loaded from the bundle and ``envrepro push`` refuses it unless told otherwise."""
import hashlib
import io
import json
import tarfile

import pytest

from envrepro import cli, commandbase, commands
from envrepro.bundling import unpack
from envrepro.bundling.members import BundleError
from envrepro.image import origins

from fakes import FakeEngine, image, loader_report, report_stdout
from test_bundle import _info, rewrite, written_bundle

VICTIM = "envrepro-test-victim:1"
REG = "127.0.0.1:5000/team"


def sha(data):
    return hashlib.sha256(data).hexdigest()


def airgapped(*local):
    return FakeEngine(local=list(local), run_result=(0, report_stdout(loader_report()), ""))


def victim():
    return image(VICTIM, {"role": "victim"})


def inner(path):
    """The bundle's image archive as [(TarInfo, bytes or None)]."""
    with tarfile.open(path) as tar:
        raw = tar.extractfile("image.tar").read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]


def pack(members):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def member(name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def reseal(path, tmp_path, data, image_id=None):
    """Put ``data`` in as the bundle's image.tar and seal the bundle manifest again, as an
    attacker can (its hashes are no signature)."""
    def swap(d):
        for m in d["members"]:
            if m["name"] == "image.tar":
                m.update(size=len(data), sha256=sha(data))
        if image_id:
            d["image"]["id"] = image_id
    rewrite(path, tmp_path / "t.tar", drop={"image.tar"}, manifest=swap, extra=[(_info("image.tar"), data)])
    return path


def load_cli(path, eng, capsys, monkeypatch, *extra):
    monkeypatch.setattr(commandbase, "default_engine", lambda: eng)
    with pytest.raises(SystemExit) as e:
        cli.main(["load", str(path), *extra])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("envrepro")]
    assert "Traceback" not in err and len(lines) <= 1, err
    return e.value.code, (lines[0] if lines else "")


def refused(path, eng, capsys, monkeypatch):
    code, line = load_cli(path, eng, capsys, monkeypatch)
    assert code == 2 and line.startswith(f"envrepro: error: {path}: "), line
    assert not path.with_name(path.name[:-4] + ".bundle").exists(), "nothing put in place"
    return line


def test_a_last_manifest_json_tagging_a_victim_is_refused_and_the_victim_keeps_its_id(tmp_path, capsys,
                                                                                        monkeypatch):
    path, _, _ = written_bundle(tmp_path)
    members = inner(path)
    first = json.loads(next(d for m, d in members if m.name == "manifest.json"))
    first[0]["RepoTags"] = [VICTIM]
    evil = pack(members + [member("manifest.json", json.dumps(first).encode())])
    # the attack is real: docker load of that archive moves the victim's tag
    exposed = airgapped(victim())
    exposed.load_images(io.BytesIO(evil))
    assert exposed.inspect_image(VICTIM)["Id"] != victim()["Id"]

    reseal(path, tmp_path, evil)
    eng = airgapped(victim())
    line = refused(path, eng, capsys, monkeypatch)
    assert "image.tar holds 'manifest.json' twice" in line
    assert eng.inspect_image(VICTIM)["Id"] == victim()["Id"] and not getattr(eng, "loads", [])


def test_an_oci_index_annotation_naming_a_victim_is_refused(tmp_path, capsys, monkeypatch):
    path, _, _ = written_bundle(tmp_path)
    members = inner(path)
    config = next(m.name for m, _ in members if m.name.endswith(".json") and m.name != "manifest.json")
    index = {"schemaVersion": 2, "manifests": [{"digest": "sha256:" + config[:-5], "size": 1,
                                                "annotations": {"io.containerd.image.name": VICTIM}}]}
    reseal(path, tmp_path, pack(members + [member("index.json", json.dumps(index).encode()),
                                           member("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')]))
    eng = airgapped(victim())
    assert f"would tag {VICTIM} (index.json annotations)" in refused(path, eng, capsys, monkeypatch)
    assert eng.inspect_image(VICTIM)["Id"] == victim()["Id"] and not getattr(eng, "loads", [])


def test_a_repositories_file_naming_a_victim_is_refused(tmp_path, capsys, monkeypatch):
    path, _, _ = written_bundle(tmp_path)
    members = [(m, json.dumps({"envrepro-test-victim": {"1": "a" * 64}}).encode() if m.name == "repositories" else d)
               for m, d in inner(path)]
    reseal(path, tmp_path, pack(members))
    eng = airgapped(victim())
    assert f"would tag {VICTIM} (repositories)" in refused(path, eng, capsys, monkeypatch)
    assert eng.inspect_image(VICTIM)["Id"] == victim()["Id"]


def test_an_existing_env_image_of_another_id_is_never_replaced(tmp_path, capsys, monkeypatch):
    path, _, built = written_bundle(tmp_path)
    tag = built.saved[0]
    mine = image(tag, {"org.envrepro.key": "mine"})
    eng = airgapped(mine)
    line = refused(path, eng, capsys, monkeypatch)
    assert f"{tag} already exists here as image {mine['Id'][:19]}" in line and f"docker rmi {tag}" in line
    assert eng.inspect_image(tag)["Id"] == mine["Id"] and not getattr(eng, "loads", [])
    assert origins.bundle_origin(built.inspect_image(tag)["Id"]) is None


def test_a_bundle_image_relabelled_under_the_same_key_is_refused_when_the_key_exists(tmp_path, capsys,
                                                                                     monkeypatch):
    """Another image for the same key (its config changed, so its id), re-sealed with that id:
    refused while the real one is here, and its image is not left behind."""
    path, _, built = written_bundle(tmp_path)
    tag = built.saved[0]
    real = dict(built.inspect_image(tag))
    members = inner(path)
    cfg_name = next(m.name for m, _ in members if m.name.endswith(".json") and m.name != "manifest.json")
    cfg = json.loads(dict((m.name, d) for m, d in members)[cfg_name])
    cfg["config"]["Labels"]["org.envrepro.evil"] = "1"
    new = json.dumps(cfg).encode()
    renamed = [(member(f"{sha(new)}.json", new) if m.name == cfg_name else
                member("manifest.json", d.replace(cfg_name.encode(), f"{sha(new)}.json".encode()))
                if m.name == "manifest.json" else (m, d)) for m, d in members]
    reseal(path, tmp_path, pack(renamed), image_id="sha256:" + sha(new))
    eng = airgapped(real)
    assert "already exists here" in refused(path, eng, capsys, monkeypatch)
    assert eng.inspect_image(tag)["Id"] == real["Id"] and [i["Id"] for i in eng.store] == [real["Id"]]


class TaggingEngine(FakeEngine):
    """An engine whose load tags the victim (and the env tag) whatever the stream says."""

    def load_images(self, fileobj):
        loaded = super().load_images(fileobj)
        for t in (VICTIM, "envrepro-env:sneaky"):
            for other in self.store:
                other["RepoTags"] = [x for x in other.get("RepoTags") or [] if x != t]
            self._find(loaded[0])["RepoTags"].append(t)
        return loaded


def test_a_tag_moved_by_the_load_anyway_is_put_back_and_refused(tmp_path, capsys, monkeypatch):
    path, _, built = written_bundle(tmp_path)
    eng = TaggingEngine(local=[victim()])
    line = refused(path, eng, capsys, monkeypatch)
    assert "docker load tagged envrepro-env:sneaky, envrepro-test-victim:1" in line and "put back" in line
    assert eng.inspect_image(VICTIM)["Id"] == victim()["Id"]
    assert [i.get("RepoTags") for i in eng.store] == [[VICTIM]], "the loaded image was removed again"
    assert not eng.image_exists(built.saved[0])


class RacingEngine(FakeEngine):
    """Another envrepro process tags the bundle's own tag on the same image during the load."""

    tag_to_make = None

    def load_images(self, fileobj):
        loaded = super().load_images(fileobj)
        self.tag(loaded[0], self.tag_to_make)
        return loaded


def test_the_bundles_own_tag_put_on_its_own_image_meanwhile_is_not_a_moved_tag(tmp_path):
    path, _, built = written_bundle(tmp_path)
    eng = RacingEngine(run_result=(0, report_stdout(loader_report()), ""))
    eng.tag_to_make = built.saved[0]
    opened = unpack.open_bundle(str(path), lambda: eng)
    assert eng.inspect_image(built.saved[0])["Id"] == built.inspect_image(built.saved[0])["Id"]
    assert opened.loaded == [built.inspect_image(built.saved[0])["Id"]]


def test_a_tag_that_cannot_be_put_back_is_named(tmp_path, capsys, monkeypatch):
    path, _, _ = written_bundle(tmp_path)
    eng = TaggingEngine(local=[victim()])
    eng.fail_remove = {"envrepro-env:sneaky"}
    line = refused(path, eng, capsys, monkeypatch)
    assert "could not put back envrepro-env:sneaky" in line
    assert eng.inspect_image(VICTIM)["Id"] == victim()["Id"]


def test_a_good_bundle_loads_untagged_then_is_tagged_by_id_and_recorded(tmp_path):
    path, _, built = written_bundle(tmp_path)
    tag = built.saved[0]
    image_id = built.inspect_image(tag)["Id"]
    eng = airgapped(victim())
    report = commands.load(str(path), engine_factory=lambda: eng, quiet=True)
    assert report.ok and eng.loads == [[image_id]], "docker load tagged nothing"
    (names,) = eng.load_members
    assert names == sorted(["manifest.json", f"{image_id[7:]}.json",
                            f"{sha(built.blobs[image_id][1])}/layer.tar"])
    assert eng.inspect_image(tag)["Id"] == image_id and eng.inspect_image(VICTIM)["Id"] == victim()["Id"]
    origin = origins.bundle_origin(image_id)
    assert origin["bundle"] == str(path) and origin["tag"] == tag
    with tarfile.open(path) as tar:
        assert origin["image_archive_sha256"] == sha(tar.extractfile("image.tar").read())
    # the image built here, then the same bundle loaded: an identical image, not marked
    origins.origins_path().unlink()
    here = airgapped(dict(built.inspect_image(tag)))
    unpack.open_bundle(str(path), lambda: here, into=str(tmp_path / "again"))
    assert origins.bundle_origin(image_id) is None


def test_push_refuses_an_image_loaded_from_a_bundle_unless_allowed(tmp_path, capsys, monkeypatch):
    path, _, built = written_bundle(tmp_path)
    eng = airgapped()
    report = commands.load(str(path), engine_factory=lambda: eng, quiet=True)
    model = path.with_name("m.bundle") / "my_model"
    assert report.ok and model.is_dir()
    monkeypatch.setattr(commandbase, "default_engine", lambda: eng)
    with pytest.raises(SystemExit) as e:
        cli.main(["push", str(model), "--registry", REG])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("envrepro")]
    assert e.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"was loaded from bundle {path}" in lines[0] and "--allow-bundle-image" in lines[0]
    assert not getattr(eng, "pushes", [])
    with pytest.raises(SystemExit) as e:
        cli.main(["push", str(model), "--registry", REG, "--allow-bundle-image"])
    assert e.value.code in (0, None), capsys.readouterr().err
    assert eng.pushes and eng.pushes[0].startswith(f"{REG}/envrepro-env:")


def test_refusals_leave_the_bundle_loadable_after_the_conflict_is_gone(tmp_path, capsys, monkeypatch):
    path, _, built = written_bundle(tmp_path)
    tag = built.saved[0]
    eng = airgapped(image(tag, {"org.envrepro.key": "mine"}))
    refused(path, eng, capsys, monkeypatch)
    eng.remove_image(tag)                   # the user trusts the bundle: docker rmi, load again
    code, line = load_cli(path, eng, capsys, monkeypatch)
    assert code in (0, None) and not line.startswith("envrepro: error"), line
    assert eng.inspect_image(tag)["Id"] == built.inspect_image(tag)["Id"]


def test_open_bundle_errors_are_bundle_errors(tmp_path):
    path, _, built = written_bundle(tmp_path)
    tag = built.saved[0]
    with pytest.raises(BundleError) as e:
        unpack.open_bundle(str(path), lambda: airgapped(image(tag)))
    assert e.value.exit_code == 2 and "never replaced" in str(e.value)
