//! `folio-jepsen`: runs a Folio group under faults, records what clients saw, and checks it.
//!
//! ```text
//! folio-jepsen run --workload cas --nemesis partition,kill --time 60 --seed 7
//! folio-jepsen campaign --runs 100 --time 30 --seed 1
//! folio-jepsen check --dir jepsen/store/<run>     # re-check a stored history
//! folio-jepsen clean                              # remove namespaces a killed run left
//! ```
//! Needs root (network namespaces, iptables, a tmpfs), moto and libfaketime (scripts/setup.sh).

mod check;
mod db;
mod history;
mod monitor;
mod nemesis;
mod net;
mod proxy;
mod report;
mod workload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use folio_client::RetryPolicy;
use rand::{Rng, SeedableRng};

use crate::check::CheckResult;
use crate::db::{Db, DbOpts};
use crate::history::Recorder;
use crate::workload::Ctx;

#[derive(Parser)]
#[command(
    name = "folio-jepsen",
    about = "Fault injection with a history checker for Folio"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// A series of runs, each a separate `run` process, with one table of verdicts at the end.
#[derive(clap::Args, Clone, Debug)]
struct CampaignArgs {
    #[arg(long, default_value_t = 100)]
    runs: u64,
    /// Seconds of workload per run.
    #[arg(long, default_value_t = 20)]
    time: u64,
    /// Seed of the first run; run i uses seed + i.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value = "cas,append,durable,watch")]
    workloads: String,
    /// The faults to cycle through (each run gets one, every third run two).
    #[arg(long, default_value = "all")]
    nemeses: String,
    /// The smoke campaign for CI: every workload and every fault once, in 4 short runs.
    #[arg(long)]
    smoke: bool,
    #[arg(long, default_value = "jepsen/store")]
    store: PathBuf,
    #[arg(long, env = "FOLIO_BIN")]
    folio: Option<PathBuf>,
    /// Runs use the private network 10.213.<net>.0/24 (another than a concurrent campaign's).
    #[arg(long, default_value_t = 77)]
    net: u8,
    /// Every run's per-operation deadline [default: 5000 and 1000 ms in alternate rounds].
    #[arg(long)]
    op_timeout_ms: Option<u64>,
}

#[derive(clap::Args, Clone, Debug)]
struct RunArgs {
    /// cas, append, durable or watch.
    #[arg(long, default_value = "cas")]
    workload: String,
    /// Comma-separated faults (partition, kill, pause, clock, store, member, registry, disk),
    /// `all`, or `none`.
    #[arg(long, default_value = "partition,kill")]
    nemesis: String,
    /// Seconds of workload.
    #[arg(long, default_value_t = 60)]
    time: u64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Group size: 3 or 5.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Concurrent workers (per register or volume, depending on the workload).
    #[arg(long, default_value_t = 3)]
    concurrency: usize,
    /// Per-operation deadline; past it the operation is indeterminate.
    #[arg(long, default_value_t = 5000)]
    op_timeout_ms: u64,
    /// Where the run's files go [default: jepsen/store/<time>-<workload>-<seed>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The run's private network is 10.213.<net>.0/24.
    #[arg(long, default_value_t = 77)]
    net: u8,
    /// The folio binary [default: next to this one, or $FOLIO_BIN].
    #[arg(long, env = "FOLIO_BIN")]
    folio: Option<PathBuf>,
    /// Extra lines for every node's [raft] section (e.g. election timeouts).
    #[arg(long, default_value = "")]
    raft: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// One run: start a cluster, run a workload under a nemesis, heal, check.
    Run(RunArgs),
    /// Many runs, cycling through workloads and nemeses; prints a table for RESULTS.md.
    Campaign(CampaignArgs),
    /// Re-runs the history checkers on a stored run.
    Check {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Removes namespaces, links and rules left by killed runs.
    Clean,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(args) => {
            let rt = tokio::runtime::Runtime::new()?;
            let valid = rt.block_on(run(args))?;
            std::process::exit(if valid { 0 } else { 1 });
        }
        Cmd::Campaign(args) => campaign(args),
        Cmd::Check { dir } => {
            let h = history::read_jsonl(&dir.join("history.jsonl"))?;
            // Registers start at LSN 0: every run creates its volumes afresh.
            let results = [
                check::linear::check(&h, &HashMap::new()),
                check::elle::check(&h),
            ];
            let mut valid = true;
            for r in results.iter().filter(|r| r.stats.values().any(|n| *n > 0)) {
                valid &= r.valid;
                println!("{}", serde_json::to_string_pretty(r)?);
            }
            std::process::exit(if valid { 0 } else { 1 });
        }
        Cmd::Clean => {
            net::clean_all();
            Ok(())
        }
    }
}

