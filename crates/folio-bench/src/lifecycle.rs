//! `folio-bench lifecycle`: what an overwrite workload costs in the bucket, with the storage
//! lifecycle's garbage collection on and off. For each mode it starts a 3-node group on a local
//! store, writes every hot page once, then has `writers` writers (each on its own volume, holding
//! its share of the hot pages) rewrite random hot pages for `secs` seconds, with a short
//! retention. Every `sample-secs` it walks the bucket's directory and scrapes the nodes'
//! object-store request counters. It prints a table per mode and a summary (the bucket against
//! the bound `2 × (live data + one retention window of writes)`, requests/s by kind, and a monthly
//! cost estimate from a stated price table), and writes `lifecycle.json` and `lifecycle.svg`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use folio_client::{Client, RetryPolicy};
use folio_core::{Lsn, PAGE_SIZE};
use plotters::prelude::*;
use serde::Serialize;

use crate::footprint;
use crate::group::{LocalGroup, LocalRunArgs, NodeOptions, StoreSpec};
use crate::report::Machine;

/// Bounds of what a user may ask for, so a typo cannot start a day-long run.
const WRITERS_MAX: usize = 256;
const HOT_PAGES_MAX: u32 = 1_000_000;
const SECS_MAX: f64 = 3600.0;
const SAMPLE_SECS_MIN: f64 = 1.0;
/// Seconds in the 30-day month the cost estimate is for.
const MONTH_S: f64 = 30.0 * 86_400.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GcMode {
    On,
    Off,
}

#[derive(clap::Args)]
pub struct LifecycleArgs {
    /// Concurrent writers, each on its own volume with its share of the hot pages.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Pages rewritten over and over, across all writers.
    #[arg(long, default_value_t = 1000)]
    hot_pages: u32,
    /// Pages per commit, chosen at random among the writer's hot pages.
    #[arg(long, default_value_t = 4)]
    pages: u32,
    /// Seconds of rewriting per mode.
    #[arg(long, default_value_t = 600.0)]
    secs: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10.0)]
    sample_secs: f64,
    /// The group's history retention (`[lifecycle] retention_ms`); `retain_commits` is 1, so
    /// time alone decides.
    #[arg(long, default_value_t = 60_000)]
    retention_ms: u64,
    /// How often the leader runs a lifecycle round (`[lifecycle] interval_ms`).
    #[arg(long, default_value_t = 10_000)]
    round_ms: u64,
    /// How long an unreferenced object waits before it is deleted (`[lifecycle] gc_grace_ms`).
    #[arg(long, default_value_t = 30_000)]
    gc_grace_ms: u64,
    /// The modes to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "on,off")]
    gc: Vec<GcMode>,
    /// Prices for the cost estimate, in dollars: per 1,000 PUT and LIST requests…
    #[arg(long, default_value_t = 0.005)]
    put_per_1k: f64,
    /// … per 1,000 GET and HEAD requests …
    #[arg(long, default_value_t = 0.0004)]
    get_per_1k: f64,
    /// … per 1,000 DELETE requests …
    #[arg(long, default_value_t = 0.0)]
    delete_per_1k: f64,
    /// … and per GB stored for a month.
    #[arg(long, default_value_t = 0.023)]
    gb_month: f64,
    /// Where `lifecycle.json` and `lifecycle.svg` go (created if missing).
    #[arg(long, default_value = "lifecycle-results")]
    out: PathBuf,
    #[command(flatten)]
    run: LocalRunArgs,
}

/// Object-store requests by operation, summed over the nodes.
type Requests = BTreeMap<String, f64>;

#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub commits: u64,
    /// Page bytes written since rewriting started.
    pub written_bytes: u64,
    pub bucket_bytes: u64,
    pub bucket_objects: u64,
    /// 2 × (live + the page bytes written during the retention window before this sample), once
    /// a whole window has passed.
    pub trailing_bound_bytes: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModeResult {
    pub gc: GcMode,
    pub secs: f64,
    pub commits: u64,
    pub commits_per_s: f64,
    pub write_bytes_per_s: f64,
    /// Hot pages × 4 KiB: what the latest snapshots read.
    pub live_bytes: u64,
    /// Page bytes written during one retention window at the run's rate.
    pub window_bytes: f64,
    /// 2 × (live + window).
    pub bound_bytes: f64,
    /// The largest bucket ÷ trailing bound over the samples after the steady state began: the
    /// bound each sample is held to is that of the bytes written in the retention window just
    /// before it, so a rate that changes during the run is accounted for.
    pub max_trailing_ratio: f64,
    /// The largest bucket seen once the first retention window, grace period and two rounds
    /// had passed (the steady state), and at the end.
    pub steady_max_bucket_bytes: u64,
    pub end_bucket_bytes: u64,
    /// Requests per second by operation while rewriting.
    pub requests_per_s: Requests,
    pub cost: Cost,
    pub samples: Vec<Sample>,
}

