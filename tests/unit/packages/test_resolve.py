"""envrepro.packages.compile without network: interpreter choice, the clean pip environment, index options,
and how a failed pip-compile is reported (a stand-in interpreter prints pip's error)."""
import os
import stat

import pytest

from envrepro.packages import compile as resolve
from envrepro.packages.pipconfig import PipSettings
from envrepro.errors import PlatformError


def test_pip_env_drops_the_hosts_pip_settings(monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_CONSTRAINT", "/etc/c.txt")
    env = resolve.pip_env()
    assert "PIP_FIND_LINKS" not in env and "PIP_CONSTRAINT" not in env
    assert env["PIP_CONFIG_FILE"] == os.devnull and env["PIP_NO_INPUT"] == "1"


def test_index_args_are_the_builds_settings():
    pip = PipSettings(index_url="https://idx.example/simple", extra_index_urls=("https://b.example/simple",),
                      trusted_hosts=("b.example",), cert="/etc/ca.pem")
    assert resolve.index_args(pip) == ["--index-url", "https://idx.example/simple", "--extra-index-url",
                                       "https://b.example/simple", "--trusted-host", "b.example",
                                       "--cert", "/etc/ca.pem"]
    assert resolve.index_args(PipSettings()) == []


def test_needs_a_linux_host(monkeypatch, tmp_path):
    monkeypatch.setattr(resolve.sys, "platform", "darwin")
    with pytest.raises(PlatformError, match="needs a Linux host"):
        resolve.piptools_python("3.11", tmp_path, PipSettings(), lambda line: None)


def test_no_interpreter_of_that_version(monkeypatch, tmp_path):
    monkeypatch.setattr(resolve, "find_python", lambda xy: None)
    with pytest.raises(PlatformError) as e:
        resolve.piptools_python("3.7", tmp_path, PipSettings(), lambda line: None)
    assert "no Python 3.7" in str(e.value) and "pyenv install 3.7" in str(e.value)


def test_failed_pip_compile_names_the_missing_pins(monkeypatch, tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ERROR: Could not find a version that satisfies the requirement "
                    "h5py==3.9.0 (from versions: 3.10.0)'\necho 'ERROR: No matching distribution found "
                    "for h5py==3.9.0'\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(resolve, "piptools_python", lambda *a: str(fake))
    with pytest.raises(resolve.ResolutionFailed) as e:
        resolve.pip_compile("h5py==3.9.0\n", "", "3.11", PipSettings(), tmp_path, lambda line: None)
    assert e.value.missing == ["h5py"] and "No matching distribution" in str(e.value)
    assert e.value.exit_code == 4


def test_pip_compile_is_binary_only_and_stands_in_for_sdist_only_pins(monkeypatch, tmp_path):
    """Every pip-compile run gets --only-binary :all:; an sdist-only pin gets a stand-in wheel
    (find-links), the lock comes back without the options pip-compile echoes, with a note."""
    log = tmp_path / "argv.log"
    fake = tmp_path / "python"
    fake.write_text(f"""#!/bin/sh
echo "$@" >> {log}
case "$*" in
  *"index versions"*) echo 'Available versions: 2.0.0, 1.1.0'; exit 0;;
esac
case "$*" in
  *--find-links*)
    while [ "$1" != "--output-file" ]; do shift; done
    printf -- '--only-binary :all:\\n--find-links /tmp/x\\n\\ntermcolor==1.1.0\\n    # via -r requirements.in\\n' > "$2"
    exit 0;;
esac
echo 'ERROR: Could not find a version that satisfies the requirement termcolor~=1.1.0 (from versions: 2.0.0)'
exit 1
""")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(resolve, "piptools_python", lambda *a: str(fake))
    notes = []
    out = resolve.pip_compile("termcolor~=1.1.0\n", "", "3.8", PipSettings(), tmp_path, lambda line: None, notes)
    assert out == "\ntermcolor==1.1.0\n    # via -r requirements.in\n"
    compiles = [l for l in log.read_text().splitlines() if "piptools compile" in l]
    assert len(compiles) == 2 and all("--pip-args --only-binary :all:" in l for l in compiles)
    assert "--find-links" in compiles[1] and "sdist-stand-ins" in compiles[1]
    assert len(notes) == 1 and "termcolor==1.1.0" in notes[0] and "setup.py" in notes[0]
