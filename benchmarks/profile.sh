#!/usr/bin/env bash
# Profiles the one-writer commit path on this machine: a 3-node group of release-built nodes on a
# local-directory store, one writer committing one page at a time through the leader, and
# `perf record` (on-CPU samples, DWARF call graphs) on the leader and on one follower for the
# measured commits. Writes, per node, a flame graph (inferno), the folded stacks, and perf's
# report of the functions by inclusive time, to benchmarks/results/<date>-profile/.
#   benchmarks/profile.sh [COUNT]
# On-CPU only: time a commit spends waiting (fsyncs, the network) does not appear, so read it
# beside the latency breakdown in BENCHMARKS.md. Recording slows the nodes: the latency the run
# prints (commit.txt) is not a benchmark figure.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-3000}
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
if ! command -v perf >/dev/null 2>&1; then
  echo "profile.sh: installing linux-perf" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq linux-perf >/dev/null
fi
if ! command -v inferno-flamegraph >/dev/null 2>&1; then
  echo "profile.sh: installing inferno (flame graphs) with cargo" >&2
  cargo install --locked inferno >/dev/null
fi
. benchmarks/lib.sh
OBJECT_STORE_TOML="kind = \"local\"
path = \"$WORK/objects\""
start_group

OUT="benchmarks/results/$(date -u +%Y-%m-%d-%H%M%S)-profile"
mkdir -p "$OUT"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), Linux $(uname -r)"
  echo "command: benchmarks/profile.sh $COUNT"
} > "$OUT/machine.txt"

pid_of() { for i in 0 1 2; do [ "${addrs[$i]}" = "$1" ] && echo "${pids[$i]}"; done; }
# Warm up (connections, the volume, the first segment) before recording.
"$BENCH" commit --addr "$leader" --count 200 --warmup 50 >/dev/null
perfs=()
for role in leader follower; do
  addr=${!role}
  perf record -F 499 -e cpu-clock --call-graph dwarf,8192 -p "$(pid_of "$addr")" \
    -o "$WORK/$role.data" >/dev/null 2>&1 &
  perfs+=($!)
done
sleep 1
"$BENCH" commit --addr "$leader" --count "$COUNT" | tee "$OUT/commit.txt"
for p in "${perfs[@]}"; do kill -INT "$p"; done
for p in "${perfs[@]}"; do wait "$p" || true; done
for role in leader follower; do
  if [ ! -s "$WORK/$role.data" ]; then
    echo "profile.sh: perf recorded nothing on the $role" >&2
    continue
  fi
  perf script --no-inline -i "$WORK/$role.data" 2>/dev/null | inferno-collapse-perf > "$OUT/$role.folded"
  inferno-flamegraph --title "folio $role, one writer, $COUNT commits" \
    < "$OUT/$role.folded" > "$OUT/$role.svg"
  perf report --no-inline -i "$WORK/$role.data" --stdio --children --percent-limit 2 \
    2>/dev/null | grep -v '^$' | head -400 > "$OUT/$role.report.txt"
done
echo "wrote $OUT"
