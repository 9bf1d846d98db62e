//! The suite (`folio-bench` without a subcommand): every workload and baseline in one run on one
//! machine. It starts (from the `folio` binary) or is given a 3-node group, runs the selected
//! workloads one after another, each bounded by a count and a time limit, and reports them as a
//! table, `results.json` and `latency.svg`.
//!
//! Baselines run in the same process with the same payload sizes and writer counts: the disk's
//! fsync floor and the loopback round trip; `OBJECT_STORE` durability on a second group with
//! `flush.early_seal = false` (acknowledge after the periodic 1 s flush, the design Folio
//! improves on); and a 3-member etcd cluster. Each system runs alone: the Folio groups are
//! stopped before etcd starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use folio_client::{Client, RetryPolicy, Security};
use folio_core::{Lsn, VolumeId, PAGE_SIZE};
use folio_proto::volume::v1 as pb;

use crate::etcd::{self, EtcdCluster, EtcdWriter};
use crate::fanout;
use crate::group::{LocalGroup, LocalRunArgs, S3Args, StoreSpec};
use crate::latency::summarize;
use crate::load::{self, Budget, CommitWriter, ContendWriter, ReadWriter, Writer};
use crate::probe::Probe;
use crate::report::{self, Machine, Shape, Skipped, SuiteReport, WorkloadResult};

/// Measured operations per writer are preceded by this many unmeasured ones.
const WARMUP_OPS: usize = 5;
/// Writer counts of the concurrency series (Folio on distinct volumes, and etcd).
const WRITER_COUNTS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];
/// Writers of the contended workload (one volume).
const CONTEND_WRITERS: usize = 16;
/// Writer counts of the OBJECT_STORE workloads.
const OBJECT_STORE_WRITERS: [usize; 2] = [1, 16];
/// Upper bounds of the budgets a user may ask for, so a typo cannot start an hour-long run.
const SECS_MAX: f64 = 600.0;
const READ_PAGES_MAX: u32 = 100_000;

