//! The storage lifecycle, run by the checkpointer's task on the leader every
//! `lifecycle.interval_ms` (one task, so a round never races a checkpoint of the same leader):
//!
//! 1. **Retention.** From the commit times in the runs, each volume's new horizon: the snapshot
//!    current `retention_ms` ago, but never within its last `retain_commits` commits. Horizons
//!    are raised through Raft (`Retain`) before anything they hide is dropped, so every replica
//!    refuses those snapshots first.
//! 2. **Rewrite.** The runs are merged into one without the page versions and commit records no
//!    retained snapshot, fork or live volume needs (`folio_state::lifecycle::rewrite`), when at
//!    least a tenth of the index would go or a deleted volume's entries remain. The run and a
//!    manifest version `seq + 1` with the same `through` are written with conditional puts and
//!    proposed as a checkpoint: the state machine accepts only the next version, so a rewrite
//!    and another leader's checkpoint never both land.
//! 3. **Garbage collection.** The objects no *protected* manifest references are deleted:
//!    protected are the current manifest, every later version (written, not adopted yet), and
//!    each earlier one that was still current less than `gc_grace_ms` ago (a reader may still
//!    hold it). Runs are garbage when no protected manifest names them (and their version is
//!    not later than the current one); segments when they are older than what the oldest
//!    protected manifest covers (so their commit records are in the runs and no new commit can
//!    reference them) and no protected run or the node's own index points into them. Everything
//!    here is derived from immutable objects and one consistent view of the node's state, so a
//!    round is safe to abandon at any point, and on a deposed leader it only keeps more.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use folio_core::{Lsn, SegmentId, VolumeId, PAGE_SIZE};
use folio_objstore::{Listed, ObjectKey, PutOutcome};
use folio_segment::manifest::{Manifest, RunRef};
use folio_segment::table::Table;
use folio_segment::{Segment, SegmentBuilder};
use folio_state::lifecycle::{self, Relocations, Usage};
use folio_state::state::{ForkBase, Retention, VolumeHead};
use folio_state::{Command, CommandResult};
use futures::stream::{self, StreamExt};

use crate::checkpointer::{decode, local, CheckpointError, Checkpointer};
use crate::metrics;
use crate::now_ms;

/// The runs a rewrite reads into memory together, at most; a larger index is not rewritten
/// (a round logs it and collects garbage only).
pub const REWRITE_BYTES_MAX: u64 = 512 << 20;
/// Horizons per `Retain` command.
const RETAIN_CHUNK: usize = 4096;
/// Keys per listing request.
const LIST_PAGE: usize = 1000;
/// Deletes in flight at once.
const DELETE_CONCURRENCY: usize = 16;
/// Volumes in a storage report, at most.
pub const REPORT_VOLUMES_MAX: usize = 10_000;

/// A run's identity: (seq, nonce).
type RunId = (u64, u64);

/// What the last lifecycle round found, for `folio admin storage` and the metrics.
#[derive(Clone, Debug, Default)]
pub struct StorageReport {
    /// When the round ran (0: no round yet on this node).
    pub as_of_ms: u64,
    pub manifest_seq: u64,
    /// Page bytes a retained snapshot or a fork can read, as of the current checkpoint.
    pub live_bytes: u64,
    /// Bytes of objects nothing references any more, deleted once the grace period allows.
    pub garbage_bytes: u64,
    /// Bytes of referenced segments no retained snapshot reads (reclaimed only by rewriting
    /// those segments).
    pub fragmented_bytes: u64,
    /// (objects, bytes) of this group in the bucket, by kind.
    pub segments: (u64, u64),
    pub runs: (u64, u64),
    pub manifests: (u64, u64),
    /// Deletes the round made, and those that failed.
    pub deleted: u64,
    pub delete_errors: u64,
    /// Index entries the round's rewrite left out (0 when it did not rewrite).
    pub entries_dropped: u64,
    /// Sparse segments the round compacted, and the live page bytes it copied.
    pub compacted_segments: u64,
    pub compacted_bytes: u64,
    pub volumes: Vec<VolumeStorage>,
    /// More volumes than the report holds.
    pub volumes_truncated: bool,
}

