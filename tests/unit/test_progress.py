"""What long work shows (envrepro.progress): steps with counts and elapsed time on a terminal,
plain step lines elsewhere, tools' output in the build log and on screen only when verbose, and
the old ``Callable[[str], None]`` protocol still working everywhere. No Docker, no network."""
import io
import re
import sys
import time

import pytest

from envrepro import cli, progress, reporter
from envrepro.image import ensure as images
from envrepro.packages.pipconfig import PipSettings
from envrepro.sidecar import lockfile
from envrepro.sidecar.manifest import Capture
from envrepro.packages.wheelhouse import fetch
from envrepro.packages.wheelhouse.store import WheelStore

try:
    from .fakes import LOCK, FakeEngine, image
    from .test_commitbuild import PIP, capture, engine_with_base  # noqa: F401 - capture: a fixture
    from .test_wheelhouse import LOCK as WHEELHOUSE_LOCK
    from .test_wheelhouse import TARGET, FakePip
except ImportError:
    from fakes import LOCK, FakeEngine, image
    from test_commitbuild import PIP, capture, engine_with_base  # noqa: F401
    from test_wheelhouse import LOCK as WHEELHOUSE_LOCK
    from test_wheelhouse import TARGET, FakePip

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PIP_LINES = ["envrepro: installing tools.lock from the wheelhouse (no index) ",
             "Processing /mnt/wheels/setuptools-56.0.0-py3-none-any.whl (from -r /mnt/tools.lock (line 1))",
             "Installing collected packages: setuptools",
             "Successfully installed setuptools-56.0.0",
             "envrepro: installing heavy.lock from the wheelhouse (no index) --require-hashes",
             "Processing /mnt/wheels/numpy-1.19.5-cp38-cp38-manylinux2010_x86_64.whl (from -r /mnt/heavy.lock (line 1))",
             "Processing /mnt/wheels/six-1.16.0-py2.py3-none-any.whl (from -r /mnt/heavy.lock (line 4))",
             "Processing /mnt/wheels/tensorflow_cpu-2.4.1-cp38-cp38-manylinux2010_x86_64.whl (from -r /mnt/heavy.lock (line 6))",
             "Installing collected packages: six, numpy, tensorflow-cpu",
             "Successfully installed numpy-1.19.5 six-1.16.0 tensorflow-cpu-2.4.1"]


class TTY(io.StringIO):
    """A terminal, as far as the reporter can tell."""

    def isatty(self):
        return True


def screen(stream):
    """What a terminal ends up showing, roughly: ANSI codes dropped, each redraw its own line."""
    return [line.strip() for line in ANSI.sub("", stream.getvalue()).replace("\r", "\n").splitlines()
            if line.strip()]


def finished(lines, title):
    return [line for line in lines if line.startswith(("✔ " + title, "✘ " + title))]


def test_elapsed_reads_like_a_duration():
    assert progress.elapsed(12.34) == "12.3 s" and progress.elapsed(0) == "0.0 s"
    assert progress.elapsed(125.2) == "2 min 05 s"


def test_a_terminal_shows_each_step_finished_with_its_count_note_and_time_and_no_tool_output():
    out = TTY()
    r = reporter.Reporter(out)
    r("Building envrepro-env:abc from the wheelhouse")
    with progress.step(r, "Fetching 3 files into the wheelhouse", total=3, unit="files") as s:
        r.log("Processing /opt/pypi/files/six-1.16.0-py2.py3-none-any.whl")
        s.advance(1, detail="six")
        time.sleep(0.3)                     # a live redraw or two
        s.advance(2)
        s.done("3 downloaded")
    r.close()
    lines = screen(out)
    assert "Building envrepro-env:abc from the wheelhouse" in lines
    [done] = finished(lines, "Fetching 3 files")
    assert re.fullmatch(r"✔ Fetching 3 files into the wheelhouse\s+3 downloaded\s+3/3 files\s+0\.\d s", done), done
    assert any(re.search(r"Fetching 3 files .*six\s+1/3 files\s+\d\.\d s", line) for line in lines), lines
    assert not any("Processing" in line for line in lines)
    assert "\x1b[" in out.getvalue()        # a live display, not plain lines


def test_verbose_shows_the_tools_output_too():
    out = TTY()
    r = reporter.Reporter(out, verbose=True)
    with progress.step(r, "Installing the rest of the lock", total=1, unit="packages"):
        r.log("Processing /mnt/wheels/six-1.16.0-py2.py3-none-any.whl")
    r.close()
    assert "Processing /mnt/wheels/six-1.16.0-py2.py3-none-any.whl" in screen(out)


