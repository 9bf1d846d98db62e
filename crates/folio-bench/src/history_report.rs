//! The history benchmark's results: one sample per interval (what each node and the bucket held,
//! and the commit rate and latency over the interval), the old-LSN reads at the end, printed as a
//! table row by row while it runs, written as `history.json` and drawn as `history.svg` (sizes
//! over page versions written).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use serde::Serialize;

use crate::latency::{Latencies, Summary};
use crate::report::Machine;

/// Bumped when a field changes meaning, so report scripts can refuse what they do not know.
pub const SCHEMA_VERSION: u32 = 1;

/// What one node held at a sample.
#[derive(Clone, Debug, Serialize)]
pub struct NodeSample {
    /// 1, 2 or 3.
    pub node: usize,
    /// Apparent bytes of every file under its data directory (RocksDB: Raft log, state, buffer,
    /// index; and snapshots).
    pub data_dir_bytes: u64,
    /// Resident memory of its process; `None` if it could not be read.
    pub rss_bytes: Option<u64>,
    /// Bytes of its complete snapshot files (`snapshots/*.snap`, part of the data directory).
    pub snapshot_bytes: u64,
}

/// One sample, taken once before writing, every `sample_secs` while writing, once when writing
/// stops, and once more after the buffer drained.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// `start` before writing, `write` while writers run, `end` when they stopped, `drained`
    /// after the buffer drained.
    pub phase: &'static str,
    /// Seconds since writing started.
    pub t_s: f64,
    /// Page versions committed so far (commits × pages per commit).
    pub page_versions: u64,
    pub commits: u64,
    /// Commits acknowledged over the interval since the previous sample, per second.
    pub commits_per_s: f64,
    /// Commit latency over that interval; `None` when no commit finished in it.
    pub commit_p50_us: Option<f64>,
    pub commit_p99_us: Option<f64>,
    pub nodes: Vec<NodeSample>,
    /// The bucket's bytes (see `bucket_source` in the setup); `None` if it could not be
    /// measured at this sample.
    pub bucket_bytes: Option<u64>,
}

/// The commit rate and latency over one interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub commits_per_s: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
}

impl Interval {
    /// From the commit counts at the interval's two ends, its length, and the latencies of the
    /// commits acknowledged in it.
    pub fn of(commits_before: u64, commits_after: u64, len: Duration, l: &Latencies) -> Interval {
        let secs = len.as_secs_f64();
        let done = commits_after.saturating_sub(commits_before) as f64;
        let s = Summary::of(l);
        Interval {
            commits_per_s: if secs > 0.0 { done / secs } else { 0.0 },
            p50_us: s.as_ref().map(|s| s.p50.as_secs_f64() * 1e6),
            p99_us: s.as_ref().map(|s| s.p99.as_secs_f64() * 1e6),
        }
    }
}

/// Latency of one batch of old-LSN reads.
#[derive(Clone, Debug, Serialize)]
pub struct ReadStats {
    pub reads: usize,
    pub p50_us: f64,
    pub max_us: f64,
}

impl ReadStats {
    pub fn of(l: &Latencies) -> Option<ReadStats> {
        Summary::of(l).map(|s| ReadStats {
            reads: s.count,
            p50_us: s.p50.as_secs_f64() * 1e6,
            max_us: s.max.as_secs_f64() * 1e6,
        })
    }
}

/// Reads at old LSNs from a follower restarted after writing stopped.
#[derive(Clone, Debug, Serialize)]
pub struct OldReads {
    /// The restarted follower's node id.
    pub node: usize,
    pub volumes: usize,
    /// LSNs read on each volume: 1 up to this (or the volume's head if lower).
    pub lsn_max: u64,
    /// Pages per ReadPages call: every page one commit wrote.
    pub pages_per_read: u32,
    /// Seconds from the restart until the follower had applied what the leader had.
    pub catch_up_s: f64,
    /// First read of each (volume, LSN) after the restart: caches empty.
    pub cold: ReadStats,
    /// The same reads again, in the same order.
    pub warm: ReadStats,
}

#[derive(Debug, Serialize)]
pub struct HistoryReport {
    pub schema: u32,
    pub started_unix_s: u64,
    pub machine: Machine,
    /// How the run was set up: group, store, budgets, where the bucket's bytes come from.
    pub setup: serde_json::Value,
    /// `page-versions` or `time`: which bound ended the writing.
    pub stopped_by: String,
    pub page_versions: u64,
    pub commits: u64,
    /// Seconds the writers ran.
    pub write_secs: f64,
    pub samples: Vec<Sample>,
    /// `None` if the old-LSN reads did not complete (see `notes`).
    pub old_reads: Option<OldReads>,
    pub notes: Vec<String>,
}

const MB: f64 = 1e6;