#[derive(Clone, Debug)]
pub struct VolumeStorage {
    pub volume: VolumeId,
    pub lsn: Lsn,
    pub oldest_lsn: Lsn,
    pub deleted: bool,
    pub base: Option<ForkBase>,
    /// Page versions the checkpointed index keeps for it, and their bytes.
    pub page_versions: u64,
    pub commits: u64,
    /// Its own retention; `None`: the group's default.
    pub retention: Option<Retention>,
}

/// The report one node shares between its checkpointer task and its admin service.
pub type SharedReport = Arc<Mutex<StorageReport>>;

/// The checkpointer task's memory between rounds: the segments each run references (runs are
/// immutable), kept only for runs a protected manifest names.
#[derive(Default)]
pub struct LifecycleState {
    refs: HashMap<RunId, Arc<Vec<SegmentId>>>,
}

impl Checkpointer {
    /// One round: retention, rewrite, garbage collection.
    pub async fn lifecycle_round(&self, st: &mut LifecycleState) -> Result<(), CheckpointError> {
        let mut report = StorageReport {
            as_of_ms: now_ms(),
            ..StorageReport::default()
        };
        // One listing of the group's segments serves compaction (their sizes) and GC.
        let segments: BTreeMap<SegmentId, u64> = self
            .list_all(ObjectKey::SEGMENTS_PREFIX)
            .await?
            .into_iter()
            .filter_map(|l| match ObjectKey::parse(&l.key) {
                Some(ObjectKey::Segment(id)) if id.group() == self.group => Some((id, l.size)),
                _ => None,
            })
            .collect();
        // Garbage collection does not depend on the rewrite: it runs even when that failed.
        let (usage, failed) = match self.retain_and_rewrite(&segments, &mut report).await {
            Ok(u) => (u, None),
            Err(e) => (None, Some(e)),
        };
        if self.lifecycle.gc {
            self.collect_garbage(st, &segments, usage.as_ref(), &mut report)
                .await?;
        }
        if let Some(e) = failed {
            return Err(e);
        }
        for (kind, v) in [
            ("live", report.live_bytes),
            ("garbage", report.garbage_bytes),
            ("fragmented", report.fragmented_bytes),
            ("bucket_segments", report.segments.1),
            ("bucket_runs", report.runs.1),
            ("bucket_manifests", report.manifests.1),
        ] {
            metrics::STORAGE_BYTES
                .with_label_values(&[kind])
                .set(v as i64);
        }
        for (kind, (n, _)) in [
            ("segments", report.segments),
            ("runs", report.runs),
            ("manifests", report.manifests),
        ] {
            metrics::STORAGE_OBJECTS
                .with_label_values(&[kind])
                .set(n as i64);
        }
        *self.report.lock().expect("report lock") = report;
        Ok(())
    }

