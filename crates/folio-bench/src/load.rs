//! The load generators: a closed-loop driver (each writer issues its next operation when the last
//! one is answered) bounded by a count and a time limit, the operations it drives (Folio commits,
//! contended commits, page reads), and the two floors (fsync, loopback round trip).

use std::future::Future;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use folio_client::{Client, Error as ClientError};
use folio_core::{Lsn, VolumeId, PAGE_SIZE};
use folio_proto::volume::v1 as pb;
use tokio::sync::Barrier;

use crate::latency::Latencies;
use crate::probe::{Probe, Usage};

/// Attempts one contended commit makes (each after a CAS conflict) before the workload fails:
/// with a fair group, a writer wins long before this.
const CAS_ATTEMPTS_MAX: u32 = 10_000;
/// Warm-up calls of the round-trip floor, not measured.
const RPC_WARMUP: usize = 50;
/// Longest the buffer may take to drain after the read workload's flush.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Bounds of one measured workload: it ends when `ops` operations are measured or `time` has
/// passed, whichever comes first. `warmup_ops` per writer run before and are not measured.
#[derive(Clone, Debug)]
pub struct Budget {
    pub ops: usize,
    pub time: Duration,
    pub warmup_ops: usize,
}

/// One measured operation.
pub struct OpSample {
    /// Latency of the operation that succeeded (for contended commits, the winning attempt).
    pub latency: Duration,
    /// CAS conflicts met (and retried) before it succeeded.
    pub conflicts: u64,
}

impl OpSample {
    pub fn plain(latency: Duration) -> OpSample {
        OpSample {
            latency,
            conflicts: 0,
        }
    }
}

pub type OpFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<OpSample>> + Send + 'a>>;

/// One closed-loop client: it runs one operation at a time.
pub trait Writer: Send + 'static {
    fn op(&mut self) -> OpFuture<'_>;
}

/// What a closed-loop run measured.
pub struct Measured {
    pub latencies: Latencies,
    pub conflicts: u64,
    /// The measured window: from every writer's end of warm-up to the last writer's end.
    pub secs: f64,
    /// Node and bench CPU and object-store requests over the window, when a probe was given.
    pub usage: Option<Usage>,
}

/// Shared by a run's writers: when to start, and whether to take another operation.
struct Gate {
    warmed: Barrier,
    go: Barrier,
    deadline: OnceLock<Instant>,
    left: AtomicUsize,
}

impl Gate {
    /// Claims the next measured operation, or says the run is over.
    fn claim(&self) -> bool {
        let deadline = *self.deadline.get().expect("set before the writers start");
        Instant::now() < deadline
            && self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1))
                .is_ok()
    }
}