fn folio_bin(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let me = std::env::current_exe()?;
    let dir = me.parent().context("this binary has a directory")?;
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        let p = d.join("folio");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!(
        "no folio binary next to {}; build the workspace or pass --folio",
        me.display()
    )
}

fn policy(op_timeout: Duration) -> RetryPolicy {
    RetryPolicy {
        max_attempts: 20,
        total_timeout: op_timeout.saturating_sub(Duration::from_millis(300)),
        attempt_timeout: Duration::from_secs(2),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(400),
        hedge_after: Some(Duration::from_secs(1)),
    }
}

/// Retries `f` until it succeeds or `limit` passes.
async fn patiently<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, folio_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() > deadline => {
                bail!("{what}: still failing after {limit:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    if let Err(e) = net::available() {
        bail!("folio-jepsen {e}");
    }
    if !workload::WORKLOADS.contains(&args.workload.as_str()) {
        bail!(
            "unknown workload {:?}; known: {}",
            args.workload,
            workload::WORKLOADS.join(", ")
        );
    }
    if !(3..=5).contains(&args.nodes) {
        bail!("--nodes must be 3, 4 or 5");
    }
    let kinds = nemesis::parse(&args.nemesis)?;
    let bin = folio_bin(args.folio.clone())?;
    let out = args.out.clone().unwrap_or_else(|| {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(format!(
            "jepsen/store/{ts}-{}-{}-s{}",
            args.workload,
            kinds.join("+"),
            args.seed
        ))
    });
    std::fs::create_dir_all(&out)?;
    let out = out.canonicalize()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let has = |k: &str| kinds.iter().any(|x| x == k);
    let spare = if has("member") { 3 } else { 0 };
    let opts = DbOpts {
        nodes: args.nodes,
        spare,
        clock: has("clock"),
        small_disk: has("disk").then(|| (rng.random_range(1..=args.nodes as u64), 256)),
        raft: args.raft.clone(),
    };
    eprintln!(
        "run: workload={} nemesis={:?} seed={} time={}s -> {}",
        args.workload,
        kinds,
        args.seed,
        args.time,
        out.display()
    );
    let network = net::Net::create(args.net, args.nodes + spare)?;
    let mut db = Db::start(bin, &out.join("cluster"), network, opts).await?;
    let mut errors = Vec::new();
    db.wait_ready(Duration::from_secs(60)).await?;
    let op_timeout = Duration::from_millis(args.op_timeout_ms);
    let client = Arc::new(db.client(policy(op_timeout))?);
    let n_volumes = match args.workload.as_str() {
        "cas" => 4,
        _ => 2,
    };
    let mut volumes = Vec::new();
    for _ in 0..n_volumes {
        // The group registers with the registry shortly after it elects a leader.
        let v = patiently("create a volume", Duration::from_secs(60), || {
            client.create_volume(None)
        })
        .await?;
        volumes.push(v);
    }

    let start = Instant::now();
    let rec = Recorder::new(start);
    let until = Duration::from_secs(args.time);
    let ctx = Ctx::new(
        rec.clone(),
        client.clone(),
        until.as_nanos() as u64,
        op_timeout,
        volumes.clone(),
    );
    let mut workers = Vec::new();
    let mut watchers = Vec::new();
    let mut stops = Vec::new();
    let c = args.concurrency.max(1);
    for v in 0..n_volumes {
        for w in 0..c {
            let wid = (v * c + w) as u64;
            let seed = args.seed.wrapping_mul(1000).wrapping_add(wid);
            let ctx = ctx.clone();
            let kind = args.workload.clone();
            workers.push(tokio::spawn(async move {
                match kind.as_str() {
                    "cas" => workload::cas_worker(ctx, v, wid, seed).await,
                    "append" => workload::append_worker(ctx, v, seed).await,
                    _ => workload::write_worker(ctx, v, wid, seed).await,
                }
            }));
        }
        if args.workload == "watch" {
            let (tx, rx) = tokio::sync::watch::channel(0u64);
            stops.push(tx);
            for _ in 0..2 {
                let give_up = tokio::time::Instant::now() + until + Duration::from_secs(120);
                watchers.push(tokio::spawn(workload::watcher(
                    ctx.clone(),
                    v,
                    0,
                    rx.clone(),
                    give_up,
                )));
            }
        }
    }
    let (stop_monitor, monitor_stopped) = tokio::sync::watch::channel(false);
    let mut watched = Vec::new();
    for id in &db.members {
        watched.push((*id, db.node(*id)?.addr.clone()));
    }
    let monitor = monitor::Monitor::start(watched, start, monitor_stopped);
    let mut schedule = nemesis::Schedule::new(kinds.clone(), args.seed);
    let windows = match schedule.run(&mut db, start, until).await {
        Ok(w) => w,
        Err(e) => {
            errors.push(format!("nemesis: {e:#}"));
            Vec::new()
        }
    };
    for w in workers {
        let _ = w.await;
    }
    // Elections a late fault causes show within the settle time.
    tokio::time::sleep(monitor::SETTLE).await;
    stop_monitor.send_replace(true);
    // Heal, then let the group settle before the final reads.
    if let Err(e) = db.heal() {
        errors.push(format!("heal: {e:#}"));
    }
    if let Err(e) = db.wait_ready(Duration::from_secs(60)).await {
        errors.push(format!("after healing: {e:#}"));
    }
    errors.extend(workload::final_reads(&ctx, &args.workload).await);

    let mut checks: Vec<CheckResult> = Vec::new();
    let history = rec.snapshot();
    let acked = check::durable::acked(&history);
    let check_client = db.direct_client(RetryPolicy::default())?;
    if args.workload == "watch" {
        let mut heads = Vec::new();
        for v in &volumes {
            let head = patiently("read the head", Duration::from_secs(30), || {
                check_client.snapshot(*v)
            })
            .await
            .map(|l| l.0)
            .unwrap_or(0);
            heads.push(head);
        }
        for (tx, head) in stops.iter().zip(&heads) {
            tx.send_replace((*head).max(1));
        }
        let mut logs = Vec::new();
        for w in watchers {
            if let Ok(l) = w.await {
                logs.push(l);
            }
        }
        checks.push(check::watch::check(&logs, &heads, &acked));
    }
    let history = rec.snapshot();
    match args.workload.as_str() {
        "cas" => {
            let initial: HashMap<u64, u64> = (0..n_volumes as u64).map(|k| (k, 0)).collect();
            checks.push(check::linear::check(&history, &initial));
        }
        "append" => checks.push(check::elle::check(&history)),
        _ => {}
    }
    checks.push(check::durable::check(&check_client, &volumes, &acked, "healed").await);
    // A power cut of the whole group: everything acknowledged must come back.
    if let Err(e) = db.restart_all() {
        errors.push(format!("restart: {e:#}"));
    }
    if let Err(e) = db.wait_ready(Duration::from_secs(90)).await {
        errors.push(format!("after a full restart: {e:#}"));
    }
    let check_client = db.direct_client(RetryPolicy::default())?;
    checks.push(check::durable::check(&check_client, &volumes, &acked, "restarted").await);

    let panics = db.panics();
    let leaders = monitor.snapshot();
    let availability = report::availability(&history, &windows, until.as_nanos() as u64, &leaders);
    let results = report::Results {
        valid: checks.iter().all(|c| c.valid) && panics.is_empty() && errors.is_empty(),
        workload: args.workload.clone(),
        nemesis: kinds.clone(),
        seed: args.seed,
        time_s: args.time,
        nodes: args.nodes,
        ops: report::counts(&history),
        checks,
        windows: windows.clone(),
        availability,
        panics,
        errors,
    };
    history::write_jsonl(&out.join("history.jsonl"), &history)?;
    history::write_jsonl(&out.join("leaders.jsonl"), &leaders)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    let summary = results.summary();
    std::fs::write(out.join("summary.txt"), &summary)?;
    let title = format!(
        "{} under {} (seed {})",
        args.workload,
        if kinds.is_empty() {
            "no faults".to_string()
        } else {
            kinds.join(", ")
        },
        args.seed
    );
    if let Err(e) = report::plot(
        &out.join("latency.svg"),
        &history,
        &results.availability.windows,
        &title,
    ) {
        eprintln!("plot: {e:#}");
    }
    print!("{summary}");
    println!("files: {}", out.display());
    drop(db);
    Ok(results.valid)
}