#[derive(clap::Args)]
pub struct SuiteArgs {
    /// Workloads to run, comma-separated: names, prefixes ending in `*` (e.g. `etcd-*`), or
    /// `all`. `--list` shows them.
    #[arg(long, default_value = "all")]
    workloads: String,
    /// List the workloads and exit.
    #[arg(long)]
    list: bool,
    /// Where `results.json` and `latency.svg` go (created if missing).
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Use this running group (members' addresses, comma-separated) instead of starting one.
    /// Node CPU is then not measured.
    #[arg(long, value_delimiter = ',')]
    addr: Vec<String>,
    /// With `--addr`: the members' metrics addresses, for object-store request rates.
    #[arg(long, value_delimiter = ',', requires = "addr")]
    metrics: Vec<String>,
    /// With `--addr`: a second running group with `flush.early_seal = false`, for the
    /// acknowledge-after-flush baseline (skipped without it).
    #[arg(long, value_delimiter = ',', requires = "addr")]
    late_seal_addr: Vec<String>,
    /// With `--addr`: speak TLS to the group, trusting this CA certificate (PEM).
    #[arg(long, value_name = "FILE", requires = "addr")]
    ca: Option<PathBuf>,
    /// With `--addr`: send the bearer token in this file with every call.
    #[arg(long, value_name = "FILE", requires = "addr")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    s3: S3Args,
    /// Use this running etcd cluster (client URLs, comma-separated) for the etcd baseline.
    #[arg(long, value_delimiter = ',', conflicts_with = "etcd_bin")]
    etcd: Vec<String>,
    /// Start a 3-member etcd cluster from this binary for the etcd baseline.
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// Time limit of each workload, in seconds.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Time limit of the acknowledge-after-flush workloads (about one commit per second per
    /// writer), in seconds.
    #[arg(long, default_value_t = 8.0)]
    slow_secs: f64,
    /// Most measured operations of each workload.
    #[arg(long, default_value_t = 20_000)]
    max_ops: usize,
    /// Pages written, flushed and then read by the read workloads.
    #[arg(long, default_value_t = 2000)]
    read_pages: u32,
    #[command(flatten)]
    run: LocalRunArgs,
}

impl SuiteArgs {
    /// TLS and a token for an external group, as `--ca` and `--token-file` say.
    fn security(&self) -> anyhow::Result<Security> {
        folio_client::security_from(self.ca.as_deref(), false, None, self.token_file.clone())
            .map_err(anyhow::Error::msg)
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Fsync,
    Rpc,
    Commit {
        writers: usize,
        pages: u32,
    },
    Contend {
        writers: usize,
    },
    ReadCold,
    ReadCached,
    ObjectStore {
        writers: usize,
        early_seal: bool,
    },
    Etcd {
        writers: usize,
        value_bytes: usize,
    },
    /// Watch fan-out: Folio's WatchVolume, or etcd's watch.
    Fanout {
        etcd: bool,
    },
}

struct Spec {
    name: String,
    kind: Kind,
}

fn catalogue() -> Vec<Spec> {
    let mut v = vec![
        Spec {
            name: "disk-fsync".into(),
            kind: Kind::Fsync,
        },
        Spec {
            name: "grpc-rtt".into(),
            kind: Kind::Rpc,
        },
    ];
    for pages in [1, 16, 256] {
        v.push(Spec {
            name: format!("folio-1w-{pages}p"),
            kind: Kind::Commit { writers: 1, pages },
        });
    }
    for writers in WRITER_COUNTS.into_iter().filter(|w| *w > 1) {
        v.push(Spec {
            name: format!("folio-{writers}w-1p"),
            kind: Kind::Commit { writers, pages: 1 },
        });
    }
    v.push(Spec {
        name: format!("folio-contend-{CONTEND_WRITERS}w"),
        kind: Kind::Contend {
            writers: CONTEND_WRITERS,
        },
    });
    v.push(Spec {
        name: "folio-read-cold".into(),
        kind: Kind::ReadCold,
    });
    v.push(Spec {
        name: "folio-read-cached".into(),
        kind: Kind::ReadCached,
    });
    v.push(Spec {
        name: "folio-fanout".into(),
        kind: Kind::Fanout { etcd: false },
    });
    for (tag, early_seal) in [("early", true), ("1s", false)] {
        for writers in OBJECT_STORE_WRITERS {
            v.push(Spec {
                name: format!("folio-os-{tag}-{writers}w"),
                kind: Kind::ObjectStore {
                    writers,
                    early_seal,
                },
            });
        }
    }
    for (tag, value_bytes) in [("4k", 4096), ("64k", 64 << 10), ("1m", 1 << 20)] {
        v.push(Spec {
            name: format!("etcd-1w-{tag}"),
            kind: Kind::Etcd {
                writers: 1,
                value_bytes,
            },
        });
    }
    for writers in WRITER_COUNTS.into_iter().filter(|w| *w > 1) {
        v.push(Spec {
            name: format!("etcd-{writers}w-4k"),
            kind: Kind::Etcd {
                writers,
                value_bytes: 4096,
            },
        });
    }
    v.push(Spec {
        name: "etcd-fanout".into(),
        kind: Kind::Fanout { etcd: true },
    });
    v
}

fn shape(kind: Kind) -> Shape {
    let page = PAGE_SIZE as u64;
    let folio = |description: String, writers: usize, pages: u32, durability: &'static str| Shape {
        system: "folio",
        description,
        writers,
        bytes_per_op: pages as u64 * page,
        pages_per_op: Some(pages),
        durability: Some(durability),
    };
    match kind {
        Kind::Fsync => Shape {
            system: "disk",
            description: "4 KiB append + fdatasync in the work directory (the disk's floor)".into(),
            writers: 1,
            bytes_per_op: page,
            pages_per_op: Some(1),
            durability: None,
        },
        Kind::Rpc => Shape {
            system: "grpc",
            description: "loopback gRPC round trip (admin Status) to the leader".into(),
            writers: 1,
            bytes_per_op: 0,
            pages_per_op: None,
            durability: None,
        },
        Kind::Commit { writers, pages } => folio(
            format!(
                "{writers} writer(s) on volumes of their own, {pages} page(s) per commit, QUORUM"
            ),
            writers,
            pages,
            "QUORUM",
        ),
        Kind::Contend { writers } => folio(
            format!(
                "{writers} writers CAS-committing 1 page each to one volume, rebasing on \
                 conflict; latency of the winning attempt"
            ),
            writers,
            1,
            "QUORUM",
        ),
        Kind::ReadCold => Shape {
            durability: None,
            ..folio(
                "1 page per ReadPages call, flushed and not cached: a ranged GET on its \
                 segment"
                    .into(),
                1,
                1,
                "",
            )
        },
        Kind::ReadCached => Shape {
            durability: None,
            ..folio(
                "1 page per ReadPages call, from the node's page cache".into(),
                1,
                1,
                "",
            )
        },
        Kind::ObjectStore {
            writers,
            early_seal: true,
        } => folio(
            format!("{writers} writer(s), 1 page, OBJECT_STORE, early seal (the default)"),
            writers,
            1,
            "OBJECT_STORE",
        ),
        Kind::ObjectStore {
            writers,
            early_seal: false,
        } => folio(
            format!(
                "{writers} writer(s), 1 page, OBJECT_STORE, early seal off, 1 s flush \
                 interval: acknowledge after the periodic flush (baseline)"
            ),
            writers,
            1,
            "OBJECT_STORE",
        ),
        Kind::Etcd {
            writers,
            value_bytes,
        } => Shape {
            system: "etcd",
            description: format!(
                "{writers} writer(s) putting {} KiB values to keys of their own, 3-member etcd",
                value_bytes / 1024
            ),
            writers,
            bytes_per_op: value_bytes as u64,
            pages_per_op: None,
            durability: None,
        },
        Kind::Fanout { etcd } => {
            let (system, what) = if etcd {
                ("etcd", "keys, 4 KiB puts, 3-member etcd")
            } else {
                ("folio", "volumes, 1-page QUORUM commits")
            };
            Shape {
                system,
                description: format!(
                    "{} watchers on each of {} {what} (watches spread over the members), {} \
                     writers; latency from a write's acknowledgement to its delivery on the \
                     last of its watchers",
                    fanout::WATCHERS_PER_VOLUME,
                    fanout::VOLUMES,
                    fanout::WRITERS
                ),
                writers: fanout::WRITERS,
                bytes_per_op: page,
                pages_per_op: (!etcd).then_some(1),
                durability: (!etcd).then_some("QUORUM"),
            }
        }
    }
}

/// Whether a workload runs against a Folio group (started here unless `--addr` names one).
fn needs_group(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::Fsync | Kind::Etcd { .. } | Kind::Fanout { etcd: true }
    )
}

