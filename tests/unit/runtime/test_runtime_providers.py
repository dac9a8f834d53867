"""envrepro/runtime/providers.py without TensorFlow: the ``Prefix>Name`` strings of a model's
config, the modules a prefix may come from, and the rule that a model file only ever makes the
probe import a module an installed distribution provides (a same-named file on a code path or in
the working directory is never imported). The Keras registry is faked: each fake package keeps
the names it "registers" in ``REGISTERED``."""
import json
import sys
import zipfile

import pytest

from envrepro.runtime import providers
from envrepro.runtime.distributions import Distributions

CONFIG = {"class_name": "Sequential", "config": {"layers": [
    {"class_name": "Dense", "config": {"activation": "team>swishy"}},
    {"class_name": "Regpkg>Thing", "config": {}},
    {"module": None, "class_name": "Mine", "registered_name": "Custom>Mine"},
    {"class_name": "Shadowpkg>Other", "config": {"name": "a>b c"}}]}}


def _keras_file(path, config=CONFIG):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
    return path


def _installed(site, name, source):
    """A distribution ``name`` 1.0 installed in ``site`` (dist-info with RECORD)."""
    pkg = site / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(source)
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "top_level.txt").write_text(name + "\n")
    (info / "RECORD").write_text(f"{name}/__init__.py,,\n{name}-1.0.dist-info/METADATA,,\n")


@pytest.fixture
def world(tmp_path, monkeypatch):
    """site/ holds the installed regpkg; code/ (first on sys.path) holds shadowpkg.py, a user
    file no distribution installed. The registry is what the imported fake packages register."""
    site, code = tmp_path / "site", tmp_path / "code"
    _installed(site, "regpkg", 'REGISTERED = {"Regpkg>Thing": object}\n')
    code.mkdir()
    (code / "shadowpkg.py").write_text('REGISTERED = {"Shadowpkg>Other": object}\n')
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(code))
    names = ("regpkg", "shadowpkg")
    monkeypatch.setattr(providers, "registries", lambda: [
        sys.modules[n].REGISTERED for n in names if n in sys.modules])
    yield site, code
    for name in names:
        sys.modules.pop(name, None)


def test_registered_names_of_a_keras_config(tmp_path):
    assert providers.registered_names(str(_keras_file(tmp_path / "m.keras")), "keras") == {
        "Custom": ["Custom>Mine"], "Regpkg": ["Regpkg>Thing"], "Shadowpkg": ["Shadowpkg>Other"],
        "team": ["team>swishy"]}


def test_registered_names_of_a_savedmodel_prefer_keras_metadata(tmp_path):
    """Keras 2.5+ writes keras_metadata.pb; TF 2.4 keeps the JSON inside saved_model.pb. Both
    hold the JSON strings as they are (read without decoding the protobuf)."""
    sm = tmp_path / "sm"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(b"\x08\x01\x12" + json.dumps(
        {"class_name": "Addons>GroupNormalization"}).encode() + b"\x00")
    assert providers.registered_names(str(sm), "savedmodel") == {
        "Addons": ["Addons>GroupNormalization"]}
    (sm / "keras_metadata.pb").write_bytes(b"\x0a\x05" + json.dumps(CONFIG).encode())
    assert sorted(providers.registered_names(str(sm), "savedmodel")) == [
        "Custom", "Regpkg", "Shadowpkg", "team"]


def test_candidates_known_table_then_exact_lowercase():
    assert providers.candidates("Addons") == ("tensorflow_addons",)
    assert providers.candidates("Text") == ("tensorflow_text", "official.nlp.modeling")
    assert providers.candidates("keras_cv") == ("keras_cv",)
    assert providers.candidates("Regpkg") == ("regpkg",)
    assert providers.candidates("Custom") == ()          # Keras' default package: user code
    assert providers.candidates("my-pkg") == () and providers.candidates("a.b") == ()


def test_installed_module_is_imported_and_a_user_file_is_not(world, tmp_path):
    site, code = world
    warnings = []
    dists = Distributions()
    model = str(_keras_file(tmp_path / "m.keras"))
    assert providers.import_providers(model, "keras", dists, warnings) == ["regpkg"]
    assert "regpkg" in sys.modules and "shadowpkg" not in sys.modules
    assert warnings == ["imported regpkg (installed: regpkg 1.0) for the registered prefix "
                        "Regpkg> the model's config uses (Regpkg>Thing); the loader imports it too"]
    # already registered now: nothing more to import, nothing said
    assert providers.import_providers(model, "keras", dists, []) == []


def test_a_file_shadowing_an_installed_module_is_not_imported(world, tmp_path):
    """regpkg is installed, but a regpkg.py first on sys.path is what Python would import: the
    model file can't make the probe run it."""
    site, code = world
    (code / "regpkg.py").write_text("raise SystemExit('a model file made the probe import me')\n")
    dists = Distributions()
    assert providers.installed("regpkg", dists) is None
    warnings = []
    assert providers.import_providers(str(_keras_file(tmp_path / "m.keras")), "keras", dists,
                                      warnings) == []
    assert "regpkg" not in sys.modules and warnings == []


def test_skip_and_framework_tops(world, tmp_path):
    dists = Distributions()
    model = str(_keras_file(tmp_path / "m.keras"))
    assert providers.import_providers(model, "keras", dists, [], skip=("regpkg",)) == []
    assert "regpkg" not in sys.modules
    assert providers.installed("tensorflow", dists) is None


def test_unreadable_file_is_a_warning(tmp_path):
    bad = tmp_path / "m.keras"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    warnings = []
    assert providers.import_providers(str(bad), "keras", Distributions([]), warnings) == []
    assert len(warnings) == 1 and warnings[0].startswith("could not read the model's registered names")
