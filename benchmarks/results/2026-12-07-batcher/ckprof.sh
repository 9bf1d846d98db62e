#!/usr/bin/env bash
# perf (DWARF call graphs) on the leader while 16 writers commit 60,000 pages: where the
# leader spends its time (the checkpoint apply, the planner). ckprof.sh NAME runs /var/tmp/folio-NAME.
set -euo pipefail
cd /work/main
. benchmarks/lib.sh
BIN=/var/tmp/folio-${1:-base}
OBJECT_STORE_TOML="kind = \"local\"
path = \"$WORK/objects\""
start_group
lport=${leader##*:}
lpid=$(pgrep -f "folio-${1:-base} server" | while read p; do grep -q "$lport" "$(tr '\0' '\n' < /proc/$p/cmdline | tail -1)" && echo "$p" || true; done | head -1 || true)
echo "leader $leader pid $lpid"
perf record -F 199 --call-graph dwarf,16384 -p "$lpid" -o /tmp/ckprof-${1:-base}.data -- "$BENCH" commit --addr "$leader" --count 60000 --pages 1 --writers 16 | tail -2
