//! `folio-bench history`: node state stays bounded while history grows. It starts a 3-node group,
//! commits from many writers (each on its own volume) until a number of page versions is written
//! or a time limit passes, and samples every few seconds what each node holds (data directory,
//! resident memory, snapshots) next to what the bucket holds. At the end it restarts a follower,
//! so its caches are empty, and reads the oldest commits of a few volumes from it, cold and then
//! warm: reads at old LSNs go through the bucket's index runs, not through state the node kept.
//! It prints a table as it goes and writes `history.json` and `history.svg`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use folio_client::{Client, RetryPolicy};
use folio_core::limits::MAX_PAGES_PER_REQUEST;
use folio_core::{Lsn, VolumeId};
use folio_proto::volume::v1 as pb;

use crate::footprint;
use crate::group::{LocalGroup, LocalRunArgs, NodeOptions, S3Args, StoreSpec};
use crate::history_report::{
    self as report, HistoryReport, Interval, NodeSample, OldReads, ReadStats, Sample,
};
use crate::latency::Latencies;
use crate::load::{CommitWriter, Writer};
use crate::report::Machine;

/// Bounds of what a user may ask for, so a typo cannot start a day-long run.
const WRITERS_MAX: usize = 1024;
const SECS_MAX: f64 = 3600.0;
const SAMPLE_SECS_MIN: f64 = 0.5;
const PAGE_VERSIONS_MAX: u64 = 1_000_000_000;
const OLD_READ_VOLUMES_MAX: usize = 64;
/// LSNs read on each volume at the end: 1 up to this.
const OLD_LSN_MAX: u64 = 10;
/// Longest the buffer may take to drain once writing stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a restarted follower may take to apply what the leader had applied.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout of one admin Status call.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a wait (drain, catch-up) looks again.
const POLL: Duration = Duration::from_millis(100);

#[derive(clap::Args)]
pub struct HistoryArgs {
    /// Concurrent writers, each committing on its own volume.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Pages per commit (each a new version of the same pages of the writer's volume).
    #[arg(long, default_value_t = 16)]
    pages: u32,
    /// Stop writing after this many page versions (commits × pages)…
    #[arg(long, default_value_t = 1_000_000)]
    page_versions: u64,
    /// …or after this many seconds, whichever comes first.
    #[arg(long, default_value_t = 600.0)]
    secs: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5.0)]
    sample_secs: f64,
    /// Volumes whose first commits are read from the restarted follower at the end.
    #[arg(long, default_value_t = 4)]
    old_read_volumes: usize,
    /// Where `history.json` and `history.svg` go (created if missing).
    #[arg(long, default_value = "history-results")]
    out: PathBuf,
    #[command(flatten)]
    s3: S3Args,
    /// TOML appended to every node's config, after its `[flush]` table: start it with a table
    /// header, e.g. $'[checkpoint]\ninterval_ms = 5000'.
    #[arg(long, default_value = "")]
    node_toml: String,
    #[command(flatten)]
    run: LocalRunArgs,
}

/// Where the bucket's bytes come from.
enum BucketSource {
    /// A walk of the local store's directory.
    Dir(PathBuf),
    /// An estimate from the nodes' metrics (see `footprint`).
    Metrics(Vec<String>),
}

/// What a sample reads: each node's directory and process, and the bucket.
struct Sampler {
    nodes: Vec<(usize, PathBuf, Option<u32>)>,
    bucket: BucketSource,
}

impl Sampler {
    fn new(g: &LocalGroup, bucket: BucketSource) -> Sampler {
        Sampler {
            nodes: g
                .node_ids()
                .map(|id| (id, g.data_dir(id), g.pid(id)))
                .collect(),
            bucket,
        }
    }

