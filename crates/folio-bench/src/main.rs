//! `folio-bench`: Folio's latency and throughput measurements, in a binary of its own so that the
//! baselines' clients (`etcd-client`) and the plotting library stay out of the production `folio`
//! binary. With no subcommand it runs the suite: every workload and baseline (etcd,
//! acknowledge-after-flush) in one run, against `folio server` processes it starts (or a running
//! group), with a table, JSON and a latency plot. The subcommands measure one thing each: `fsync`
//! the disk's floor (a 4 KiB append and an fdatasync), `rpc` a loopback gRPC round trip, `commit`
//! and `read` commits and page reads against a running group, and `history` what a group it
//! starts holds on its nodes and in its bucket while history grows.
//!
//! Every workload is bounded by a count and a time limit, and reports percentiles over every
//! sample after its warm-up.

mod etcd;
mod fanout;
mod footprint;
mod group;
mod history;
mod history_report;
mod latency;
mod lifecycle;
mod load;
mod logdisk;
mod probe;
mod report;
mod sqlite;
mod suite;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use folio_client::{Client, RetryPolicy};
use folio_proto::volume::v1 as pb;

use latency::summarize;
use load::{Budget, CommitWriter, ReadWriter, Writer};

/// Longest a one-shot subcommand (`commit`, `read`) measures, whatever its count.
const SUBCOMMAND_TIME_LIMIT: Duration = Duration::from_secs(600);

