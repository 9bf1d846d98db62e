//! The collaborative fan-out workload: subscribers watch many volumes (etcd: keys), spread over
//! every member, while writers commit to those volumes. What it measures, per commit, is the time
//! from the commit's acknowledgement to its delivery on the last of its volume's watchers (zero
//! when every watcher had it before the writer had its answer). Writers own disjoint volumes, so
//! nothing conflicts; each commits to its volumes in turn, in a closed loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use folio_client::{Client, Security};
use folio_core::{Lsn, VolumeId};
use folio_proto::volume::v1 as pb;
use folio_proto::volume::v1::volume_service_client::VolumeServiceClient;
use futures::{StreamExt, TryStreamExt};
use tokio::task::JoinSet;

use crate::latency::Latencies;
use crate::load::{commit_request, page_writes, OpFuture, OpSample, Writer};

/// Volumes (etcd: keys) watched and written.
pub const VOLUMES: usize = 1000;
/// Watchers of each volume: 10,000 streams in all.
pub const WATCHERS_PER_VOLUME: usize = 10;
/// Writers, each on `VOLUMES / WRITERS` volumes of its own.
pub const WRITERS: usize = 16;
/// Watch streams per connection (below the servers' HTTP/2 stream limits).
const STREAMS_PER_CONNECTION: usize = 100;
/// Watches opened at once while the workload sets up.
const OPENING_AT_ONCE: usize = 64;
/// How long the last commits' deliveries may take after the writers stop before the run fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one write may take before the workload fails.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One commit on its way to its watchers.
#[derive(Default)]
struct Track {
    ack: Option<Instant>,
    arrivals: u32,
    last: Option<Instant>,
}

/// Which commits have reached how many of their watchers.
pub struct Tracker {
    watchers: u32,
    open: Mutex<HashMap<(u32, u64), Track>>,
    done: Mutex<Latencies>,
}

impl Tracker {
    pub fn new(watchers: usize) -> Arc<Tracker> {
        Arc::new(Tracker {
            watchers: watchers as u32,
            open: Mutex::default(),
            done: Mutex::default(),
        })
    }

    fn update(&self, volume: u32, version: u64, f: impl FnOnce(&mut Track)) {
        let mut open = self.open.lock().expect("no panic holds the tracker");
        let t = open.entry((volume, version)).or_default();
        f(t);
        if let (Some(ack), Some(last)) = (t.ack, t.last) {
            if t.arrivals >= self.watchers {
                let d = last.saturating_duration_since(ack);
                open.remove(&(volume, version));
                self.done
                    .lock()
                    .expect("no panic holds the tracker")
                    .record(d);
            }
        }
    }

    /// The writer has the answer for `version` of `volume`.
    pub fn acked(&self, volume: u32, version: u64, at: Instant) {
        self.update(volume, version, |t| t.ack = Some(at));
    }

    /// One watcher has `version` of `volume`.
    pub fn delivered(&self, volume: u32, version: u64, at: Instant) {
        self.update(volume, version, |t| {
            t.arrivals += 1;
            t.last = Some(t.last.map_or(at, |l| l.max(at)));
        });
    }

    /// Acknowledged commits not yet on every watcher.
    fn pending(&self) -> usize {
        self.open
            .lock()
            .expect("no panic holds the tracker")
            .values()
            .filter(|t| t.ack.is_some())
            .count()
    }