/// The workloads `list` names, in the catalogue's order.
fn select(list: &str) -> anyhow::Result<Vec<Spec>> {
    let all = catalogue();
    if list.trim() == "all" {
        return Ok(all);
    }
    let tokens: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    let matches = |t: &str, name: &str| match t.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == t,
    };
    for t in &tokens {
        anyhow::ensure!(
            all.iter().any(|s| matches(t, &s.name)),
            "no workload matches {t:?}; workloads: {}",
            all.iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let picked: Vec<Spec> = all
        .into_iter()
        .filter(|s| tokens.iter().any(|t| matches(t, &s.name)))
        .collect();
    anyhow::ensure!(!picked.is_empty(), "no workloads selected");
    Ok(picked)
}

/// A group the workloads run against: started here, or external.
struct Target {
    leader: String,
    /// Every member's address.
    addrs: Vec<String>,
    client: Arc<Client>,
    /// How the workloads reach it (TLS and a token, for an external group that needs them).
    security: Security,
    probe: Probe,
    group: Option<LocalGroup>,
}

impl Target {
    fn from_group(group: LocalGroup) -> anyhow::Result<Target> {
        let mut addrs = vec![group.leader.clone()];
        addrs.extend(group.addrs.iter().filter(|a| **a != group.leader).cloned());
        Ok(Target {
            leader: group.leader.clone(),
            addrs: group.addrs.clone(),
            client: Arc::new(Client::new(addrs, RetryPolicy::default())?),
            security: Security::default(),
            probe: Probe {
                pids: group.pids(),
                metrics: group.metrics.clone(),
            },
            group: Some(group),
        })
    }

    async fn external(
        addrs: &[String],
        metrics: &[String],
        security: &Security,
    ) -> anyhow::Result<Target> {
        let mut leader = None;
        for a in addrs {
            if let Ok(s) = Client::node_status_secured(a, Duration::from_secs(2), security).await {
                if s.leader_id != 0 && !s.leader_addr.is_empty() {
                    leader = Some(s.leader_addr);
                    break;
                }
            }
        }
        let leader = leader.with_context(|| format!("no member of {addrs:?} knows a leader"))?;
        let mut all = vec![leader.clone()];
        all.extend(addrs.iter().filter(|a| **a != leader).cloned());
        Ok(Target {
            leader,
            addrs: addrs.to_vec(),
            client: Arc::new(Client::secured(
                all,
                RetryPolicy::default(),
                security.clone(),
            )?),
            security: security.clone(),
            probe: Probe {
                pids: vec![],
                metrics: metrics.to_vec(),
            },
            group: None,
        })
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        match &mut self.group {
            Some(g) => g.check_alive(),
            None => Ok(()),
        }
    }

    async fn volumes(&self, n: usize) -> anyhow::Result<Vec<VolumeId>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.client.create_volume(None).await?);
        }
        Ok(v)
    }
}

