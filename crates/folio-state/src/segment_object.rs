//! Building a sealed segment's object from the replicated buffer: the same bytes on every
//! replica that applied the seal, so any of them can upload it.

use bytes::Bytes;
use folio_core::{SegmentId, PAGE_SIZE};
use folio_raft::codec::decode;
use folio_raft::keys::cf;
use folio_segment::{CommitEntry, SegmentBuilder};
use rocksdb::{Direction, IteratorMode, ReadOptions};

use crate::db::{corrupt, StoreError};
use crate::keys::*;
use crate::state::{
    fork_record_key, is_volume_event, CommitRecord, GroupState, VolumeHead, DELETION_LSN,
    DELETION_RECORD_KEY, RETENTION_LSN,
};
use crate::StateReader;

/// A sealed segment's object, as uploaded.
#[derive(Clone, Debug)]
pub struct SegmentObject {
    pub id: SegmentId,
    pub pages: u64,
    pub commits: u64,
    pub bytes: Bytes,
}

impl StateReader {
    /// Builds the object for a sealed, unflushed segment from this replica's buffer, reading
    /// one consistent RocksDB snapshot. Every replica that applied the seal builds the same
    /// bytes. `None` when the segment is not sealed-and-unflushed here (already flushed, or not
    /// sealed yet).
    pub fn build_segment(&self, segment: SegmentId) -> Result<Option<SegmentObject>, StoreError> {
        let snap = self.db.snapshot();
        let opts = || {
            let mut o = ReadOptions::default();
            o.set_snapshot(&snap);
            o
        };
        let get = |cf_name: &'static str, key: &[u8]| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.db.get_cf_opt(cf(&self.db, cf_name), key, &opts())?)
        };
        let group: GroupState = match get(CF_SM_META, META_GROUP)? {
            Some(b) => decode(&b).map_err(|e| corrupt(CF_SM_META, e))?,
            None => return Ok(None),
        };
        let Some(sealed) = group.sealed.iter().find(|s| s.id == segment).copied() else {
            return Ok(None);
        };
        let (start, end) = segment_range(segment);
        let range = |cf_name: &'static str| {
            let mut o = opts();
            o.set_iterate_upper_bound(end.clone());
            self.db.iterator_cf_opt(
                cf(&self.db, cf_name),
                o,
                IteratorMode::From(&start, Direction::Forward),
            )
        };
        let mut builder = SegmentBuilder::new(segment);
        let mut slots = range(CF_SLOTS);
        let mut pages = 0u64;
        for item in range(CF_BUFFER) {
            let (k, data) = item?;
            let (sk, sv) = slots
                .next()
                .ok_or_else(|| corrupt(CF_SLOTS, format!("segment {segment}: slot missing")))??;
            if sk != k {
                return Err(corrupt(
                    CF_SLOTS,
                    format!("segment {segment}: slots and buffer disagree"),
                ));
            }
            let (volume, idx) =
                parse_slot_value(&sv).ok_or_else(|| corrupt(CF_SLOTS, "bad slot value"))?;
            let page = folio_core::Page::new(Bytes::from(data.into_vec()))
                .map_err(|e| corrupt(CF_BUFFER, e))?;
            let offset = builder.push(volume, idx, &page);
            if slot_key(segment, offset).as_slice() != &*k {
                return Err(corrupt(
                    CF_BUFFER,
                    format!("segment {segment}: gap at offset {offset}"),
                ));
            }
            pages += 1;
        }
        if pages * PAGE_SIZE as u64 != sealed.bytes {
            return Err(corrupt(
                CF_BUFFER,
                format!(
                    "segment {segment}: {pages} pages buffered, {} bytes sealed",
                    sealed.bytes
                ),
            ));
        }
        let mut commits = 0u64;
        for item in range(CF_SEG_COMMITS) {
            let (k, value) = item?;
            let (_, volume, lsn) =
                parse_seg_commit_key(&k).ok_or_else(|| corrupt(CF_SEG_COMMITS, "bad key"))?;
            let entry = if is_volume_event(lsn) {
                let head: VolumeHead = get(CF_VOLUMES, volume.as_bytes())?
                    .map(|b| decode(&b).map_err(|e| corrupt(CF_VOLUMES, e)))
                    .transpose()?
                    .ok_or_else(|| corrupt(CF_VOLUMES, format!("volume {volume} missing")))?;
                // A creation names a fork's source in its key; a deletion says what it is.
                let idempotency_key = if lsn == DELETION_LSN {
                    Bytes::from_static(DELETION_RECORD_KEY)
                } else if lsn == RETENTION_LSN {
                    // As the change set it, not as the head is now.
                    if value.is_empty() {
                        return Err(corrupt(
                            CF_SEG_COMMITS,
                            "a retention record without its key",
                        ));
                    }
                    Bytes::copy_from_slice(&value)
                } else {
                    head.base.as_ref().map(fork_record_key).unwrap_or_default()
                };
                CommitEntry {
                    volume,
                    lsn,
                    committed_at_ms: head.created_at_ms,
                    fingerprint: 0,
                    idempotency_key,
                    pages: Vec::new(),
                }
            } else {
                let rec: CommitRecord = get(CF_COMMITS, &commit_key(volume, lsn))?
                    .map(|b| decode(&b).map_err(|e| corrupt(CF_COMMITS, e)))
                    .transpose()?
                    .ok_or_else(|| corrupt(CF_COMMITS, format!("commit {volume}@{lsn} missing")))?;
                CommitEntry {
                    volume,
                    lsn,
                    committed_at_ms: rec.committed_at_ms,
                    fingerprint: rec.fingerprint,
                    idempotency_key: rec.idempotency_key,
                    pages: rec.pages,
                }
            };
            builder.add_commit(entry);
            commits += 1;
        }
        Ok(Some(SegmentObject {
            id: segment,
            pages,
            commits,
            bytes: builder.finish(),
        }))
    }
}
