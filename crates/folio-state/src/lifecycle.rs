//! What the storage lifecycle keeps: retention horizons from commit times, and the rewrite of a
//! group's index runs without the entries no retained snapshot, fork or deletion still needs.
//! Pure functions of the runs and the volume heads, so they are tested without a group.
//!
//! A page version is needed when a snapshot someone may still read sees it: version `i` of a page
//! (written at LSN `l_i`, replaced at `l_{i+1}`, or never) is visible at LSNs `l_i..l_{i+1}`.
//! It is kept when that range reaches the volume's horizon (any LSN at or after it) or contains
//! a pin: the LSN a live fork was made at. A deleted volume keeps only its pinned versions; its
//! head stays, so its id is never reused.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use folio_core::{Lsn, PageIdx, SegmentId, VolumeId, PAGE_SIZE};
use folio_segment::table::{Table, TableBuilder, TableError};

use crate::runs::{self, RunEntryError};
use crate::state::{Retention, VolumeHead};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Entry(#[from] RunEntryError),
    #[error(transparent)]
    Table(#[from] TableError),
}

/// New horizons for the volumes whose horizon moves: for each live volume, under its own
/// retention or else `default`, the smaller of the newest LSN committed at or before
/// `now_ms - retention.ms` (the snapshot that was current then; everything before it was replaced
/// longer than the retention ago) and the LSN that keeps its last `retention.commits` snapshots.
/// Commit times come from the runs' commit records, so commits not yet checkpointed never move a
/// horizon (which only keeps more).
pub fn horizons(
    runs: &[Table],
    heads: &BTreeMap<VolumeId, VolumeHead>,
    now_ms: u64,
    default: Retention,
) -> Result<Vec<(VolumeId, Lsn)>, LifecycleError> {
    let cutoff = |vol: &VolumeId| {
        let r = heads.get(vol).and_then(|h| h.retention).unwrap_or(default);
        now_ms.saturating_sub(r.ms)
    };
    // Per volume, the newest LSN committed at or before its cutoff.
    let mut old: HashMap<VolumeId, Lsn> = HashMap::new();
    for run in runs {
        for (k, v) in run.iter_from(&[runs::COMMIT]) {
            if k[0] != runs::COMMIT {
                break;
            }
            let (vol, rec) = runs::parse_commit(k, v)?;
            if rec.committed_at_ms <= cutoff(&vol) {
                let e = old.entry(vol).or_default();
                *e = (*e).max(rec.lsn);
            }
        }
    }
    let mut out = Vec::new();
    for (vol, h) in heads {
        if h.deleted {
            continue;
        }
        let commits = h.retention.unwrap_or(default).commits;
        let by_count = Lsn((h.lsn.0 + 1).saturating_sub(commits.max(1)));
        let by_time = old.get(vol).copied().unwrap_or(Lsn::ZERO);
        let horizon = by_count.min(by_time).min(h.lsn);
        if horizon > h.horizon {
            out.push((*vol, horizon));
        }
    }
    Ok(out)
}

/// The LSNs of each volume that live forks were made at. A deleted fork still pins its source
/// while a live fork of its own reads through it.
pub fn pins(heads: &BTreeMap<VolumeId, VolumeHead>) -> HashMap<VolumeId, Vec<Lsn>> {
    let mut pins: HashMap<VolumeId, Vec<Lsn>> = HashMap::new();
    for h in heads.values().filter(|h| !h.deleted) {
        // Walk up the chain of sources; depth is bounded by MAX_FORK_DEPTH at fork time.
        let (mut cur, mut guard) = (h.base, 0);
        while let Some(b) = cur {
            pins.entry(b.volume).or_default().push(b.lsn);
            guard += 1;
            if guard > crate::state::MAX_FORK_DEPTH {
                break;
            }
            cur = heads.get(&b.volume).and_then(|s| s.base);
        }
    }
    for p in pins.values_mut() {
        p.sort_unstable();
        p.dedup();
    }
    pins
}

/// What a rewrite keeps, per volume and per segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Page versions kept per volume, and the commits kept.
    pub volumes: BTreeMap<VolumeId, VolumeUsage>,
    /// Pages kept per segment (each `PAGE_SIZE` bytes).
    pub segments: BTreeMap<SegmentId, u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VolumeUsage {
    pub page_versions: u64,
    pub commits: u64,
}

impl Usage {
    pub fn live_bytes(&self) -> u64 {
        self.segments.values().sum::<u64>() * PAGE_SIZE as u64
    }
}

/// One run holding what `runs` (newest first) hold, less what nothing needs any more.
pub struct Rewrite {
    pub bytes: Bytes,
    pub entries: u64,
    /// Entries of the input left out.
    pub dropped: u64,
    /// Entries of deleted volumes that were dropped.
    pub dropped_deleted: u64,
    pub usage: Usage,
}

/// Merges `runs` (newest first; on equal keys the newest wins) into one run without the page
/// versions and commits no retained snapshot or fork needs, given the volumes' `heads` as the
/// replicated state holds them now (their horizons already raised). Heads are written with the
/// state's horizon, deletion and fork source, and the run's own LSN. Volumes the state does not
/// know keep everything.
pub fn rewrite(
    runs: &[Table],
    heads: &BTreeMap<VolumeId, VolumeHead>,
) -> Result<Rewrite, LifecycleError> {
    let pins = pins(heads);
    let mut out = TableBuilder::new();
    let mut usage = Usage::default();
    let (mut dropped, mut dropped_deleted, mut input) = (0u64, 0u64, 0u64);
    // The versions of the page being read, oldest first.
    let mut page: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let flush_page = |page: &mut Vec<(Vec<u8>, Vec<u8>)>,
                      out: &mut TableBuilder,
                      usage: &mut Usage|
     -> Result<(u64, u64), LifecycleError> {
        let Some((first, _)) = page.first() else {
            return Ok((0, 0));
        };
        let (vol, _, _) = runs::parse_page(first, &page[0].1)?;
        let head = heads.get(&vol);
        let none = Vec::new();
        let pinned = pins.get(&vol).unwrap_or(&none);
        let (mut gone, mut gone_deleted) = (0, 0);
        for i in 0..page.len() {
            let (k, val) = &page[i];
            let (_, lsn, loc) = runs::parse_page(k, val)?;
            let next = match page.get(i + 1) {
                Some((nk, nv)) => runs::parse_page(nk, nv)?.1,
                None => Lsn(u64::MAX),
            };
            let keep = match head {
                None => true,
                Some(h) => {
                    (!h.deleted && next > h.horizon)
                        || pinned.iter().any(|p| lsn <= *p && *p < next)
                }
            };
            if keep {
                out.push(k, val)?;
                usage.volumes.entry(vol).or_default().page_versions += 1;
                *usage.segments.entry(loc.segment).or_default() += 1;
            } else {
                gone += 1;
                if head.is_some_and(|h| h.deleted) {
                    gone_deleted += 1;
                }
            }
        }
        page.clear();
        Ok((gone, gone_deleted))
    };
    for (k, v) in MergeIter::new(runs) {
        input += 1;
        match k.first() {
            Some(&runs::PAGE) => {
                runs::parse_page(k, v)?;
                // A new page: decide the last one's versions (keys are 29 bytes, checked above).
                if page.first().is_some_and(|(pk, _)| pk[..21] != k[..21]) {
                    let (g, gd) = flush_page(&mut page, &mut out, &mut usage)?;
                    dropped += g;
                    dropped_deleted += gd;
                }
                page.push((k.to_vec(), v.to_vec()));
            }
            Some(&runs::COMMIT) => {
                let (vol, rec) = runs::parse_commit(k, v)?;
                let keep = heads
                    .get(&vol)
                    .is_none_or(|h| !h.deleted && rec.lsn >= h.horizon);
                if keep {
                    out.push(k, v)?;
                    usage.volumes.entry(vol).or_default().commits += 1;
                } else {
                    dropped += 1;
                    if heads.get(&vol).is_some_and(|h| h.deleted) {
                        dropped_deleted += 1;
                    }
                }
            }
            Some(&runs::HEAD) => {
                let (vol, mut h) = runs::parse_head(k, v)?;
                if let Some(now) = heads.get(&vol) {
                    h.horizon = now.horizon.min(h.lsn);
                    h.deleted = now.deleted;
                    h.base = now.base;
                }
                out.push(k, &runs::head_value(&h))?;
            }
            _ => {
                out.push(k, v)?;
            }
        }
    }
    let (g, gd) = flush_page(&mut page, &mut out, &mut usage)?;
    dropped += g;
    dropped_deleted += gd;
    let entries = out.entries();
    debug_assert_eq!(entries + dropped, input);
    Ok(Rewrite {
        bytes: out.finish(),
        entries,
        dropped,
        dropped_deleted,
        usage,
    })
}

/// The segments a run's page versions point to.
pub fn referenced_segments(run: &Table) -> Result<Vec<SegmentId>, LifecycleError> {
    let mut out: Vec<SegmentId> = Vec::new();
    for (k, v) in run.iter_from(&[runs::PAGE]) {
        let (_, _, loc) = runs::parse_page(k, v)?;
        if out.last() != Some(&loc.segment) {
            out.push(loc.segment);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Where compaction moved page versions: (segment, offset) → (segment, offset).
pub type Relocations = HashMap<(SegmentId, u64), (SegmentId, u64)>;

/// The segments to compact this round, oldest first: checkpointed (or compacted) segments whose
/// live pages take less than `ratio` of their `sizes`, until `bytes_max` live bytes. Wholly
/// dead segments are left to garbage collection.
pub fn compaction_plan(
    usage: &Usage,
    sizes: &BTreeMap<SegmentId, u64>,
    through: SegmentId,
    ratio: f64,
    bytes_max: u64,
) -> Vec<SegmentId> {
    let mut out = Vec::new();
    let mut total = 0u64;
    for (id, size) in sizes {
        if *id > through && !id.is_compacted() {
            continue;
        }
        let live = usage.segments.get(id).copied().unwrap_or(0) * PAGE_SIZE as u64;
        if live == 0 || live as f64 >= ratio * *size as f64 {
            continue;
        }
        if total + live > bytes_max && !out.is_empty() {
            break;
        }
        total += live;
        out.push(*id);
    }
    out
}

/// The distinct page versions `run` keeps in `segments`, as (volume, page, segment, offset),
/// in (segment, offset) order.
pub fn live_in(
    run: &Table,
    segments: &BTreeSet<SegmentId>,
) -> Result<Vec<(VolumeId, PageIdx, SegmentId, u64)>, LifecycleError> {
    let mut out = Vec::new();
    for (k, v) in run.iter_from(&[runs::PAGE]) {
        let (vol, _, loc) = runs::parse_page(k, v)?;
        if segments.contains(&loc.segment) {
            out.push((vol, loc.idx, loc.segment, loc.offset));
        }
    }
    out.sort_unstable_by_key(|&(_, _, s, o)| (s, o));
    out.dedup_by_key(|&mut (_, _, s, o)| (s, o));
    Ok(out)
}

/// `run` with its page versions, and the page lists of its commit records, pointing where
/// `moved` says.
pub fn relocate(run: &Table, moved: &Relocations) -> Result<Bytes, LifecycleError> {
    let mut out = TableBuilder::new();
    for (k, v) in run.iter() {
        match k.first() {
            Some(&runs::PAGE) => {
                let (_, _, loc) = runs::parse_page(k, v)?;
                match moved.get(&(loc.segment, loc.offset)) {
                    Some(&(s, o)) => out.push(k, &runs::location_value(s, o))?,
                    None => out.push(k, v)?,
                }
            }
            Some(&runs::COMMIT) => {
                let (_, mut rec) = runs::parse_commit(k, v)?;
                let mut changed = false;
                for p in &mut rec.pages {
                    if let Some(&(s, o)) = moved.get(&(p.segment, p.offset)) {
                        (p.segment, p.offset) = (s, o);
                        changed = true;
                    }
                }
                if changed {
                    out.push(k, &runs::commit_value(&rec))?;
                } else {
                    out.push(k, v)?;
                }
            }
            _ => out.push(k, v)?,
        }
    }
    Ok(out.finish())
}

/// One run's entries, in key order.
type Entries<'a> = std::iter::Peekable<Box<dyn Iterator<Item = (&'a [u8], &'a [u8])> + 'a>>;

/// The entries of several runs in key order, each key once (the first run that holds it wins).
struct MergeIter<'a> {
    iters: Vec<Entries<'a>>,
}

impl<'a> MergeIter<'a> {
    fn new(runs: &'a [Table]) -> Self {
        MergeIter {
            iters: runs
                .iter()
                .map(|t| {
                    let it: Box<dyn Iterator<Item = (&'a [u8], &'a [u8])> + 'a> =
                        Box::new(t.iter());
                    it.peekable()
                })
                .collect(),
        }
    }
}

impl<'a> Iterator for MergeIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, &'a [u8])> = None;
        for (i, it) in self.iters.iter_mut().enumerate() {
            if let Some((k, _)) = it.peek() {
                if best.is_none_or(|(_, b)| *k < b) {
                    best = Some((i, k));
                }
            }
        }
        let (i, key) = best?;
        let item = self.iters[i].next();
        // Older runs' entries under the same key lose.
        for it in self.iters.iter_mut().skip(i + 1) {
            while it.peek().is_some_and(|(k, _)| *k == key) {
                it.next();
            }
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{CommitRecord, ForkBase};
    use folio_core::PageLocation;

    fn vol(b: u8) -> VolumeId {
        VolumeId::from_slice(&[b; 16]).unwrap()
    }

    fn seg(n: u32) -> SegmentId {
        SegmentId::new(1_000 + u64::from(n), folio_core::GroupId(1), n)
    }

    /// A run holding, for each (volume, page, lsn, segment, committed_at), a page version and its
    /// commit record, and each volume's head at its greatest LSN.
    fn run(versions: &[(u8, u32, u64, u32, u64)]) -> Table {
        let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut heads: BTreeMap<VolumeId, Lsn> = BTreeMap::new();
        for &(v, p, lsn, s, at) in versions {
            let loc = PageLocation {
                idx: PageIdx(p),
                segment: seg(s),
                offset: u64::from(p) * 4096,
            };
            entries.insert(
                runs::page_key(vol(v), PageIdx(p), Lsn(lsn)).to_vec(),
                runs::location_value(seg(s), loc.offset).to_vec(),
            );
            let rec = CommitRecord {
                lsn: Lsn(lsn),
                idempotency_key: Bytes::new(),
                fingerprint: 0,
                committed_at_ms: at,
                pages: vec![loc],
                segment: seg(s),
            };
            entries.insert(
                runs::commit_key(vol(v), Lsn(lsn)).to_vec(),
                runs::commit_value(&rec).to_vec(),
            );
            let h = heads.entry(vol(v)).or_default();
            *h = (*h).max(Lsn(lsn));
        }
        for (v, lsn) in heads {
            entries.insert(
                runs::head_key(v).to_vec(),
                runs::head_value(&VolumeHead::new(lsn, 0)),
            );
        }
        let mut b = TableBuilder::new();
        for (k, v) in entries {
            b.push(&k, &v).unwrap();
        }
        Table::decode(b.finish()).unwrap()
    }

    fn pages_of(t: &Table) -> Vec<(VolumeId, u32, u64)> {
        t.iter()
            .filter(|(k, _)| k[0] == runs::PAGE)
            .map(|(k, v)| {
                let (vol, lsn, loc) = runs::parse_page(k, v).unwrap();
                (vol, loc.idx.0, lsn.0)
            })
            .collect()
    }

    #[test]
    fn horizons_keep_the_window_and_the_last_commits() {
        // Volume 1: commits 1..=10 at times 100..=1000; volume 2: one old commit.
        let mut versions: Vec<_> = (1..=10).map(|l| (1, 0, l, 1, l * 100)).collect();
        versions.push((2, 0, 1, 1, 50));
        let runs = [run(&versions)];
        let mut heads = BTreeMap::new();
        heads.insert(vol(1), VolumeHead::new(Lsn(10), 0));
        heads.insert(vol(2), VolumeHead::new(Lsn(1), 0));
        // Retention 450 ms at time 1000: cutoff 550, LSN 5 was current then.
        let keep = |commits| Retention { ms: 450, commits };
        // Keep the last 3 snapshots: LSN 8 on. Volume 2 has only 2 snapshots (0 and 1): both
        // stay.
        let h = horizons(&runs, &heads, 1000, keep(3)).unwrap();
        assert_eq!(h, vec![(vol(1), Lsn(5))]);
        // Keeping one snapshot: volume 2's old commit is the one current at the cutoff.
        let h = horizons(&runs, &heads, 1000, keep(1)).unwrap();
        assert_eq!(h, vec![(vol(1), Lsn(5)), (vol(2), Lsn(1))]);
        // More commits to keep than exist: nothing moves for volume 1.
        let h = horizons(&runs, &heads, 1000, keep(100)).unwrap();
        assert_eq!(h, vec![]);
        // A volume's own retention overrides the default: 150 ms (cutoff 850, LSN 8), for
        // volume 1 only.
        heads.get_mut(&vol(1)).unwrap().retention = Some(Retention {
            ms: 150,
            commits: 1,
        });
        let h = horizons(&runs, &heads, 1000, keep(100)).unwrap();
        assert_eq!(h, vec![(vol(1), Lsn(8))]);
        // A volume that keeps everything for longer than its history stays whole.
        heads.get_mut(&vol(1)).unwrap().retention = Some(Retention {
            ms: 10_000,
            commits: 1,
        });
        assert_eq!(
            horizons(&runs, &heads, 1000, keep(1)).unwrap(),
            vec![(vol(2), Lsn(1))]
        );
        // A horizon never moves back, and deleted volumes are left alone.
        heads.get_mut(&vol(1)).unwrap().retention = None;
        heads.get_mut(&vol(1)).unwrap().horizon = Lsn(7);
        heads.get_mut(&vol(2)).unwrap().deleted = true;
        assert_eq!(horizons(&runs, &heads, 1000, keep(1)).unwrap(), vec![]);
    }

    #[test]
    fn rewrite_keeps_what_retained_snapshots_and_forks_see() {
        // Page 0 of volume 1 written at LSNs 1, 3, 5, 7; page 1 at LSN 2 only.
        let newer = run(&[(1, 0, 5, 3, 0), (1, 0, 7, 4, 0)]);
        let older = run(&[(1, 0, 1, 1, 0), (1, 1, 2, 1, 0), (1, 0, 3, 2, 0)]);
        let mut heads = BTreeMap::new();
        let mut h = VolumeHead::new(Lsn(7), 0);
        h.horizon = Lsn(6);
        heads.insert(vol(1), h);
        let r = rewrite(&[newer.clone(), older.clone()], &heads).unwrap();
        let t = Table::decode(r.bytes).unwrap();
        // At LSN 6 page 0 is version 5: versions 1 and 3 are gone; page 1's only version stays.
        assert_eq!(
            pages_of(&t),
            vec![(vol(1), 0, 5), (vol(1), 0, 7), (vol(1), 1, 2)]
        );
        // Commits below the horizon are gone too (1, 2, 3, 5); the head stays.
        assert_eq!(r.dropped, 2 + 4);
        assert_eq!(r.usage.volumes[&vol(1)].commits, 1);
        assert_eq!(r.usage.segments.get(&seg(2)), None);
        assert_eq!(r.usage.segments[&seg(1)], 1);

        // A fork of volume 1 at LSN 3 pins version 3 of page 0 (and page 1's version 2).
        let mut fork = VolumeHead::new(Lsn(0), 0);
        fork.base = Some(ForkBase {
            volume: vol(1),
            lsn: Lsn(3),
        });
        heads.insert(vol(9), fork);
        let r = rewrite(&[newer.clone(), older.clone()], &heads).unwrap();
        let t = Table::decode(r.bytes).unwrap();
        assert_eq!(
            pages_of(&t),
            vec![
                (vol(1), 0, 3),
                (vol(1), 0, 5),
                (vol(1), 0, 7),
                (vol(1), 1, 2)
            ]
        );

        // Deleting the source keeps only what the fork pins; deleting the fork too frees it all,
        // and the source's head stays (its id is retired).
        heads.get_mut(&vol(1)).unwrap().deleted = true;
        let r = rewrite(&[newer.clone(), older.clone()], &heads).unwrap();
        let t = Table::decode(r.bytes).unwrap();
        assert_eq!(pages_of(&t), vec![(vol(1), 0, 3), (vol(1), 1, 2)]);
        heads.get_mut(&vol(9)).unwrap().deleted = true;
        let r = rewrite(&[newer, older], &heads).unwrap();
        let t = Table::decode(r.bytes).unwrap();
        assert_eq!(pages_of(&t), vec![]);
        assert_eq!(r.entries, 1);
        let (k, v) = t.iter().next().unwrap();
        let (hv, head) = runs::parse_head(k, v).unwrap();
        assert_eq!(hv, vol(1));
        assert!(head.deleted);
        assert_eq!(r.dropped_deleted, r.dropped);
    }

    #[test]
    fn a_deleted_fork_still_pins_for_its_own_live_fork() {
        let mut heads = BTreeMap::new();
        heads.insert(vol(1), VolumeHead::new(Lsn(9), 0));
        let mut mid = VolumeHead::new(Lsn(4), 0);
        mid.base = Some(ForkBase {
            volume: vol(1),
            lsn: Lsn(6),
        });
        mid.deleted = true;
        heads.insert(vol(2), mid);
        let mut leaf = VolumeHead::new(Lsn(0), 0);
        leaf.base = Some(ForkBase {
            volume: vol(2),
            lsn: Lsn(2),
        });
        heads.insert(vol(3), leaf);
        let p = pins(&heads);
        assert_eq!(p[&vol(2)], vec![Lsn(2)]);
        assert_eq!(p[&vol(1)], vec![Lsn(6)]);
        // Without the leaf, nothing is pinned.
        heads.remove(&vol(3));
        assert!(pins(&heads).is_empty());
    }

    #[test]
    fn compaction_picks_sparse_checkpointed_segments_and_relocates_them() {
        let mut usage = Usage::default();
        usage.segments.insert(seg(1), 1); // 4 KiB live of 1 MiB: sparse
        usage.segments.insert(seg(2), 200); // 800 KiB of 1 MiB: dense
        usage.segments.insert(seg(3), 1); // sparse, but after `through`
        let sizes: BTreeMap<SegmentId, u64> = [
            (seg(1), 1 << 20),
            (seg(2), 1 << 20),
            (seg(3), 1 << 20),
            (seg(4), 1 << 20),
        ]
        .into();
        // seg(4) has nothing live: garbage collection's, not compaction's.
        assert_eq!(
            compaction_plan(&usage, &sizes, seg(2), 0.5, 1 << 30),
            vec![seg(1)]
        );
        assert_eq!(
            compaction_plan(&usage, &sizes, seg(2), 0.0, 1 << 30),
            vec![]
        );

        let t = run(&[(1, 0, 1, 1, 0), (1, 1, 2, 2, 0)]);
        let set: BTreeSet<SegmentId> = [seg(1)].into();
        let live = live_in(&t, &set).unwrap();
        assert_eq!(live, vec![(vol(1), PageIdx(0), seg(1), 0)]);
        let target = SegmentId::compacted(5_000, folio_core::GroupId(1), 7);
        assert!(target.is_compacted() && target.compacted_for() == Some(7));
        let moved: Relocations = [((seg(1), 0), (target, 4096))].into();
        let r = Table::decode(relocate(&t, &moved).unwrap()).unwrap();
        let (_, _, loc) = r
            .iter()
            .find(|(k, _)| k[0] == runs::PAGE)
            .map(|(k, v)| runs::parse_page(k, v).unwrap())
            .unwrap();
        assert_eq!((loc.segment, loc.offset), (target, 4096));
        let (_, rec) = r
            .iter()
            .find(|(k, _)| k[0] == runs::COMMIT)
            .map(|(k, v)| runs::parse_commit(k, v).unwrap())
            .unwrap();
        assert_eq!((rec.pages[0].segment, rec.pages[0].offset), (target, 4096));
        assert_eq!(r.entries(), t.entries());
    }

    #[test]
    fn merging_prefers_the_newest_run() {
        let newer = run(&[(1, 0, 2, 2, 0)]);
        let older = run(&[(1, 0, 1, 1, 0)]);
        let heads = BTreeMap::new();
        let r = rewrite(&[newer, older], &heads).unwrap();
        let t = Table::decode(r.bytes).unwrap();
        // The head of the newer run (LSN 2) wins over the older (LSN 1).
        let (_, head) = t
            .iter()
            .find(|(k, _)| k[0] == runs::HEAD)
            .map(|(k, v)| runs::parse_head(k, v).unwrap())
            .unwrap();
        assert_eq!(head.lsn, Lsn(2));
        assert_eq!(pages_of(&t).len(), 2);
        assert_eq!(r.dropped, 0);
    }
}
