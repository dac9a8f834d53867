#!/usr/bin/env bash
# Create (or reuse) the development virtualenv: envrepro (editable) + tests + tensorflow-cpu.
# Kept in a machine-wide cache keyed by the dependency set, so fresh clones reuse it.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
cache="${ENVREPRO_DEV_CACHE:-$HOME/.cache/envrepro-dev}"
key="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-$(sha256sum "$here/scripts/dev-venv.sh" | cut -c1-12)"
venv="$cache/venv-$key"
if [ ! -x "$venv/bin/envrepro" ] || ! "$venv/bin/python" -c 'import tensorflow, envrepro' >/dev/null 2>&1; then
  echo "dev-venv: creating $venv (tensorflow-cpu, envrepro and test tools) ..." >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install -q "tensorflow-cpu" "pytest>=7" >&2
fi
# Always point the editable install at this checkout (cheap, no dependency changes).
"$venv/bin/pip" install -q -e "$here[test]" >&2
echo "$venv"
