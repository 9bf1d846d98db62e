#!/usr/bin/env bash
# perf (DWARF call graphs) on the leader while 16 writers commit 60,000 pages: where the leader
# spends its time (the checkpoint apply, the planner). ckprof.sh NAME runs /var/tmp/folio-NAME
# and writes /tmp/ckprof-NAME.data.
set -euo pipefail
. "$(dirname "$0")/common.sh"
name=${1:-base}
use "$name"
start_local
lport=${leader##*:}
lpid=$(pgrep -f "folio-$name server" | while read -r p; do grep -q "$lport" "$(tr '\0' '\n' < "/proc/$p/cmdline" | tail -1)" && echo "$p" || true; done | head -1 || true)
echo "leader $leader pid $lpid"
perf record -F 199 --call-graph dwarf,16384 -p "$lpid" -o "/tmp/ckprof-$name.data" -- "$BENCH" commit --addr "$leader" --count 60000 --pages 1 --writers 16 | tail -2