    /// Raises horizons and rewrites the index when worth it. The usage of what the current (or
    /// new) index keeps; `None` when there is no checkpoint yet or the index is too large to
    /// read.
    async fn retain_and_rewrite(
        &self,
        segments: &BTreeMap<SegmentId, u64>,
        report: &mut StorageReport,
    ) -> Result<Option<Usage>, CheckpointError> {
        let Some(base) = self.reader().manifest().map_err(local)? else {
            return Ok(None);
        };
        let manifest = self.history.manifest(base.seq).await.map_err(local)?;
        report.manifest_seq = base.seq;
        let total: u64 = manifest.runs.iter().map(|r| r.bytes).sum();
        if total > REWRITE_BYTES_MAX {
            tracing::warn!(
                bytes = total,
                max = REWRITE_BYTES_MAX,
                "the index is too large to rewrite in one pass; retention is not applied"
            );
            return Ok(None);
        }
        let mut tables = Vec::with_capacity(manifest.runs.len());
        for r in &manifest.runs {
            tables.push(self.fetch_run(r).await?);
        }
        let tables = Arc::new(tables);
        // 1. Retention: raise the horizons first.
        let heads = self.heads().await?;
        let now = now_ms();
        let default = self.lifecycle.default_retention();
        let moved = {
            let (tables, heads) = (tables.clone(), heads.clone());
            tokio::task::spawn_blocking(move || lifecycle::horizons(&tables, &heads, now, default))
                .await
                .map_err(local)?
                .map_err(|e| CheckpointError::Invalid(e.to_string()))?
        };
        let heads = if moved.is_empty() {
            heads
        } else {
            for chunk in moved.chunks(RETAIN_CHUNK) {
                let cmd = Command::Retain {
                    horizons: chunk.to_vec(),
                    under: chunk
                        .iter()
                        .map(|(v, _)| heads.get(v).and_then(|h| h.retention))
                        .collect(),
                };
                match crate::batcher::propose(&self.raft, self.segment_bytes_max, cmd)
                    .await
                    .map_err(|e| CheckpointError::Propose(e.to_string()))?
                {
                    CommandResult::Retained(_) => {}
                    other => {
                        return Err(CheckpointError::Propose(format!(
                            "unexpected result {other:?}"
                        )))
                    }
                }
            }
            tracing::info!(volumes = moved.len(), "retention horizons raised");
            // What the state machine holds now is what the rewrite may rely on.
            self.heads().await?
        };
        // 2. Rewrite against the applied horizons.
        let mut rw = {
            let (tables, heads) = (tables.clone(), heads.clone());
            tokio::task::spawn_blocking(move || lifecycle::rewrite(&tables, &heads))
                .await
                .map_err(local)?
                .map_err(|e| CheckpointError::Invalid(e.to_string()))?
        };
        report.volumes = volume_report(&heads, &rw.usage, &mut report.volumes_truncated);
        let plan = if self.lifecycle.compact_live_ratio > 0.0 && rw.entries > 0 {
            lifecycle::compaction_plan(
                &rw.usage,
                segments,
                manifest.through,
                self.lifecycle.compact_live_ratio,
                self.lifecycle.compact_bytes_max,
            )
        } else {
            Vec::new()
        };
        let input = rw.entries + rw.dropped;
        let worth = rw.dropped_deleted > 0
            || (rw.dropped > 0 && rw.dropped * 10 >= input)
            || !plan.is_empty();
        if !worth || rw.entries == 0 || self.reader().manifest().map_err(local)? != Some(base) {
            report.live_bytes = rw.usage.live_bytes();
            return Ok(Some(rw.usage));
        }
        let seq = base.seq + 1;
        let mut table = decode(rw.bytes.clone()).await?;
        let mut compacted = (0u64, 0u64);
        if !plan.is_empty() {
            let moved = self.compact_segments(seq, &table, &plan).await?;
            compacted = (plan.len() as u64, moved.len() as u64 * PAGE_SIZE as u64);
            for (from, to) in moved.iter() {
                if let Some(n) = rw.usage.segments.get_mut(&from.0) {
                    *n = n.saturating_sub(1);
                }
                *rw.usage.segments.entry(to.0).or_default() += 1;
            }
            rw.usage.segments.retain(|_, n| *n > 0);
            let moved = Arc::new(moved);
            rw.bytes = tokio::task::spawn_blocking(move || lifecycle::relocate(&table, &moved))
                .await
                .map_err(local)?
                .map_err(|e| CheckpointError::Invalid(e.to_string()))?;
            table = decode(rw.bytes.clone()).await?;
        }
        report.live_bytes = rw.usage.live_bytes();
        let first = manifest.runs.last().map_or(manifest.through, |r| r.first);
        let run = self
            .upload_run(seq, first, manifest.through, &table, rw.bytes.clone())
            .await?;
        let next = Manifest {
            group: self.group,
            incarnation: self.incarnation().await?,
            seq,
            through: manifest.through,
            created_ms: now_ms(),
            runs: vec![run],
        };
        let key = ObjectKey::Manifest {
            group: self.group,
            seq,
        };
        if self.store.put_if_absent(&key, next.encode()).await? == PutOutcome::AlreadyExists {
            // Another leader's checkpoint took this version; the next round tries again.
            return Ok(Some(rw.usage));
        }
        if self.propose(seq, manifest.through).await? {
            metrics::INDEX_REWRITES.inc();
            metrics::INDEX_ENTRIES_DROPPED.inc_by(rw.dropped);
            metrics::INDEX_BYTES_REWRITTEN.inc_by(run.bytes);
            metrics::CHECKPOINT_RUNS.set(1);
            metrics::CHECKPOINT_RUN_BYTES.set(run.bytes as i64);
            report.manifest_seq = seq;
            report.entries_dropped = rw.dropped;
            report.compacted_segments = compacted.0;
            report.compacted_bytes = compacted.1;
            metrics::COMPACTED_SEGMENTS.inc_by(compacted.0);
            metrics::COMPACTION_BYTES.inc_by(compacted.1);
            tracing::info!(
                seq,
                entries = rw.entries,
                dropped = rw.dropped,
                bytes = run.bytes,
                compacted_segments = compacted.0,
                compacted_bytes = compacted.1,
                "index rewritten without what retention, deletions and forks no longer need"
            );
        }
        Ok(Some(rw.usage))
    }

