#!/usr/bin/env bash
# The flush path on this machine: a 3-node group of release-built `folio server` processes
# flushing to a real S3-compatible server (moto) on 127.0.0.1. Under a steady load of many small
# commits it reports object-store PUTs per second (about one per flush interval is expected, not
# one per commit), the sizes of the segments written, and the commit latency of QUORUM next to
# OBJECT_STORE durability on the same group, then page-read latency (ranged GET vs cache).
# Tears everything down on exit.
#   benchmarks/flush.sh [COMMITS] [WRITERS]
set -euo pipefail
cd "$(dirname "$0")/.."
COMMITS=${1:-20000}
WRITERS=${2:-16}
. benchmarks/lib.sh

start_moto
OBJECT_STORE_TOML=$(printf 'kind = "s3"\nbucket = "folio"\nregion = "us-east-1"\nendpoint = "http://127.0.0.1:%s"\npath_style = true' "$S3_PORT")
start_group

# Counters from the leader's /metrics: PUTs, segments (count/sum of the size histogram), pages.
scrape() {
  python3 - "$leader_metrics" <<'PY'
import re, sys, time, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5).read().decode()
def val(pattern):
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))
puts = val(r'^folio_object_store_requests_total\{[^}]*op="put"[^}]*\} (\S+)$')
print(time.time(), puts, val(r"^folio_segment_bytes_count (\S+)$"), val(r"^folio_segment_bytes_sum (\S+)$"),
      val(r"^folio_segment_pages_sum (\S+)$"), val(r"^folio_flush_latency_seconds_sum (\S+)$"),
      val(r"^folio_flush_latency_seconds_count (\S+)$"))
PY
}

echo "machine: $(nproc) cores, $(uname -r); object store: moto on 127.0.0.1; flush interval 1 s"
read -r t0 p0 n0 b0 g0 fs0 fc0 < <(scrape)
"$BENCH" commit --addr "$leader" --count "$COMMITS" --writers "$WRITERS" --warmup 5
sleep 2.5   # let the last segment seal and upload
read -r t1 p1 n1 b1 g1 fs1 fc1 < <(scrape)
python3 - <<PY
secs = $t1 - $t0
puts, segs = $p1 - $p0, $n1 - $n0
print(f"steady load: $COMMITS commits by $WRITERS writers in {secs:.1f}s (incl. 2.5s drain)")
print(f"  object-store PUTs: {puts:.0f} ({puts/secs:.2f}/s), {($COMMITS)/max(puts,1):.0f} commits per PUT")
print(f"  segments: {segs:.0f}, mean {($b1-$b0)/max(segs,1)/1024:.0f} KiB, mean {($g1-$g0)/max(segs,1):.0f} pages")
print(f"  flush latency (seal seen -> Flushed applied): mean {($fs1-$fs0)/max($fc1-$fc0,1)*1000:.0f} ms")
PY

echo "latency, same group, 1 writer:"
"$BENCH" commit --addr "$leader" --count 200 --warmup 5 --durability quorum
"$BENCH" commit --addr "$leader" --count 40 --warmup 2 --durability object-store
echo "latency, same group, $WRITERS writers:"
"$BENCH" commit --addr "$leader" --count 640 --writers "$WRITERS" --warmup 2 --durability object-store

echo "page reads through the leader, pages flushed to moto (1 page per call):"
"$BENCH" read --addr "$leader" --count 2000
