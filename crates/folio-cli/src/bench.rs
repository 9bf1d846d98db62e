//! `folio bench`: the first latency measurements. `fsync` measures the disk's floor (a 4 KiB
//! append and an fdatasync), `rpc` a loopback gRPC round trip, and `commit` single-writer commits
//! against a running group. Each prints percentiles over every sample after its warm-up.

use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Subcommand;
use folio_client::{Client, RetryPolicy};
use folio_core::PAGE_SIZE;
use folio_proto::volume::v1 as pb;

#[derive(Subcommand)]
pub enum BenchCmd {
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
    /// on its own volume, each committing `count / writers` times on its own head.
    Commit {
        /// Any member's address.
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: String,
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Pages per commit.
        #[arg(long, default_value_t = 1)]
        pages: u32,
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
pub enum BenchDurability {
    Quorum,
    ObjectStore,
}

/// Latency percentiles of a sample set.
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    pub fn of(mut v: Vec<Duration>) -> Summary {
        v.sort_unstable();
        let at = |q: f64| {
            v[((v.len() as f64 * q).ceil() as usize)
                .saturating_sub(1)
                .min(v.len() - 1)]
        };
        Summary {
            count: v.len(),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: v[v.len() - 1],
        }
    }

    fn print(&self, what: &str, json: bool) {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        if json {
            println!(
                "{}",
                serde_json::json!({"workload": what, "count": self.count, "p50_us": us(self.p50),
                    "p90_us": us(self.p90), "p99_us": us(self.p99), "max_us": us(self.max)})
            );
        } else {
            println!(
                "{what}: n={} p50={:.0}µs p90={:.0}µs p99={:.0}µs max={:.0}µs",
                self.count,
                us(self.p50),
                us(self.p90),
                us(self.p99),
                us(self.max)
            );
        }
    }
}

pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Fsync { dir, count, json } => {
            anyhow::ensure!(count > 0, "count must be positive");
            let s = tokio::task::spawn_blocking(move || fsync_floor(&dir, count)).await??;
            s.print("fsync 4KiB append+fdatasync", json);
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
            let c = std::sync::Arc::new(Client::new([addr], RetryPolicy::default())?);
            let per_writer = count.div_ceil(writers);
            let mut tasks = Vec::new();
            let started = Instant::now();
            for w in 0..writers {
                let c = c.clone();
                tasks.push(tokio::spawn(async move {
                    let v = c.create_volume(None).await?;
                    let data = Bytes::from(vec![0xA5u8; PAGE_SIZE]);
                    let mut lsn = folio_core::Lsn(0);
                    let mut samples = Vec::with_capacity(per_writer);
                    for i in 0..(warmup + per_writer) {
                        let req = pb::CommitRequest {
                            volume_id: Bytes::copy_from_slice(v.as_bytes()),
                            expected_lsn: lsn.0,
                            idempotency_key: Bytes::from(format!("bench-{w}-{i}")),
                            durability: match durability {
                                BenchDurability::Quorum => pb::Durability::Quorum,
                                BenchDurability::ObjectStore => pb::Durability::ObjectStore,
                            } as i32,
                            pages: (0..pages)
                                .map(|j| pb::PageWrite {
                                    page_idx: j,
                                    data: data.clone(),
                                })
                                .collect(),
                            refs: vec![],
                        };
                        let t = Instant::now();
                        let r = c.commit_request(req).await?;
                        if i >= warmup {
                            samples.push(t.elapsed());
                        }
                        lsn = r.lsn;
                    }
                    anyhow::Ok(samples)
                }));
            }
            let mut samples = Vec::new();
            for t in tasks {
                samples.extend(t.await??);
            }
            // Throughput over the whole run, warm-up included in time but not in the count.
            let secs = started.elapsed().as_secs_f64();
            let n = samples.len();
            Summary::of(samples).print(
                &format!("commit {pages} page(s), {writers} writer(s), durability {durability:?}"),
                json,
            );
            if !json {
                println!(
                    "  throughput: {:.0} commits/s ({n} commits in {secs:.2}s incl. warm-up)",
                    n as f64 / secs
                );
            }
            Ok(())
        }
        BenchCmd::Read { addr, count, json } => {
            anyhow::ensure!(count > 1, "count must be at least 2");
            let c = Client::new([addr.clone()], RetryPolicy::default())?;
            let v = c.create_volume(None).await?;
            let mut lsn = folio_core::Lsn(0);
            let chunks: Vec<Vec<u32>> = (0..count)
                .collect::<Vec<_>>()
                .chunks(256)
                .map(|c| c.to_vec())
                .collect();
            let last = chunks.len() - 1;
            for (n, idxs) in chunks.into_iter().enumerate() {
                let req = pb::CommitRequest {
                    volume_id: Bytes::copy_from_slice(v.as_bytes()),
                    expected_lsn: lsn.0,
                    idempotency_key: Bytes::from(format!("bench-read-{n}")),
                    durability: if n == last {
                        pb::Durability::ObjectStore
                    } else {
                        pb::Durability::Quorum
                    } as i32,
                    pages: idxs
                        .iter()
                        .map(|i| pb::PageWrite {
                            page_idx: *i,
                            data: Bytes::from(vec![(*i % 251) as u8; PAGE_SIZE]),
                        })
                        .collect(),
                    refs: vec![],
                };
                lsn = c.commit_request(req).await?.lsn;
            }
            // Every segment flushed: reads must go to the object store.
            let deadline = Instant::now() + Duration::from_secs(60);
            while Client::node_status(&addr, Duration::from_secs(2))
                .await?
                .buffered_bytes
                > 0
            {
                anyhow::ensure!(Instant::now() < deadline, "the buffer did not drain");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for what in [
                "read 1 page, ranged GET on the segment",
                "read 1 page, page cache",
            ] {
                let mut samples = Vec::with_capacity(count as usize);
                for i in 0..count {
                    let t = Instant::now();
                    let p = c.read_pages(v, lsn, &[i]).await?;
                    let took = t.elapsed();
                    anyhow::ensure!(
                        p.len() == 1 && p[0].data[0] == (i % 251) as u8,
                        "page {i} read back wrong"
                    );
                    // The first read of the segment also fetches its index.
                    if i > 0 {
                        samples.push(took);
                    }
                }
                Summary::of(samples).print(what, json);
            }
            Ok(())
        }
        BenchCmd::Rpc { addr, count, json } => {
            anyhow::ensure!(count > 0, "count must be positive");
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await?;
            let mut c = folio_proto::admin::v1::admin_service_client::AdminServiceClient::new(ch);
            let mut samples = Vec::with_capacity(count);
            for i in 0..count + 50 {
                let t = Instant::now();
                c.status(folio_proto::admin::v1::StatusRequest {}).await?;
                if i >= 50 {
                    samples.push(t.elapsed());
                }
            }
            Summary::of(samples).print("grpc round trip (admin Status)", json);
            Ok(())
        }
    }
}

/// Appends 4 KiB and fdatasyncs, `count` times, in a fresh file in `dir`.
pub fn fsync_floor(dir: &std::path::Path, count: usize) -> anyhow::Result<Summary> {
    let path = dir.join(format!(".folio-fsync-bench-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    let page = [0x5Au8; PAGE_SIZE];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        f.write_all(&page)?;
        // SAFETY: fdatasync on a file descriptor we own and keep open for the call.
        let rc = unsafe { libc::fdatasync(f.as_raw_fd()) };
        anyhow::ensure!(rc == 0, "fdatasync: {}", std::io::Error::last_os_error());
        samples.push(t.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(Summary::of(samples))
}