    /// Copies the live pages of the `plan`'s segments into new, full segments for manifest
    /// version `seq` (verified, conditional puts); returns where each page went.
    async fn compact_segments(
        &self,
        seq: u64,
        run: &Table,
        plan: &[SegmentId],
    ) -> Result<Relocations, CheckpointError> {
        let set: BTreeSet<SegmentId> = plan.iter().copied().collect();
        let live =
            lifecycle::live_in(run, &set).map_err(|e| CheckpointError::Invalid(e.to_string()))?;
        let mut moved = Relocations::new();
        let mut out: Option<(SegmentId, SegmentBuilder)> = None;
        let mut made = 0u64;
        let mut i = 0;
        while i < live.len() {
            // One source segment at a time, verified whole.
            let source = live[i].2;
            let bytes = self.store.get(&ObjectKey::Segment(source)).await?;
            let seg = tokio::task::spawn_blocking(move || Segment::decode(bytes))
                .await
                .map_err(local)?
                .map_err(|e| CheckpointError::Invalid(format!("segment {source}: {e}")))?;
            while i < live.len() && live[i].2 == source {
                let (volume, idx, _, offset) = live[i];
                i += 1;
                let entry = seg.index.get(volume, idx, offset).ok_or_else(|| {
                    CheckpointError::Invalid(format!(
                        "segment {source} has no page {idx} of volume {volume} at {offset}"
                    ))
                })?;
                let page = seg
                    .page(entry)
                    .map_err(|e| CheckpointError::Invalid(format!("segment {source}: {e}")))?;
                let full = out.as_ref().is_some_and(|(_, b)| {
                    (b.page_count() as u64 + 1) * PAGE_SIZE as u64 > self.segment_bytes_max
                });
                if full {
                    let (id, b) = out.take().expect("checked");
                    self.upload_compacted(id, b).await?;
                }
                let (id, b) = out.get_or_insert_with(|| {
                    made += 1;
                    let id = SegmentId::compacted(now_ms() + made, self.group, seq);
                    (id, SegmentBuilder::new(id))
                });
                let to = b.push(volume, idx, &page);
                moved.insert((source, offset), (*id, to));
            }
        }
        if let Some((id, b)) = out.take() {
            self.upload_compacted(id, b).await?;
        }
        Ok(moved)
    }

    /// Encodes, verifies and uploads a compacted segment; an object already there must be the
    /// same bytes.
    async fn upload_compacted(
        &self,
        id: SegmentId,
        b: SegmentBuilder,
    ) -> Result<(), CheckpointError> {
        let bytes = b.finish();
        let check = bytes.clone();
        tokio::task::spawn_blocking(move || Segment::decode(check))
            .await
            .map_err(local)?
            .map_err(|e| CheckpointError::Invalid(format!("compacted segment {id}: {e}")))?;
        let key = ObjectKey::Segment(id);
        if self.store.put_if_absent(&key, bytes.clone()).await? == PutOutcome::AlreadyExists
            && self.store.get(&key).await? != bytes
        {
            return Err(CheckpointError::Invalid(format!(
                "compacted segment {id} exists with other bytes"
            )));
        }
        Ok(())
    }

