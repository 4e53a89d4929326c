#!/usr/bin/env bash
# Make sure a Docker engine answers, for `make test-container`: nothing to do when `docker info` works; otherwise,
# as root, install Debian's docker.io and debootstrap if they are missing (apt-get) and start dockerd in the
# background (log: $DOCKERD_LOG, default /tmp/open-toto-dockerd.log). Exits 1 with the reason when no engine can run
# here; the container tests then skip and say why.
set -uo pipefail
DOCKERD_LOG=${DOCKERD_LOG:-/tmp/open-toto-dockerd.log}

say() { echo "docker_engine: $*" >&2; }

docker info >/dev/null 2>&1 && exit 0

if [ "$(id -u)" != 0 ]; then
  say "no Docker engine answers, and only root can start one here (sudo dockerd, or join the docker group)"
  exit 1
fi
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  command -v apt-get >/dev/null || { say "no dockerd and no apt-get to install docker.io"; exit 1; }
  say "installing docker.io and debootstrap (apt-get) ..."
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap; } \
    >/tmp/open-toto-apt.log 2>&1 || { tail -n 5 /tmp/open-toto-apt.log >&2; say "apt-get failed"; exit 1; }
fi

say "starting dockerd (log: $DOCKERD_LOG) ..."
nohup dockerd >"$DOCKERD_LOG" 2>&1 &
pid=$!
for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then
    say "dockerd is up (pid $pid); it keeps running after the tests"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 1
done
tail -n 5 "$DOCKERD_LOG" >&2
say "dockerd did not come up"
exit 1
