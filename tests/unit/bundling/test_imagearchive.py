"""The image archive of a bundle (envrepro.bundling.imagearchive), read whole before docker load:
crafted ``docker save`` archives, each way one could retag or replace an image refused with one
line, what docker save writes accepted, and the stream docker load gets naming no tag."""
import gzip
import hashlib
import io
import json
import lzma
import bz2
import tarfile

import pytest

from envrepro.bundling import imagearchive, loadstream
from envrepro.bundling.members import BundleError

KEY = "0123456789abcdef0123456789abcdef"
TAG = f"envrepro-env:{KEY[:16]}"
BUNDLE = "/ship/m.tar"


def sha(data):
    return hashlib.sha256(data).hexdigest()


def layer(text="hello"):
    """An uncompressed layer: a tar with one file."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("f.txt")
        info.size = len(text.encode())
        tar.addfile(info, io.BytesIO(text.encode()))
    return out.getvalue()


def config(layers, labels=None):
    return json.dumps({"architecture": "amd64", "os": "linux",
                       "config": {"Labels": labels if labels is not None else {"org.envrepro.key": KEY}},
                       "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(b) for b in layers]}}).encode()


def legacy(layers=None, labels=None, tags=(TAG,)):
    """What Docker 20.10's ``docker save TAG`` writes: [(name, data)] (data None: a folder), the id."""
    layers = [layer()] if layers is None else layers
    cfg = config(layers, labels)
    entries, names = [], []
    for i, blob in enumerate(layers):
        v1 = sha(b"v1 %d" % i + blob)
        entries += [(v1, None), (f"{v1}/VERSION", b"1.0"), (f"{v1}/json", b'{"id":"%s"}' % v1.encode()),
                    (f"{v1}/layer.tar", blob)]
        names.append(f"{v1}/layer.tar")
    entries.append((f"{sha(cfg)}.json", cfg))
    entries.append(("manifest.json", json.dumps([{"Config": f"{sha(cfg)}.json", "RepoTags": list(tags) or None,
                                                   "Layers": names}]).encode()))
    if tags:
        repo, _, name = tags[0].rpartition(":")
        entries.append(("repositories", json.dumps({repo: {name: names[-1].split("/")[0]}}).encode()))
    return entries, "sha256:" + sha(cfg)


def oci(layers=None, annotations=None):
    """What Docker 25+ writes: blobs/sha256/..., index.json, oci-layout and its manifest.json."""
    layers = [layer()] if layers is None else layers
    cfg = config(layers)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"digest": "sha256:" + sha(cfg), "size": len(cfg)},
                           "layers": [{"digest": "sha256:" + sha(b), "size": len(b)} for b in layers]}).encode()
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                "digest": "sha256:" + sha(manifest), "size": len(manifest),
                                                "annotations": annotations or {}}]}
    entries = [("blobs", None), ("blobs/sha256", None)]
    entries += [(f"blobs/sha256/{sha(b)}", b) for b in [*layers, cfg, manifest]]
    entries += [("index.json", json.dumps(index).encode()), ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                ("manifest.json", json.dumps([{"Config": f"blobs/sha256/{sha(cfg)}", "RepoTags": [TAG],
                                               "Layers": [f"blobs/sha256/{sha(b)}" for b in layers]}]).encode())]
    return entries, "sha256:" + sha(cfg)