/// The volume the read workloads read, and how many of its pages have been read (so cached).
struct ReadState {
    volume: VolumeId,
    lsn: Lsn,
    read: Option<usize>,
}

/// Reads pages 0, 1, 2, … of the read volume one per call, each once: the first read is an
/// unmeasured warm-up (it also fetches the segment's index), then up to `ops` measured reads.
/// Returns the measurement and how many pages were read.
async fn read_each_once(
    client: &Arc<Client>,
    rs: &ReadState,
    ops: usize,
    time: Duration,
    probe: Option<&Probe>,
) -> anyhow::Result<(load::Measured, usize)> {
    let reader = ReadWriter::new(
        client.clone(),
        rs.volume,
        rs.lsn,
        (0..=ops as u32).collect(),
    );
    let b = Budget {
        ops,
        time,
        warmup_ops: 1,
    };
    let m = load::closed_loop(vec![Box::new(reader)], &b, probe).await?;
    let read = 1 + m.latencies.count();
    Ok((m, read))
}

struct Suite {
    args: SuiteArgs,
    work: PathBuf,
    /// Found before the run when a selected workload needs a group started here.
    folio_bin: Option<PathBuf>,
    store: StoreSpec,
    budget: Budget,
    main: Option<Target>,
    late: Option<Target>,
    etcd: Option<(Vec<String>, Option<EtcdCluster>)>,
    reads: Option<ReadState>,
    results: Vec<WorkloadResult>,
    skipped: Vec<Skipped>,
}

