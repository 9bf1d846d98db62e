#!/usr/bin/env python3
"""Turns the results.json files of several `folio-bench` suite runs into the markdown tables of
BENCHMARKS.md: the median of every figure across runs, then the targets of the benchmark issue as
ratios to the baselines measured in the same runs. Standard library only.

    benchmarks/report.py RESULTS.json [RESULTS.json ...] > summary.md
"""

import json
import statistics
import sys

SCHEMA = 1
FIELDS = [
    "ops", "p50_us", "p90_us", "p99_us", "p999_us", "ops_per_s", "pages_per_s", "mb_per_s",
    "store_requests_per_s", "store_puts_per_s", "node_cpu_cores", "bench_cpu_cores", "conflicts",
]
WRITERS = [1, 2, 4, 8, 16, 32, 64]


def load(paths):
    runs = []
    for p in paths:
        with open(p) as f:
            r = json.load(f)
        if r.get("schema") != SCHEMA:
            sys.exit(f"{p}: schema {r.get('schema')!r}, this script reads {SCHEMA}")
        runs.append(r)
    if not runs:
        sys.exit("usage: report.py RESULTS.json [RESULTS.json ...]")
    return runs


def medians(runs):
    """{workload: {field: median or None, "runs": n, "description": ..., "range_p50": (lo, hi)}}"""
    by_name = {}
    order = []
    for r in runs:
        for w in r["workloads"]:
            if w["name"] not in by_name:
                order.append(w["name"])
            by_name.setdefault(w["name"], []).append(w)
    out = {}
    for name in order:
        ws = by_name[name]
        m = {"runs": len(ws), "description": ws[0]["description"], "writers": ws[0]["writers"]}
        for f in FIELDS:
            vals = [w[f] for w in ws if w.get(f) is not None]
            m[f] = statistics.median(vals) if vals else None
        p50s = [w["p50_us"] for w in ws]
        m["range_p50"] = (min(p50s), max(p50s))
        out[name] = m
    return out


def lat(us):
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 100_000:
        return f"{us / 1000:.2f} ms"
    return f"{us / 1000:.0f} ms"


def num(v, digits=0):
    return "-" if v is None else f"{v:,.{digits}f}"


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}×"


def verdict(ok):
    return "-" if ok is None else ("met" if ok else "**missed**")


