//! The suite's results: one record per workload, printed as a table, written as JSON
//! (`results.json`, read by `benchmarks/report.py`) and drawn as an SVG latency plot
//! (`latency.svg`).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;

use crate::latency::Summary;
use crate::probe::Usage;

/// Bumped when a field changes meaning, so report scripts can refuse what they do not know.
pub const SCHEMA_VERSION: u32 = 1;

/// What one workload measured. Latencies are in microseconds; rates are per second of the
/// measured window (after warm-up).
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadResult {
    pub name: String,
    /// `folio`, `etcd`, `disk` (fsync floor) or `grpc` (loopback round trip).
    pub system: String,
    pub description: String,
    /// Concurrent closed-loop clients.
    pub writers: usize,
    /// Payload bytes per operation (pages × 4096 for Folio, the value size for etcd).
    pub bytes_per_op: u64,
    pub pages_per_op: Option<u32>,
    /// `QUORUM` or `OBJECT_STORE` for Folio commits.
    pub durability: Option<String>,
    pub ops: usize,
    pub secs: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// Commits (or puts, reads, fsyncs, calls) per second.
    pub ops_per_s: f64,
    pub pages_per_s: Option<f64>,
    /// Payload megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// CAS conflicts retried (the contended workload).
    pub conflicts: Option<u64>,
    pub store_requests_per_s: Option<f64>,
    pub store_puts_per_s: Option<f64>,
    pub store_gets_per_s: Option<f64>,
    /// CPU cores used by the serving processes (user + system time over wall time), summed.
    pub node_cpu_cores: Option<f64>,
    /// CPU cores used by the load generator (this process).
    pub bench_cpu_cores: Option<f64>,
    pub notes: Vec<String>,
}

/// The shape of a workload, before it runs.
#[derive(Clone, Debug)]
pub struct Shape {
    pub system: &'static str,
    pub description: String,
    pub writers: usize,
    pub bytes_per_op: u64,
    pub pages_per_op: Option<u32>,
    pub durability: Option<&'static str>,
}

