//! Rebuilding a group from the bucket (`folio server --restore` on empty data directories).
//!
//! The leader reads what the bucket holds of the group: the newest manifest (its runs hold the
//! index and commit records up to its `through` segment, and the volume heads as of it), then
//! every segment of the group after `through`, decoded and verified. It proposes the result as
//! `Restore` steps: where segment numbering continues, the volume heads, the commit records of
//! those later segments (indexed on the nodes until the next checkpoint covers them) and the
//! idempotency windows; client writes are refused until the last step. Each step is an ordinary
//! bounded Raft entry, so followers, snapshots and a new leader need nothing special: a new
//! leader started with `--restore` begins again.
//!
//! What comes back is every flushed commit. A volume's commits come back up to its first gap: a
//! later commit whose segment was flushed while an earlier one's was not (uploads overlap) is
//! left out, as its predecessor is lost with the disks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use folio_core::limits::IDEMPOTENCY_RETAIN_COMMITS;
use folio_core::{GroupId, Lsn, SegmentId, VolumeId};
use folio_objstore::{ObjectKey, ObjectStore};
use folio_segment::manifest::Manifest;
use folio_state::state::{
    parse_fork_record_key, parse_retention_record_key, ManifestRef, VolumeHead, DELETION_LSN,
    RETENTION_LSN,
};
use folio_state::{Command, CommandResult, Raft, RestoreStep, RestoredCommit};

use crate::history::History;
use crate::now_ms;

/// Keys per object-store listing request.
const LIST_PAGE: usize = 1000;
/// Volume heads per Raft entry.
const HEADS_PER_ENTRY: usize = 4096;
/// Bytes of commit records per Raft entry.
const COMMIT_BYTES_PER_ENTRY: usize = 1 << 20;

pub struct Restorer {
    pub node_id: u64,
    pub group: GroupId,
    pub raft: Raft,
    pub history: Arc<History>,
    pub store: Arc<dyn ObjectStore>,
    pub segment_bytes_max: u64,
}

impl Restorer {
    /// Waits for this node to lead, then rebuilds the group if it is empty (or a rebuild is
    /// under way). Returns when the group holds state.
    pub async fn run(self) {
        let mut wait = Duration::from_millis(200);
        loop {
            tokio::time::sleep(wait).await;
            if self.raft.metrics().borrow().current_leader != Some(self.node_id) {
                continue;
            }
            let g = self.history.state().group_state();
            let has_volumes = self
                .history
                .state()
                .volumes(None, 1)
                .map(|v| !v.is_empty())
                .unwrap_or(true);
            let empty = !has_volumes && g.manifest.is_none() && g.open.is_none();
            if !g.restoring && !empty {
                tracing::info!("the group holds state; nothing to rebuild");
                return;
            }
            match self.restore().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "rebuild from the bucket failed; will retry");
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn propose(&self, step: RestoreStep) -> anyhow::Result<()> {
        let cmd = Command::Restore { step };
        match crate::batcher::propose(&self.raft, self.segment_bytes_max, cmd).await? {
            CommandResult::Restored => Ok(()),
            CommandResult::Rejected(r) => bail!("{r}"),
            other => bail!("unexpected result {other:?}"),
        }
    }

    /// The newest manifest version in the bucket.
    async fn latest_manifest(&self) -> anyhow::Result<Option<Arc<Manifest>>> {
        let prefix = ObjectKey::manifests_prefix(self.group);
        let mut last: Option<String> = None;
        loop {
            let keys = self.store.list(&prefix, last.as_deref(), LIST_PAGE).await?;
            let done = keys.len() < LIST_PAGE;
            if let Some(k) = keys.into_iter().last() {
                last = Some(k);
            }
            if done {
                break;
            }
        }
        let Some(key) = last else { return Ok(None) };
        let seq: u64 = key
            .rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("manifest key {key} has no sequence number"))?;
        Ok(Some(self.history.manifest(seq).await?))
    }

    /// The group's segments after `after`, in id order.
    async fn later_segments(&self, after: Option<SegmentId>) -> anyhow::Result<Vec<SegmentId>> {
        let mut out = Vec::new();
        let mut start = after.map(|s| ObjectKey::Segment(s).to_string());
        loop {
            let keys = self
                .store
                .list(ObjectKey::SEGMENTS_PREFIX, start.as_deref(), LIST_PAGE)
                .await?;
            let done = keys.len() < LIST_PAGE;
            for k in &keys {
                let id: SegmentId = k[ObjectKey::SEGMENTS_PREFIX.len()..]
                    .parse()
                    .with_context(|| format!("object {k} is not named by a segment id"))?;
                // Compacted segments hold pages only: their history is in the runs.
                if id.group() == self.group && !id.is_compacted() {
                    out.push(id);
                }
            }
            start = keys.last().cloned();
            if done {
                break;
            }
        }
        Ok(out)
    }