fn mb(b: u64) -> f64 {
    b as f64 / MB
}

/// Megabytes of each node, `a/b/c`.
fn per_node(nodes: &[NodeSample], f: impl Fn(&NodeSample) -> Option<u64>) -> String {
    nodes
        .iter()
        .map(|n| f(n).map_or_else(|| "-".to_string(), |b| format!("{:.0}", mb(b))))
        .collect::<Vec<_>>()
        .join("/")
}

fn ms(us: Option<f64>) -> String {
    us.map_or_else(|| "-".to_string(), |us| format!("{:.2}", us / 1000.0))
}

/// Columns of the table printed while the benchmark runs.
pub fn header() -> String {
    format!(
        "{:<7} {:>7} {:>11} {:>9} {:>8} {:>8}  {:>17} {:>17} {:>17} {:>10}",
        "phase",
        "t s",
        "pg versions",
        "commit/s",
        "p50 ms",
        "p99 ms",
        "data MB n1/n2/n3",
        "RSS MB n1/n2/n3",
        "snap MB n1/n2/n3",
        "bucket MB"
    )
}

/// One sample as a line of the table under [`header`].
pub fn row(s: &Sample) -> String {
    format!(
        "{:<7} {:>7.1} {:>11} {:>9.0} {:>8} {:>8}  {:>17} {:>17} {:>17} {:>10}",
        s.phase,
        s.t_s,
        s.page_versions,
        s.commits_per_s,
        ms(s.commit_p50_us),
        ms(s.commit_p99_us),
        per_node(&s.nodes, |n| Some(n.data_dir_bytes)),
        per_node(&s.nodes, |n| n.rss_bytes),
        per_node(&s.nodes, |n| Some(n.snapshot_bytes)),
        s.bucket_bytes
            .map_or_else(|| "-".to_string(), |b| format!("{:.0}", mb(b))),
    )
}

/// What the old-LSN reads measured, and the notes.
pub fn summary(r: &HistoryReport) -> String {
    let mut out = format!(
        "wrote {} page versions in {} commits over {:.1}s (stopped by {})\n",
        r.page_versions, r.commits, r.write_secs, r.stopped_by
    );
    if let Some(o) = &r.old_reads {
        out += &format!(
            "old-LSN reads on restarted follower node {} (caught up in {:.1}s): LSN 1..={} of \
             {} volume(s), {} page(s) per ReadPages\n",
            o.node, o.catch_up_s, o.lsn_max, o.volumes, o.pages_per_read
        );
        for (what, s) in [("cold", &o.cold), ("warm", &o.warm)] {
            out += &format!(
                "  {what}: n={} p50={:.2}ms max={:.2}ms\n",
                s.reads,
                s.p50_us / 1000.0,
                s.max_us / 1000.0
            );
        }
    }
    for n in &r.notes {
        out += &format!("note: {n}\n");
    }
    out += "MB are 10^6 bytes; data MB includes snap MB; commit/s and latencies are over the \
            interval since the previous row.\n";
    out
}

pub fn write_json(r: &HistoryReport, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(r)?;
    std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
}

/// "0", "250k", "1.5M": page-version counts on the x axis.
fn count_label(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

const NODE_COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
];

/// One line of a panel: its label, points, color and dash pattern (none: solid).
struct Line {
    label: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    width: u32,
    dash: Option<(u32, u32)>,
}

