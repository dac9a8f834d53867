"""Config ``require_signature: true`` with ``trusted_keys:``: every command that runs or ships a
capture refuses one no trusted key signed (or that differs from what was signed) before the
engine is reached, one line and exit 2; a capture the team signed loads as before (fake engine).
Without the setting nothing changes, even with OpenSSF model signing missing."""
import sys

import pytest

from envrepro import commandbase, commands, config, sharecommands
from envrepro.errors import EnvreproError
from envrepro.signing.scope import SignatureError, signature_for

from fakes import FakeEngine, cache_home, image, loader_report, make_capture, report_stdout  # noqa: F401
from signing_keys import key_pair, one_error, run_cli, write_config


def no_engine():
    raise AssertionError("the engine must not be reached")


def loads_here():
    return FakeEngine(local=[image("python:3.8-slim")], run_result=(0, report_stdout(loader_report()), ""))


@pytest.fixture
def team(tmp_path):
    return key_pair(tmp_path / "keys", "team")


@pytest.fixture
def required(team):
    """require_signature: true, the team's public key trusted."""
    write_config([team[1]])
    return team


def every_gated_command(model, out_dir):
    """Each command that runs or ships a capture, with an engine that must not be reached."""
    return {
        "load": lambda: commands.load(model, engine_factory=no_engine, quiet=True),
        "run": lambda: commands.run(model, ["--", "true"], engine_factory=no_engine),
        "shell": lambda: commands.shell(model, engine_factory=no_engine, runner=lambda argv: 0),
        "build --serve": lambda: commands.build(model, engine_factory=no_engine, quiet=True),
        "serve": lambda: commands.serve(model, engine_factory=no_engine),
        "push": lambda: sharecommands.push(model, registry="127.0.0.1:5000", engine_factory=no_engine, quiet=True),
        "bundle": lambda: sharecommands.bundle(model, str(out_dir / "b.tar"), engine_factory=no_engine, quiet=True),
        "bundle --wheels": lambda: sharecommands.bundle(model, str(out_dir / "w.tar"), wheels=True,
                                                   engine_factory=no_engine, quiet=True),
        "dockerfile --serve": lambda: commands.dockerfile(model, serve=True, output=str(out_dir / "ctx")),
        "doctor --try": lambda: commands.doctor(model, try_load=True),
    }


def test_an_unsigned_capture_is_refused_by_every_command_before_the_engine(tmp_path, required):
    cap = make_capture(tmp_path / "m")
    for name, run in every_gated_command(str(cap.model_path), tmp_path).items():
        with pytest.raises(SignatureError) as e:
            run()
        assert "unsigned" in str(e.value) and "require_signature is set" in str(e.value), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "keys", "m"], \
        "no bundle, no build context written"


def test_the_cli_says_it_in_one_line_with_exit_2(tmp_path, required, capsys, monkeypatch):
    cap = make_capture(tmp_path / "m")
    monkeypatch.setattr(commandbase, "default_engine", no_engine)
    for argv in (["load", cap.model_path], ["serve", cap.model_path], ["push", cap.model_path, "--registry", "127.0.0.1:5000"],
                 ["bundle", cap.model_path, "-o", tmp_path / "b.tar"]):
        code, out, err = run_cli(capsys, *argv)
        line = one_error(err)
        assert code == 2 and out == "", argv
        assert line.startswith(f"envrepro: error: {cap.model_path}: unsigned (no my_model.envrepro.sig beside it); "
                               f"refused, require_signature is set in {config.config_path()}"), line


def test_a_capture_the_team_signed_loads(tmp_path, required):
    cap = make_capture(tmp_path / "m")
    sharecommands.sign(str(cap.model_path), str(required[0]))
    eng = loads_here()
    report = commands.load(str(cap.model_path), engine_factory=lambda: eng, quiet=True)
    assert report.ok and len(eng.runs) == 1