    async fn restore(&self) -> anyhow::Result<()> {
        let manifest = self.latest_manifest().await?;
        let mut heads: BTreeMap<VolumeId, VolumeHead> = match &manifest {
            Some(m) => self.history.heads(m).await?,
            None => BTreeMap::new(),
        };
        let checkpointed = heads.clone();
        let segments = self
            .later_segments(manifest.as_ref().map(|m| m.through))
            .await?;
        let mut last_time_ms = manifest.as_ref().map_or(0, |m| m.through.time_ms());
        let mut next_seq = manifest.as_ref().map_or(0, |m| m.through.seq() + 1);
        let mut tail = Vec::new();
        for id in &segments {
            last_time_ms = last_time_ms.max(id.time_ms());
            next_seq = next_seq.max(id.seq().saturating_add(1));
            let bytes = self.store.get(&ObjectKey::Segment(*id)).await?;
            let seg = tokio::task::spawn_blocking(move || folio_segment::Segment::decode(bytes))
                .await?
                .with_context(|| format!("segment {id}"))?;
            tail.extend(seg.commits.into_iter().map(|c| (c, *id)));
        }
        // Replay in (volume, LSN) order; a volume stops at its first gap.
        tail.sort_by_key(|(c, _)| (c.volume, c.lsn));
        let mut records = Vec::new();
        let mut skipped = 0u64;
        for (c, segment) in tail {
            // Creations, retention changes and deletions go back into the node's index of its
            // segments too, so the first checkpoint after the rebuild writes those volumes'
            // heads (a later rebuild must not find an older head in the runs).
            let event = |c: &folio_segment::CommitEntry| RestoredCommit {
                volume: c.volume,
                lsn: c.lsn,
                committed_at_ms: c.committed_at_ms,
                idempotency_key: c.idempotency_key.clone(),
                fingerprint: 0,
                pages: Vec::new(),
                segment,
                indexed: true,
            };
            match heads.get_mut(&c.volume) {
                None if c.lsn == Lsn::ZERO => {
                    records.push(event(&c));
                    let base = parse_fork_record_key(&c.idempotency_key).map_err(|e| {
                        anyhow::anyhow!("segment {segment}: volume {}: {e}", c.volume)
                    })?;
                    heads.insert(
                        c.volume,
                        VolumeHead {
                            base,
                            ..VolumeHead::new(Lsn::ZERO, c.committed_at_ms)
                        },
                    );
                }
                Some(h) if c.lsn == DELETION_LSN => {
                    h.deleted = true;
                    records.push(event(&c));
                }
                Some(h) if c.lsn == RETENTION_LSN => {
                    h.retention = parse_retention_record_key(&c.idempotency_key).map_err(|e| {
                        anyhow::anyhow!("segment {segment}: volume {}: {e}", c.volume)
                    })?;
                    records.push(event(&c));
                }
                Some(h) if c.lsn == h.lsn.next() => {
                    h.lsn = c.lsn;
                    records.push(RestoredCommit {
                        volume: c.volume,
                        lsn: c.lsn,
                        committed_at_ms: c.committed_at_ms,
                        idempotency_key: c.idempotency_key,
                        fingerprint: c.fingerprint,
                        pages: c.pages,
                        segment,
                        indexed: true,
                    });
                }
                _ => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "commit records after a gap in their volume's history were left out"
            );
        }
        // Idempotency windows: the checkpointed part of each window comes from the runs.
        let mut window = Vec::new();
        if let Some(m) = &manifest {
            for (v, h) in &heads {
                let Some(ck) = checkpointed.get(v) else {
                    continue;
                };
                let start = Lsn(h
                    .lsn
                    .0
                    .saturating_sub(IDEMPOTENCY_RETAIN_COMMITS - 1)
                    .max(1));
                if start > ck.lsn {
                    continue;
                }
                let n = (ck.lsn.0 - start.0 + 1) as usize;
                for c in self.history.run_commits(m, *v, start, n).await? {
                    window.push(RestoredCommit {
                        volume: *v,
                        lsn: c.lsn,
                        committed_at_ms: c.committed_at_ms,
                        idempotency_key: c.idempotency_key,
                        fingerprint: c.fingerprint,
                        pages: Vec::new(),
                        segment: c.segment,
                        indexed: false,
                    });
                }
            }
        }
        tracing::info!(
            manifest = manifest.as_ref().map(|m| m.seq),
            volumes = heads.len(),
            later_segments = segments.len(),
            later_commits = records.len(),
            "rebuilding the group from the bucket"
        );
        self.propose(RestoreStep::Begin {
            manifest: manifest.as_ref().map(|m| ManifestRef {
                seq: m.seq,
                through: m.through,
            }),
            last_time_ms: last_time_ms.max(now_ms()),
            next_segment_seq: next_seq,
        })
        .await?;
        let heads: Vec<(VolumeId, VolumeHead)> = heads.into_iter().collect();
        for chunk in heads.chunks(HEADS_PER_ENTRY) {
            self.propose(RestoreStep::Volumes {
                heads: chunk.to_vec(),
            })
            .await?;
        }
        // Older window entries first, so a key reused later in the window maps to its latest use.
        window.extend(records);
        let mut batch = Vec::new();
        let mut bytes = 0;
        for r in window {
            bytes += 96 + r.idempotency_key.len() + r.pages.len() * 32;
            batch.push(r);
            if bytes >= COMMIT_BYTES_PER_ENTRY {
                self.propose(RestoreStep::Commits {
                    records: std::mem::take(&mut batch),
                })
                .await?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.propose(RestoreStep::Commits { records: batch })
                .await?;
        }
        self.propose(RestoreStep::End).await?;
        tracing::info!("rebuild from the bucket complete");
        Ok(())
    }
}