    async fn heads(&self) -> Result<BTreeMap<VolumeId, VolumeHead>, CheckpointError> {
        let reader = self.reader().clone();
        tokio::task::spawn_blocking(move || reader.all_heads())
            .await
            .map_err(local)?
            .map_err(local)
    }

    /// Deletes what no protected manifest and not the node's own index references.
    async fn collect_garbage(
        &self,
        st: &mut LifecycleState,
        listed: &BTreeMap<SegmentId, u64>,
        usage: Option<&Usage>,
        report: &mut StorageReport,
    ) -> Result<(), CheckpointError> {
        let reader = self.reader().clone();
        let (pointer, local_refs) = tokio::task::spawn_blocking(move || reader.gc_view())
            .await
            .map_err(local)?
            .map_err(local)?;
        let Some(pointer) = pointer else {
            return Ok(());
        };
        let n = pointer.seq;
        let now = now_ms();
        let group = self.group;
        let manifests: BTreeMap<u64, u64> = self
            .list_all(&ObjectKey::manifests_prefix(group))
            .await?
            .into_iter()
            .filter_map(|l| match ObjectKey::parse(&l.key) {
                Some(ObjectKey::Manifest { group: g, seq }) if g == group => Some((seq, l.size)),
                _ => None,
            })
            .collect();
        report.manifests = (manifests.len() as u64, manifests.values().sum());
        // Protected: every version after the current one, the current one, and each earlier
        // one that was current less than the grace period ago.
        let mut protected: Vec<Arc<Manifest>> = Vec::new();
        for &seq in manifests.range(n + 1..).map(|(s, _)| s) {
            protected.push(self.history.manifest(seq).await.map_err(local)?);
        }
        let mut oldest = n;
        loop {
            let m = self.history.manifest(oldest).await.map_err(local)?;
            let young = m.created_ms.saturating_add(self.lifecycle.gc_grace_ms) > now;
            protected.push(m);
            if !young || oldest <= 1 || !manifests.contains_key(&(oldest - 1)) {
                break;
            }
            oldest -= 1;
        }
        let boundary = protected
            .iter()
            .filter(|m| m.seq == oldest)
            .map(|m| m.through)
            .next()
            .expect("the oldest protected manifest was read");
        let mut garbage: Vec<(ObjectKey, u64)> = manifests
            .range(..oldest)
            .map(|(&seq, &size)| (ObjectKey::Manifest { group, seq }, size))
            .collect();
        // Runs.
        let named: HashSet<RunId> = protected
            .iter()
            .flat_map(|m| m.runs.iter().map(|r| (r.seq, r.nonce)))
            .collect();
        let mut runs = (0u64, 0u64);
        for l in self.list_all(&ObjectKey::runs_prefix(group)).await? {
            let Some(key @ ObjectKey::Run { seq, nonce, .. }) = ObjectKey::parse(&l.key) else {
                continue;
            };
            runs = (runs.0 + 1, runs.1 + l.size);
            if seq <= n && !named.contains(&(seq, nonce)) {
                garbage.push((key, l.size));
            }
        }
        report.runs = runs;
        // Segments: what protected runs and the node's index point into.
        st.refs.retain(|id, _| named.contains(id));
        let mut referenced: BTreeSet<SegmentId> = local_refs;
        let mut seen: HashSet<RunId> = HashSet::new();
        for run in protected.iter().flat_map(|m| m.runs.iter()) {
            if !seen.insert((run.seq, run.nonce)) {
                continue;
            }
            let refs = self.run_refs(st, run).await?;
            referenced.extend(refs.iter().copied());
        }
        let mut segments = (0u64, 0u64);
        let mut referenced_bytes = 0u64;
        for (&id, &size) in listed {
            segments = (segments.0 + 1, segments.1 + size);
            // A compacted segment holds no history: it is garbage once unreferenced, unless it
            // was written for a manifest version after the current one (one being made).
            let candidate = match id.compacted_for() {
                Some(version) => u64::from(version) <= n,
                None => id <= boundary,
            };
            if candidate && !referenced.contains(&id) {
                garbage.push((ObjectKey::Segment(id), size));
            } else if id <= pointer.through || id.is_compacted() {
                referenced_bytes += size;
            }
        }
        report.segments = segments;
        report.garbage_bytes = garbage.iter().map(|(_, s)| s).sum();
        if let Some(u) = usage {
            // Checkpointed segments that stay, less the pages of theirs retained snapshots read.
            let live_in_checkpointed: u64 = u
                .segments
                .iter()
                .filter(|(s, _)| **s <= pointer.through || s.is_compacted())
                .map(|(_, n)| n * PAGE_SIZE as u64)
                .sum();
            report.fragmented_bytes = referenced_bytes.saturating_sub(live_in_checkpointed);
        }
        if garbage.is_empty() || !self.is_leader() {
            return Ok(());
        }
        garbage.truncate(self.lifecycle.gc_deletes_max);
        let store = self.store.clone();
        let results: Vec<(ObjectKey, u64, bool)> = stream::iter(garbage)
            .map(|(key, size)| {
                let store = store.clone();
                async move {
                    let ok = match store.delete(&key).await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(%key, error = %e, "garbage collection: delete failed");
                            false
                        }
                    };
                    (key, size, ok)
                }
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .collect()
            .await;
        for (key, size, ok) in results {
            if ok {
                let kind = match key {
                    ObjectKey::Segment(_) => "segment",
                    ObjectKey::Run { .. } => "run",
                    _ => "manifest",
                };
                metrics::GC_DELETES.with_label_values(&[kind]).inc();
                metrics::GC_DELETED_BYTES.inc_by(size);
                report.deleted += 1;
            } else {
                metrics::GC_DELETE_ERRORS.inc();
                report.delete_errors += 1;
            }
        }
        if report.deleted > 0 {
            tracing::info!(
                deleted = report.deleted,
                failed = report.delete_errors,
                oldest_protected = oldest,
                "garbage collected"
            );
        }
        Ok(())
    }