    /// Waits until every acknowledged commit reached all its watchers, then returns the
    /// latencies; fails naming how many did not within [`DELIVERY_TIMEOUT`].
    pub async fn drain(
        &self,
        watchers: &mut JoinSet<anyhow::Result<()>>,
    ) -> anyhow::Result<Latencies> {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        loop {
            if let Some(Ok(Err(e))) = watchers.try_join_next() {
                return Err(e.context("a watcher failed"));
            }
            let left = self.pending();
            if left == 0 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{left} acknowledged commits had not reached all {} of their watchers after \
                 {DELIVERY_TIMEOUT:?}",
                self.watchers
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        watchers.abort_all();
        Ok(self
            .done
            .lock()
            .expect("no panic holds the tracker")
            .clone())
    }
}

/// Which volumes writer `w` of `writers` owns.
fn owned(w: usize, writers: usize, volumes: usize) -> Vec<u32> {
    (w..volumes).step_by(writers).map(|v| v as u32).collect()
}

/// Opens `per_volume` WatchVolume streams on each of `volumes` (from LSN 0), spread over every
/// address in `addrs`, [`STREAMS_PER_CONNECTION`] to a connection; each stream's task reports
/// its events to `tracker`. Returns once every stream is open.
pub async fn watch_folio(
    addrs: &[String],
    security: &Security,
    volumes: &[VolumeId],
    per_volume: usize,
    tracker: &Arc<Tracker>,
) -> anyhow::Result<JoinSet<anyhow::Result<()>>> {
    let streams = volumes.len() * per_volume;
    let connections = streams.div_ceil(STREAMS_PER_CONNECTION).max(addrs.len());
    let mut channels = Vec::with_capacity(connections);
    for c in 0..connections {
        let addr = &addrs[c % addrs.len()];
        let ch = folio_proto::channels::endpoint(addr, security, Duration::from_secs(5), None)
            .map_err(anyhow::Error::msg)?
            .connect()
            .await
            .with_context(|| format!("connect to {addr}"))?;
        channels.push(folio_proto::channels::Channel::new(
            ch,
            security.token.clone(),
        ));
    }
    let opened: Vec<_> = futures::stream::iter(0..streams)
        .map(|s| {
            let (v, ch) = (s % volumes.len(), channels[s % connections].clone());
            let volume = volumes[v];
            async move {
                let req = pb::WatchVolumeRequest {
                    volume_id: Bytes::copy_from_slice(volume.as_bytes()),
                    since_lsn: 0,
                };
                let stream = VolumeServiceClient::new(ch)
                    .watch_volume(req)
                    .await
                    .with_context(|| format!("watch volume {volume}"))?
                    .into_inner();
                anyhow::Ok((v as u32, stream))
            }
        })
        .buffer_unordered(OPENING_AT_ONCE)
        .try_collect()
        .await?;
    let mut tasks = JoinSet::new();
    for (v, mut stream) in opened {
        let tracker = tracker.clone();
        tasks.spawn(async move {
            while let Some(ev) = stream.message().await.context("watch stream")? {
                tracker.delivered(v, ev.lsn, Instant::now());
            }
            anyhow::bail!("a watch stream of volume {v} ended")
        });
    }
    Ok(tasks)
}

/// A writer committing one page to each of its volumes in turn.
pub struct FolioFanoutWriter {
    client: Arc<Client>,
    tracker: Arc<Tracker>,
    volumes: Vec<(u32, VolumeId, Lsn)>,
    next: usize,
    pages: Vec<pb::PageWrite>,
    key_prefix: String,
    n: u64,
}

impl FolioFanoutWriter {
    /// Writer `w` of [`WRITERS`] over `volumes`.
    pub fn new(
        client: Arc<Client>,
        tracker: Arc<Tracker>,
        volumes: &[VolumeId],
        w: usize,
        key_prefix: String,
    ) -> FolioFanoutWriter {
        FolioFanoutWriter {
            client,
            tracker,
            volumes: owned(w, WRITERS, volumes.len())
                .into_iter()
                .map(|v| (v, volumes[v as usize], Lsn(0)))
                .collect(),
            next: 0,
            pages: page_writes((w as u64) << 32, 0, 1),
            key_prefix,
            n: 0,
        }
    }
}

impl Writer for FolioFanoutWriter {
    fn op(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            self.n += 1;
            let (v, volume, lsn) = self.volumes[self.next];
            let req = commit_request(
                volume,
                lsn,
                &self.key_prefix,
                self.n,
                pb::Durability::Quorum,
                &self.pages,
            );
            let t = Instant::now();
            let r = tokio::time::timeout(WRITE_TIMEOUT, self.client.commit_request(req))
                .await
                .map_err(|_| anyhow::anyhow!("a commit took longer than {WRITE_TIMEOUT:?}"))??;
            let now = Instant::now();
            self.tracker.acked(v, r.lsn.0, now);
            self.volumes[self.next].2 = r.lsn;
            self.next = (self.next + 1) % self.volumes.len();
            Ok(OpSample::plain(now - t))
        })
    }
}

/// The etcd key standing for volume `v`.
fn etcd_key(v: u32) -> Vec<u8> {
    format!("folio-bench/fanout/{v:05}").into_bytes()
}