    /// Each node's footprint and the bucket's bytes. A bucket that cannot be measured is `None`
    /// (with a warning); a node directory that cannot be walked fails the run.
    async fn measure(&self) -> anyhow::Result<(Vec<NodeSample>, Option<u64>)> {
        let nodes = self.nodes.clone();
        let dir = match &self.bucket {
            BucketSource::Dir(d) => Some(d.clone()),
            BucketSource::Metrics(_) => None,
        };
        let (nodes, dir_bytes) = tokio::task::spawn_blocking(move || {
            let nodes = nodes
                .into_iter()
                .map(|(node, data, pid)| {
                    anyhow::Ok(NodeSample {
                        node,
                        data_dir_bytes: footprint::dir_bytes(&data)?,
                        rss_bytes: pid.and_then(footprint::rss_bytes),
                        snapshot_bytes: footprint::snapshot_bytes(&data)?,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let dir_bytes = dir.map(|d| footprint::dir_bytes(&d)).transpose()?;
            anyhow::Ok((nodes, dir_bytes))
        })
        .await
        .context("measure the node directories")??;
        let bucket = match &self.bucket {
            BucketSource::Dir(_) => dir_bytes,
            BucketSource::Metrics(addrs) => match footprint::bucket_bytes_from_metrics(addrs).await
            {
                Ok(b) => Some(b),
                Err(e) => {
                    eprintln!("history: bucket bytes not measured at this sample: {e}");
                    None
                }
            },
        };
        Ok((nodes, bucket))
    }
}

/// Shared by the writers and the sampler: commits left to claim, commits done, and the
/// latencies of the commits acknowledged since the last sample.
struct Progress {
    left: AtomicU64,
    done: AtomicU64,
    interval: Mutex<Latencies>,
}

impl Progress {
    fn claim(&self) -> bool {
        self.left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1))
            .is_ok()
    }

    fn record(&self, latency: Duration) {
        self.interval
            .lock()
            .expect("no writer panics holding the lock")
            .record(latency);
        self.done.fetch_add(1, Ordering::SeqCst);
    }

    /// The latencies since the last call, and the commits done so far.
    fn take(&self) -> (Latencies, u64) {
        let l = std::mem::take(&mut *self.interval.lock().expect("no writer panics holding it"));
        (l, self.done.load(Ordering::SeqCst))
    }
}

/// The sample in progress: where the previous one left off.
struct Clock {
    started: Instant,
    last_at: Instant,
    last_commits: u64,
    pages: u32,
}

impl Clock {
    async fn sample(
        &mut self,
        phase: &'static str,
        progress: &Progress,
        sampler: &Sampler,
        group: &mut LocalGroup,
    ) -> anyhow::Result<Sample> {
        group.check_alive()?;
        let now = Instant::now();
        let (latencies, commits) = progress.take();
        let i = Interval::of(self.last_commits, commits, now - self.last_at, &latencies);
        self.last_at = now;
        self.last_commits = commits;
        let (nodes, bucket_bytes) = sampler.measure().await?;
        let s = Sample {
            phase,
            t_s: now.duration_since(self.started).as_secs_f64(),
            page_versions: commits * self.pages as u64,
            commits,
            commits_per_s: i.commits_per_s,
            commit_p50_us: i.p50_us,
            commit_p99_us: i.p99_us,
            nodes,
            bucket_bytes,
        };
        println!("{}", report::row(&s));
        Ok(s)
    }
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=WRITERS_MAX).contains(&args.writers),
        "--writers must be in 1..={WRITERS_MAX}"
    );
    anyhow::ensure!(
        (1..=MAX_PAGES_PER_REQUEST as u32).contains(&args.pages),
        "--pages must be in 1..={MAX_PAGES_PER_REQUEST}"
    );
    anyhow::ensure!(
        (1..=PAGE_VERSIONS_MAX).contains(&args.page_versions),
        "--page-versions must be in 1..={PAGE_VERSIONS_MAX}"
    );
    anyhow::ensure!(
        args.secs > 0.0 && args.secs <= SECS_MAX,
        "--secs must be in (0, {SECS_MAX}]"
    );
    anyhow::ensure!(
        args.sample_secs >= SAMPLE_SECS_MIN && args.sample_secs <= args.secs,
        "--sample-secs must be in [{SAMPLE_SECS_MIN}, --secs]"
    );
    anyhow::ensure!(
        (1..=OLD_READ_VOLUMES_MAX.min(args.writers)).contains(&args.old_read_volumes),
        "--old-read-volumes must be in 1..={OLD_READ_VOLUMES_MAX} and at most --writers"
    );
    let exe = args.run.folio_bin()?;
    // A directory of its own, even under a given --work-dir, so removing it removes only what
    // this run created.
    let work = args.run.work("folio-history")?;
    let started_unix_s = work.started_unix_s;
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let store = StoreSpec::from_args(&args.s3, &work);
    const GROUP: &str = "history";
    let opts = NodeOptions {
        early_seal: true,
        extra_toml: args.node_toml.clone(),
    };
    let mut g = LocalGroup::start_with(&exe, &work.path, GROUP, &store, &opts).await?;
    let (bucket, bucket_source) = match store.local_dir(GROUP) {
        Some(d) => (
            BucketSource::Dir(d),
            "walk of the local store directory".to_string(),
        ),
        None => (
            BucketSource::Metrics(g.metrics.clone()),
            "estimate from node metrics (no S3 client in folio-bench): sum of \
             folio_segment_bytes_sum + largest folio_checkpoint_run_bytes; merged-away runs, \
             manifests and claims not counted"
                .to_string(),
        ),
    };
    let sampler = Sampler::new(&g, bucket);
    let setup = serde_json::json!({
        "group": "3 folio server processes on 127.0.0.1 started by folio-bench",
        "folio_bin": exe.display().to_string(),
        "work_dir": work.path.display().to_string(),
        "object_store": store.describe(),
        "bucket_source": bucket_source,
        "writers": args.writers,
        "pages_per_commit": args.pages,
        "durability": "QUORUM",
        "page_versions_max": args.page_versions,
        "secs_max": args.secs,
        "sample_secs": args.sample_secs,
        "node_toml": args.node_toml,
    });
    println!(
        "history: {} writers × {} pages per commit, until {} page versions or {}s; store: {}",
        args.writers,
        args.pages,
        args.page_versions,
        args.secs,
        store.describe()
    );