    /// The segments a run's page versions point to, cached per run.
    async fn run_refs(
        &self,
        st: &mut LifecycleState,
        run: &RunRef,
    ) -> Result<Arc<Vec<SegmentId>>, CheckpointError> {
        if let Some(r) = st.refs.get(&(run.seq, run.nonce)) {
            return Ok(r.clone());
        }
        let table = self.fetch_run(run).await?;
        let refs = tokio::task::spawn_blocking(move || lifecycle::referenced_segments(&table))
            .await
            .map_err(local)?
            .map_err(|e| CheckpointError::Invalid(e.to_string()))?;
        let refs = Arc::new(refs);
        st.refs.insert((run.seq, run.nonce), refs.clone());
        Ok(refs)
    }

    /// Every object under `prefix`, page by page.
    async fn list_all(&self, prefix: &str) -> Result<Vec<Listed>, CheckpointError> {
        let mut out: Vec<Listed> = Vec::new();
        loop {
            let start = out.last().map(|l| l.key.clone());
            let page = self
                .store
                .list_sized(prefix, start.as_deref(), LIST_PAGE)
                .await?;
            let done = page.len() < LIST_PAGE;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }
}

fn volume_report(
    heads: &BTreeMap<VolumeId, VolumeHead>,
    usage: &Usage,
    truncated: &mut bool,
) -> Vec<VolumeStorage> {
    *truncated = heads.len() > REPORT_VOLUMES_MAX;
    heads
        .iter()
        .take(REPORT_VOLUMES_MAX)
        .map(|(v, h)| {
            let u = usage.volumes.get(v).copied().unwrap_or_default();
            VolumeStorage {
                volume: *v,
                lsn: h.lsn,
                oldest_lsn: h.horizon,
                deleted: h.deleted,
                base: h.base,
                page_versions: u.page_versions,
                commits: u.commits,
                retention: h.retention,
            }
        })
        .collect()
}
