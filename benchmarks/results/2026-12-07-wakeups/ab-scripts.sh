#!/usr/bin/env bash
# A/B: alternates binaries, commit-latency-warm.sh each
cd "$(dirname "$0")/../../.."
out=/tmp/ab-$(date +%H%M)
mkdir -p $out
for round in 1 2; do
  for b in "$@"; do
    FOLIO_BIN=/var/tmp/folio-$b benchmarks/commit-latency-warm.sh > $out/$b-$round.log 2>&1
  done
done
echo $out
#!/usr/bin/env bash
cd "$(dirname "$0")/../../.."
out=/tmp/ab-final
mkdir -p $out
for round in 1 2 3; do
  for b in base final; do
    FOLIO_BIN=/var/tmp/folio-$b benchmarks/commit-latency-warm.sh > $out/$b-$round.log 2>&1
  done
done
for b in base final; do
  FOLIO_BIN=/var/tmp/folio-$b benchmarks/commit-latency.sh 2000 > $out/fresh-$b.log 2>&1
done
echo $out
