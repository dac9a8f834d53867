"""A capture whose lock has a direct reference, through ``ensure_image`` and the CLI with the fake
engine: refused by default before anything is pulled, fetched or built (exit 2, one line); with
--allow-direct-references the host downloads the https sdist, checks it, builds it in a container
with no network and installs it from the wheelhouse with --require-hashes; never through the
Dockerfile builder. The download is faked by an opener (tests/unit/packages/test_directrefs.py
tests the real one)."""
import hashlib
import os
from pathlib import Path

import pytest

from envrepro import cli, commandbase
from envrepro.errors import EnvreproError
from envrepro.image import ensure as images
from envrepro.packages import directrefs
from envrepro.packages.wheelhouse import prepare as plan, sdists
from envrepro.sidecar import manifest, writer
from envrepro.sidecar.manifest import Capture

try:
    from .fakes import FakeEngine, image, make_capture
    from .test_commitbuild import PIP, PROBE
    from .test_wheelhouse import FILES, LOCK, FakePip
    from .test_directrefs import FakeOpener
except ImportError:
    from fakes import FakeEngine, image, make_capture
    from test_commitbuild import PIP, PROBE
    from test_wheelhouse import FILES, LOCK, FakePip
    from test_directrefs import FakeOpener

SDIST = FILES["termcolor-1.1.0.tar.gz"]
SDIST_SHA = hashlib.sha256(SDIST).hexdigest()
URL = "https://files.example/packages/termcolor-1.1.0.tar.gz"
DIRECT = f"termcolor @ {URL} \\\n    --hash=sha256:{SDIST_SHA}\n"


def lock_with(line):
    """LOCK with its index pin of termcolor replaced by ``line``."""
    kept = "".join(x + "\n" for x in LOCK.splitlines() if "termcolor" not in x and SDIST_SHA not in x)
    head, sep, tail = kept.partition("\n# The following packages")
    return head + line + sep + tail


@pytest.fixture
def capture(tmp_path, monkeypatch):
    monkeypatch.setenv(directrefs.ENV, "0")      # restored (unset) after the test, whatever the CLI set
    monkeypatch.delenv("ENVREPRO_DOCKERFILE_PIP_CREDENTIALS", raising=False)
    root = tmp_path / "m.envrepro"
    root.mkdir()
    (root / "requirements.lock").write_text(lock_with(DIRECT))
    real = plan.fetching.fetch
    monkeypatch.setattr(plan.fetching, "fetch", lambda *a, **k: real(*a, **dict(k, run=FakePip())))

    def tools(requires, target, dest, run=None):
        for name in requires:
            (Path(dest) / f"{name}-1.0-py3-none-any.whl").write_bytes(name.encode())
    monkeypatch.setattr(sdists, "fetch_tools", tools)
    return Capture(root=root, data={"python": {"version": "3.8.18"}, "frameworks": {"tensorflow": "2.4.1"}})


@pytest.fixture
def opener(monkeypatch):
    served = FakeOpener(SDIST, URL)
    monkeypatch.setattr(directrefs, "opener", lambda cert=None: served)
    return served