pub async fn run(args: SuiteArgs) -> anyhow::Result<()> {
    if args.list {
        for s in catalogue() {
            println!("{:<20} {}", s.name, shape(s.kind).description);
        }
        return Ok(());
    }
    anyhow::ensure!(
        args.secs > 0.0
            && args.secs <= SECS_MAX
            && args.slow_secs > 0.0
            && args.slow_secs <= SECS_MAX,
        "--secs and --slow-secs must be in (0, {SECS_MAX}]"
    );
    anyhow::ensure!(args.max_ops > 0, "--max-ops must be positive");
    anyhow::ensure!(
        (2..=READ_PAGES_MAX).contains(&args.read_pages),
        "--read-pages must be in 2..={READ_PAGES_MAX}"
    );
    let specs = select(&args.workloads)?;
    // Found before anything starts, so a missing binary fails the run at once rather than at
    // its first Folio workload.
    let folio_bin = if args.addr.is_empty() && specs.iter().any(|s| needs_group(s.kind)) {
        Some(args.run.folio_bin()?)
    } else {
        None
    };
    // A directory of its own, even under a given --work-dir, so removing it removes only what
    // this run created.
    let work = args.run.work("folio-bench")?;
    let started_unix_s = work.started_unix_s;
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let store = StoreSpec::from_args(&args.s3, &work);
    let group = if args.addr.is_empty() {
        "3 folio server processes on 127.0.0.1 started by the suite".to_string()
    } else {
        format!("external group at {}", args.addr.join(","))
    };
    let object_store = if args.addr.is_empty() {
        store.describe()
    } else {
        "that of the external group".to_string()
    };
    let etcd_setup = if !args.etcd.is_empty() {
        format!("external cluster at {}", args.etcd.join(","))
    } else if let Some(b) = &args.etcd_bin {
        format!("3 members on 127.0.0.1 started from {}", b.display())
    } else {
        "not run".to_string()
    };
    let setup = serde_json::json!({
        "group": group,
        "object_store": object_store,
        "flush_interval_ms": 1000,
        "etcd": etcd_setup,
        "secs_per_workload": args.secs,
        "slow_secs": args.slow_secs,
        "max_ops": args.max_ops,
        "warmup_ops_per_writer": WARMUP_OPS,
        "read_pages": args.read_pages,
        "work_dir": work.path.display().to_string(),
        "folio_bin": folio_bin.as_ref().map(|p| p.display().to_string()),
        "folio_version": env!("CARGO_PKG_VERSION"),
    });
    let budget = Budget {
        ops: args.max_ops,
        time: Duration::from_secs_f64(args.secs),
        warmup_ops: WARMUP_OPS,
    };
    let mut suite = Suite {
        work: work.path.clone(),
        folio_bin,
        args,
        store,
        budget,
        main: None,
        late: None,
        etcd: None,
        reads: None,
        results: Vec::new(),
        skipped: Vec::new(),
    };
    let out_dir = suite.args.out.clone();
    for spec in &specs {
        eprintln!("bench: {} ...", spec.name);
        let t = Instant::now();
        match suite.run_one(spec).await {
            Ok(Some(r)) => {
                // A node that died during a workload makes every later figure meaningless.
                if let Some(t) = suite.main.as_mut() {
                    t.check_alive()?;
                }
                eprintln!(
                    "bench: {} done in {:.1}s: p50 {:.0}µs, p99 {:.0}µs, {:.0} ops/s",
                    spec.name,
                    t.elapsed().as_secs_f64(),
                    r.p50_us,
                    r.p99_us,
                    r.ops_per_s
                );
                suite.results.push(r);
            }
            Ok(None) => {}
            Err(e) => return Err(e.context(format!("workload {}", spec.name))),
        }
    }
    // Servers stop (and the work directory goes) before the report is written.
    let results = std::mem::take(&mut suite.results);
    let skipped = std::mem::take(&mut suite.skipped);
    drop(suite);
    drop(work);
    let report = SuiteReport {
        schema: report::SCHEMA_VERSION,
        started_unix_s,
        machine: Machine::this(),
        setup,
        workloads: results,
        skipped,
    };
    print!("{}", report::table(&report));
    let json = out_dir.join("results.json");
    report::write_json(&report, &json)?;
    let svg = out_dir.join("latency.svg");
    report::write_svg(&report, &svg)?;
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}

impl Suite {
    fn skip(&mut self, name: &str, why: &str) -> Option<WorkloadResult> {
        eprintln!("bench: {name} skipped: {why}");
        self.skipped.push(Skipped {
            name: name.to_string(),
            why: why.to_string(),
        });
        None
    }

    fn folio_bin(&self) -> &Path {
        self.folio_bin
            .as_deref()
            .expect("found before the run, as a selected workload needs a started group")
    }

    async fn main(&mut self) -> anyhow::Result<&mut Target> {
        if self.main.is_none() {
            let t = if self.args.addr.is_empty() {
                let exe = self.folio_bin();
                Target::from_group(
                    LocalGroup::start(exe, &self.work, "folio", &self.store, true).await?,
                )?
            } else {
                Target::external(&self.args.addr, &self.args.metrics, &self.args.security()?)
                    .await?
            };
            self.main = Some(t);
        }
        Ok(self.main.as_mut().expect("just set"))
    }