/// Runs `writers` concurrently, each in a closed loop, within `budget`. All of them finish their
/// warm-up before any measured operation starts, and the probe (if any) is read between the two.
pub async fn closed_loop(
    writers: Vec<Box<dyn Writer>>,
    budget: &Budget,
    probe: Option<&Probe>,
) -> anyhow::Result<Measured> {
    anyhow::ensure!(!writers.is_empty(), "a workload needs at least one writer");
    let n = writers.len();
    let gate = Arc::new(Gate {
        warmed: Barrier::new(n + 1),
        go: Barrier::new(n + 1),
        deadline: OnceLock::new(),
        left: AtomicUsize::new(budget.ops),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for mut w in writers {
        let gate = gate.clone();
        let warmup = budget.warmup_ops;
        tasks.spawn(async move {
            let mut warm = Ok(());
            for _ in 0..warmup {
                if let Err(e) = w.op().await {
                    warm = Err(e.context("warm-up"));
                    break;
                }
            }
            // Every writer passes both barriers, even after a failed warm-up, so none waits
            // forever; the failure is reported after.
            gate.warmed.wait().await;
            gate.go.wait().await;
            warm?;
            let (mut latencies, mut conflicts) = (Latencies::default(), 0);
            while gate.claim() {
                let s = w.op().await?;
                latencies.record(s.latency);
                conflicts += s.conflicts;
            }
            anyhow::Ok((latencies, conflicts))
        });
    }
    gate.warmed.wait().await;
    let before = match probe {
        Some(p) => Some(p.snapshot().await?),
        None => None,
    };
    let started = Instant::now();
    gate.deadline
        .set(started + budget.time)
        .expect("the deadline is set once");
    gate.go.wait().await;
    let mut m = Measured {
        latencies: Latencies::default(),
        conflicts: 0,
        secs: 0.0,
        usage: None,
    };
    while let Some(r) = tasks.join_next().await {
        // On the first failure, dropping the JoinSet aborts the other writers.
        let (latencies, conflicts) = r.context("writer task")??;
        m.latencies.merge(&latencies);
        m.conflicts += conflicts;
    }
    m.secs = started.elapsed().as_secs_f64();
    if let (Some(p), Some(before)) = (probe, before) {
        let after = p.snapshot().await?;
        m.usage = Some(before.usage_until(&after));
    }
    Ok(m)
}

/// Deterministic, incompressible bytes: the same `seed` always gives the same bytes, so readers
/// can check what they read without keeping a copy.
pub fn payload(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

pub(crate) fn page_writes(seed: u64, first_idx: u32, pages: u32) -> Vec<pb::PageWrite> {
    (0..pages)
        .map(|j| pb::PageWrite {
            page_idx: first_idx + j,
            data: payload(seed.wrapping_add(j as u64), PAGE_SIZE),
        })
        .collect()
}

/// The request every commit workload sends: `pages` on `volume`'s head `expected`, under the
/// idempotency key `{key_prefix}-{n}`.
pub fn commit_request(
    volume: VolumeId,
    expected: Lsn,
    key_prefix: &str,
    n: u64,
    durability: pb::Durability,
    pages: &[pb::PageWrite],
) -> pb::CommitRequest {
    pb::CommitRequest {
        volume_id: Bytes::copy_from_slice(volume.as_bytes()),
        expected_lsn: expected.0,
        idempotency_key: Bytes::from(format!("{key_prefix}-{n}")),
        durability: durability as i32,
        pages: pages.to_vec(),
        refs: vec![],
    }
}

/// Commits `pages` pages at a time on its own volume, always on the head it last committed.
pub struct CommitWriter {
    client: Arc<Client>,
    volume: VolumeId,
    lsn: Lsn,
    pages: Vec<pb::PageWrite>,
    durability: pb::Durability,
    key_prefix: String,
    n: u64,
}

impl CommitWriter {
    pub fn new(
        client: Arc<Client>,
        volume: VolumeId,
        pages: u32,
        durability: pb::Durability,
        key_prefix: String,
        seed: u64,
    ) -> CommitWriter {
        CommitWriter {
            client,
            volume,
            lsn: Lsn(0),
            pages: page_writes(seed << 32, 0, pages),
            durability,
            key_prefix,
            n: 0,
        }
    }
}

impl Writer for CommitWriter {
    fn op(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            self.n += 1;
            let req = commit_request(
                self.volume,
                self.lsn,
                &self.key_prefix,
                self.n,
                self.durability,
                &self.pages,
            );
            let t = Instant::now();
            let r = self.client.commit_request(req).await?;
            let latency = t.elapsed();
            self.lsn = r.lsn;
            Ok(OpSample::plain(latency))
        })
    }
}

/// One of many writers committing to one shared volume: CAS on the head it last saw; on a
/// conflict it takes the current head (carried by the conflict) and tries again with the same
/// idempotency key, as a client rebasing a commit whose pages nobody else touched would.
pub struct ContendWriter {
    client: Arc<Client>,
    volume: VolumeId,
    lsn: Lsn,
    pages: Vec<pb::PageWrite>,
    key_prefix: String,
    n: u64,
}

impl ContendWriter {
    /// Writer `w` writes page `w` of the shared volume.
    pub fn new(client: Arc<Client>, volume: VolumeId, w: u32, key_prefix: String) -> Self {
        ContendWriter {
            client,
            volume,
            lsn: Lsn(0),
            pages: page_writes((w as u64) << 32, w, 1),
            key_prefix,
            n: 0,
        }
    }
}

impl Writer for ContendWriter {
    fn op(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            self.n += 1;
            let key = Bytes::from(format!("{}-{}", self.key_prefix, self.n));
            let mut conflicts = 0u64;
            for _ in 0..CAS_ATTEMPTS_MAX {
                let req = pb::CommitRequest {
                    volume_id: Bytes::copy_from_slice(self.volume.as_bytes()),
                    expected_lsn: self.lsn.0,
                    idempotency_key: key.clone(),
                    durability: pb::Durability::Quorum as i32,
                    pages: self.pages.clone(),
                    refs: vec![],
                };
                let t = Instant::now();
                match self.client.commit_request(req).await {
                    Ok(r) => {
                        let latency = t.elapsed();
                        self.lsn = r.lsn;
                        return Ok(OpSample { latency, conflicts });
                    }
                    Err(ClientError::Conflict { current, .. }) => {
                        conflicts += 1;
                        // The server names the head in the conflict; without it, read it.
                        self.lsn = if current > self.lsn {
                            current
                        } else {
                            self.client.snapshot(self.volume).await?
                        };
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            anyhow::bail!("no commit succeeded in {CAS_ATTEMPTS_MAX} CAS attempts")
        })
    }
}

/// Reads one page per call, cycling through `idxs`, and checks every byte against what
/// [`prepare_flushed_volume`] wrote.
pub struct ReadWriter {
    client: Arc<Client>,
    volume: VolumeId,
    lsn: Lsn,
    idxs: Vec<u32>,
    next: usize,
}

impl ReadWriter {
    pub fn new(client: Arc<Client>, volume: VolumeId, lsn: Lsn, idxs: Vec<u32>) -> Self {
        assert!(!idxs.is_empty(), "a reader needs pages to read");
        ReadWriter {
            client,
            volume,
            lsn,
            idxs,
            next: 0,
        }
    }
}

impl Writer for ReadWriter {
    fn op(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let idx = self.idxs[self.next % self.idxs.len()];
            self.next += 1;
            let t = Instant::now();
            let p = self
                .client
                .read_pages(self.volume, self.lsn, &[idx])
                .await?;
            let latency = t.elapsed();
            anyhow::ensure!(
                p.len() == 1 && p[0].data == payload(read_seed(idx), PAGE_SIZE),
                "page {idx} read back wrong"
            );
            Ok(OpSample::plain(latency))
        })
    }
}