def engine(with_base=True):
    """A FakeEngine whose runs answer the platform probe, and build an sdist mounted at /mnt/src
    into its wheel in /mnt/out (recording what each run was given)."""
    base = dict(image("python:3.8-slim"), Config={"Labels": {}, "Cmd": ["python3"],
                                                   "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]})
    eng = FakeEngine([base] if with_base else [])
    staged = []

    def run(image_, command=None, **kw):
        mounts = {m.target: Path(m.source) for m in kw.get("mounts") or []}
        eng.runs.append(dict(kw, image=image_, command=command,
                             held={t: sorted(p.name for p in m.rglob("*")) for t, m in mounts.items()}))
        if "/mnt/src" not in mounts:
            return 0, PROBE, ""
        (sdist,) = [p for p in mounts["/mnt/src"].iterdir()]
        name, version = sdist.name[: -len(".tar.gz")].rsplit("-", 1)
        (mounts["/mnt/out"] / f"{name}-{version}-py3-none-any.whl").write_bytes(b"built " + sdist.read_bytes())
        return 0, f"Successfully built {name}\n", ""
    eng.run = run
    real = eng.commit_run

    def commit_run(img, command, tag, mounts=(), *args, **kwargs):
        folder = next(Path(m.source) for m in mounts if m.target == "/mnt")
        staged.append({str(p.relative_to(folder)): (p.read_text() if p.is_file() and p.suffix == ".lock" else None)
                       for p in folder.rglob("*")})
        return real(img, command, tag, mounts, *args, **kwargs)
    eng.commit_run = commit_run
    return eng, staged


def no_log_written():
    logs = Path(os.environ["XDG_CACHE_HOME"]) / "envrepro" / "logs"
    return not logs.exists() or not list(logs.iterdir())


def test_refused_by_default_before_anything_is_pulled_fetched_or_built(capture, opener):
    eng, _ = engine(with_base=False)
    with pytest.raises(directrefs.DirectReferenceRefused) as e:
        images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None)
    msg = str(e.value)
    assert e.value.exit_code == 2 and "\n" not in msg
    assert msg.startswith(f"{capture.lock_path}: lock line ") and f"termcolor @ {URL} is a direct reference" in msg
    assert "--allow-direct-references" in msg
    assert eng.pulls == [] and eng.runs == [] and eng.builds == [] and opener.requests == [] and no_log_written()


def test_allowed_the_sdist_is_downloaded_checked_built_with_no_network_and_installed_with_hashes(capture, opener,
                                                                                                  monkeypatch):
    monkeypatch.setenv(directrefs.ENV, "1")
    eng, staged = engine()
    lines = []
    info = images.ensure_image(capture, eng, pip=PIP, on_progress=lines.append)
    assert info.builder == "wheelhouse" and info.built_from_source == ["termcolor"] and eng.builds == []
    assert [r.full_url for r in opener.requests] == [URL]
    (build,) = [r for r in eng.runs if "/mnt/src" in r["held"]]
    assert build["network_disabled"] is True and build["user"] == "65534:65534" and build["cap_drop"] == ("ALL",)
    assert build["held"]["/mnt/src"] == ["termcolor-1.1.0.tar.gz"]
    wheel_sha = hashlib.sha256(b"built " + SDIST).hexdigest()
    rest = staged[-1]
    assert "require-hashes" in rest and "wheels/termcolor-1.1.0-py3-none-any.whl" in rest
    installed = "".join(text for text in rest.values() if text)
    assert f"termcolor==1.1.0 \\\n    --hash=sha256:{wheel_sha}" in installed and "https://" not in installed
    assert any("in a container of python:3.8-slim of its own (no network" in line for line in lines)
    # built once: the next build of the same lock finds the wheel, downloads nothing, builds nothing
    eng.remove_image(info.tag)
    again = images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None)
    assert again.built and len(opener.requests) == 1 and len([r for r in eng.runs if "/mnt/src" in r["held"]]) == 1
    # the image exists: used without the flag (nothing to fetch or build), built again only with it
    monkeypatch.setenv(directrefs.ENV, "0")
    assert images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None).source == "local"
    eng.remove_image(info.tag)
    with pytest.raises(directrefs.DirectReferenceRefused):
        images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None)


def test_a_direct_wheel_is_used_as_it_is_when_it_fits_and_refused_before_download_when_not(capture, opener,
                                                                                            monkeypatch):
    monkeypatch.setenv(directrefs.ENV, "1")
    wheel = b"a pure wheel"
    url = "https://files.example/termcolor-1.1.0-py3-none-any.whl"
    capture.lock_path.write_text(lock_with(f"termcolor @ {url}#sha256={hashlib.sha256(wheel).hexdigest()}\n"))
    opener.body, opener.url = wheel, url
    eng, staged = engine()
    info = images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None)
    assert info.built_from_source == [] and "wheels/termcolor-1.1.0-py3-none-any.whl" in staged[-1]
    assert not [r for r in eng.runs if "/mnt/src" in r["held"]]
    mac = "https://files.example/termcolor-1.1.0-cp38-cp38-macosx_11_0_arm64.whl"
    capture.lock_path.write_text(lock_with(f"termcolor @ {mac}#sha256={'f' * 64}\n"))
    capture.parsed_lock = None
    eng, _ = engine()
    with pytest.raises(directrefs.DirectReferenceRefused, match="a wheel the image's Python .* can't install") as e:
        images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None)
    assert e.value.exit_code == 2 and len(opener.requests) == 1


