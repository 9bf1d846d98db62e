//! Building a checkpoint's index run from the replicated state: the page-index entries, commit
//! records and volume heads of the flushed segments no checkpoint covers yet. Those segments are
//! immutable (nothing is added to a flushed segment), so every replica builds the same run from
//! them, whenever it builds it.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use folio_core::{Lsn, SegmentId, VolumeId};
use folio_raft::codec::decode;
use folio_raft::keys::cf;
use folio_segment::table::TableBuilder;
use rocksdb::{IteratorMode, ReadOptions, SnapshotWithThreadMode, DB};

use crate::db::{corrupt, StoreError};
use crate::keys::*;
use crate::runs;
use crate::state::{
    is_volume_event, CommitRecord, GroupState, ManifestRef, VolumeHead, RETENTION_LSN,
};
use crate::StateReader;

/// What the next checkpoint would cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPlan {
    /// The checkpoint this one follows, as of the plan.
    pub base: Option<ManifestRef>,
    pub first: SegmentId,
    pub through: SegmentId,
    pub segments: u64,
    /// Index entries (page versions plus commit records) the run will hold.
    pub entries: u64,
}

/// Index entries per flushed segment that no checkpoint covers yet, as counted by earlier
/// plans ([`StateReader::checkpoint_plan_counted`]). Holds only segments waiting for a
/// checkpoint: a plan forgets those before its first segment.
#[derive(Debug, Default)]
pub struct PlanCounts {
    entries: BTreeMap<SegmentId, u64>,
}

impl PlanCounts {
    /// Segments counted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// An index run ready to upload.
#[derive(Clone, Debug)]
pub struct BuiltRun {
    pub base: Option<ManifestRef>,
    pub first: SegmentId,
    pub through: SegmentId,
    pub entries: u64,
    pub bytes: Bytes,
}

struct View<'a> {
    db: &'a DB,
    snap: SnapshotWithThreadMode<'a, DB>,
}

impl View<'_> {
    fn opts(&self) -> ReadOptions {
        let mut o = ReadOptions::default();
        o.set_snapshot(&self.snap);
        o
    }

    fn get<T: for<'de> serde::Deserialize<'de>>(
        &self,
        name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.db.get_cf_opt(cf(self.db, name), key, &self.opts())? {
            Some(b) => Ok(Some(decode(&b).map_err(|e| corrupt(name, e))?)),
            None => Ok(None),
        }
    }

    fn group(&self) -> Result<GroupState, StoreError> {
        Ok(self.get(CF_SM_META, META_GROUP)?.unwrap_or_default())
    }

    /// Visits (segment, volume, lsn, the entry's value) of the commit records of every segment
    /// that is flushed and not checkpointed, in segment order, until `f` returns false.
    fn flushed_records(
        &self,
        g: &GroupState,
        mut f: impl FnMut(SegmentId, VolumeId, Lsn, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        // Segments flush out of order; a checkpoint covers only a prefix that is all flushed.
        let limit = g
            .sealed
            .iter()
            .map(|s| s.id)
            .chain(g.open.map(|o| o.id))
            .min();
        let it = self.db.iterator_cf_opt(
            cf(self.db, CF_SEG_COMMITS),
            self.opts(),
            IteratorMode::Start,
        );
        for item in it {
            let (k, value) = item?;
            let (s, v, lsn) =
                parse_seg_commit_key(&k).ok_or_else(|| corrupt(CF_SEG_COMMITS, "bad key"))?;
            if limit.is_some_and(|l| s >= l) || !f(s, v, lsn, &value)? {
                break;
            }
        }
        Ok(())
    }

    fn commit(&self, v: VolumeId, lsn: Lsn) -> Result<CommitRecord, StoreError> {
        self.get(CF_COMMITS, &commit_key(v, lsn))?
            .ok_or_else(|| corrupt(CF_COMMITS, format!("commit {v}@{lsn} missing")))
    }
}