/// Folio's benchmarks: without a subcommand, the suite (every workload and baseline in one run).
///
/// The suite starts a 3-node group of `folio server` processes (from `--folio-bin`, by default the
/// `folio` next to this binary, then on PATH) or uses one (`--addr`), a second one for the
/// acknowledge-after-flush baseline, and an etcd cluster (`--etcd-bin`) or uses one (`--etcd`);
/// it prints a table and writes `results.json` and `latency.svg`. `--list` names the workloads.
#[derive(Parser)]
#[command(name = "folio-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<BenchCmd>,
    #[command(flatten)]
    suite: suite::SuiteArgs,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// 4 KiB append + fdatasync latency in a directory (the floor a quorum commit cannot beat).
    Fsync {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long)]
        json: bool,
    },
    /// Commit latency and throughput against a running group: `writers` concurrent writers, each
    /// on its own volume, committing `count` times in all, each on its own head.
    Commit {
        /// Any member's address.
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: String,
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Pages per commit.
        #[arg(long, default_value_t = 1)]
        pages: u32,
        /// Commits per writer before measuring starts.
        #[arg(long, default_value_t = 50)]
        warmup: usize,
        /// Concurrent writers (each on its own volume).
        #[arg(long, default_value_t = 1)]
        writers: usize,
        /// When a commit is acknowledged: `quorum` (fsync'd by a majority) or `object-store`
        /// (its segment is in the object store).
        #[arg(long, value_enum, default_value = "quorum")]
        durability: BenchDurability,
        #[arg(long)]
        json: bool,
    },
    /// Page read latency against a running group: writes `count` pages, flushes them (an
    /// OBJECT_STORE commit), then reads each page once (a ranged GET on its segment, as nothing
    /// is cached yet) and once more (from the node's page cache), one page per call.
    Read {
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: String,
        #[arg(long, default_value_t = 1000)]
        count: u32,
        #[arg(long)]
        json: bool,
    },
    /// Node state stays bounded while history grows: starts a 3-node group, commits from
    /// `writers` writers until `page-versions` page versions or `secs` seconds, samples each
    /// node's data directory, RSS and snapshots and the bucket's bytes every `sample-secs`, then
    /// times reads at old LSNs from a restarted (cold) follower. Prints a table and writes
    /// `history.json` and `history.svg` to `--out`.
    History(history::HistoryArgs),
    /// What an overwrite workload costs in the bucket with garbage collection on and off:
    /// `writers` writers rewrite `hot-pages` pages for `secs` seconds under a short retention;
    /// samples the bucket, counts requests by kind, estimates a month's cost from a price table.
    /// Prints a table and writes `lifecycle.json` and `lifecycle.svg` to `--out`.
    Lifecycle(lifecycle::LifecycleArgs),
    /// SQLite through the Folio VFS against a running group: insert transactions against a local
    /// SQLite file (synchronous=FULL) in `--dir`, and a cold open plus first query of a large
    /// database, lazily against downloading it whole.
    Sqlite(sqlite::SqliteArgs),
    /// What making one Raft log entry durable costs on the disk under `dir`, by each way a log
    /// could be kept (a plain file, a preallocated one, RocksDB's WAL as Folio uses it and tuned
    /// otherwise); one line per variant. For RFC 0009's choice of log, not part of the suite.
    LogDisk {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value_t = 5000)]
        count: usize,
        /// Variants to run (all when not given).
        #[arg(long, value_enum, value_delimiter = ',')]
        variants: Vec<logdisk::Variant>,
        #[arg(long)]
        json: bool,
    },
    /// Round trip of a trivial gRPC call (admin Status) to one node: the loopback floor.
    Rpc {
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: String,
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum BenchDurability {
    Quorum,
    ObjectStore,
}

impl BenchDurability {
    fn proto(self) -> pb::Durability {
        match self {
            BenchDurability::Quorum => pb::Durability::Quorum,
            BenchDurability::ObjectStore => pb::Durability::ObjectStore,
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Some(cmd) => run(cmd).await,
        None => suite::run(cli.suite).await,
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Fsync { dir, count, json } => {
            anyhow::ensure!(count > 0, "count must be positive");
            let samples = tokio::task::spawn_blocking(move || {
                load::fsync_samples(&dir, count, SUBCOMMAND_TIME_LIMIT)
            })
            .await??;
            summarize(&samples)?.print("fsync 4KiB append+fdatasync", json);
            Ok(())
        }
        BenchCmd::Commit {
            addr,
            count,
            pages,
            warmup,
            writers,
            durability,
            json,
        } => {
            anyhow::ensure!(
                count > 0 && writers > 0,
                "count and writers must be positive"
            );
            let c = Arc::new(Client::new([addr], RetryPolicy::default())?);
            let mut ws: Vec<Box<dyn Writer>> = Vec::with_capacity(writers);
            for w in 0..writers {
                let v = c.create_volume(None).await?;
                ws.push(Box::new(CommitWriter::new(
                    c.clone(),
                    v,
                    pages,
                    durability.proto(),
                    format!("bench-{w}"),
                    w as u64,
                )));
            }
            let budget = Budget {
                ops: count,
                time: SUBCOMMAND_TIME_LIMIT,
                warmup_ops: warmup,
            };
            let m = load::closed_loop(ws, &budget, None).await?;
            let n = m.latencies.count();
            let secs = m.secs;
            summarize(&m.latencies)?.print(
                &format!("commit {pages} page(s), {writers} writer(s), durability {durability:?}"),
                json,
            );
            if !json {
                println!(
                    "  throughput: {:.0} commits/s ({n} commits in {secs:.2}s after warm-up)",
                    n as f64 / secs
                );
            }
            Ok(())
        }
        BenchCmd::Read { addr, count, json } => {
            anyhow::ensure!(count > 1, "count must be at least 2");
            let c = Arc::new(Client::new([addr.clone()], RetryPolicy::default())?);
            let (v, lsn) =
                load::prepare_flushed_volume(&c, &addr, count, &Default::default()).await?;
            let idxs: Vec<u32> = (0..count).collect();
            // The first read of the segment also fetches its index: a warm-up read.
            for (what, warmup) in [
                ("read 1 page, ranged GET on the segment", 1),
                ("read 1 page, page cache", 0),
            ] {
                let reader = ReadWriter::new(c.clone(), v, lsn, idxs.clone());
                let budget = Budget {
                    ops: count as usize - warmup,
                    time: SUBCOMMAND_TIME_LIMIT,
                    warmup_ops: warmup,
                };
                let m = load::closed_loop(vec![Box::new(reader)], &budget, None).await?;
                summarize(&m.latencies)?.print(what, json);
            }
            Ok(())
        }
        BenchCmd::History(args) => history::run(args).await,
        BenchCmd::Lifecycle(args) => lifecycle::run(args).await,
        BenchCmd::Sqlite(a) => sqlite::run(a).await,
        BenchCmd::LogDisk {
            dir,
            count,
            variants,
            json,
        } => {
            anyhow::ensure!(count > 0, "count must be positive");
            let variants = if variants.is_empty() {
                <logdisk::Variant as clap::ValueEnum>::value_variants().to_vec()
            } else {
                variants
            };
            for v in variants {
                let d = dir.clone();
                let samples = tokio::task::spawn_blocking(move || {
                    logdisk::samples(&d, v, count, SUBCOMMAND_TIME_LIMIT)
                })
                .await??;
                summarize(&samples)?.print(&v.name(), json);
            }
            Ok(())
        }
        BenchCmd::Rpc { addr, count, json } => {
            anyhow::ensure!(count > 0, "count must be positive");
            let samples =
                load::rpc_samples(&addr, count, SUBCOMMAND_TIME_LIMIT, &Default::default()).await?;
            summarize(&samples)?.print("grpc round trip (admin Status)", json);
            Ok(())
        }
    }
}
