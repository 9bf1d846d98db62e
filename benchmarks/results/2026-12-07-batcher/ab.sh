#!/usr/bin/env bash
# A/B: alternates binaries, commit-latency-warm.sh each; then commit-latency.sh 2000 once each
cd "$(dirname "$0")/../../.."
out=/tmp/ab-$1-$(date +%H%M)
shift
mkdir -p $out
for round in 1 2 3; do
  for b in "$@"; do
    FOLIO_BIN=/var/tmp/folio-$b benchmarks/commit-latency-warm.sh > $out/$b-$round.log 2>&1
  done
done
for b in "$@"; do
  FOLIO_BIN=/var/tmp/folio-$b benchmarks/commit-latency.sh 2000 > $out/fresh-$b.log 2>&1
done
echo $out