def main():
    runs = load(sys.argv[1:])
    m = medians(runs)
    g = m.get
    first = runs[0]
    mach = first["machine"]
    print(f"Runs: {len(runs)}; machine: {mach['cores']} cores, {mach['cpu']}, Linux "
          f"{mach['kernel']}; object store: {first['setup'].get('object_store')}; "
          f"etcd: {first['setup'].get('etcd')}. Figures are medians across runs.\n")

    print("### All workloads\n")
    print("| workload | what | n | p50 | p90 | p99 | p99.9 | ops/s | pages/s | MB/s "
          "| store req/s | PUTs/s | node CPU | bench CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, w in m.items():
        print(f"| `{name}` | {w['description']} | {num(w['ops'])} | {lat(w['p50_us'])} "
              f"| {lat(w['p90_us'])} | {lat(w['p99_us'])} | {lat(w['p999_us'])} "
              f"| {num(w['ops_per_s'])} | {num(w['pages_per_s'])} | {num(w['mb_per_s'], 2)} "
              f"| {num(w['store_requests_per_s'], 2)} | {num(w['store_puts_per_s'], 2)} "
              f"| {num(w['node_cpu_cores'], 2)} | {num(w['bench_cpu_cores'], 2)} |")
    contend = g("folio-contend-16w")
    if contend and contend.get("conflicts") is not None:
        print(f"\n`folio-contend-16w`: {num(contend['conflicts'])} CAS conflicts retried "
              f"(median per run) for {num(contend['ops'])} commits.")
    print("\nCPU in cores: user + system seconds of the serving processes (all three nodes or "
          "members) per second of wall time; bench CPU is the load generator's.")
    for r in runs:
        for s in r.get("skipped", []):
            print(f"\nSkipped `{s['name']}`: {s['why']}")
        break

    print("\n### Targets\n")
    print("| target | measured | ratio | verdict |")
    print("|---|---|---|---|")
    folio1, fsync, rtt = g("folio-1w-1p"), g("disk-fsync"), g("grpc-rtt")
    if folio1 and fsync and rtt:
        floor = fsync["p50_us"] + rtt["p50_us"]
        x = ratio(folio1["p50_us"], floor)
        print(f"| 1-writer commit p50 ≤ 1.5 × (fsync p50 + loopback RTT p50) "
              f"| {lat(folio1['p50_us'])} vs {lat(fsync['p50_us'])} + {lat(rtt['p50_us'])} "
              f"= {lat(floor)} | {fmt_ratio(x)} | {verdict(x is not None and x <= 1.5)} |")
    for n in WRITERS:
        f = g(f"folio-{n}w-1p")
        e = g(f"etcd-{n}w-4k")
        if not f or not e:
            continue
        x = ratio(f["p99_us"], e["p99_us"])
        print(f"| {n} writer(s), 4 KiB: p99 ≤ etcd p99 | {lat(f['p99_us'])} vs "
              f"{lat(e['p99_us'])} | {fmt_ratio(x)} | {verdict(x is not None and x <= 1.0)} |")
        y = ratio(f["ops_per_s"], e["ops_per_s"])
        print(f"| {n} writer(s), 4 KiB: throughput ≥ etcd | {num(f['ops_per_s'])} vs "
              f"{num(e['ops_per_s'])} /s | {fmt_ratio(y)} | "
              f"{verdict(y is not None and y >= 1.0)} |")
    for pages, tag in [(16, "64k"), (256, "1m")]:
        f, e = g(f"folio-1w-{pages}p"), g(f"etcd-1w-{tag}")
        if f and e:
            x = ratio(f["p99_us"], e["p99_us"])
            print(f"| 1 writer, {pages * 4} KiB: p99 vs etcd (same size, for reference) "
                  f"| {lat(f['p99_us'])} vs {lat(e['p99_us'])} | {fmt_ratio(x)} | - |")
    for n in [1, 16]:
        f = g(f"folio-{n}w-1p")
        o = g(f"folio-os-1s-{n}w")
        if f and o:
            x = ratio(o["p50_us"], f["p50_us"])
            print(f"| {n} writer(s): p50 ≥ 100× lower than OBJECT_STORE with 1 s flush "
                  f"| {lat(f['p50_us'])} vs {lat(o['p50_us'])} | {fmt_ratio(x, 0)} lower "
                  f"| {verdict(x is not None and x >= 100)} |")
        e = g(f"folio-os-early-{n}w")
        if f and e:
            x = ratio(e["p50_us"], f["p50_us"])
            print(f"| {n} writer(s): OBJECT_STORE with early seal (for reference) "
                  f"| {lat(e['p50_us'])} | {fmt_ratio(x, 1)} QUORUM's p50 | - |")
    for name in [f"folio-{n}w-1p" for n in WRITERS] + ["folio-1w-16p", "folio-1w-256p"]:
        w = g(name)
        if w and w.get("store_puts_per_s") is not None:
            print(f"| PUTs/s ≈ 1 per flush interval (1 s): `{name}` at "
                  f"{num(w['ops_per_s'])} commits/s, {num(w['mb_per_s'], 2)} MB/s "
                  f"| {num(w['store_puts_per_s'], 2)} PUTs/s | - | "
                  f"{verdict(w['store_puts_per_s'] <= 1.5 or w['mb_per_s'] > 8.4)} |")
    print("\nPUTs/s: a segment is also sealed when it reaches 8 MiB, so above about 8.4 MB/s of "
          "pages a group makes one PUT per 8 MiB, not one per second; such rows count as met "
          "when that is the cause.")


if __name__ == "__main__":
    main()