    // The leader first: most calls go there.
    let mut addrs = vec![g.leader.clone()];
    addrs.extend(g.addrs.iter().filter(|a| **a != g.leader).cloned());
    let client = Arc::new(Client::new(addrs, RetryPolicy::default())?);
    let mut volumes = Vec::with_capacity(args.writers);
    for _ in 0..args.writers {
        volumes.push(client.create_volume(None).await?);
    }

    let commits_max = args.page_versions.div_ceil(args.pages as u64);
    let progress = Arc::new(Progress {
        left: AtomicU64::new(commits_max),
        done: AtomicU64::new(0),
        interval: Mutex::new(Latencies::default()),
    });
    let started = Instant::now();
    let mut clock = Clock {
        started,
        last_at: started,
        last_commits: 0,
        pages: args.pages,
    };
    println!("{}", report::header());
    let mut samples = vec![clock.sample("start", &progress, &sampler, &mut g).await?];
    let started = Instant::now();
    clock.started = started;
    clock.last_at = started;
    let deadline = started + Duration::from_secs_f64(args.secs);
    let mut tasks = tokio::task::JoinSet::new();
    for (w, v) in volumes.iter().enumerate() {
        let mut writer = CommitWriter::new(
            client.clone(),
            *v,
            args.pages,
            pb::Durability::Quorum,
            format!("history-{w}"),
            w as u64,
        );
        let progress = progress.clone();
        tasks.spawn(async move {
            while Instant::now() < deadline && progress.claim() {
                let s = writer.op().await?;
                progress.record(s.latency);
            }
            anyhow::Ok(())
        });
    }
    let every = Duration::from_secs_f64(args.sample_secs);
    let mut tick = tokio::time::interval_at((started + every).into(), every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                // On the first failure, returning drops the JoinSet, which aborts the others.
                Some(r) => r.context("writer task")?.context("commit")?,
                None => break,
            },
            _ = tick.tick() => {
                samples.push(clock.sample("write", &progress, &sampler, &mut g).await?);
            }
        }
    }
    let write_secs = started.elapsed().as_secs_f64();
    samples.push(clock.sample("end", &progress, &sampler, &mut g).await?);
    let commits = progress.done.load(Ordering::SeqCst);
    let stopped_by = if commits >= commits_max {
        "page-versions"
    } else {
        "time"
    };

    let mut notes = Vec::new();
    let drained = drain(&g).await;
    match &drained {
        Ok(secs) => notes.push(format!(
            "the buffer drained {secs:.1}s after writing stopped"
        )),
        Err(e) => notes.push(format!("{e:#}")),
    }
    samples.push(clock.sample("drained", &progress, &sampler, &mut g).await?);
    let old = match drained {
        Ok(_) => {
            old_reads(
                &mut g,
                &client,
                &volumes[..args.old_read_volumes],
                args.pages,
            )
            .await
        }
        Err(e) => Err(e.context("old-LSN reads skipped")),
    };
    let (old_reads, failure) = match old {
        Ok(o) => (Some(o), None),
        Err(e) => {
            notes.push(format!("old-LSN reads failed: {e:#}"));
            (None, Some(e))
        }
    };
    let r = HistoryReport {
        schema: report::SCHEMA_VERSION,
        started_unix_s,
        machine: Machine::this(),
        setup,
        stopped_by: stopped_by.to_string(),
        page_versions: commits * args.pages as u64,
        commits,
        write_secs,
        samples,
        old_reads,
        notes,
    };
    print!("{}", report::summary(&r));
    let json = args.out.join("history.json");
    report::write_json(&r, &json)?;
    let svg = args.out.join("history.svg");
    report::write_svg(&r, &svg)?;
    println!("wrote {} and {}", json.display(), svg.display());
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The leader's address, as any member knows it.
async fn current_leader(g: &LocalGroup) -> anyhow::Result<String> {
    for a in &g.addrs {
        if let Ok(s) = Client::node_status(a, STATUS_TIMEOUT).await {
            if s.leader_id != 0 && !s.leader_addr.is_empty() {
                return Ok(s.leader_addr);
            }
        }
    }
    anyhow::bail!("no member knows a leader")
}

