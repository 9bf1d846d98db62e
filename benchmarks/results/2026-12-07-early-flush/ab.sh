#!/usr/bin/env bash
# What openraft 0.10's overlap of the leader's log fsync with replication would buy, measured on
# 0.9 with an UNSAFE experiment binary (early-flush.patch): with FOLIO_EXPERIMENT_EARLY_FLUSH set,
# the leader's log store reports an append flushed once it is written and fdatasyncs it in the
# background; followers still answer after their fdatasync. Without the variable the binary is
# the baseline. A fresh group per variant and round, 1 to 16 writers, one page, three rounds
# alternating (ROUNDS, WRITERS and COUNT, a fixed commit count, change that; see ab-low.sh).
# Argument: the binary's name (/var/tmp/folio-NAME).
set -euo pipefail
. "$(dirname "$0")/../2026-12-07-batcher/common.sh"
use "$1"
for round in ${ROUNDS:-1 2 3}; do
  for v in base early; do
    if [ "$v" = early ]; then export FOLIO_EXPERIMENT_EARLY_FLUSH=1; else unset FOLIO_EXPERIMENT_EARLY_FLUSH; fi
    start_local "$WORK/g-$round-$v"
    if [ "$v" = base ]; then
      mkdir -p "$WORK/fsync"
      echo "round $round floor: $("$BENCH" fsync --dir "$WORK/fsync" --count 2000 | tr '\n' ' ')"
      echo "round $round rtt: $("$BENCH" rpc --addr "$leader" --count 2000 | tr '\n' ' ')"
    fi
    for w in ${WRITERS:-1 2 4 8 16}; do
      echo "round $round bin $v writers $w: $("$BENCH" commit --addr "$leader" --count ${COUNT:-$((w < 4 ? 2000 : 4000))} --pages 1 --writers $w | tr '\n' ' ')"
    done
    stop_local
  done
done
unset FOLIO_EXPERIMENT_EARLY_FLUSH
