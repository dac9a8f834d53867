#!/usr/bin/env bash
# The main job, end to end: save the example custom-layer model with the envrepro hook (capture),
# then `envrepro load` it in a reproduced Docker environment and verify its prediction.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
venv="$(bash scripts/dev-venv.sh)"
bash scripts/ensure-docker.sh
out="$here/demo-out"
rm -rf "$out"; mkdir -p "$out"

echo "== 1. train and save examples/custom_layer_model.py with the envrepro hook"
(cd examples && "$venv/bin/python" custom_layer_model.py "$out")
model="$(ls -d "$out"/custom_model* | grep -v envrepro | head -1)"

echo "== 2. what was captured"
"$venv/bin/envrepro" inspect "$model"

# The product's default base is python:X.Y-slim from Docker Hub. Where no registry can be
# reached (air-gapped machines, like CI here), a local stand-in with the same tag is built once.
pyver="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if ! docker image inspect "python:$pyver-slim" >/dev/null 2>&1; then
  if ! timeout 120 docker pull -q "python:$pyver-slim" >/dev/null 2>&1; then
    echo "== no registry reachable: building a local stand-in for python:$pyver-slim"
    "$venv/bin/python" tests/e2e/standins.py "$pyver"
  fi
fi

echo "== 3. envrepro load (image built or reused, model loaded in a sandboxed container, reference checked)"
"$venv/bin/envrepro" load "$model"
