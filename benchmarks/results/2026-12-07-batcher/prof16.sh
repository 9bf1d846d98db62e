#!/usr/bin/env bash
set -euo pipefail
cd /work/main
. benchmarks/lib.sh
BIN=/var/tmp/folio-base
OBJECT_STORE_TOML="kind = \"local\"
path = \"$WORK/objects\""
start_group
"$BENCH" commit --addr "$leader" --count 4000 --pages 1 --writers 16 >/dev/null
perf record -F 999 -a -g -o /tmp/perf16.data -- "$BENCH" commit --addr "$leader" --count 20000 --pages 1 --writers 16
perf report -i /tmp/perf16.data --no-children --sort comm,dso --stdio 2>/dev/null | grep -v "^#" | grep -v "^$" | head -30 > /tmp/perf16-dso.txt
perf report -i /tmp/perf16.data --no-children --sort sym --stdio -g none 2>/dev/null | grep -v "^#" | grep -v "^$" | head -80 > /tmp/perf16-sym.txt
