#!/usr/bin/env bash
# Generates Folio's Python gRPC stubs from proto/ into clients/python/folio_pb (not committed:
# always generated from the protos in this checkout). Needs grpcio-tools (scripts/setup.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
out="$here/folio_pb"
rm -rf "$out"
mkdir -p "$out"
python3 -m grpc_tools.protoc -I "$root/proto" --python_out="$out" --grpc_python_out="$out" \
  folio/volume/v1/volume.proto folio/admin/v1/admin.proto
# Make the generated tree importable as packages.
find "$out" -type d -exec touch {}/__init__.py \;