    /// The group with `flush.early_seal = false`, or `None` when an external run has none.
    async fn late(&mut self) -> anyhow::Result<Option<&mut Target>> {
        if self.late.is_none() {
            if self.args.addr.is_empty() {
                let exe = self.folio_bin();
                let g = LocalGroup::start(exe, &self.work, "late-seal", &self.store, false).await?;
                self.late = Some(Target::from_group(g)?);
            } else if !self.args.late_seal_addr.is_empty() {
                let security = self.args.security()?;
                self.late =
                    Some(Target::external(&self.args.late_seal_addr, &[], &security).await?);
            }
        }
        Ok(self.late.as_mut())
    }

    /// etcd's endpoints and, when started here, its processes; `None` without `--etcd` or
    /// `--etcd-bin`. The Folio groups stop first, so etcd runs alone.
    async fn etcd(&mut self) -> anyhow::Result<Option<(String, Probe)>> {
        if self.etcd.is_none() {
            if !self.args.etcd.is_empty() {
                self.etcd = Some((self.args.etcd.clone(), None));
            } else if let Some(bin) = self.args.etcd_bin.clone() {
                self.main = None;
                self.late = None;
                let c = EtcdCluster::start(&bin, &self.work).await?;
                self.etcd = Some((c.endpoints.clone(), Some(c)));
            } else {
                return Ok(None);
            }
        }
        let (endpoints, cluster) = self.etcd.as_ref().expect("just set");
        let leader = etcd::leader_endpoint(endpoints).await?;
        let probe = Probe {
            pids: cluster.as_ref().map(|c| c.pids()).unwrap_or_default(),
            metrics: vec![],
        };
        Ok(Some((leader, probe)))
    }