/// Draws two panels over page versions written: the bucket next to each node's data directory
/// (the bucket grows with history, the nodes should not), and the nodes alone on their own scale
/// (data directory solid, RSS dashed, snapshots dotted) to show whether they stay bounded.
pub fn write_svg(r: &HistoryReport, path: &Path) -> anyhow::Result<()> {
    let node_ids: Vec<usize> = r
        .samples
        .first()
        .map(|s| s.nodes.iter().map(|n| n.node).collect())
        .unwrap_or_default();
    let node_series = |f: &dyn Fn(&NodeSample) -> Option<u64>, id: usize| -> Vec<(f64, f64)> {
        r.samples
            .iter()
            .filter_map(|s| {
                let n = s.nodes.iter().find(|n| n.node == id)?;
                Some((s.page_versions as f64, mb(f(n)?)))
            })
            .collect()
    };
    let color = |i: usize| NODE_COLORS[i % NODE_COLORS.len()];
    let mut left = vec![Line {
        label: "bucket".into(),
        points: r
            .samples
            .iter()
            .filter_map(|s| Some((s.page_versions as f64, mb(s.bucket_bytes?))))
            .collect(),
        color: BLACK,
        width: 3,
        dash: None,
    }];
    let mut right = Vec::new();
    for (i, id) in node_ids.iter().copied().enumerate() {
        let data = node_series(&|n| Some(n.data_dir_bytes), id);
        left.push(Line {
            label: format!("node {id} data dir"),
            points: data.clone(),
            color: color(i),
            width: 2,
            dash: None,
        });
        right.push(Line {
            label: format!("node {id} data dir"),
            points: data,
            color: color(i),
            width: 2,
            dash: None,
        });
        right.push(Line {
            label: format!("node {id} RSS"),
            points: node_series(&|n| n.rss_bytes, id),
            color: color(i),
            width: 1,
            dash: Some((8, 4)),
        });
        right.push(Line {
            label: format!("node {id} snapshots"),
            points: node_series(&|n| Some(n.snapshot_bytes), id),
            color: color(i),
            width: 1,
            dash: Some((2, 3)),
        });
    }
    let x_max = r
        .samples
        .iter()
        .map(|s| s.page_versions as f64)
        .fold(1.0, f64::max);

    let root = SVGBackend::new(path, (1280, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (l, rt) = root.split_horizontally(640);
    // The bucket starts at zero, so the legend's corner stays clear on the left; on the right,
    // head room above the node lines keeps them clear of the legend.
    draw_panel(&l, "bucket vs node data directories", x_max, 1.1, &left)?;
    draw_panel(&rt, "node state (own scale)", x_max, 1.7, &right)?;
    root.present()
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    x_max: f64,
    headroom: f64,
    lines: &[Line],
) -> anyhow::Result<()> {
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(1.0, f64::max)
        * headroom;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| count_label(*x))
        .x_desc("page versions written")
        .y_desc("MB")
        .draw()?;
    for line in lines.iter().filter(|l| !l.points.is_empty()) {
        let style = line.color.stroke_width(line.width);
        let points = line.points.clone();
        match line.dash {
            None => {
                chart
                    .draw_series(LineSeries::new(points, style))?
                    .label(line.label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
            Some((size, gap)) => {
                chart
                    .draw_series(DashedLineSeries::new(points, size, gap, style))?
                    .label(line.label.as_str())
                    .legend(move |(x, y)| {
                        DashedPathElement::new(vec![(x, y), (x + 20, y)], size, gap, style)
                    });
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_rate_and_percentiles() {
        let mut l = Latencies::default();
        for us in 1..=100u64 {
            l.record(Duration::from_micros(us * 10));
        }
        let i = Interval::of(1000, 1100, Duration::from_secs(5), &l);
        assert_eq!(i.commits_per_s, 20.0);
        let near = |v: Option<f64>, want: f64| (v.unwrap() - want).abs() <= want * 1e-3;
        assert!(near(i.p50_us, 500.0), "{i:?}");
        assert!(near(i.p99_us, 990.0), "{i:?}");
        let empty = Interval::of(7, 7, Duration::ZERO, &Latencies::default());
        assert_eq!(
            empty,
            Interval {
                commits_per_s: 0.0,
                p50_us: None,
                p99_us: None
            }
        );
    }

    #[test]
    fn labels_counts() {
        assert_eq!(count_label(0.0), "0");
        assert_eq!(count_label(250_000.0), "250k");
        assert_eq!(count_label(1_500_000.0), "1.5M");
    }

    fn sample(pv: u64, bucket: u64) -> Sample {
        Sample {
            phase: "write",
            t_s: pv as f64 / 1000.0,
            page_versions: pv,
            commits: pv / 16,
            commits_per_s: 100.0,
            commit_p50_us: Some(1500.0),
            commit_p99_us: None,
            nodes: (1..=3)
                .map(|node| NodeSample {
                    node,
                    data_dir_bytes: 50_000_000,
                    rss_bytes: (node != 2).then_some(80_000_000),
                    snapshot_bytes: 1_000_000,
                })
                .collect(),
            bucket_bytes: Some(bucket),
        }
    }

    #[test]
    fn row_fits_the_header() {
        let s = sample(123_456, 500_000_000);
        let line = row(&s);
        assert_eq!(line.chars().count(), header().chars().count(), "{line}");
        assert!(line.contains("80/-/80"), "{line}");
        assert!(line.contains("1.50"), "{line}");
    }

    #[test]
    fn draws_the_plot() {
        let report = HistoryReport {
            schema: SCHEMA_VERSION,
            started_unix_s: 0,
            machine: Machine::this(),
            setup: serde_json::json!({}),
            stopped_by: "time".into(),
            page_versions: 2000,
            commits: 125,
            write_secs: 2.0,
            samples: vec![
                sample(0, 0),
                sample(1000, 4_000_000),
                sample(2000, 8_000_000),
            ],
            old_reads: None,
            notes: vec![],
        };
        let path = std::env::temp_dir().join(format!("folio-history-{}.svg", std::process::id()));
        write_svg(&report, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.contains("node 3 snapshots") && svg.contains("bucket"));
    }
}
