#!/usr/bin/env bash
# Builds Folio's container images from what this machine has, with no image registry:
#   folio-debian:bookworm  Debian bookworm (minbase + ca-certificates), made with debootstrap
#                          from Debian's package mirror and loaded with `docker import`
#   folio:dev              ./Dockerfile on that base, holding a `folio` binary
#   folio-s3:dev           moto (from PyPI), an S3-compatible server that enforces conditional
#                          PUTs, on the same base; `docker-compose.yml` uses it as the bucket
#
# Usage: scripts/image.sh [--bin PATH]
#   --bin PATH  put this `folio` binary in the image (the tests pass their own build's);
#               default: build the release binary and use it.
# Safe to rerun: the base and the S3 image are made once per machine (delete them with
# `docker rmi` to remake them); folio:dev is rebuilt every time. Needs root for debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    *) echo "usage: scripts/image.sh [--bin PATH]" >&2; exit 2 ;;
  esac
done

cache="$(dirname "$CARGO_TARGET_DIR")"
mirror="${FOLIO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# A root file system from Debian's packages, trimmed of documentation and package lists.
make_rootfs() {
  local dir="$1" include="$2"
  if ! command -v debootstrap >/dev/null; then
    echo "image: installing debootstrap" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq debootstrap >/dev/null
  fi
  $sudo rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  echo "image: debootstrap bookworm into $dir (about a minute)" >&2
  $sudo debootstrap --variant=minbase --include="$include" bookworm "$dir" "$mirror" >/dev/null
}

trim_rootfs() {
  local dir="$1"
  $sudo rm -rf "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
    "$dir"/usr/share/locale/* "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin \
    "$dir"/var/cache/apt/archives/*.deb "$dir"/tmp/*
}

if ! have_image folio-debian:bookworm; then
  root="$cache/rootfs-bookworm"
  make_rootfs "$root" ca-certificates
  trim_rootfs "$root"
  $sudo tar -C "$root" -c . | docker import - folio-debian:bookworm >/dev/null
  $sudo rm -rf "$root"
fi

if ! have_image folio-s3:dev; then
  root="$cache/rootfs-s3"
  make_rootfs "$root" ca-certificates,python3,python3-venv
  # moto's wheels come from PyPI through the host's pip (and its certificate settings), then
  # install offline inside the root file system, whose Python is the same 3.11.
  wheels="$root/tmp/wheels"
  $sudo mkdir -p "$wheels"
  $sudo python3 -m pip download -q -d "$wheels" 'moto[server]'
  $sudo chroot "$root" /usr/bin/python3 -m venv /opt/moto
  $sudo chroot "$root" /opt/moto/bin/pip install -q --no-index --find-links /tmp/wheels \
    'moto[server]'
  trim_rootfs "$root"
  # The server: moto on port 5000 with the bucket Folio uses already made.
  $sudo tee "$root/opt/moto/serve.py" >/dev/null <<'PY'
"""moto's S3 server on 0.0.0.0:5000 with the buckets named in FOLIO_S3_BUCKETS (default: folio)."""
import os
import threading
import urllib.request

from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="0.0.0.0", port=5000)
server.start()
for bucket in os.environ.get("FOLIO_S3_BUCKETS", "folio").split(","):
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:5000/{bucket}", method="PUT"))
print("moto serving on :5000", flush=True)
threading.Event().wait()
PY
  $sudo tar -C "$root" -c . | docker import \
    --change 'USER 10001:10001' \
    --change 'EXPOSE 5000' \
    --change 'CMD ["/opt/moto/bin/python", "/opt/moto/serve.py"]' \
    - folio-s3:dev >/dev/null
  $sudo rm -rf "$root"
fi

if [ -z "$bin" ]; then
  release="$cache/target-release"
  echo "image: building the release binary in $release" >&2
  CARGO_TARGET_DIR="$release" cargo build --release -q -p folio-cli
  bin="$release/release/folio"
fi
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/data"
cp Dockerfile "$ctx/"
# Debug builds carry hundreds of MiB of debug info the image does not need.
objcopy --strip-debug "$bin" "$ctx/folio"
old_id=$(docker image inspect -f '{{.Id}}' folio:dev 2>/dev/null || true)
DOCKER_BUILDKIT=0 docker build -q --build-arg BASE=folio-debian:bookworm -t folio:dev \
  "$ctx" >/dev/null
# The image it replaces would be left dangling, a couple of hundred MB each time.
new_id=$(docker image inspect -f '{{.Id}}' folio:dev)
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
  docker rmi "$old_id" >/dev/null 2>&1 || true
fi
docker run --rm folio:dev --version
