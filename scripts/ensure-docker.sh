#!/usr/bin/env bash
# Make a Docker engine answer: start one when none does (root on Debian/Ubuntu: install
# docker.io and run dockerd in the background). Exits non-zero with one line when it can't.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "ensure-docker: no Docker engine answers and this is not root: start Docker (Docker Desktop, or 'sudo systemctl start docker') and retry" >&2
  exit 3
fi
if ! command -v dockerd >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "ensure-docker: installing Debian's docker.io ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q docker.io >/dev/null
  else
    echo "ensure-docker: no dockerd and no apt-get: install Docker Engine and retry" >&2
    exit 3
  fi
fi
log="${TMPDIR:-/tmp}/envrepro-dockerd.log"
echo "ensure-docker: starting dockerd (log: $log) ..." >&2
# appended: an earlier engine's last words stay readable; its own session (setsid), so that the
# end of the process group that started it (a test's, a job's) doesn't take the engine with it
if command -v setsid >/dev/null 2>&1; then
  setsid nohup dockerd >>"$log" 2>&1 < /dev/null &
else
  nohup dockerd >>"$log" 2>&1 &
fi
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "ensure-docker: engine up ($(docker info --format '{{.ServerVersion}} {{.Driver}}'))" >&2
    exit 0
  fi
  sleep 1
done
echo "ensure-docker: dockerd did not answer within 60 s; see $log" >&2
tail -5 "$log" >&2 || true
exit 3