    async fn run_one(&mut self, spec: &Spec) -> anyhow::Result<Option<WorkloadResult>> {
        let shape = shape(spec.kind);
        let external = !self.args.addr.is_empty();
        let budget = self.budget.clone();
        let mut result = match spec.kind {
            Kind::Fsync => {
                let (dir, n, limit) = (self.work.clone(), budget.ops, budget.time);
                let probe = Probe::default();
                let before = probe.snapshot().await?;
                let t = Instant::now();
                let samples =
                    tokio::task::spawn_blocking(move || load::fsync_samples(&dir, n, limit))
                        .await??;
                let secs = t.elapsed().as_secs_f64();
                let usage = before.usage_until(&probe.snapshot().await?);
                let mut r = WorkloadResult::new(
                    &spec.name,
                    &shape,
                    &summarize(&samples)?,
                    secs,
                    Some(usage),
                    None,
                );
                r.notes.push(format!("measured in {}", self.work.display()));
                r
            }
            Kind::Rpc => {
                let t = self.main().await?;
                let before = t.probe.snapshot().await?;
                let started = Instant::now();
                let samples =
                    load::rpc_samples(&t.leader, budget.ops, budget.time, &t.security).await?;
                let secs = started.elapsed().as_secs_f64();
                let usage = before.usage_until(&t.probe.snapshot().await?);
                WorkloadResult::new(
                    &spec.name,
                    &shape,
                    &summarize(&samples)?,
                    secs,
                    Some(usage),
                    None,
                )
            }
            Kind::Commit { writers, pages } => {
                let t = self.main().await?;
                let m = commit_load(
                    t,
                    &spec.name,
                    writers,
                    pages,
                    pb::Durability::Quorum,
                    &budget,
                )
                .await?;
                result_of(&spec.name, &shape, m, None)?
            }
            Kind::Contend { writers } => {
                let t = self.main().await?;
                let v = t.volumes(1).await?[0];
                let ws: Vec<Box<dyn Writer>> = (0..writers)
                    .map(|w| {
                        Box::new(ContendWriter::new(
                            t.client.clone(),
                            v,
                            w as u32,
                            format!("{}-{w}", spec.name),
                        )) as Box<dyn Writer>
                    })
                    .collect();
                let m = load::closed_loop(ws, &budget, Some(&t.probe)).await?;
                let conflicts = m.conflicts;
                result_of(&spec.name, &shape, m, Some(conflicts))?
            }
            Kind::ReadCold => {
                let pages = self.args.read_pages as usize;
                self.prepare_reads().await?;
                let t = self.main.as_ref().expect("prepared");
                let rs = self.reads.as_ref().expect("prepared");
                // Each page is read once, so none comes from the cache.
                let (m, read) = read_each_once(
                    &t.client,
                    rs,
                    budget.ops.min(pages - 1),
                    budget.time,
                    Some(&t.probe),
                )
                .await?;
                self.reads.as_mut().expect("prepared").read = Some(read);
                let mut r = result_of(&spec.name, &shape, m, None)?;
                r.notes
                    .push(format!("{read} distinct pages, each read once"));
                r
            }
            Kind::ReadCached => {
                let pages = self.args.read_pages as usize;
                self.prepare_reads().await?;
                let t = self.main.as_ref().expect("prepared");
                let read = match self.reads.as_ref().expect("prepared").read {
                    Some(n) => n,
                    None => {
                        // Without the cold workload, read the pages once (unmeasured) so that
                        // they are cached.
                        let rs = self.reads.as_ref().expect("prepared");
                        read_each_once(&t.client, rs, pages - 1, budget.time, None)
                            .await?
                            .1
                    }
                };
                self.reads.as_mut().expect("prepared").read = Some(read);
                let rs = self.reads.as_ref().expect("prepared");
                let reader = ReadWriter::new(
                    t.client.clone(),
                    rs.volume,
                    rs.lsn,
                    (0..read as u32).collect(),
                );
                let b = Budget {
                    warmup_ops: 0,
                    ..budget
                };
                let m = load::closed_loop(vec![Box::new(reader)], &b, Some(&t.probe)).await?;
                let mut r = result_of(&spec.name, &shape, m, None)?;
                r.notes
                    .push(format!("cycling over {read} pages read before"));
                r
            }
            Kind::ObjectStore {
                writers,
                early_seal,
            } => {
                let (t, b) = if early_seal {
                    let b = Budget {
                        warmup_ops: 2,
                        ..budget
                    };
                    (self.main().await?, b)
                } else {
                    let b = Budget {
                        time: Duration::from_secs_f64(self.args.slow_secs),
                        warmup_ops: 1,
                        ..budget
                    };
                    match self.late().await? {
                        Some(t) => (t, b),
                        None => {
                            return Ok(self.skip(
                                &spec.name,
                                "an external run needs --late-seal-addr (a group with \
                                 flush.early_seal = false)",
                            ))
                        }
                    }
                };
                let m =
                    commit_load(t, &spec.name, writers, 1, pb::Durability::ObjectStore, &b).await?;
                if let Some(g) = t.group.as_mut() {
                    g.check_alive()?;
                }
                result_of(&spec.name, &shape, m, None)?
            }
            Kind::Etcd {
                writers,
                value_bytes,
            } => {
                let Some((leader, probe)) = self.etcd().await? else {
                    return Ok(self.skip(&spec.name, "needs --etcd-bin or --etcd"));
                };
                let client = etcd::connect(&leader).await?;
                let ws: Vec<Box<dyn Writer>> = (0..writers)
                    .map(|w| {
                        Box::new(EtcdWriter::new(
                            &client,
                            format!("folio-bench/{}/{w}", spec.name),
                            load::payload(w as u64 + 1, value_bytes).to_vec(),
                        )) as Box<dyn Writer>
                    })
                    .collect();
                let m = load::closed_loop(ws, &budget, Some(&probe)).await?;
                let mut r = result_of(&spec.name, &shape, m, None)?;
                if probe.pids.is_empty() {
                    r.notes
                        .push("external etcd: server CPU not measured".into());
                }
                r
            }
            Kind::Fanout { etcd: false } => {
                let t = self.main().await?;
                let volumes = t.volumes(fanout::VOLUMES).await?;
                let tracker = fanout::Tracker::new(fanout::WATCHERS_PER_VOLUME);
                let mut watchers = fanout::watch_folio(
                    &t.addrs,
                    &t.security,
                    &volumes,
                    fanout::WATCHERS_PER_VOLUME,
                    &tracker,
                )
                .await?;
                let ws: Vec<Box<dyn Writer>> = (0..fanout::WRITERS)
                    .map(|w| {
                        Box::new(fanout::FolioFanoutWriter::new(
                            t.client.clone(),
                            tracker.clone(),
                            &volumes,
                            w,
                            format!("{}-{w}", spec.name),
                        )) as Box<dyn Writer>
                    })
                    .collect();
                let m = load::closed_loop(ws, &budget, Some(&t.probe)).await?;
                let delivered = tracker.drain(&mut watchers).await?;
                fanout_result(&spec.name, &shape, m, &delivered)?
            }
            Kind::Fanout { etcd: true } => {
                let Some((leader, probe)) = self.etcd().await? else {
                    return Ok(self.skip(&spec.name, "needs --etcd-bin or --etcd"));
                };
                let endpoints = self.etcd.as_ref().expect("just found").0.clone();
                let tracker = fanout::Tracker::new(fanout::WATCHERS_PER_VOLUME);
                let mut watchers = fanout::watch_etcd(
                    &endpoints,
                    fanout::VOLUMES,
                    fanout::WATCHERS_PER_VOLUME,
                    &tracker,
                )
                .await?;
                let client = etcd::connect(&leader).await?;
                let ws: Vec<Box<dyn Writer>> = (0..fanout::WRITERS)
                    .map(|w| {
                        Box::new(fanout::EtcdFanoutWriter::new(
                            &client,
                            tracker.clone(),
                            fanout::VOLUMES,
                            w,
                        )) as Box<dyn Writer>
                    })
                    .collect();
                let m = load::closed_loop(ws, &budget, Some(&probe)).await?;
                let delivered = tracker.drain(&mut watchers).await?;
                fanout_result(&spec.name, &shape, m, &delivered)?
            }
        };
        if external && matches!(result.system.as_str(), "folio" | "grpc") {
            result
                .notes
                .push("external group: node CPU not measured".into());
        }
        Ok(Some(result))
    }