/// [`watch_folio`] for etcd: `per_volume` watches of each of `keys` keys, one watch stream per
/// connection carrying [`STREAMS_PER_CONNECTION`] watches (etcd multiplexes watches on a
/// stream), connections spread over `endpoints`. An event is identified by its key and
/// revision.
pub async fn watch_etcd(
    endpoints: &[String],
    keys: usize,
    per_volume: usize,
    tracker: &Arc<Tracker>,
) -> anyhow::Result<JoinSet<anyhow::Result<()>>> {
    let watches = keys * per_volume;
    let connections = watches
        .div_ceil(STREAMS_PER_CONNECTION)
        .max(endpoints.len());
    let mut tasks = JoinSet::new();
    for c in 0..connections {
        let ep = &endpoints[c % endpoints.len()];
        let mut client = crate::etcd::connect(ep).await?;
        let mine: Vec<u32> = (c..watches)
            .step_by(connections)
            .map(|w| (w % keys) as u32)
            .collect();
        let Some((first, rest)) = mine.split_first() else {
            continue;
        };
        let mut stream = client
            .watch(etcd_key(*first), None)
            .await
            .with_context(|| format!("watch on {ep}"))?;
        for k in rest {
            stream
                .watch(etcd_key(*k), None)
                .await
                .context("add a watch")?;
        }
        // Every watch confirms its creation before the workload starts.
        let mut created = 0;
        while created < mine.len() {
            let r = stream
                .message()
                .await
                .context("watch stream")?
                .context("the watch stream ended while watches were being created")?;
            created += usize::from(r.created());
        }
        let tracker = tracker.clone();
        tasks.spawn(async move {
            let _client = client;
            while let Some(r) = stream.message().await.context("watch stream")? {
                let at = Instant::now();
                for e in r.events() {
                    let Some(kv) = e.kv() else { continue };
                    let Some(v) = std::str::from_utf8(kv.key())
                        .ok()
                        .and_then(|k| k.rsplit('/').next())
                        .and_then(|n| n.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    tracker.delivered(v, kv.mod_revision() as u64, at);
                }
            }
            anyhow::bail!("an etcd watch stream ended")
        });
    }
    Ok(tasks)
}

/// A writer putting a 4 KiB value to each of its keys in turn.
pub struct EtcdFanoutWriter {
    kv: etcd_client::KvClient,
    tracker: Arc<Tracker>,
    keys: Vec<u32>,
    next: usize,
    value: Vec<u8>,
}

impl EtcdFanoutWriter {
    /// Writer `w` of [`WRITERS`] over `keys` keys.
    pub fn new(
        client: &etcd_client::Client,
        tracker: Arc<Tracker>,
        keys: usize,
        w: usize,
    ) -> EtcdFanoutWriter {
        EtcdFanoutWriter {
            kv: client.kv_client(),
            tracker,
            keys: owned(w, WRITERS, keys),
            next: 0,
            value: crate::load::payload(w as u64 + 1, folio_core::PAGE_SIZE).to_vec(),
        }
    }
}

impl Writer for EtcdFanoutWriter {
    fn op(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let k = self.keys[self.next];
            let t = Instant::now();
            let r = tokio::time::timeout(
                WRITE_TIMEOUT,
                self.kv.put(etcd_key(k), self.value.clone(), None),
            )
            .await
            .map_err(|_| anyhow::anyhow!("an etcd put took longer than {WRITE_TIMEOUT:?}"))?
            .context("etcd put")?;
            let now = Instant::now();
            let rev = r.header().map(|h| h.revision()).unwrap_or(0);
            self.tracker.acked(k, rev as u64, now);
            self.next = (self.next + 1) % self.keys.len();
            Ok(OpSample::plain(now - t))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_counts_once_acked_and_on_every_watcher() {
        let t = Tracker::new(2);
        let t0 = Instant::now();
        t.delivered(1, 5, t0);
        t.acked(1, 5, t0 + Duration::from_millis(3));
        assert_eq!(t.pending(), 1, "one watcher still lacks it");
        t.delivered(1, 5, t0 + Duration::from_millis(10));
        assert_eq!(t.pending(), 0);
        let s = crate::latency::Summary::of(&t.done.lock().unwrap()).expect("one sample");
        assert_eq!(s.count, 1);
        // From the acknowledgement (3 ms) to the last watcher (10 ms).
        let ms = s.p50.as_secs_f64() * 1e3;
        assert!((6.9..7.1).contains(&ms), "{ms}");
    }

    #[test]
    fn writers_own_disjoint_volumes_covering_all() {
        let mut all: Vec<u32> = (0..WRITERS)
            .flat_map(|w| owned(w, WRITERS, VOLUMES))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..VOLUMES as u32).collect::<Vec<_>>());
    }
}