/// Waits until the leader's buffer is empty (every page flushed); returns how long it took.
async fn drain(g: &LocalGroup) -> anyhow::Result<f64> {
    let t = Instant::now();
    let deadline = t + DRAIN_TIMEOUT;
    loop {
        let leader = current_leader(g).await?;
        if Client::node_status(&leader, STATUS_TIMEOUT)
            .await?
            .buffered_bytes
            == 0
        {
            return Ok(t.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the buffer did not drain within {DRAIN_TIMEOUT:?} after writing stopped"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Restarts a follower, waits until it has applied what the leader had, then reads LSN
/// 1..=[`OLD_LSN_MAX`] of each of `volumes` from it, every page a commit wrote in one ReadPages
/// call, twice: cold (first read after the restart) and warm.
async fn old_reads(
    g: &mut LocalGroup,
    client: &Client,
    volumes: &[VolumeId],
    pages: u32,
) -> anyhow::Result<OldReads> {
    let leader = current_leader(g).await?;
    let (id, addr) = g
        .node_ids()
        .zip(g.addrs.iter())
        .find(|(_, a)| **a != leader)
        .map(|(id, a)| (id, a.clone()))
        .context("the group has no follower")?;
    let mut heads = Vec::with_capacity(volumes.len());
    for v in volumes {
        heads.push(client.snapshot(*v).await?);
    }
    let applied = Client::node_status(&leader, STATUS_TIMEOUT)
        .await?
        .applied_index;
    let restarted = Instant::now();
    g.restart(id).await?;
    let deadline = restarted + CATCH_UP_TIMEOUT;
    loop {
        g.check_alive()?;
        if let Ok(s) = Client::node_status(&addr, STATUS_TIMEOUT).await {
            if s.applied_index >= applied {
                break;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "restarted node {id} did not apply index {applied} within {CATCH_UP_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let catch_up_s = restarted.elapsed().as_secs_f64();

    // Only the restarted follower, which answers reads at LSNs it has applied itself, and one
    // attempt per call: a retry could follow a leader hint and measure the leader instead.
    let reader = Client::new([addr.clone()], RetryPolicy::once())?;
    // Opens the connection (a call the follower forwards, touching no page or index cache), so
    // the first cold read does not also pay for it.
    reader.list_volumes(None, 1).await?;
    let idxs: Vec<u32> = (0..pages).collect();
    let mut runs = [Latencies::default(), Latencies::default()];
    for l in &mut runs {
        for (v, head) in volumes.iter().zip(&heads) {
            for lsn in 1..=OLD_LSN_MAX.min(head.0) {
                let t = Instant::now();
                reader
                    .read_pages(*v, Lsn(lsn), &idxs)
                    .await
                    .with_context(|| format!("read volume {v} at LSN {lsn} from node {id}"))?;
                l.record(t.elapsed());
            }
        }
    }
    let [cold, warm] = runs;
    let stats =
        |l: &Latencies| ReadStats::of(l).context("no volume had a commit to read at an old LSN");
    Ok(OldReads {
        node: id,
        volumes: volumes.len(),
        lsn_max: OLD_LSN_MAX,
        pages_per_read: pages,
        catch_up_s,
        cold: stats(&cold)?,
        warm: stats(&warm)?,
    })
}
