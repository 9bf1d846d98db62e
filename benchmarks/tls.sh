#!/usr/bin/env bash
# What TLS and client tokens cost end to end, on this machine. Starts two 3-node groups of
# release-built `folio server` processes on 127.0.0.1: one plaintext, one with [tls] (mutual TLS
# between peers, certificates from a CA made here with openssl) and [auth] (an Ed25519 key and an
# admin token made with `folio token`). Runs the same `folio-bench` workloads against each as an
# external group, alternating, ROUNDS times, and writes every round's results.json and a summary
# of medians and ratios to benchmarks/results/<date>-tls/. Everything started is torn down on exit.
#   benchmarks/tls.sh [ROUNDS] [WORKLOADS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
WORKLOADS=${2:-grpc-rtt,folio-1w-1p,folio-1w-16p,folio-16w-1p,folio-read-cached}
[[ "$ROUNDS" =~ ^[1-9][0-9]?$ ]] || { echo "usage: benchmarks/tls.sh [ROUNDS] [WORKLOADS]" >&2; exit 2; }
. benchmarks/lib.sh

# The CA and the nodes' certificates, as the README's "Node certificates" makes them.
PKI="$WORK/pki"
mkdir -p "$PKI"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$PKI/ca.key" -out "$PKI/ca.pem" -days 2 -subj "/CN=folio bench CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
for i in 1 2 3; do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$PKI/node$i.key" -out "$PKI/node$i.csr" -subj "/CN=folio bench node $i" 2>/dev/null
  printf '%s\n' "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature" \
    "extendedKeyUsage = serverAuth, clientAuth" \
    "subjectAltName = URI:spiffe://folio/group/1/node/$i, IP:127.0.0.1" > "$PKI/node$i.ext"
  openssl x509 -req -in "$PKI/node$i.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$PKI/node$i.ext" -out "$PKI/node$i.pem" 2>/dev/null
done
"$BIN" token keygen --id k1 --out "$PKI" >/dev/null
"$BIN" token issue --key "$PKI/k1.key" --scope admin --ttl 12h > "$PKI/admin.token"

join() { local IFS=,; echo "$*"; }

GROUP_DIR="$WORK/plain"
OBJECT_STORE_TOML="kind = \"local\"
path = \"$WORK/plain/objects\""
start_group
PLAIN=$(join "${addrs[@]}")

node_extra() {
  printf '[tls]\ncert = "%s"\nkey = "%s"\nca = "%s"\n[auth]\n[[auth.keys]]\nid = "k1"\npublic_key = "%s"\n' \
    "$PKI/node$1.pem" "$PKI/node$1.key" "$PKI/ca.pem" "$PKI/k1.pub"
}
ADMIN_ARGS=(--ca "$PKI/ca.pem" --token-file "$PKI/admin.token")
GROUP_DIR="$WORK/secure"
OBJECT_STORE_TOML="kind = \"local\"
path = \"$WORK/secure/objects\""
start_group
SECURE=$(join "${addrs[@]}")

OUT="benchmarks/results/$(date -u +%Y-%m-%d-%H%M%S)-tls"
mkdir -p "$OUT"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM, Linux $(uname -r)"
  echo "groups: two 3-node groups on 127.0.0.1, local-directory object store; secure: [tls] P-256 certificates, [auth] one Ed25519 key, an admin token"
  echo "command: benchmarks/tls.sh $ROUNDS $WORKLOADS"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

for r in $(seq 1 "$ROUNDS"); do
  echo "=== round $r of $ROUNDS: plaintext"
  "$BENCH" --addr "$PLAIN" --workloads "$WORKLOADS" --out "$OUT/plain-$r" --work-dir "$WORK/bench"
  echo "=== round $r of $ROUNDS: TLS and tokens"
  "$BENCH" --addr "$SECURE" --ca "$PKI/ca.pem" --token-file "$PKI/admin.token" \
    --workloads "$WORKLOADS" --out "$OUT/secure-$r" --work-dir "$WORK/bench"
done

python3 - "$OUT" "$ROUNDS" > "$OUT/summary.md" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(kind):
    by = {}
    for r in range(1, rounds + 1):
        for w in json.load(open(f"{out}/{kind}-{r}/results.json"))["workloads"]:
            by.setdefault(w["name"], []).append(w)
    return by
plain, secure = load("plain"), load("secure")
med = lambda ws, k: statistics.median(w[k] for w in ws)
print(f"Medians over {rounds} alternating rounds (see machine.txt).\n")
print("| workload | plaintext p50 | TLS+token p50 | ratio | plaintext p99 | TLS+token p99 | plaintext ops/s | TLS+token ops/s |")
print("|---|---|---|---|---|---|---|---|")
for name, ws in plain.items():
    if name not in secure:
        continue
    p, s = med(ws, "p50_us"), med(secure[name], "p50_us")
    print(f"| {name} | {p:.0f} us | {s:.0f} us | {s / p:.2f} | {med(ws, 'p99_us'):.0f} us | "
          f"{med(secure[name], 'p99_us'):.0f} us | {med(ws, 'ops_per_s'):.0f} | {med(secure[name], 'ops_per_s'):.0f} |")
PY
cat "$OUT/summary.md"
