#!/bin/sh
# pip for the environment venv, in the builder stages only (never in the final image).
# The base's pip installs into the venv with --python (pip >= 22.3), so the venv holds exactly
# the lock; older bases (python:3.6) fall back to a venv with its own bootstrapped pip.
set -e
VENV=/opt/envrepro/venv
if [ "$1" = "--create" ]; then
  if python3 -m pip --version 2>/dev/null | awk '{split($2, v, "."); exit !((v[1] > 22) || (v[1] == 22 && v[2] >= 3))}'; then
    python3 -m venv --without-pip "$VENV"
  else
    python3 -m venv "$VENV"
  fi
  exit 0
fi
if [ -x "$VENV/bin/pip" ]; then
  exec "$VENV/bin/python" -m pip "$@"
fi
# The base interpreter (the venv's own python3 may come first on PATH): pyvenv.cfg's "home".
home=$(sed -n 's/^home *= *//p' "$VENV/pyvenv.cfg")
exec "$home/python3" -m pip --python "$VENV/bin/python" "$@"