/// One run of a campaign.
struct Planned {
    workload: String,
    nemesis: String,
    seed: u64,
    /// The clients' per-operation deadline. Half the runs use a short one, so that faults leave
    /// operations indeterminate (`info`) and the checkers must consider both outcomes; with 5 s
    /// the client's own retries outlast most faults.
    op_timeout_ms: u64,
}

/// The short deadline of every other campaign run (and the smoke's CAS run).
const SHORT_TIMEOUT_MS: u64 = 1000;
const LONG_TIMEOUT_MS: u64 = 5000;

fn plan(runs: u64, seed: u64, workloads: &[String], kinds: &[String], smoke: bool) -> Vec<Planned> {
    if smoke {
        // Every workload and every fault at least once, in four short runs.
        let pairs = [
            ("cas", "partition,kill"),
            ("append", "pause,clock"),
            ("durable", "store,disk"),
            ("watch", "member,registry"),
        ];
        return pairs
            .iter()
            .enumerate()
            .map(|(i, (w, n))| Planned {
                workload: w.to_string(),
                nemesis: n.to_string(),
                seed: seed + i as u64,
                op_timeout_ms: if *w == "cas" {
                    SHORT_TIMEOUT_MS
                } else {
                    LONG_TIMEOUT_MS
                },
            })
            .collect();
    }
    (0..runs)
        .map(|i| {
            let w = &workloads[i as usize % workloads.len()];
            let k = (i as usize / workloads.len()) % kinds.len().max(1);
            let mut nemesis = kinds.get(k).cloned().unwrap_or_else(|| "none".into());
            if i % 3 == 2 && kinds.len() > 1 {
                let other = &kinds[(k + 3) % kinds.len()];
                if *other != nemesis {
                    nemesis = format!("{nemesis},{other}");
                }
            }
            Planned {
                workload: w.clone(),
                nemesis,
                seed: seed + i,
                // Alternate by pairs of workloads' turns, so every workload gets both.
                op_timeout_ms: if (i / workloads.len() as u64) % 2 == 1 {
                    SHORT_TIMEOUT_MS
                } else {
                    LONG_TIMEOUT_MS
                },
            }
        })
        .collect()
}