def test_off_a_terminal_one_plain_line_per_step_event_and_no_ansi_codes():
    out = io.StringIO()
    r = reporter.Reporter(out)
    r("Building envrepro-env:abc from the wheelhouse")
    s = progress.step(r, "Fetching 2 files into the wheelhouse", total=2, unit="files")
    r.log("Processing /opt/pypi/files/six-1.16.0-py2.py3-none-any.whl")
    s.advance(2)
    s.done("2 downloaded")
    with pytest.raises(RuntimeError):
        with progress.step(r, "Installing TensorFlow's closure", total=5, unit="packages") as t:
            t.advance(3)
            raise RuntimeError("pip failed")
    r.close()
    text = out.getvalue()
    assert "\x1b" not in text and "Processing" not in text
    lines = text.splitlines()
    assert lines[:3] == ["Building envrepro-env:abc from the wheelhouse",
                         "[step] Fetching 2 files into the wheelhouse (2 files)",
                         lines[2]] and len(lines) == 5
    assert re.fullmatch(r"\[ ok \] Fetching 2 files into the wheelhouse: 2/2 files, 2 downloaded \(\d\.\d s\)", lines[2])
    assert lines[3] == "[step] Installing TensorFlow's closure (5 packages)"
    assert re.fullmatch(r"\[fail\] Installing TensorFlow's closure: 3/5 packages \(\d\.\d s\)", lines[4])


def test_json_mode_prints_the_step_lines_only():
    out = io.StringIO()
    r = reporter.Reporter(out, live=False, messages=False)
    r("Using local image envrepro-env:abc")
    progress.step(r, "Loading the model in a sandbox container").done()
    r.close()
    assert [line.split(" (")[0] for line in out.getvalue().splitlines()] == [
        "[step] Loading the model in a sandbox container", "[ ok ] Loading the model in a sandbox container"]


def test_a_step_still_running_at_close_failed_and_shows_what_it_logged():
    out = io.StringIO()
    r = reporter.Reporter(out)
    progress.step(r, "Installing the rest of the lock")
    r.log("ERROR: THESE PACKAGES DO NOT MATCH THE HASHES")
    r.close()
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("[fail] Installing the rest of the lock")
    assert lines[2] == "  | ERROR: THESE PACKAGES DO NOT MATCH THE HASHES"


def test_docker_build_output_said_as_messages_becomes_steps():
    """The serving image's build says Docker's lines as messages: its steps show, its output not."""
    out = io.StringIO()
    r = reporter.Reporter(out)
    for line in ["Step 1/2 : FROM envrepro-env:abc", " ---> 0123", "Step 2/2 : COPY model /envrepro/model",
                 " ---> Running in 4567", "Successfully built 89ab", "Successfully tagged x:y",
                 "Self-check: starting the server"]:
        r(line)
    r.close()
    lines = [line.split(" (")[0] for line in out.getvalue().splitlines()]
    assert lines == ["[step] Step 1/2 : FROM envrepro-env:abc", "[ ok ] Step 1/2 : FROM envrepro-env:abc",
                     "[step] Step 2/2 : COPY model /envrepro/model", "[ ok ] Step 2/2 : COPY model /envrepro/model",
                     "Self-check: starting the server"]


def test_a_plain_callable_still_gets_every_line():
    """The old protocol: steps become their title (and "title: note"), counts are dropped."""
    lines = []
    s = progress.step(lines.append, "Fetching 2 files into the wheelhouse", total=2, unit="files")
    s.advance(1, detail="six")
    progress.log(lines.append, "Processing six")
    progress.note(lines.append, "Using envrepro-heavy:1")
    s.done("2 downloaded")
    s.done("again")                           # once only
    assert lines == ["Fetching 2 files into the wheelhouse", "Processing six", "Using envrepro-heavy:1",
                     "Fetching 2 files into the wheelhouse: 2 downloaded"]


def test_the_build_log_gets_lines_and_steps_and_passes_plain_strings_on_as_log_lines(tmp_path):
    out = io.StringIO()
    r = reporter.Reporter(out)
    log = progress.BuildLog(r)
    log("pulled layer 1")                       # before the log file is open: written when it is
    with open(tmp_path / "build.log", "w", encoding="utf-8") as f:
        log.attach(f)
        log.note("Building envrepro-env:abc")
        with progress.step(log, "Installing the rest of the lock", total=1, unit="packages") as s:
            log("Processing /mnt/wheels/six-1.16.0-py2.py3-none-any.whl")
            s.advance()
        log.detach()
    r.close()
    written = (tmp_path / "build.log").read_text().splitlines()
    assert written[:4] == ["pulled layer 1", "Building envrepro-env:abc", "==> Installing the rest of the lock",
                           "Processing /mnt/wheels/six-1.16.0-py2.py3-none-any.whl"]
    assert re.fullmatch(r"--> done after \d\.\d s: Installing the rest of the lock", written[4])
    shown = out.getvalue()
    assert "Processing" not in shown and "pulled layer" not in shown and "Building envrepro-env:abc" in shown
    assert "[ ok ] Installing the rest of the lock: 1/1 packages" in shown