/// A 30-day month at the run's rates, at the stated prices.
#[derive(Clone, Debug, Serialize)]
pub struct Cost {
    pub requests_usd: f64,
    /// Mean stored bytes over the month: the steady state with GC; without it, the bucket at the
    /// end plus half of what a month of writes adds.
    pub mean_stored_gb: f64,
    pub storage_usd: f64,
    pub total_usd: f64,
}

#[derive(Serialize)]
struct Report {
    schema: u32,
    machine: Machine,
    setup: serde_json::Value,
    modes: Vec<ModeResult>,
}

/// A page stamped with its writer, index and version, so no two versions are alike.
fn page(writer: usize, idx: u32, version: u64) -> Bytes {
    let mut d = vec![(version % 251) as u8; PAGE_SIZE];
    d[..4].copy_from_slice(&(writer as u32).to_le_bytes());
    d[4..8].copy_from_slice(&idx.to_le_bytes());
    d[8..16].copy_from_slice(&version.to_le_bytes());
    Bytes::from(d)
}

/// splitmix64: a small deterministic generator for choosing pages.
fn next_rand(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `k` distinct indexes below `n`, sorted.
fn choose(state: &mut u64, n: u32, k: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(k as usize);
    while (out.len() as u32) < k.min(n) {
        let i = (next_rand(state) % n as u64) as u32;
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out.sort_unstable();
    out
}

/// Requests by operation from Prometheus text, summed over labels other than `op`.
fn requests_by_op(text: &str, into: &mut Requests) {
    for (op, value) in crate::probe::store_request_samples(text) {
        let op = if op.is_empty() { "other" } else { op };
        *into.entry(op.to_string()).or_default() += value;
    }
}

async fn scrape_requests(metrics: &[String]) -> anyhow::Result<Requests> {
    let http = crate::probe::http_client();
    let mut r = Requests::new();
    for addr in metrics {
        let text = crate::probe::http_get(&http, addr, "/metrics").await?;
        requests_by_op(&text, &mut r);
    }
    Ok(r)
}

/// The price of `per_s` requests of operation `op` for a month.
fn request_cost(args: &LifecycleArgs, op: &str, per_s: f64) -> f64 {
    let per_1k = match op {
        "put" | "list" => args.put_per_1k,
        "get" | "get_range" | "head" => args.get_per_1k,
        "delete" => args.delete_per_1k,
        _ => args.put_per_1k,
    };
    per_s * MONTH_S / 1000.0 * per_1k
}

async fn run_mode(args: &LifecycleArgs, exe: &Path, gc: GcMode) -> anyhow::Result<ModeResult> {
    let name = match gc {
        GcMode::On => "folio-lifecycle-gc-on",
        GcMode::Off => "folio-lifecycle-gc-off",
    };
    let work = args.run.work(name)?;
    let store = StoreSpec::Local {
        root: work.path.join("objects"),
    };
    const GROUP: &str = "lifecycle";
    let opts = NodeOptions {
        early_seal: true,
        extra_toml: format!(
            "[lifecycle]\nretention_ms = {}\nretain_commits = 1\ninterval_ms = {}\ngc = {}\n\
             gc_grace_ms = {}\n",
            args.retention_ms,
            args.round_ms,
            gc == GcMode::On,
            args.gc_grace_ms
        ),
    };
    let mut g = LocalGroup::start_with(exe, &work.path, GROUP, &store, &opts).await?;
    let dir = store
        .local_dir(GROUP)
        .context("the benchmark runs on a local store")?;
    let mut addrs = vec![g.leader.clone()];
    addrs.extend(g.addrs.iter().filter(|a| **a != g.leader).cloned());
    let client = Arc::new(Client::new(addrs, RetryPolicy::default())?);

    // Each writer's share of the hot pages, written once.
    let mut writers = Vec::with_capacity(args.writers);
    for w in 0..args.writers {
        let n = args.hot_pages / args.writers as u32
            + u32::from((w as u32) < args.hot_pages % args.writers as u32);
        let v = client.create_volume(None).await?;
        let mut lsn = Lsn(0);
        for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
            let pages = chunk.iter().map(|i| (*i, page(w, *i, 0))).collect();
            lsn = client
                .commit(v, lsn, pages, format!("fill-{w}-{}", chunk[0]))
                .await?
                .lsn;
        }
        writers.push((v, n, lsn));
    }

    let commits = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.secs);
    let before = scrape_requests(&g.metrics).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for (w, (v, n, lsn)) in writers.into_iter().enumerate() {
        let (client, commits, k) = (client.clone(), commits.clone(), args.pages);
        tasks.spawn(async move {
            let (mut lsn, mut rng, mut version) = (lsn, w as u64 + 1, 0u64);
            while Instant::now() < deadline {
                version += 1;
                let pages: Vec<(u32, Bytes)> = choose(&mut rng, n, k)
                    .into_iter()
                    .map(|i| (i, page(w, i, version)))
                    .collect();
                lsn = client
                    .commit(v, lsn, pages, format!("w{w}-{version}"))
                    .await?
                    .lsn;
                commits.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }

    println!(
        "gc {gc:?}: {:>7}  {:>9}  {:>11}  {:>12}  {:>8}",
        "t (s)", "commits", "written MB", "bucket MB", "objects"
    );
    let per_commit = args.pages as u64 * PAGE_SIZE as u64;
    let mut samples = Vec::new();
    samples.push(sample(gc, started, &dir, 0, per_commit).await?);
    let every = Duration::from_secs_f64(args.sample_secs);
    let mut tick = tokio::time::interval_at((started + every).into(), every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                Some(r) => r.context("writer task")?.context("commit")?,
                None => break,
            },
            _ = tick.tick() => {
                g.check_alive()?;
                samples.push(sample(gc, started, &dir, commits.load(Ordering::Relaxed), per_commit).await?);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let after = scrape_requests(&g.metrics).await?;
    let done = commits.load(Ordering::Relaxed);
    samples.push(sample(gc, started, &dir, done, per_commit).await?);
    drop(g);

    let write_bytes_per_s = (done * per_commit) as f64 / secs;
    let live_bytes = args.hot_pages as u64 * PAGE_SIZE as u64;
    let window_bytes = write_bytes_per_s * args.retention_ms as f64 / 1000.0;
    let bound_bytes = 2.0 * (live_bytes as f64 + window_bytes);
    let settle_s = (args.retention_ms + args.gc_grace_ms + 2 * args.round_ms) as f64 / 1000.0;
    let steady_max_bucket_bytes = samples
        .iter()
        .filter(|s| s.t_s >= settle_s)
        .map(|s| s.bucket_bytes)
        .max()
        .unwrap_or(0);
    let end_bucket_bytes = samples.last().map_or(0, |s| s.bucket_bytes);
    trailing_bounds(&mut samples, live_bytes, args.retention_ms as f64 / 1000.0);
    let max_trailing_ratio = samples
        .iter()
        .filter(|s| s.t_s >= settle_s)
        .filter_map(|s| Some(s.bucket_bytes as f64 / s.trailing_bound_bytes?))
        .fold(0.0, f64::max);
    let requests_per_s: Requests = after
        .iter()
        .map(|(op, n)| {
            (
                op.clone(),
                (n - before.get(op).copied().unwrap_or(0.0)) / secs,
            )
        })
        .filter(|(_, r)| *r > 0.0)
        .collect();
    let requests_usd = requests_per_s
        .iter()
        .map(|(op, r)| request_cost(args, op, *r))
        .sum::<f64>();
    let mean_stored = match gc {
        GcMode::On => steady_max_bucket_bytes.max(end_bucket_bytes) as f64,
        GcMode::Off => end_bucket_bytes as f64 + write_bytes_per_s * MONTH_S / 2.0,
    };
    let mean_stored_gb = mean_stored / 1e9;
    let storage_usd = mean_stored_gb * args.gb_month;
    Ok(ModeResult {
        gc,
        secs,
        commits: done,
        commits_per_s: done as f64 / secs,
        write_bytes_per_s,
        live_bytes,
        window_bytes,
        bound_bytes,
        max_trailing_ratio,
        steady_max_bucket_bytes,
        end_bucket_bytes,
        requests_per_s,
        cost: Cost {
            requests_usd,
            mean_stored_gb,
            storage_usd,
            total_usd: requests_usd + storage_usd,
        },
        samples,
    })
}

/// Fills each sample's trailing bound: 2 × (live + the bytes written over the `window_s` seconds
/// before it), the rate taken between it and the latest sample at least a window older.
fn trailing_bounds(samples: &mut [Sample], live: u64, window_s: f64) {
    for i in 0..samples.len() {
        let t = samples[i].t_s;
        let Some(old) = samples[..i].iter().rev().find(|s| s.t_s <= t - window_s) else {
            continue;
        };
        let per_s = (samples[i].written_bytes - old.written_bytes) as f64 / (t - old.t_s);
        samples[i].trailing_bound_bytes = Some(2.0 * (live as f64 + per_s * window_s));
    }
}

/// Walks the bucket and prints a row.
async fn sample(
    gc: GcMode,
    started: Instant,
    dir: &Path,
    commits: u64,
    per_commit: u64,
) -> anyhow::Result<Sample> {
    let dir = dir.to_path_buf();
    let usage = tokio::task::spawn_blocking(move || footprint::dir_usage(&dir)).await??;
    let s = Sample {
        t_s: started.elapsed().as_secs_f64(),
        commits,
        written_bytes: commits * per_commit,
        bucket_bytes: usage.bytes,
        bucket_objects: usage.files,
        trailing_bound_bytes: None,
    };
    println!(
        "gc {gc:?}: {:>7.0}  {:>9}  {:>11.1}  {:>12.1}  {:>8}",
        s.t_s,
        s.commits,
        s.written_bytes as f64 / 1e6,
        s.bucket_bytes as f64 / 1e6,
        s.bucket_objects
    );
    Ok(s)
}

fn summary(args: &LifecycleArgs, r: &ModeResult) -> String {
    let mb = |b: f64| b / 1e6;
    let mut s = format!(
        "gc {:?}: {} commits in {:.0} s ({:.0}/s, {:.2} MB/s of pages)\n  live {:.1} MB, one \
         {} s retention window {:.1} MB, bound 2 × (live + window) = {:.1} MB\n  bucket: \
         largest after {:.0} s {:.1} MB ({:.2} × bound), at the end {:.1} MB; against the \
         bound of the window before each sample, at most {:.2} ×\n  requests/s:",
        r.gc,
        r.commits,
        r.secs,
        r.commits_per_s,
        mb(r.write_bytes_per_s),
        mb(r.live_bytes as f64),
        args.retention_ms / 1000,
        mb(r.window_bytes),
        mb(r.bound_bytes),
        (args.retention_ms + args.gc_grace_ms + 2 * args.round_ms) as f64 / 1000.0,
        mb(r.steady_max_bucket_bytes as f64),
        r.steady_max_bucket_bytes as f64 / r.bound_bytes,
        mb(r.end_bucket_bytes as f64),
        r.max_trailing_ratio,
    );
    for (op, n) in &r.requests_per_s {
        s.push_str(&format!(" {op} {n:.2}"));
    }
    s.push_str(&format!(
        "\n  a 30-day month at this rate: requests ${:.2} + storage {:.2} GB-month ${:.2} = \
         ${:.2}\n",
        r.cost.requests_usd, r.cost.mean_stored_gb, r.cost.storage_usd, r.cost.total_usd
    ));
    s
}

fn write_svg(args: &LifecycleArgs, modes: &[ModeResult], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = modes.iter().map(|m| m.secs).fold(1.0, f64::max);
    let y_max = modes
        .iter()
        .flat_map(|m| {
            m.samples
                .iter()
                .map(|s| s.bucket_bytes as f64)
                .chain([m.bound_bytes])
        })
        .fold(1.0, f64::max)
        / 1e6
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "bucket bytes: {} writers rewriting {} hot pages, retention {} s",
                args.writers,
                args.hot_pages,
                args.retention_ms / 1000
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds of rewriting")
        .y_desc("MB")
        .draw()?;
    let colors = [RGBColor(0, 114, 178), RGBColor(213, 94, 0)];
    for (i, m) in modes.iter().enumerate() {
        let style = colors[i % colors.len()].stroke_width(2);
        chart
            .draw_series(LineSeries::new(
                m.samples
                    .iter()
                    .map(|s| (s.t_s, s.bucket_bytes as f64 / 1e6)),
                style,
            ))?
            .label(format!("bucket, GC {:?}", m.gc))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        if m.gc == GcMode::On {
            let dashed = BLACK.stroke_width(1);
            chart
                .draw_series(DashedLineSeries::new(
                    m.samples
                        .iter()
                        .filter_map(|s| Some((s.t_s, s.trailing_bound_bytes? / 1e6))),
                    8,
                    4,
                    dashed,
                ))?
                .label("2 × (live + last retention window's writes), GC on")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], dashed));
        }
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

pub async fn run(args: LifecycleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=WRITERS_MAX).contains(&args.writers),
        "--writers must be in 1..={WRITERS_MAX}"
    );
    anyhow::ensure!(
        (args.writers as u32..=HOT_PAGES_MAX).contains(&args.hot_pages),
        "--hot-pages must be in --writers..={HOT_PAGES_MAX}"
    );
    anyhow::ensure!(
        (1..=folio_core::limits::MAX_PAGES_PER_REQUEST as u32).contains(&args.pages),
        "--pages must be in 1..={}",
        folio_core::limits::MAX_PAGES_PER_REQUEST
    );
    anyhow::ensure!(
        args.secs > 0.0 && args.secs <= SECS_MAX,
        "--secs must be in (0, {SECS_MAX}]"
    );
    anyhow::ensure!(
        args.sample_secs >= SAMPLE_SECS_MIN && args.sample_secs <= args.secs,
        "--sample-secs must be in [{SAMPLE_SECS_MIN}, --secs]"
    );
    anyhow::ensure!(!args.gc.is_empty(), "--gc names no mode");
    // Every commit then writes exactly --pages pages, which the byte counts assume.
    anyhow::ensure!(
        args.pages <= args.hot_pages / args.writers as u32,
        "--pages must be at most each writer's share of the hot pages (--hot-pages / --writers)"
    );
    let settle_s = (args.retention_ms + args.gc_grace_ms + 2 * args.round_ms) as f64 / 1000.0;
    anyhow::ensure!(
        args.secs > settle_s,
        "--secs must exceed retention + grace + two rounds ({settle_s} s), or nothing settles"
    );
    let exe = args.run.folio_bin()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let mut modes = Vec::new();
    for gc in args.gc.clone() {
        modes.push(run_mode(&args, &exe, gc).await?);
    }
    for m in &modes {
        print!("{}", summary(&args, m));
    }
    let r = Report {
        schema: 1,
        machine: Machine::this(),
        setup: serde_json::json!({
            "group": "3 folio server processes on 127.0.0.1 started by folio-bench, local store",
            "folio_bin": exe.display().to_string(),
            "writers": args.writers,
            "hot_pages": args.hot_pages,
            "pages_per_commit": args.pages,
            "secs": args.secs,
            "retention_ms": args.retention_ms,
            "retain_commits": 1,
            "round_ms": args.round_ms,
            "gc_grace_ms": args.gc_grace_ms,
            "prices_usd": {"put_list_per_1k": args.put_per_1k, "get_head_per_1k": args.get_per_1k,
                           "delete_per_1k": args.delete_per_1k, "gb_month": args.gb_month},
        }),
        modes,
    };
    let json = args.out.join("lifecycle.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&r)?)
        .with_context(|| format!("write {}", json.display()))?;
    let svg = args.out.join("lifecycle.svg");
    write_svg(&args, &r.modes, &svg)?;
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_distinct_pages_in_range() {
        let mut s = 7;
        for _ in 0..100 {
            let c = choose(&mut s, 62, 4);
            assert_eq!(c.len(), 4);
            assert!(c.windows(2).all(|w| w[0] < w[1]) && c[3] < 62);
        }
        assert_eq!(choose(&mut s, 3, 5).len(), 3, "never more than there are");
    }

    #[test]
    fn trailing_bounds_follow_the_rate_of_the_window_before() {
        let at = |t_s: f64, written_bytes: u64| Sample {
            t_s,
            commits: 0,
            written_bytes,
            bucket_bytes: 0,
            bucket_objects: 0,
            trailing_bound_bytes: None,
        };
        // 10 bytes/s for 60 s, then 20 bytes/s.
        let mut s = vec![at(0.0, 0), at(30.0, 300), at(60.0, 600), at(90.0, 1200)];
        trailing_bounds(&mut s, 5, 60.0);
        let b: Vec<_> = s.iter().map(|s| s.trailing_bound_bytes).collect();
        assert_eq!(
            b,
            vec![
                None,
                None,
                Some(2.0 * (5.0 + 600.0)),
                Some(2.0 * (5.0 + 900.0))
            ]
        );
    }

    #[test]
    fn requests_sum_over_kinds_and_outcomes() {
        let text = "# HELP x\n\
            folio_object_store_requests_total{op=\"put\",kind=\"segment\",outcome=\"ok\"} 3\n\
            folio_object_store_requests_total{op=\"put\",kind=\"run\",outcome=\"ok\"} 2\n\
            folio_object_store_requests_total{op=\"delete\",kind=\"segment\",outcome=\"ok\"} 4\n\
            folio_object_store_request_seconds_count{op=\"put\"} 9\n";
        let mut r = Requests::new();
        requests_by_op(text, &mut r);
        requests_by_op(text, &mut r);
        assert_eq!(r.get("put"), Some(&10.0));
        assert_eq!(r.get("delete"), Some(&8.0));
        assert_eq!(r.len(), 2);
    }
}