impl StateReader {
    fn view(&self) -> View<'_> {
        View {
            db: &self.db,
            snap: self.db.snapshot(),
        }
    }

    /// The next checkpoint: the flushed segments no checkpoint covers yet, in order, stopping
    /// before one that is not flushed and once `entries_max` entries are reached (always at
    /// least one segment). `None` when there is nothing to checkpoint.
    pub fn checkpoint_plan(&self, entries_max: u64) -> Result<Option<CheckpointPlan>, StoreError> {
        self.checkpoint_plan_counted(entries_max, &mut PlanCounts::default())
    }

    /// [`Self::checkpoint_plan`], reading the commit records only of the segments `counts` has
    /// not counted yet, and counting them into it. A planner that plans every tick keeps one
    /// [`PlanCounts`] across its plans, so each plan reads what was flushed since the last one
    /// instead of everything waiting for a checkpoint.
    pub fn checkpoint_plan_counted(
        &self,
        entries_max: u64,
        counts: &mut PlanCounts,
    ) -> Result<Option<CheckpointPlan>, StoreError> {
        let view = self.view();
        let g = view.group()?;
        let mut plan: Option<CheckpointPlan> = None;
        // The segment being counted (not in `counts` yet) and its entries so far.
        let mut tally: Option<(SegmentId, u64)> = None;
        view.flushed_records(&g, |s, v, lsn, value| {
            if plan
                .as_ref()
                .is_some_and(|p| p.through != s && p.entries >= entries_max)
            {
                return Ok(false);
            }
            // Every record of a segment comes before the next segment's: one seen whole is
            // counted for good (a flushed segment gets no more records).
            if let Some((t, n)) = tally.filter(|(t, _)| *t != s) {
                counts.entries.insert(t, n);
                tally = None;
            }
            let first_of_segment = plan.as_ref().is_none_or(|p| p.through != s);
            let add = match counts.entries.get(&s) {
                Some(n) if first_of_segment => *n,
                Some(_) => 0,
                None => {
                    let pages = if is_volume_event(lsn) {
                        0
                    } else if let Some(listed) =
                        parse_seg_commit_pages(value).map_err(|e| corrupt(CF_SEG_COMMITS, e))?
                    {
                        listed.len() as u64
                    } else {
                        // Indexed before the entry listed the pages.
                        view.commit(v, lsn)?.pages.len() as u64
                    };
                    let t = tally.get_or_insert((s, 0));
                    t.1 += 1 + pages;
                    1 + pages
                }
            };
            match &mut plan {
                None => {
                    plan = Some(CheckpointPlan {
                        base: g.manifest,
                        first: s,
                        through: s,
                        segments: 1,
                        entries: add,
                    })
                }
                Some(p) => {
                    if p.through != s {
                        p.through = s;
                        p.segments += 1;
                    }
                    p.entries += add;
                }
            }
            Ok(true)
        })?;
        // The iteration ends at a segment boundary (a cut, the first unflushed segment, or the
        // end), so the last segment counted was seen whole.
        if let Some((t, n)) = tally {
            counts.entries.insert(t, n);
        }
        // Segments a checkpoint covered since are gone from the state: forget them.
        match &plan {
            Some(p) => counts.entries.retain(|s, _| *s >= p.first),
            None => counts.entries.clear(),
        }
        Ok(plan)
    }

    /// Builds the index run of the flushed segments up to and including `through` that no
    /// checkpoint covers yet. `None` when the state moved on (another checkpoint covered them,
    /// or a segment up to `through` is not flushed).
    pub fn build_run(&self, through: SegmentId) -> Result<Option<BuiltRun>, StoreError> {
        let view = self.view();
        let g = view.group()?;
        let unflushed =
            g.open.is_some_and(|o| o.id <= through) || g.sealed.iter().any(|s| s.id <= through);
        if unflushed || g.manifest.is_some_and(|m| m.through >= through) {
            return Ok(None);
        }
        let mut entries: BTreeMap<Vec<u8>, Bytes> = BTreeMap::new();
        // Per volume, its newest commit (or creation) in the run; `None` when the run holds
        // only its retention changes or deletion.
        let mut heads: BTreeMap<VolumeId, Option<Lsn>> = BTreeMap::new();
        let mut first = None;
        view.flushed_records(&g, |s, v, lsn, _| {
            if s > through {
                return Ok(false);
            }
            first.get_or_insert(s);
            let head = heads.entry(v).or_insert(None);
            if lsn < RETENTION_LSN {
                *head = Some(head.map_or(lsn, |h| h.max(lsn)));
            }
            if !is_volume_event(lsn) {
                let rec = view.commit(v, lsn)?;
                for p in &rec.pages {
                    entries.insert(
                        runs::page_key(v, p.idx, lsn).to_vec(),
                        Bytes::copy_from_slice(&runs::location_value(p.segment, p.offset)),
                    );
                }
                entries.insert(runs::commit_key(v, lsn).to_vec(), runs::commit_value(&rec));
            }
            Ok(true)
        })?;
        let Some(first) = first else {
            return Ok(None);
        };
        // A volume whose only records in the run are events: its head as of the run's last
        // segment is just below its first commit after it (commits after the latest checkpoint
        // are all still here), or the state's head when it has none.
        let mut later: BTreeMap<VolumeId, Lsn> = BTreeMap::new();
        if heads.values().any(Option::is_none) {
            let it = view.db.iterator_cf_opt(
                cf(view.db, CF_SEG_COMMITS),
                view.opts(),
                IteratorMode::From(&through_segment_end(through), rocksdb::Direction::Forward),
            );
            for item in it {
                let (k, _) = item?;
                let (_, v, lsn) =
                    parse_seg_commit_key(&k).ok_or_else(|| corrupt(CF_SEG_COMMITS, "bad key"))?;
                if heads.get(&v) == Some(&None) && !is_volume_event(lsn) {
                    let first = later.entry(v).or_insert(lsn);
                    *first = (*first).min(lsn);
                }
            }
        }
        for (v, lsn) in heads {
            let created: VolumeHead = view
                .get(CF_VOLUMES, v.as_bytes())?
                .ok_or_else(|| corrupt(CF_VOLUMES, format!("volume {v} missing")))?;
            // The head as of the run's last segment, with the retention, horizon and deletion
            // the state has now (a rebuild must not lose them; a deletion is the volume's last
            // record).
            let lsn = match (lsn, later.get(&v)) {
                (Some(l), _) => l,
                (None, Some(first)) => Lsn(first.0 - 1),
                (None, None) => created.lsn,
            };
            let h = VolumeHead {
                lsn,
                horizon: created.horizon.min(lsn),
                ..created
            };
            entries.insert(
                runs::head_key(v).to_vec(),
                Bytes::from(runs::head_value(&h)),
            );
        }
        let mut table = TableBuilder::new();
        let count = entries.len() as u64;
        for (k, v) in entries {
            table.push(&k, &v).map_err(|e| corrupt(CF_SEG_COMMITS, e))?;
        }
        Ok(Some(BuiltRun {
            base: g.manifest,
            first,
            through,
            entries: count,
            bytes: table.finish(),
        }))
    }

    /// For garbage collection, from one consistent view: the current checkpoint, and the
    /// segments the node's own index (what no checkpoint covers yet) points to. An entry moves
    /// from the index to a run only together with the pointer, so a segment one of them names
    /// is named by the manifest the other names, or by the index read with it.
    pub fn gc_view(&self) -> Result<(Option<ManifestRef>, BTreeSet<SegmentId>), StoreError> {
        let view = self.view();
        let g = view.group()?;
        let mut segments = BTreeSet::new();
        let it = view
            .db
            .iterator_cf_opt(cf(view.db, CF_PAGES), view.opts(), IteratorMode::Start);
        for item in it {
            let (_, v) = item?;
            let (s, _) = parse_location_value(&v).ok_or_else(|| corrupt(CF_PAGES, "bad value"))?;
            segments.insert(s);
        }
        Ok((g.manifest, segments))
    }

    /// Every volume head, deleted ones included, in id order.
    pub fn all_heads(&self) -> Result<BTreeMap<VolumeId, VolumeHead>, StoreError> {
        let view = self.view();
        let mut out = BTreeMap::new();
        let it = view
            .db
            .iterator_cf_opt(cf(view.db, CF_VOLUMES), view.opts(), IteratorMode::Start);
        for item in it {
            let (k, v) = item?;
            let id = VolumeId::from_slice(&k).map_err(|e| corrupt(CF_VOLUMES, e))?;
            out.insert(id, decode(&v).map_err(|e| corrupt(CF_VOLUMES, e))?);
        }
        Ok(out)
    }

    /// The group's current checkpoint, read from the store itself (not from the published group
    /// state, which trails it): a read that found nothing in the local index and then reads this
    /// sees a manifest that covers whatever the index no longer holds.
    pub fn manifest(&self) -> Result<Option<ManifestRef>, StoreError> {
        self.consistent(|| Ok(self.view().group()?.manifest))
    }
}