def test_a_wheelhouse_build_on_a_terminal_shows_its_steps_and_logs_pips_lines(capture, monkeypatch):
    monkeypatch.delenv("ENVREPRO_BUILDER", raising=False)
    eng, _ = engine_with_base()
    eng.commit_lines = PIP_LINES          # the fake says it in both containers (this lock has no rest)
    out = TTY()
    r = reporter.Reporter(out)
    info = images.ensure_image(capture, eng, pip=PIP, on_progress=r)
    r.close()
    lines = screen(out)
    assert info.builder == "wheelhouse"
    [fetched] = finished(lines, "Fetching 4 files into the wheelhouse")
    assert re.search(r"4 downloaded\s+4/4 files\s+\d\.\d s$", fetched), fetched
    heavy = finished(lines, "Installing TensorFlow's closure")
    assert len(heavy) == 1 and re.search(r"4/4 packages\s+\d\.\d s$", heavy[0]), lines
    assert finished(lines, "Committing envrepro-heavy:")     # pip installed the last lock file
    assert finished(lines, "Installing the rest of the lock")
    assert any(line.startswith("build log: ") for line in lines)
    assert not any("Processing" in line or "Successfully installed" in line for line in lines)
    logged = info.log_path.read_text()
    assert "Processing /mnt/wheels/numpy-1.19.5" in logged and "==> Installing TensorFlow's closure" in logged


def test_a_failed_wheelhouse_build_marks_its_step_failed(capture, monkeypatch):
    monkeypatch.delenv("ENVREPRO_BUILDER", raising=False)
    eng, _ = engine_with_base()
    eng.commit_error = True
    out = io.StringIO()
    r = reporter.Reporter(out)
    with pytest.raises(images.BuildFailed):
        images.ensure_image(capture, eng, pip=PIP, on_progress=r)
    r.close()
    assert re.search(r"^\[fail\] Installing TensorFlow's closure: 0/4 packages",
                     out.getvalue(), re.M), out.getvalue()


def test_the_dockerfile_builder_shows_each_docker_step(tmp_path):
    root = tmp_path / "m.envrepro"
    root.mkdir()
    (root / "requirements.lock").write_text(LOCK)
    cap = Capture(root=root, data={"python": {"version": "3.8.18"}, "frameworks": {"tensorflow": "2.4.1"}})
    out = io.StringIO()
    r = reporter.Reporter(out)
    info = images.ensure_image(cap, FakeEngine([image("python:3.8-slim", digest="python@sha256:" + "0" * 64)]),
                               pip=PipSettings(), on_progress=r)
    r.close()
    lines = out.getvalue().splitlines()
    assert info.builder == "dockerfile"
    steps = [line for line in lines if line.startswith("[ ok ] Step ")]
    assert steps and all(re.search(r"Step \d+/\d+ : ", line) for line in steps)
    assert "Step 1/" in info.log_path.read_text()


def test_fetch_counts_files_as_pip_reports_them(tmp_path):
    """A streaming runner: pip's lines reach the log as they come, and each file the progress."""
    done, started, logged = [], [], []

    class StreamingPip(FakePip):
        streams = True

        def __call__(self, argv, on_line=None):
            for line in open(argv[argv.index("-r") + 1]):
                name = line.split()[0].split("==")[0]
                on_line(f"Processing /opt/pypi/files/{name}-1.0-py3-none-any.whl (from -r req.txt (line 1))")
            return super().__call__(argv)

    entries = [e for e in lockfile.parse_lock(WHEELHOUSE_LOCK, include_unsafe=True) if e.name != "termcolor"]
    got = fetch.fetch(entries, TARGET, WheelStore(tmp_path / "wheels"), logged.append, run=StreamingPip(),
                      on_file=done.append, on_start=started.append)
    assert sorted(done) == sorted(e.name for e in entries) == sorted(got.files)
    assert any(line.startswith("Processing /opt/pypi/files/numpy") for line in logged)
    assert "numpy-1.0-py3-none-any.whl" in started


def test_pip_output_is_streamed_line_by_line():
    seen = []
    code, out = fetch._run([sys.executable, "-c", "print('Collecting six'); print('Saved ./six.whl')"], seen.append)
    assert code == 0 and seen == ["Collecting six", "Saved ./six.whl"] and out.splitlines() == seen


@pytest.mark.parametrize("command", ["load", "bundle", "build", "push", "serve", "run", "shell"])
def test_the_commands_that_build_take_verbose(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    assert "--verbose" in out
    if command == "run":     # its command line goes on to the user's command: no -v taken from it
        assert "-v " not in out.replace("--verbose", "")
