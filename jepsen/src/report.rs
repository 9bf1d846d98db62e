//! What a run leaves behind, like Jepsen's store: `history.jsonl`, `results.json` (the verdict),
//! `summary.txt`, and `latency.svg` (every operation's latency over time, nemesis windows
//! shaded), plus the availability figures per fault: how long after a fault began the first
//! write invoked after it was acknowledged, and the longest stretch without any acknowledgement.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::check::CheckResult;
use crate::history::{pairs, Op, OpType};
use crate::monitor::{Elections, Obs};
use crate::nemesis::Window;

#[derive(Clone, Debug, Serialize)]
pub struct WindowStats {
    pub kind: String,
    pub detail: String,
    pub start_s: f64,
    pub end_s: f64,
    /// From the moment the fault had taken effect to the first acknowledgement of a write
    /// invoked after that moment.
    pub first_ack_s: Option<f64>,
    /// The longest stretch without an acknowledged write from the fault's start until the
    /// first acknowledgement after it ended.
    pub longest_gap_s: f64,
    /// The members the fault stopped or cut off from the majority.
    pub faulted: Vec<u64>,
    /// Whether the leader was among them (`None` when the fault touched no member).
    pub leader_faulted: Option<bool>,
    /// The row this fault counts in: its kind, and for faults of members whether they hit the
    /// leader or only followers ("pause (leader)"). Campaigns group by it.
    pub class: String,
    /// Who led before and after, and the terms the group went through.
    pub elections: Elections,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct KindStats {
    pub faults: usize,
    pub first_ack_p50_s: Option<f64>,
    pub first_ack_p99_s: Option<f64>,
    pub first_ack_max_s: Option<f64>,
    pub longest_gap_max_s: f64,
    /// Faults during or after which the group changed its term.
    pub with_elections: usize,
    /// From the fault taking effect to a new leader reported, over faults that had one.
    pub new_leader_p50_s: Option<f64>,
    pub new_leader_max_s: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Availability {
    /// Over the whole workload: the longest stretch without an acknowledged write.
    pub longest_gap_s: f64,
    pub longest_gap_from_s: f64,
    pub windows: Vec<WindowStats>,
    /// By [`WindowStats::class`].
    pub by_kind: BTreeMap<String, KindStats>,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The `p` quantile of sorted `v` (nearest rank).
pub fn quantile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    Some(v[((v.len() as f64 - 1.0) * p).round() as usize])
}

/// Computes the availability figures from the history's acknowledged writes, and the elections
/// of each fault from the leader observations.
pub fn availability(history: &[Op], windows: &[Window], until: u64, obs: &[Obs]) -> Availability {
    // (invoked, completed) of every acknowledged write, by completion.
    let mut acks: Vec<(u64, u64)> = pairs(history)
        .iter()
        .filter(|p| p.complete.kind == OpType::Ok && p.invoke.body.is_write())
        .map(|p| (p.invoke.time, p.complete.time))
        .collect();
    acks.sort_by_key(|a| a.1);
    let mut a = Availability::default();
    let mut prev = 0u64;
    for (_, t) in acks.iter().filter(|a| a.1 <= until) {
        if t - prev > (a.longest_gap_s * 1e9) as u64 {
            a.longest_gap_s = secs(t - prev);
            a.longest_gap_from_s = secs(prev);
        }
        prev = *t;
    }
    for (i, w) in windows.iter().enumerate() {
        // Measured from when the fault had taken effect: a write invoked while the rules were
        // still going in may be acknowledged before the fault bites.
        let first = acks
            .iter()
            .filter(|(inv, _)| *inv >= w.effective)
            .map(|a| a.1)
            .min();
        // Acknowledgements from the fault's start until the first one after its end.
        let mut points = vec![w.start];
        let mut closed = false;
        for (_, t) in acks.iter().filter(|a| a.1 > w.start) {
            points.push(*t);
            if *t >= w.end {
                closed = true;
                break;
            }
        }
        if !closed {
            points.push(until.max(w.end));
        }
        let gap = points.windows(2).map(|p| p[1] - p[0]).max().unwrap_or(0);
        let next = windows.get(i + 1).map(|n| n.start);
        let elections = crate::monitor::elections(obs, w.start, w.effective, w.end, next);
        let leader_faulted =
            (!w.faulted.is_empty()).then(|| w.faulted.contains(&elections.leader_before));
        a.windows.push(WindowStats {
            kind: w.kind.clone(),
            detail: w.detail.clone(),
            start_s: secs(w.start),
            end_s: secs(w.end),
            first_ack_s: first.map(|t| secs(t - w.effective)),
            longest_gap_s: secs(gap),
            faulted: w.faulted.clone(),
            leader_faulted,
            class: match leader_faulted {
                Some(true) => format!("{} (leader)", w.kind),
                Some(false) => format!("{} (follower)", w.kind),
                None => w.kind.clone(),
            },
            elections,
        });
    }
    for w in &a.windows {
        let k = a.by_kind.entry(w.class.clone()).or_default();
        k.faults += 1;
        k.longest_gap_max_s = k.longest_gap_max_s.max(w.longest_gap_s);
        k.with_elections += usize::from(w.elections.terms > 0);
    }
    for (class, k) in a.by_kind.iter_mut() {
        let mut firsts: Vec<f64> = a
            .windows
            .iter()
            .filter(|w| &w.class == class)
            .filter_map(|w| w.first_ack_s)
            .collect();
        firsts.sort_by(f64::total_cmp);
        k.first_ack_p50_s = quantile(&firsts, 0.5);
        k.first_ack_p99_s = quantile(&firsts, 0.99);
        k.first_ack_max_s = firsts.last().copied();
        let mut leaders: Vec<f64> = a
            .windows
            .iter()
            .filter(|w| &w.class == class)
            .filter_map(|w| w.elections.new_leader_s)
            .collect();
        leaders.sort_by(f64::total_cmp);
        k.new_leader_p50_s = quantile(&leaders, 0.5);
        k.new_leader_max_s = leaders.last().copied();
    }
    a
}

/// Counts of operations by how they ended.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub invoked: u64,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
    pub acknowledged_writes: u64,
}

pub fn counts(history: &[Op]) -> Counts {
    let mut c = Counts::default();
    for p in pairs(history) {
        c.invoked += 1;
        match p.complete.kind {
            OpType::Ok => {
                c.ok += 1;
                if p.invoke.body.is_write() {
                    c.acknowledged_writes += 1;
                }
            }
            OpType::Fail => c.fail += 1,
            _ => c.info += 1,
        }
    }
    c
}

/// The verdict of one run.
#[derive(Debug, Serialize)]
pub struct Results {
    pub valid: bool,
    pub workload: String,
    pub nemesis: Vec<String>,
    pub seed: u64,
    pub time_s: u64,
    pub nodes: usize,
    pub ops: Counts,
    pub checks: Vec<CheckResult>,
    pub windows: Vec<Window>,
    pub availability: Availability,
    /// Panics found in the nodes' logs (each one fails the run).
    pub panics: Vec<String>,
    /// Problems of the harness itself (a cluster that never healed, ...): each fails the run.
    pub errors: Vec<String>,
}

impl Results {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} workload={} nemesis={} seed={} time={}s nodes={}\n",
            if self.valid { "VALID" } else { "INVALID" },
            self.workload,
            if self.nemesis.is_empty() {
                "none".to_string()
            } else {
                self.nemesis.join(",")
            },
            self.seed,
            self.time_s,
            self.nodes
        );
        let o = &self.ops;
        s.push_str(&format!(
            "ops: {} invoked, {} ok, {} fail, {} info; {} acknowledged writes\n",
            o.invoked, o.ok, o.fail, o.info, o.acknowledged_writes
        ));
        for c in &self.checks {
            let stats: Vec<String> = c.stats.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!(
                "  {:<32} {}  {}\n",
                c.checker,
                if c.valid {
                    "ok"
                } else if c.unknown.is_some() {
                    "UNKNOWN"
                } else {
                    "FAIL"
                },
                stats.join(" ")
            ));
            if let Some(u) = &c.unknown {
                s.push_str(&format!("    unknown: {u}\n"));
            }
            for a in c.anomalies.iter().take(5) {
                s.push_str(&format!("    {}: {}\n", a.kind, a.explanation));
            }
            if c.anomalies.len() > 5 {
                s.push_str(&format!("    ... {} anomalies in all\n", c.anomalies.len()));
            }
        }
        for w in &self.availability.windows {
            let e = &w.elections;
            s.push_str(&format!(
                "  fault {:>5.1}s..{:>5.1}s {:<20} first ack after {} longest gap {:.2}s, \
                 leader {} -> {} in {} terms{}: {}\n",
                w.start_s,
                w.end_s,
                w.class,
                w.first_ack_s
                    .map(|f| format!("{f:.2}s"))
                    .unwrap_or_else(|| "never".into()),
                w.longest_gap_s,
                e.leader_before,
                e.leader_after,
                e.terms,
                e.new_leader_s
                    .map(|t| format!(" (new leader after {t:.2}s)"))
                    .unwrap_or_default(),
                w.detail
            ));
        }
        s.push_str(&format!(
            "longest stretch without an acknowledged write: {:.2}s (from {:.1}s)\n",
            self.availability.longest_gap_s, self.availability.longest_gap_from_s
        ));
        for p in &self.panics {
            s.push_str(&format!("  panic: {p}\n"));
        }
        for e in &self.errors {
            s.push_str(&format!("  error: {e}\n"));
        }
        s
    }
}