fn read_seed(idx: u32) -> u64 {
    0x5EED_0000_0000 + idx as u64
}

/// Writes pages `0..count` of a new volume (256 per commit, the last commit with OBJECT_STORE
/// durability) and waits until the group's buffer is empty, so that every page is read from its
/// segment until the node caches it. `addr` is the member whose status shows the buffer.
pub async fn prepare_flushed_volume(
    c: &Client,
    addr: &str,
    count: u32,
    security: &folio_client::Security,
) -> anyhow::Result<(VolumeId, Lsn)> {
    let v = c.create_volume(None).await?;
    let mut lsn = Lsn(0);
    let idxs: Vec<u32> = (0..count).collect();
    let chunks: Vec<&[u32]> = idxs.chunks(256).collect();
    for (n, chunk) in chunks.iter().enumerate() {
        let req = pb::CommitRequest {
            volume_id: Bytes::copy_from_slice(v.as_bytes()),
            expected_lsn: lsn.0,
            idempotency_key: Bytes::from(format!("bench-read-{n}")),
            durability: if n + 1 == chunks.len() {
                pb::Durability::ObjectStore
            } else {
                pb::Durability::Quorum
            } as i32,
            pages: chunk
                .iter()
                .map(|i| pb::PageWrite {
                    page_idx: *i,
                    data: payload(read_seed(*i), PAGE_SIZE),
                })
                .collect(),
            refs: vec![],
        };
        lsn = c.commit_request(req).await?.lsn;
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while Client::node_status_secured(addr, Duration::from_secs(2), security)
        .await?
        .buffered_bytes
        > 0
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the buffer did not drain in {DRAIN_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((v, lsn))
}

/// Appends 4 KiB and fdatasyncs, up to `count` times or for `limit`, in a fresh file in `dir`.
pub fn fsync_samples(dir: &Path, count: usize, limit: Duration) -> anyhow::Result<Latencies> {
    let path = dir.join(format!(".folio-fsync-bench-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    let page = payload(7, PAGE_SIZE);
    let mut samples = Latencies::default();
    let deadline = Instant::now() + limit;
    while samples.count() < count && Instant::now() < deadline {
        let t = Instant::now();
        f.write_all(&page)?;
        // SAFETY: fdatasync on a file descriptor we own and keep open for the call.
        let rc = unsafe { libc::fdatasync(f.as_raw_fd()) };
        anyhow::ensure!(rc == 0, "fdatasync: {}", std::io::Error::last_os_error());
        samples.record(t.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(samples)
}

/// Round trips of a trivial gRPC call (admin Status) to `addr`, up to `count` or for `limit`,
/// after a warm-up, on one connection with TCP_NODELAY.
pub async fn rpc_samples(
    addr: &str,
    count: usize,
    limit: Duration,
    security: &folio_client::Security,
) -> anyhow::Result<Latencies> {
    let ch = folio_proto::channels::ChannelCache::secured(
        Duration::from_secs(5),
        Some(Duration::from_secs(5)),
        security.clone(),
    )
    .get(addr)
    .map_err(anyhow::Error::msg)
    .with_context(|| format!("connect to {addr}"))?;
    let mut c = folio_proto::admin::v1::admin_service_client::AdminServiceClient::new(ch);
    for _ in 0..RPC_WARMUP {
        c.status(folio_proto::admin::v1::StatusRequest {}).await?;
    }
    let mut samples = Latencies::default();
    let deadline = Instant::now() + limit;
    while samples.count() < count && Instant::now() < deadline {
        let t = Instant::now();
        c.status(folio_proto::admin::v1::StatusRequest {}).await?;
        samples.record(t.elapsed());
    }
    Ok(samples)
}
