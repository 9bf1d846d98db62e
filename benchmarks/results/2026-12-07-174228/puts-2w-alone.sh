#!/usr/bin/env bash
# folio-2w-1p alone, then after folio-1w-256p, on a fresh group each, against moto.
set -euo pipefail
cd "$(dirname "$0")/../../.."
. benchmarks/lib.sh
start_moto
for w in "folio-2w-1p" "folio-1w-256p,folio-2w-1p"; do
  "$BENCH" --folio-bin "$BIN" --out "$WORK/o" --work-dir "$WORK/w" --etcd-bin /usr/bin/etcd --s3-endpoint "$S3_ENDPOINT" --s3-bucket folio --workloads "$w" 2>&1 | grep "done in" || true
  python3 -c "
import json;d=json.load(open('$WORK/o/results.json'))
for r in d['results'] if 'results' in d else d['workloads']:
    print(r.get('name'), {k:v for k,v in r.items() if 'put' in k.lower() or 'store' in k.lower()})
" 2>&1 | tail -3
  rm -rf "$WORK/w" "$WORK/o"
done