/// Draws every completed operation's latency over time, nemesis windows shaded.
/// Each fault's shading is labelled with its class, the time to the first acknowledgement after
/// it, and the terms it cost.
pub fn plot(
    path: &Path,
    history: &[Op],
    windows: &[WindowStats],
    title: &str,
) -> anyhow::Result<()> {
    let ops = pairs(history);
    let points: Vec<(f64, f64, OpType)> = ops
        .iter()
        .filter(|p| p.complete.kind != OpType::Invoke)
        .map(|p| {
            let ms = (p.complete.time - p.invoke.time) as f64 / 1e6;
            (secs(p.invoke.time), ms.max(0.05), p.complete.kind)
        })
        .collect();
    let t_max = points
        .iter()
        .map(|p| p.0)
        .chain(windows.iter().map(|w| w.end_s))
        .fold(1.0f64, f64::max)
        * 1.02;
    let y_max = points.iter().map(|p| p.1).fold(10.0f64, f64::max) * 1.5;
    let root = SVGBackend::new(path, (1280, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..t_max, (0.05f64..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds since start (when invoked)")
        .y_desc("latency (ms)")
        .draw()?;
    let shades = [
        RGBColor(255, 200, 200),
        RGBColor(200, 220, 255),
        RGBColor(210, 255, 210),
        RGBColor(255, 235, 190),
        RGBColor(230, 210, 255),
        RGBColor(255, 210, 240),
        RGBColor(200, 250, 250),
        RGBColor(235, 235, 200),
    ];
    for w in windows {
        let i = crate::nemesis::ALL
            .iter()
            .position(|k| *k == w.kind)
            .unwrap_or(0);
        let color = shades[i % shades.len()];
        chart.draw_series(std::iter::once(Rectangle::new(
            [(w.start_s, 0.05), (w.end_s, y_max)],
            color.mix(0.6).filled(),
        )))?;
        let first = w
            .first_ack_s
            .map_or_else(|| "none".to_string(), |f| format!("{f:.2}s"));
        for (text, y) in [
            (w.class.clone(), y_max / 1.6),
            (format!("ack {first}"), y_max / 2.6),
            (format!("{} terms", w.elections.terms), y_max / 4.2),
        ] {
            chart.draw_series(std::iter::once(Text::new(
                text,
                (w.start_s, y),
                ("sans-serif", 11),
            )))?;
        }
    }
    for (kind, color, label) in [
        (OpType::Ok, RGBColor(40, 90, 200), "ok"),
        (OpType::Fail, RGBColor(230, 140, 20), "fail"),
        (OpType::Info, RGBColor(200, 20, 20), "info"),
    ] {
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|p| p.2 == kind)
                    .map(|p| Circle::new((p.0, p.1), 1, color.filled())),
            )?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 5, y), 3, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