impl WorkloadResult {
    pub fn new(
        name: &str,
        shape: &Shape,
        summary: &Summary,
        secs: f64,
        usage: Option<Usage>,
        conflicts: Option<u64>,
    ) -> WorkloadResult {
        let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
        let secs = secs.max(1e-9);
        let ops_per_s = summary.count as f64 / secs;
        WorkloadResult {
            name: name.to_string(),
            system: shape.system.to_string(),
            description: shape.description.clone(),
            writers: shape.writers,
            bytes_per_op: shape.bytes_per_op,
            pages_per_op: shape.pages_per_op,
            durability: shape.durability.map(str::to_string),
            ops: summary.count,
            secs,
            p50_us: us(summary.p50),
            p90_us: us(summary.p90),
            p99_us: us(summary.p99),
            p999_us: us(summary.p999),
            max_us: us(summary.max),
            mean_us: us(summary.mean),
            ops_per_s,
            pages_per_s: shape.pages_per_op.map(|p| ops_per_s * p as f64),
            mb_per_s: ops_per_s * shape.bytes_per_op as f64 / 1e6,
            conflicts,
            store_requests_per_s: usage.and_then(|u| u.store_requests_per_s),
            store_puts_per_s: usage.and_then(|u| u.store_puts_per_s),
            store_gets_per_s: usage.and_then(|u| u.store_gets_per_s),
            node_cpu_cores: usage.and_then(|u| u.node_cpu_cores),
            bench_cpu_cores: usage.map(|u| u.bench_cpu_cores),
            notes: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
}

impl Machine {
    pub fn this() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu,
            kernel,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Skipped {
    pub name: String,
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct SuiteReport {
    pub schema: u32,
    pub started_unix_s: u64,
    pub machine: Machine,
    /// How the suite ran: group, object store, etcd, budgets.
    pub setup: serde_json::Value,
    pub workloads: Vec<WorkloadResult>,
    pub skipped: Vec<Skipped>,
}

fn latency(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 100_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.0}ms", us / 1000.0)
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// The human table, one line per workload, then notes and skipped workloads.
pub fn table(r: &SuiteReport) -> String {
    let header = [
        "workload",
        "n",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "ops/s",
        "pages/s",
        "MB/s",
        "store/s",
        "PUT/s",
        "node CPU",
        "bench CPU",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for w in &r.workloads {
        rows.push(vec![
            w.name.clone(),
            w.ops.to_string(),
            latency(w.p50_us),
            latency(w.p90_us),
            latency(w.p99_us),
            latency(w.p999_us),
            format!("{:.0}", w.ops_per_s),
            opt(w.pages_per_s, 0),
            format!("{:.2}", w.mb_per_s),
            opt(w.store_requests_per_s, 2),
            opt(w.store_puts_per_s, 2),
            opt(w.node_cpu_cores, 2),
            opt(w.bench_cpu_cores, 2),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                out += &format!("{cell}{}", " ".repeat(pad));
            } else {
                out += &format!("  {}{cell}", " ".repeat(pad));
            }
        }
        out += "\n";
    }
    for w in &r.workloads {
        if let Some(c) = w.conflicts {
            out += &format!("{}: {c} CAS conflicts retried\n", w.name);
        }
        for n in &w.notes {
            out += &format!("{}: {n}\n", w.name);
        }
    }
    for s in &r.skipped {
        out += &format!("skipped {}: {}\n", s.name, s.why);
    }
    out += "CPU in cores (user+sys seconds per second); store/s and PUT/s are object-store \
            requests counted by the nodes.\n";
    out
}

pub fn write_json(r: &SuiteReport, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(r)?;
    std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
}

const PERCENTILES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

fn percentiles_ms(w: &WorkloadResult) -> [f64; 4] {
    [w.p50_us, w.p90_us, w.p99_us, w.p999_us].map(|us| us / 1000.0)
}

/// Draws two panels: latency by percentile of the single-writer 4 KiB workloads (Folio and
/// every baseline), and p50/p99 of 4 KiB writes by number of writers (Folio and etcd).
pub fn write_svg(r: &SuiteReport, path: &Path) -> anyhow::Result<()> {
    let find = |name: &str| r.workloads.iter().find(|w| w.name == name);
    let singles: Vec<(&str, &WorkloadResult)> = [
        ("Folio QUORUM", "folio-1w-1p"),
        ("etcd put", "etcd-1w-4k"),
        ("Folio OBJECT_STORE, early seal", "folio-os-early-1w"),
        ("Folio OBJECT_STORE, 1 s flush (baseline)", "folio-os-1s-1w"),
        ("fsync floor", "disk-fsync"),
        ("gRPC round trip", "grpc-rtt"),
    ]
    .into_iter()
    .filter_map(|(label, name)| find(name).map(|w| (label, w)))
    .collect();
    let folio_series: Vec<&WorkloadResult> = r
        .workloads
        .iter()
        .filter(|w| {
            w.system == "folio"
                && w.durability.as_deref() == Some("QUORUM")
                && w.pages_per_op == Some(1)
                && w.name.starts_with("folio-")
                && w.name.ends_with("w-1p")
        })
        .collect();
    let etcd_series: Vec<&WorkloadResult> = r
        .workloads
        .iter()
        .filter(|w| w.system == "etcd" && w.bytes_per_op == 4096)
        .collect();

    let mut all_ms: Vec<f64> = singles
        .iter()
        .flat_map(|(_, w)| percentiles_ms(w))
        .collect();
    all_ms.extend(
        folio_series
            .iter()
            .chain(&etcd_series)
            .flat_map(|w| [w.p50_us / 1000.0, w.p99_us / 1000.0]),
    );
    all_ms.retain(|v| *v > 0.0 && v.is_finite());
    let lo = all_ms.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = all_ms.iter().cloned().fold(0.0, f64::max);
    let (lo, hi) = if all_ms.is_empty() {
        (0.01, 1000.0)
    } else {
        (lo * 0.7, hi * 1.5)
    };
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(127, 127, 127),
        RGBColor(255, 127, 14),
    ];

    let root = SVGBackend::new(path, (1280, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(640);

    let mut chart = ChartBuilder::on(&left)
        .caption("1 writer, 4 KiB: latency by percentile", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.2f64..3.2f64, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && (0.0..=3.0).contains(&i) {
                PERCENTILES[i as usize].to_string()
            } else {
                String::new()
            }
        })
        .y_desc("latency (ms, log scale)")
        .draw()?;
    for (i, (label, w)) in singles.iter().enumerate() {
        let style = colors[i % colors.len()].stroke_width(2);
        let points: Vec<(f64, f64)> = percentiles_ms(w)
            .into_iter()
            .enumerate()
            .map(|(x, y)| (x as f64, y))
            .collect();
        chart
            .draw_series(LineSeries::new(points, style))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let mut chart = ChartBuilder::on(&right)
        .caption("4 KiB writes by concurrent writers", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.2f64..6.2f64, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(7)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && (0.0..=6.0).contains(&i) {
                format!("{}", 1u32 << i as u32)
            } else {
                String::new()
            }
        })
        .x_desc("writers")
        .y_desc("latency (ms, log scale)")
        .draw()?;
    let series = [
        ("Folio p99", &folio_series, true, colors[0]),
        ("Folio p50", &folio_series, false, colors[0]),
        ("etcd p99", &etcd_series, true, colors[1]),
        ("etcd p50", &etcd_series, false, colors[1]),
    ];
    for (label, ws, p99, color) in series {
        let mut points: Vec<(f64, f64)> = ws
            .iter()
            .map(|w| {
                let y = if p99 { w.p99_us } else { w.p50_us } / 1000.0;
                ((w.writers as f64).log2(), y)
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let style = color.stroke_width(if p99 { 3 } else { 1 });
        chart
            .draw_series(LineSeries::new(points, style))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