    async fn prepare_reads(&mut self) -> anyhow::Result<()> {
        if self.reads.is_some() {
            return Ok(());
        }
        let pages = self.args.read_pages;
        let t = self.main().await?;
        let (volume, lsn) =
            load::prepare_flushed_volume(&t.client, &t.leader, pages, &t.security).await?;
        self.reads = Some(ReadState {
            volume,
            lsn,
            read: None,
        });
        Ok(())
    }
}

/// `writers` writers, each on a new volume of its own, committing `pages` pages at a time.
async fn commit_load(
    t: &Target,
    name: &str,
    writers: usize,
    pages: u32,
    durability: pb::Durability,
    budget: &Budget,
) -> anyhow::Result<load::Measured> {
    let volumes = t.volumes(writers).await?;
    let ws: Vec<Box<dyn Writer>> = volumes
        .into_iter()
        .enumerate()
        .map(|(w, v)| {
            Box::new(CommitWriter::new(
                t.client.clone(),
                v,
                pages,
                durability,
                format!("{name}-{w}"),
                w as u64,
            )) as Box<dyn Writer>
        })
        .collect();
    load::closed_loop(ws, budget, Some(&t.probe)).await
}

/// A fan-out workload's result: the delivery latencies, with the writers' own latencies in a
/// note.
fn fanout_result(
    name: &str,
    shape: &Shape,
    m: load::Measured,
    delivered: &crate::latency::Latencies,
) -> anyhow::Result<WorkloadResult> {
    let writes = summarize(&m.latencies)?;
    let mut r = WorkloadResult::new(name, shape, &summarize(delivered)?, m.secs, m.usage, None);
    r.notes.push(format!(
        "{} writes delivered to all {} watchers of their volume; the writes themselves: p50 \
         {:.0} µs, p99 {:.0} µs",
        delivered.count(),
        fanout::WATCHERS_PER_VOLUME,
        writes.p50.as_secs_f64() * 1e6,
        writes.p99.as_secs_f64() * 1e6
    ));
    Ok(r)
}

fn result_of(
    name: &str,
    shape: &Shape,
    m: load::Measured,
    conflicts: Option<u64>,
) -> anyhow::Result<WorkloadResult> {
    let secs = m.secs;
    let usage = m.usage;
    Ok(WorkloadResult::new(
        name,
        shape,
        &summarize(&m.latencies)?,
        secs,
        usage,
        conflicts,
    ))
}