def write(path, entries):
    """A tar of ``entries``: (name, bytes | None for a folder | (tar type, linkname))."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(data, tuple):
                info.type, info.linkname = data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def read(tmp_path, entries, image_id, limit=None):
    return imagearchive.read(write(tmp_path / "image.tar", entries), BUNDLE, TAG, image_id, limit=limit)


def refused(tmp_path, entries, image_id, limit=None):
    with pytest.raises(BundleError) as e:
        read(tmp_path, entries, image_id, limit)
    text = str(e.value)
    assert text.startswith(f"{BUNDLE}: image.tar ") and "\n" not in text and e.value.exit_code == 2
    return text


def replace(entries, name, data):
    return [(n, data if n == name else d) for n, d in entries]


# -- accepted -------------------------------------------------------------------------------------

def test_what_docker_save_writes_is_accepted_legacy_and_oci(tmp_path):
    two = [layer("a"), layer("b")]
    entries, iid = legacy(two)
    got = read(tmp_path, entries, iid)
    assert got.image_id == iid and [b.sha256 for b in got.layers] == [sha(b) for b in two]
    assert got.labels == {"org.envrepro.key": KEY}
    entries, iid = oci(two, {"org.opencontainers.image.ref.name": KEY[:16],
                             "io.containerd.image.name": "docker.io/library/" + TAG})
    assert read(tmp_path, entries, iid).image_id == iid


def test_the_link_docker_save_writes_for_a_repeated_layer_is_read_as_its_target(tmp_path):
    same = layer("same")
    entries, iid = legacy([same, same])
    first, second = [n for n, _ in entries if n.endswith("/layer.tar")]
    entries = replace(entries, second, (tarfile.SYMTYPE, f"../{first.split('/')[0]}/layer.tar"))
    got = read(tmp_path, entries, iid)
    assert [b.sha256 for b in got.layers] == [sha(same)] * 2
    # a link anywhere else, or to anything else, is refused
    for target in ("/etc/passwd", "../" + first.split("/")[0] + "/json", "../" + "f" * 64 + "/layer.tar"):
        assert "is a link" in refused(tmp_path, replace(entries, second, (tarfile.SYMTYPE, target)), iid)


def test_sanitised_stream_holds_config_layers_and_a_manifest_without_tags(tmp_path):
    two = [layer("a"), layer("b")]
    entries, iid = legacy(two)
    got = read(tmp_path, entries, iid)
    stream = loadstream.sanitised(got, BUNDLE)
    raw = b""
    while True:
        chunk = stream.read(1000)        # small reads, as requests makes them
        if not chunk:
            break
        raw += chunk
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}
        kinds = {m.type for m in tar.getmembers()}
    assert kinds <= {tarfile.REGTYPE, tarfile.DIRTYPE}
    cfg_name = iid.split(":")[1] + ".json"
    assert set(files) == {"manifest.json", cfg_name} | {f"{sha(b)}/layer.tar" for b in two}
    assert json.loads(files["manifest.json"]) == [{"Config": cfg_name, "RepoTags": None,
                                                   "Layers": [f"{sha(b)}/layer.tar" for b in two]}]
    assert "repositories" not in files and files[cfg_name] == dict(entries)[cfg_name]


def test_a_blob_changed_after_the_check_breaks_the_stream(tmp_path):
    entries, iid = legacy()
    got = read(tmp_path, entries, iid)
    raw = bytearray(got.path.read_bytes())
    at = got.layers[0].offset + 10
    raw[at] ^= 1
    got.path.write_bytes(bytes(raw))
    with pytest.raises(BundleError) as e:
        loadstream.sanitised(got, BUNDLE).read()
    assert "changed while it was loaded" in str(e.value)


# -- refused: tags -------------------------------------------------------------------------------

def test_a_second_manifest_json_is_refused_not_read_first_wins(tmp_path):
    entries, iid = legacy()
    evil = json.dumps([{"Config": f"{iid[7:]}.json", "RepoTags": ["python:3.11-slim"],
                        "Layers": [n for n, _ in entries if n.endswith("layer.tar")]}]).encode()
    text = refused(tmp_path, entries + [("manifest.json", evil)], iid)
    assert "'manifest.json' twice" in text


@pytest.mark.parametrize("dup", ["./manifest.json", "manifest.json/", ".//manifest.json"])
def test_names_equal_after_normalisation_are_duplicates(tmp_path, dup):
    entries, iid = legacy()
    assert "twice" in refused(tmp_path, entries + [(dup, b"[]")], iid)


def test_a_name_not_in_normal_form_is_refused_alone(tmp_path):
    entries, iid = legacy()
    cfg = f"{iid[7:]}.json"
    moved = [(("./" + n) if n == cfg else n, d) for n, d in entries]
    assert "not in normal form" in refused(tmp_path, moved, iid)
    v1 = entries[0][0]
    moved = [((f"{v1}//VERSION") if n == f"{v1}/VERSION" else n, d) for n, d in entries]
    assert "not in normal form" in refused(tmp_path, moved, iid)


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/../../x", "bad\\name", "ctl\x01"])
def test_unsafe_member_names(tmp_path, name):
    entries, iid = legacy()
    assert "unsafe member name" in refused(tmp_path, entries + [(name, b"x")], iid)


def test_manifest_tags_other_than_the_bundles(tmp_path):
    entries, iid = legacy(tags=(TAG, "python:3.11-slim"))
    assert "would tag python:3.11-slim (manifest.json), not only " + TAG in refused(tmp_path, entries, iid)


def test_a_repositories_file_naming_another_tag(tmp_path):
    entries, iid = legacy()
    evil = json.dumps({"envrepro-env": {KEY[:16]: "a" * 64}, "python": {"3.11-slim": "a" * 64}}).encode()
    assert "would tag python:3.11-slim (repositories)" in refused(tmp_path, replace(entries, "repositories", evil), iid)
    untagged, iid2 = legacy(tags=())        # a repositories file where the manifest names no tag
    evil = json.dumps({"envrepro-test-victim": {"1": "a" * 64}}).encode()
    assert "would tag envrepro-test-victim:1" in refused(tmp_path, untagged + [("repositories", evil)], iid2)


@pytest.mark.parametrize("where", ["index", "descriptor", "manifest"])
@pytest.mark.parametrize("key", ["org.opencontainers.image.ref.name", "io.containerd.image.name"])
def test_oci_name_annotations_other_than_the_bundles(tmp_path, where, key):
    victim = "envrepro-test-victim:1"
    if where == "descriptor":
        entries, iid = oci(annotations={key: victim})
    else:
        entries, iid = oci()
        if where == "index":
            index = json.loads(dict(entries)["index.json"])
            index["annotations"] = {key: victim}
            entries = replace(entries, "index.json", json.dumps(index).encode())
        else:
            man_name, man = next((n, d) for n, d in entries if d and b"schemaVersion" in d)
            doc = json.loads(man)
            doc["annotations"] = {key: victim}
            new = json.dumps(doc).encode()
            entries = [(n, d) for n, d in entries if n != man_name] + [(f"blobs/sha256/{sha(new)}", new)]
    assert f"would tag {victim}" in refused(tmp_path, entries, iid)


# -- refused: more than one image, ids, layers ---------------------------------------------------

def test_two_images_are_refused(tmp_path):
    entries, iid = legacy()
    other, _ = legacy([layer("other")])
    m = json.loads(dict(entries)["manifest.json"]) + json.loads(dict(other)["manifest.json"])
    text = refused(tmp_path, replace(entries, "manifest.json", json.dumps(m).encode()), iid)
    assert "holds 2 images in its manifest.json" in text
    extra_config = [(n, d) for n, d in other if n.endswith(".json") and n != "manifest.json"]
    assert "second image config" in refused(tmp_path, entries + extra_config, iid)
    entries, iid = oci()
    index = json.loads(dict(entries)["index.json"])
    index["manifests"] *= 2
    assert "holds 2 images in its index.json" in refused(
        tmp_path, replace(entries, "index.json", json.dumps(index).encode()), iid)


def test_config_digest_and_bundle_id_mismatches(tmp_path):
    entries, iid = legacy()
    cfg = f"{iid[7:]}.json"
    edited = dict(entries)[cfg].replace(b'"amd64"', b'"arm64"')
    assert "whose sha256 is not its name" in refused(tmp_path, replace(entries, cfg, edited), iid)
    assert "not the bundle's" in refused(tmp_path, entries, "sha256:" + "e" * 64)


def test_a_layer_that_is_not_the_configs(tmp_path):
    entries, iid = legacy()
    name = next(n for n, _ in entries if n.endswith("layer.tar"))
    assert "sha256 differs from rootfs.diff_ids" in refused(tmp_path, replace(entries, name, layer("evil")), iid)
    unlisted = entries + [("f" * 64, None), ("f" * 64 + "/layer.tar", layer("x"))]
    assert "not a layer of its image" in refused(tmp_path, unlisted, iid)


@pytest.mark.parametrize("pack", [gzip.compress, bz2.compress, lzma.compress,
                                  lambda b: b"\x28\xb5\x2f\xfd" + b],
                         ids=["gzip", "bzip2", "xz", "zstd"])
def test_compressed_layers_are_refused(tmp_path, pack):
    packed = pack(layer())
    entries, iid = legacy([packed])         # the config names the compressed blob: only its magic tells
    assert "-compressed layer" in refused(tmp_path, entries, iid)


def test_foreign_layers_and_unknown_fields(tmp_path):
    entries, iid = legacy()
    m = json.loads(dict(entries)["manifest.json"])
    m[0]["LayerSources"] = {"sha256:" + "a" * 64: {"urls": ["https://example.invalid/x"]}}
    assert "foreign layers" in refused(tmp_path, replace(entries, "manifest.json", json.dumps(m).encode()), iid)
    m = json.loads(dict(entries)["manifest.json"])
    m[0]["Extra"] = 1
    assert "fields docker save does not write" in refused(
        tmp_path, replace(entries, "manifest.json", json.dumps(m).encode()), iid)


# -- refused: member kinds, unknown members, sizes ------------------------------------------------

@pytest.mark.parametrize("kind,needle", [((tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
                                         ((tarfile.LNKTYPE, "manifest.json"), "is a link"),
                                         ((tarfile.CHRTYPE, ""), "device"),
                                         ((tarfile.FIFOTYPE, ""), "FIFO")])
def test_members_that_are_not_files_or_folders(tmp_path, kind, needle):
    entries, iid = legacy()
    assert needle in refused(tmp_path, entries + [("oci-layout", kind)], iid)


def test_members_docker_save_does_not_write(tmp_path):
    entries, iid = legacy()
    assert "docker save does not write" in refused(tmp_path, entries + [("evil.sh", b"#!/bin/sh")], iid)
    assert "docker save does not write" in refused(tmp_path, entries + [("etc", None)], iid)
    text = refused(tmp_path, [(n, d) for n, d in entries if n != "manifest.json"], iid)
    assert "no manifest.json" in text
    write(tmp_path / "image.tar", [])
    (tmp_path / "image.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(BundleError) as e:
        imagearchive.read(tmp_path / "image.tar", BUNDLE, TAG, iid)
    assert "not a docker save archive" in str(e.value)


def test_size_limits_total_and_per_member(tmp_path, monkeypatch):
    big = layer("x" * 5000)
    entries, iid = legacy([big])
    assert read(tmp_path, entries, iid, limit=1 << 20)
    assert "is larger than 4096 bytes" in refused(tmp_path, entries, iid, limit=4096)
    monkeypatch.setenv(imagearchive.LIMIT_ENV, "4k")
    assert imagearchive.limit_from_env() == 4096
    with pytest.raises(BundleError) as e:
        imagearchive.read(write(tmp_path / "image.tar", entries), BUNDLE, TAG, iid)
    assert imagearchive.LIMIT_ENV in str(e.value)
    monkeypatch.setenv(imagearchive.LIMIT_ENV, "lots")
    with pytest.raises(BundleError) as e:
        imagearchive.limit_from_env()
    assert "is not a size" in str(e.value)
    monkeypatch.delenv(imagearchive.LIMIT_ENV)
    assert imagearchive.limit_from_env() == 64 << 30
    # a JSON member too large to be metadata
    monkeypatch.setattr(imagearchive, "JSON_MAX", 100)
    assert "implausibly large" in refused(tmp_path, entries, iid)