def test_signed_by_another_key_or_changed_since_is_refused(tmp_path, required):
    cap = make_capture(tmp_path / "m")
    stranger, _ = key_pair(tmp_path / "keys", "stranger")
    sharecommands.sign(str(cap.model_path), str(stranger))
    with pytest.raises(SignatureError, match="signed by a key that is not trusted here"):
        commands.load(str(cap.model_path), engine_factory=no_engine)
    sharecommands.sign(str(cap.model_path), str(required[0]))
    (cap.root / "snapshot" / "custom_layers.py").write_text("X = 2\n")   # the seal breaks too:
    with pytest.raises(EnvreproError, match="snapshot file edited"):   # the capture check says it first
        commands.load(str(cap.model_path), engine_factory=no_engine)
    (cap.root / "snapshot" / "custom_layers.py").write_text("X = 1\n")
    other = make_capture(tmp_path / "other", python={"version": "3.9.18"})
    sharecommands.sign(str(other.model_path), str(required[0]))
    signature_for(cap.model_path).write_bytes(signature_for(other.model_path).read_bytes())
    with pytest.raises(SignatureError, match="differs from what team.pub signed: changed my_model.envrepro/envrepro.yaml"):
        commands.serve(str(cap.model_path), engine_factory=no_engine)


def test_a_required_signature_with_no_trusted_key_refuses_everything(tmp_path, team, capsys, monkeypatch):
    cap = make_capture(tmp_path / "m")
    sharecommands.sign(str(cap.model_path), str(team[0]))
    write_config([], require=True)
    monkeypatch.setattr(commandbase, "default_engine", no_engine)
    code, _, err = run_cli(capsys, "load", cap.model_path)
    assert code == 2 and f"{config.config_path()}: require_signature is set but trusted_keys: lists no public key" \
        in one_error(err)
    write_config([tmp_path / "gone.pub"])
    code, _, err = run_cli(capsys, "load", cap.model_path)
    assert code == 2 and "no public key file at this path" in one_error(err)


@pytest.mark.parametrize("text,needle", [
    ("require_signature: yes please\ntrusted_keys: []\n", "not true or false"),
    ("require_signature: true\ntrusted_keys: team.pub\n", "trusted_keys is not a list"),
    ("require_signature: true\ntrusted_keys: [1, 2]\n", "trusted_keys is not a list"),
    ("require_signature: [true\n", "config file is unreadable"),
])
def test_a_bad_setting_is_one_line(tmp_path, capsys, monkeypatch, text, needle):
    cap = make_capture(tmp_path / "m")
    config.config_path().parent.mkdir(parents=True)
    config.config_path().write_text(text)
    monkeypatch.setattr(commandbase, "default_engine", no_engine)
    code, _, err = run_cli(capsys, "load", cap.model_path)
    assert code == 2 and needle in one_error(err)


def test_relative_trusted_keys_are_read_from_the_config_folder(tmp_path, team):
    folder = config.config_path().parent
    folder.mkdir(parents=True)
    (folder / "team.pub").write_bytes(team[1].read_bytes())
    config.config_path().write_text("require_signature: true\ntrusted_keys: [team.pub]\n")
    assert config.trusted_keys() == [folder / "team.pub"] and config.require_signature() is True
    cap = make_capture(tmp_path / "m")
    sharecommands.sign(str(cap.model_path), str(team[0]))
    assert sharecommands.verify(str(cap.model_path)).key == str(folder / "team.pub")


def test_required_signatures_fail_closed_without_model_signing(tmp_path, required, monkeypatch):
    cap = make_capture(tmp_path / "m")
    sharecommands.sign(str(cap.model_path), str(required[0]))
    for name in [m for m in sys.modules if m == "model_signing" or m.startswith("model_signing.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "model_signing", None)
    with pytest.raises(SignatureError, match=r"not installed here.*pip install 'envrepro\[signing\]'"):
        commands.load(str(cap.model_path), engine_factory=no_engine)


def test_without_the_setting_nothing_is_checked_and_nothing_is_needed(tmp_path, team, monkeypatch):
    cap = make_capture(tmp_path / "m")
    signature_for(cap.model_path).write_text("not even a signature")
    for name in [m for m in sys.modules if m == "model_signing" or m.startswith("model_signing.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "model_signing", None)
    write_config([team[1]], require=False)
    eng = loads_here()
    assert commands.load(str(cap.model_path), engine_factory=lambda: eng, quiet=True).ok
