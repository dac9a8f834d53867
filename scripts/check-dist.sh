#!/usr/bin/env bash
# envrepro as users get it: build the sdist and the wheel the PyPA way, check them, install each
# into a fresh virtualenv and prove both work; prints the installed `envrepro` command's path (the
# wheel's) on stdout, for the end-to-end tests (ENVREPRO_UNDER_TEST).
#
#   bash scripts/check-dist.sh [OUT_DIR]      (default: $TMPDIR/envrepro-dist)
#
# Fails on: a build warning (setuptools deprecations, files it would ignore), `twine check
# --strict`, `check-wheel-contents`, a wheel or sdist install whose files differ, an installed
# command that doesn't answer --version, pipx (and uv, where it installs) not giving a working
# `envrepro`. Everything it makes lives under OUT_DIR, outside the clone.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
out="${1:-${TMPDIR:-/tmp}/envrepro-dist}"
say() { echo "check-dist: $*" >&2; }
# pip's own chatter (this machine's find-links and extra indexes) goes to a log, shown on failure.
quiet_pip() { local log; log="$(mktemp)"; if ! "$@" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; return 1; fi; rm -f "$log"; }

tools="${ENVREPRO_DEV_CACHE:-$HOME/.cache/envrepro-dev}/dist-tools-$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if ! "$tools/bin/python" -c 'import build, twine, check_wheel_contents, pipx' >/dev/null 2>&1; then
  say "installing build, twine, check-wheel-contents, pipx and uv into $tools"
  rm -rf "$tools"; "$py" -m venv "$tools"
  quiet_pip "$tools/bin/pip" install -q --upgrade pip
  quiet_pip "$tools/bin/pip" install -q build twine check-wheel-contents pipx
  quiet_pip "$tools/bin/pip" install -q uv || say "uv did not install here: its check is skipped"
fi

rm -rf "$out"; mkdir -p "$out/dist"
t0=$(date +%s)
# A fresh copy of what git tracks (plus untracked, unignored files): what a clone builds from.
src="$out/src"; mkdir -p "$src"
(cd "$here" && git ls-files -co --exclude-standard -z | xargs -0 -I{} cp --parents {} "$src/" 2>/dev/null) \
  || cp -r "$here/." "$src/"
# PYTHONDONTWRITEBYTECODE only makes setuptools say it skips byte-compiling: not a finding.
if ! env -u PYTHONDONTWRITEBYTECODE "$tools/bin/python" -m build --outdir "$out/dist" "$src" >"$out/build.log" 2>&1; then
  tail -40 "$out/build.log" >&2; say "python -m build failed (log: $out/build.log)"; exit 1
fi
if grep -inE 'warning|deprecat|would be ignored' "$out/build.log" >"$out/build-warnings.txt"; then
  cat "$out/build-warnings.txt" >&2
  say "the build printed warnings (above; log: $out/build.log): fix them, a clean build prints none"
  exit 1
fi
wheel="$(ls "$out"/dist/envrepro-*.whl)"; sdist="$(ls "$out"/dist/envrepro-*.tar.gz)"
"$tools/bin/twine" check --strict "$wheel" "$sdist" >&2
"$tools/bin/check-wheel-contents" "$wheel" >&2

# The wheel, in a fresh venv, used from a folder outside the clone.
"$py" -m venv "$out/venv-wheel"
# with the `signing` extra (OpenSSF model signing; Python 3.10+): the end-to-end tests sign and verify
quiet_pip "$out/venv-wheel/bin/pip" install -q "${wheel}[signing]"
cd "$out"
"$out/venv-wheel/bin/envrepro" --version >&2
# The sdist once: it builds, installs and imports, and holds the same files as the wheel.
"$py" -m venv "$out/venv-sdist"
quiet_pip "$out/venv-sdist/bin/pip" install -q "$sdist"
files() {   # the envrepro files an install holds (its RECORD), one per line
  "$1/bin/python" - <<'EOF'
from importlib import metadata
print("\n".join(sorted(str(f) for f in metadata.files("envrepro") if str(f).startswith("envrepro/")
                       and "__pycache__" not in str(f))))
EOF
}
"$out/venv-sdist/bin/python" -c "import envrepro.cli, envrepro.bundling.write, envrepro.packages.wheelhouse.store, envrepro.images; from envrepro import shipped; shipped.text('envrepro.images', 'env.Dockerfile'); shipped.runtime_dir()"
if ! diff <(files "$out/venv-wheel") <(files "$out/venv-sdist") >&2; then
  say "the install from the sdist holds other files than the install from the wheel (diff above)"; exit 1
fi

# `pipx install .` and `uv tool install .` (the README's commands, run on the clone's copy) give a
# working `envrepro` command.
PIPX_HOME="$out/pipx" PIPX_BIN_DIR="$out/pipx/bin" PIPX_MAN_DIR="$out/pipx/man" \
  "$tools/bin/pipx" install --python "$py" "$src" >"$out/pipx.log" 2>&1 || { cat "$out/pipx.log" >&2; say "pipx install failed"; exit 1; }
"$out/pipx/bin/envrepro" --version >&2
if [ -x "$tools/bin/uv" ]; then
  UV_TOOL_DIR="$out/uv/tools" UV_TOOL_BIN_DIR="$out/uv/bin" UV_CACHE_DIR="${ENVREPRO_DEV_CACHE:-$HOME/.cache/envrepro-dev}/uv-cache" \
    "$tools/bin/uv" tool install --python "$py" "$src" >"$out/uv.log" 2>&1 || { cat "$out/uv.log" >&2; say "uv tool install failed"; exit 1; }
  "$out/uv/bin/envrepro" --version >&2
fi

wsize=$(stat -c %s "$wheel"); ssize=$(stat -c %s "$sdist")
wcount=$("$tools/bin/python" -c "import sys, zipfile; print(len(zipfile.ZipFile(sys.argv[1]).namelist()))" "$wheel")
scount=$(tar -tzf "$sdist" | grep -vc '/$')
say "wheel $(basename "$wheel"): $((wsize / 1024)) KiB, $wcount files; sdist: $((ssize / 1024)) KiB, $scount files; built, checked and installed 4 ways in $(( $(date +%s) - t0 )) s"
echo "$out/venv-wheel/bin/envrepro"
