#!/usr/bin/env bash
# Build a local Debian base image for the Dockerfile where base images cannot be pulled (no registry access):
# debootstrap a minimal Debian from Debian's own package mirror, then `docker import` the tree as an image.
#
#   bash tools/build_base_image.sh                  # -> open-toto-base:bookworm (kept if it exists already)
#   bash tools/build_base_image.sh --force          # rebuild it
#   docker build --build-arg BASE_IMAGE=open-toto-base:bookworm ...   (see docs/serving.md, "Container")
#
# Settings (environment): SUITE (default bookworm: its python3 is 3.11, the CPython of the local torch wheel; the
# package needs >= 3.10), MIRROR (default: the first Debian mirror of this machine's apt sources, else
# deb.debian.org), IMAGE (default open-toto-base:$SUITE). Needs root, debootstrap and a running Docker engine.
set -euo pipefail

SUITE=${SUITE:-bookworm}
IMAGE=${IMAGE:-open-toto-base:$SUITE}
# python3-venv brings ensurepip (so `python3 -m venv` gives a venv with pip); passwd gives the Dockerfile useradd.
PACKAGES=python3,python3-venv,python3-pip,ca-certificates,passwd

die() { echo "build_base_image: $*" >&2; exit 1; }

force=false
case "${1:-}" in
  "") ;;
  --force) force=true ;;
  *) die "unknown argument '$1' (the only option is --force)" ;;
esac

[ "$(id -u)" = 0 ] || die "debootstrap needs root: run it as root (or with sudo)"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install -y debootstrap"
docker info >/dev/null 2>&1 || die "no Docker engine answers: start dockerd (make test-container does it)"

if ! $force && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE exists (use --force to rebuild it)"
  exit 0
fi

if [ -z "${MIRROR:-}" ]; then
  MIRROR=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
    /etc/apt/sources.list.d/*.list 2>/dev/null | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n 1 || true)
  MIRROR=${MIRROR% }
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

rootfs=$(mktemp -d /tmp/open-toto-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "debootstrap $SUITE from $MIRROR into $rootfs ..."
start=$(date +%s)
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
  || { tail -n 30 "$rootfs.log" >&2; die "debootstrap failed (full log: $rootfs.log)"; }
rm -f "$rootfs.log"
# apt's caches and lists are not needed in the image.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
chroot "$rootfs" python3 -c 'import sys; assert sys.version_info >= (3, 10), sys.version' \
  || die "$SUITE's python3 is older than 3.10: choose a newer SUITE"

echo "docker import as $IMAGE ..."
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "debootstrap --variant=minbase $SUITE ($PACKAGES) by tools/build_base_image.sh" \
  - "$IMAGE" >/dev/null
echo "$IMAGE built in $(( $(date +%s) - start )) s: $(chroot "$rootfs" python3 --version)"