/// Removes the data directories under a finished run's `cluster/`, keeping configs and logs.
fn drop_data_dirs(cluster: &std::path::Path) {
    for e in std::fs::read_dir(cluster).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                eprintln!("could not remove {}: {err}", e.path().display());
            }
        }
    }
}

fn campaign(args: CampaignArgs) -> anyhow::Result<()> {
    let CampaignArgs {
        runs,
        time,
        seed,
        workloads,
        nemeses,
        smoke,
        store,
        folio,
        net,
        op_timeout_ms,
    } = args;
    let workloads: Vec<String> = workloads.split(',').map(|s| s.trim().to_string()).collect();
    let kinds = nemesis::parse(&nemeses)?;
    let time = if smoke { time.min(25) } else { time };
    let me = std::env::current_exe()?;
    let folio = folio_bin(folio)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dir = store.join(format!("campaign-{stamp}"));
    std::fs::create_dir_all(&dir)?;
    let mut table = String::from(
        "| run | workload | nemesis | seed | deadline (ms) | ops | ok | info | acked writes | lost | anomalies | valid |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let (mut total_ops, mut total_info, mut total_acked) = (0u64, 0u64, 0u64);
    let (mut total_lost, mut total_anomalies, mut invalid) = (0u64, 0u64, 0u64);
    let mut firsts: HashMap<String, Vec<f64>> = HashMap::new();
    let mut gaps: HashMap<String, Vec<f64>> = HashMap::new();
    let mut elected: HashMap<String, usize> = HashMap::new();
    let mut new_leaders: HashMap<String, Vec<f64>> = HashMap::new();
    let mut planned = plan(runs, seed, &workloads, &kinds, smoke);
    if let Some(t) = op_timeout_ms {
        planned.iter_mut().for_each(|p| p.op_timeout_ms = t);
    }
    for (i, p) in planned.iter().enumerate() {
        let out = dir.join(format!(
            "{i:03}-{}-{}-s{}",
            p.workload,
            p.nemesis.replace(',', "+"),
            p.seed
        ));
        eprintln!(
            "campaign run {}/{}: {} under {} (seed {})",
            i + 1,
            planned.len(),
            p.workload,
            p.nemesis,
            p.seed
        );
        let mut child = std::process::Command::new(&me)
            .args(["run", "--workload", &p.workload, "--nemesis", &p.nemesis])
            .args(["--time", &time.to_string(), "--seed", &p.seed.to_string()])
            .args(["--net", &net.to_string()])
            .args(["--op-timeout-ms", &p.op_timeout_ms.to_string()])
            .arg("--out")
            .arg(&out)
            .arg("--folio")
            .arg(&folio)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(time + 400);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let results: Option<serde_json::Value> = std::fs::read_to_string(out.join("results.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let Some(r) = results else {
            invalid += 1;
            table.push_str(&format!(
                "| {i} | {} | {} | {} | {} | - | - | - | - | - | - | no verdict ({status:?}) |\n",
                p.workload, p.nemesis, p.seed, p.op_timeout_ms
            ));
            continue;
        };
        let n = |path: &[&str]| -> u64 {
            let mut v = &r;
            for k in path {
                v = &v[k];
            }
            v.as_u64().unwrap_or(0)
        };
        let checks = r["checks"].as_array().cloned().unwrap_or_default();
        let anomalies: Vec<&serde_json::Value> = checks
            .iter()
            .flat_map(|c| c["anomalies"].as_array().into_iter().flatten())
            .collect();
        let lost = anomalies
            .iter()
            .filter(|a| {
                matches!(
                    a["kind"].as_str(),
                    Some("lost" | "unreadable" | "duplicate-lsn")
                )
            })
            .count() as u64;
        let valid = r["valid"].as_bool().unwrap_or(false);
        if valid {
            // A valid run's node and registry data (a few hundred MiB) says nothing its history,
            // verdict and logs do not: drop it, so that a long campaign does not fill the disk.
            drop_data_dirs(&out.join("cluster"));
        }
        total_ops += n(&["ops", "invoked"]);
        total_info += n(&["ops", "info"]);
        total_acked += n(&["ops", "acknowledged_writes"]);
        total_lost += lost;
        total_anomalies += anomalies.len() as u64;
        if !valid {
            invalid += 1;
        }
        for w in r["availability"]["windows"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let class = w["class"]
                .as_str()
                .or(w["kind"].as_str())
                .unwrap_or("?")
                .to_string();
            // A fault with no acknowledgement before the end of the run counts as its length.
            let first = w["first_ack_s"].as_f64().unwrap_or_else(|| {
                w["end_s"].as_f64().unwrap_or(0.0) - w["start_s"].as_f64().unwrap_or(0.0)
            });
            firsts.entry(class.clone()).or_default().push(first);
            gaps.entry(class.clone())
                .or_default()
                .push(w["longest_gap_s"].as_f64().unwrap_or(0.0));
            let terms = w["elections"]["terms"].as_u64().unwrap_or(0);
            *elected.entry(class.clone()).or_default() += usize::from(terms > 0);
            if let Some(t) = w["elections"]["new_leader_s"].as_f64() {
                new_leaders.entry(class).or_default().push(t);
            }
        }
        table.push_str(&format!(
            "| {i} | {} | {} | {} | {} | {} | {} | {} | {} | {lost} | {} | {} |\n",
            p.workload,
            p.nemesis,
            p.seed,
            p.op_timeout_ms,
            n(&["ops", "invoked"]),
            n(&["ops", "ok"]),
            n(&["ops", "info"]),
            n(&["ops", "acknowledged_writes"]),
            anomalies.len(),
            if valid { "yes" } else { "NO" }
        ));
    }
    let mut s = format!(
        "{} runs of {time} s: {total_ops} operations ({total_info} indeterminate), {total_acked} \
         acknowledged writes, lost {total_lost}, anomalies {total_anomalies}, invalid runs \
         {invalid}\n\n",
        planned.len()
    );
    s.push_str(&table);
    s.push_str(
        "\n| fault | faults | first ack after fault p50 (s) | p99 (s) | max (s) | longest gap max (s) | faults with an election | new leader after p50 (s) | max (s) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut kinds_seen: Vec<&String> = firsts.keys().collect();
    kinds_seen.sort();
    for k in kinds_seen {
        let mut f = firsts[k].clone();
        f.sort_by(f64::total_cmp);
        let q = |p: f64| report::quantile(&f, p).unwrap_or(0.0);
        let g = gaps[k].iter().copied().fold(0.0f64, f64::max);
        let mut nl = new_leaders.get(k).cloned().unwrap_or_default();
        nl.sort_by(f64::total_cmp);
        let show = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |t| format!("{t:.2}"));
        s.push_str(&format!(
            "| {k} | {} | {:.2} | {:.2} | {:.2} | {g:.2} | {} | {} | {} |\n",
            f.len(),
            q(0.5),
            q(0.99),
            q(1.0),
            elected.get(k).copied().unwrap_or(0),
            show(report::quantile(&nl, 0.5)),
            show(nl.last().copied()),
        ));
    }
    std::fs::write(dir.join("campaign.md"), &s)?;
    println!("{s}");
    println!("campaign files: {}", dir.display());
    if invalid > 0 {
        bail!("{invalid} of {} runs were not valid", planned.len());
    }
    Ok(())
}