def test_a_download_that_is_not_the_pinned_file_fails_the_build_and_tags_nothing(capture, opener, monkeypatch):
    monkeypatch.setenv(directrefs.ENV, "1")
    opener.body = b"trojaned termcolor"
    eng, _ = engine()
    with pytest.raises(images.BuildFailed, match=r"\(hash mismatch\)") as e:
        images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None)
    assert e.value.exit_code == 4 and "full build log" in str(e.value)
    assert "the direct reference termcolor" in str(e.value) and "check the URL" in e.value.fix
    assert not [t for i in eng.store for t in i.get("RepoTags") or [] if t.startswith("envrepro-env:")]
    assert not [r for r in eng.runs if "/mnt/src" in r["held"]]


@pytest.mark.parametrize("env, why", [({"ENVREPRO_BUILDER": "dockerfile"}, "ENVREPRO_BUILDER=dockerfile"),
                                      ({"DOCKER_HOST": "tcp://10.0.0.5:2376"}, "the engine is remote")])
def test_the_dockerfile_builder_never_builds_a_lock_with_direct_references(capture, opener, monkeypatch, env, why):
    monkeypatch.setenv(directrefs.ENV, "1")
    monkeypatch.setenv("ENVREPRO_DOCKERFILE_PIP_CREDENTIALS", "1")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    eng, _ = engine(with_base=False)
    with pytest.raises(directrefs.DirectReferenceRefused) as e:
        images.ensure_image(capture, eng, pip=PIP, on_progress=lambda line: None)
    assert e.value.exit_code == 2 and "built only by the wheelhouse builder on a local engine" in str(e.value)
    assert f"Dockerfile builder ({why}" in str(e.value)
    assert eng.pulls == [] and eng.runs == [] and eng.builds == [] and opener.requests == []


def test_envrepro_dockerfile_prints_it_and_says_so(capture):
    text = images.dockerfile_for(capture)
    head = text.splitlines()[:5]
    assert head[0] == f"# envrepro: this lock has direct references (termcolor @ {URL})."
    assert all(line.startswith("# ") for line in head) and "--allow-direct-references" in "\n".join(head)
    assert "FROM " in text


def test_the_cli_refuses_in_one_line_and_the_flag_lets_the_check_go_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(directrefs.ENV, "0")
    cap = make_capture(tmp_path / "c")
    cap.lock_path.write_text(f"tensorflow-cpu==2.4.1\n{DIRECT}")
    writer.write_manifest(cap.root, {k: v for k, v in cap.data.items() if k != "files"})
    model = manifest.read(cap.root).root.parent / "my_model"
    eng, _ = engine(with_base=False)
    monkeypatch.setattr(commandbase, "default_engine", lambda: eng)

    def run_cli(*args):
        with pytest.raises(SystemExit) as e:
            cli.main([str(a) for a in args])
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("envrepro: error: ")]
        return e.value.code, err

    for command in (["load", model], ["run", model, "--", "true"], ["bundle", model, "-o", tmp_path / "b.tar"],
                    ["build", model, "--serve"], ["push", model, "--registry", "reg.example:5000"]):
        code, err = run_cli(*command)
        assert code == 2 and len(err) == 1 and "is a direct reference" in err[0], (command, err)
        assert "--allow-direct-references" in err[0] and "Traceback" not in err[0]
    monkeypatch.setenv("ENVREPRO_BUILDER", "dockerfile")       # past the flag: the builder's own refusal
    code, err = run_cli("load", model, "--allow-direct-references")
    assert code == 2 and "built only by the wheelhouse builder" in err[0]
    assert eng.pulls == [] and eng.builds == [] and eng.runs == []
