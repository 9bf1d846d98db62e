#!/usr/bin/env bash
# perf over the whole machine while 16 writers make 20,000 one-page commits (after 4,000 to warm
# up); reports by process and library, and by symbol, in /tmp/perf16-*.txt.
set -euo pipefail
. "$(dirname "$0")/common.sh"
use "${1:-base}"
start_local
"$BENCH" commit --addr "$leader" --count 4000 --pages 1 --writers 16 >/dev/null
perf record -F 999 -a -g -o /tmp/perf16.data -- "$BENCH" commit --addr "$leader" --count 20000 --pages 1 --writers 16
perf report -i /tmp/perf16.data --no-children --sort comm,dso --stdio -g none 2>/dev/null | grep -v "^#" | grep -v "^$" | head -20 > /tmp/perf16-dso.txt
perf report -i /tmp/perf16.data --no-children --comm tokio-rt-worker --sort dso,sym --stdio -g none 2>/dev/null | grep -v "^#" | grep -v "^$" | head -60 > /tmp/perf16-workers-symbols.txt
