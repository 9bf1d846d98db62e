//! The write tier's RocksDB column families and key encodings, beside the Raft log's own
//! ([`folio_raft::keys`]). Integers are big-endian so keys sort in numeric order and range scans
//! follow LSN and page order.

use folio_core::{Lsn, PageIdx, SegmentId, VolumeId};
use folio_raft::keys::LOG_CFS;
/// State-machine metadata: last applied log id, membership, group state.
pub const CF_SM_META: &str = "sm_meta";
/// Volume heads: volume → head.
pub const CF_VOLUMES: &str = "sm_volumes";
/// Commit records not checkpointed yet: (volume, LSN) → commit record. Older ones are read
/// through the group's manifest in the object store.
pub const CF_COMMITS: &str = "sm_commits";
/// Idempotency keys of each volume's last `IDEMPOTENCY_RETAIN_COMMITS` commits: (volume, key) →
/// (LSN, fingerprint, segment).
pub const CF_IDEM: &str = "sm_idem";
/// The idempotency window in LSN order: (volume, LSN) → key, so the key of the commit that leaves
/// the window is found without the commit record.
pub const CF_IDEM_LSN: &str = "sm_idem_lsn";
/// Multi-version page index of the commits not checkpointed yet: (volume, page, LSN) → location.
pub const CF_PAGES: &str = "sm_pages";
/// Which page a slot of a segment not checkpointed yet holds: (segment, offset) → (volume,
/// page), to check a two-step commit's references.
pub const CF_SLOTS: &str = "sm_slots";
/// Page bytes not yet flushed: (segment, offset) → 4096 bytes.
pub const CF_BUFFER: &str = "sm_buffer";
/// Commit records each segment carries, until a checkpoint covers the segment: (segment, volume,
/// LSN) → for a commit, the indexes of its pages ([`seg_commit_pages_value`]); for a retention
/// change, its record's key; nothing for the other volume events. LSN 0 stands for the volume's
/// creation. The checkpoint reads it to find what to put in a run and what to drop after.
pub const CF_SEG_COMMITS: &str = "sm_segment_commits";

/// Every column family of the state machine, in snapshot order.
pub const SM_CFS: [&str; 9] = [
    CF_SM_META,
    CF_VOLUMES,
    CF_COMMITS,
    CF_IDEM,
    CF_IDEM_LSN,
    CF_PAGES,
    CF_SLOTS,
    CF_BUFFER,
    CF_SEG_COMMITS,
];

/// Every column family of a node: the Raft log and metadata, then the state machine's.
pub fn all_cfs() -> impl Iterator<Item = &'static str> {
    LOG_CFS.into_iter().chain(SM_CFS)
}

pub const META_APPLIED: &[u8] = b"applied";
pub const META_MEMBERSHIP: &[u8] = b"membership";
pub const META_GROUP: &[u8] = b"group";

pub fn commit_key(v: VolumeId, lsn: Lsn) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(v.as_bytes());
    k[16..].copy_from_slice(&lsn.0.to_be_bytes());
    k
}

/// Key of the idempotency window in LSN order: the same layout as a commit key.
pub fn idem_lsn_key(v: VolumeId, lsn: Lsn) -> [u8; 24] {
    commit_key(v, lsn)
}

pub fn idem_key(v: VolumeId, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + key.len());
    k.extend_from_slice(v.as_bytes());
    k.extend_from_slice(key);
    k
}

pub fn page_key(v: VolumeId, idx: PageIdx, lsn: Lsn) -> [u8; 28] {
    let mut k = [0u8; 28];
    k[..16].copy_from_slice(v.as_bytes());
    k[16..20].copy_from_slice(&idx.0.to_be_bytes());
    k[20..].copy_from_slice(&lsn.0.to_be_bytes());
    k
}

pub fn slot_key(s: SegmentId, offset: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(s.as_bytes());
    k[16..].copy_from_slice(&offset.to_be_bytes());
    k
}

/// Value of a slot: the volume and page it holds.
pub fn slot_value(v: VolumeId, idx: PageIdx) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(v.as_bytes());
    k[16..].copy_from_slice(&idx.0.to_be_bytes());
    k
}

pub fn parse_slot_value(b: &[u8]) -> Option<(VolumeId, PageIdx)> {
    if b.len() != 20 {
        return None;
    }
    let v = VolumeId::from_slice(&b[..16]).ok()?;
    Some((v, PageIdx(u32::from_be_bytes(b[16..].try_into().ok()?))))
}

/// Value of a page-index entry: segment id and offset.
pub fn location_value(s: SegmentId, offset: u64) -> [u8; 24] {
    slot_key(s, offset)
}

/// Parses a page-index value: segment id and offset.
pub fn parse_location_value(b: &[u8]) -> Option<(SegmentId, u64)> {
    if b.len() != 24 {
        return None;
    }
    Some((
        SegmentId::from_slice(&b[..16]).ok()?,
        u64::from_be_bytes(b[16..].try_into().ok()?),
    ))
}

/// A segment's commit-record entry.
pub fn seg_commit_key(s: SegmentId, v: VolumeId, lsn: Lsn) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..16].copy_from_slice(s.as_bytes());
    k[16..32].copy_from_slice(v.as_bytes());
    k[32..].copy_from_slice(&lsn.0.to_be_bytes());
    k
}

pub fn parse_seg_commit_key(k: &[u8]) -> Option<(SegmentId, VolumeId, Lsn)> {
    if k.len() != 40 {
        return None;
    }
    Some((
        SegmentId::from_slice(&k[..16]).ok()?,
        VolumeId::from_slice(&k[16..32]).ok()?,
        Lsn(u64::from_be_bytes(k[32..].try_into().ok()?)),
    ))
}

/// Format byte of a commit's segment-index value that lists its page indexes.
const SEG_COMMIT_PAGES_V1: u8 = 1;

/// Value of a commit's segment-index entry: a format byte, then the index of each page the
/// commit wrote or referenced, 4 bytes big-endian each. A checkpoint drops the commit's
/// page-index entries from it without reading the commit record. Entries written before this
/// format have an empty value.
pub fn seg_commit_pages_value(pages: impl ExactSizeIterator<Item = PageIdx>) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + 4 * pages.len());
    v.push(SEG_COMMIT_PAGES_V1);
    for idx in pages {
        v.extend_from_slice(&idx.0.to_be_bytes());
    }
    v
}

/// What a commit's segment-index value says about its pages: their indexes, `None` when it
/// predates the format (the commit record names them), or an error for a value of no known
/// format.
pub fn parse_seg_commit_pages(
    b: &[u8],
) -> Result<Option<impl ExactSizeIterator<Item = PageIdx> + '_>, String> {
    match b.split_first() {
        None => Ok(None),
        Some((&SEG_COMMIT_PAGES_V1, rest)) if rest.len() % 4 == 0 => {
            Ok(Some(rest.chunks_exact(4).map(|c| {
                PageIdx(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            })))
        }
        Some((&SEG_COMMIT_PAGES_V1, rest)) => Err(format!(
            "a commit's page list of {} bytes, not a multiple of 4",
            rest.len()
        )),
        Some((format, _)) => Err(format!("unknown format {format} of a commit's page list")),
    }
}

/// The exclusive end of every key of segments up to and including `s`, in any column family keyed
/// by segment first: scanning from the start to here visits exactly those segments.
pub fn through_segment_end(s: SegmentId) -> Vec<u8> {
    segment_range(s).1
}

/// The key range `[start, end)` that holds every key starting with segment `s`, in any column
/// family keyed by segment first.
pub fn segment_range(s: SegmentId) -> (Vec<u8>, Vec<u8>) {
    let start = s.as_bytes().to_vec();
    let mut end = start.clone();
    end.extend_from_slice(&[0xff; 41]);
    (start, end)
}

/// Keys from `start` (inclusive) to `end` (exclusive) hold every key that starts with volume `v`:
/// its idempotency window, commits and page versions.
pub fn volume_range(v: VolumeId) -> (Vec<u8>, Vec<u8>) {
    let start = v.as_bytes().to_vec();
    let mut end = start.clone();
    // The next 16-byte prefix; the last possible id has none, so its range ends past every key
    // the column families hold (keys after the volume id are shorter than 1 KiB).
    match end.iter().rposition(|b| *b != 0xff) {
        Some(i) => {
            end[i] += 1;
            end.truncate(i + 1);
        }
        None => end.extend_from_slice(&[0xff; 1024]),
    }
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commits_page_list_round_trips_and_bad_ones_are_named() {
        let parse_seg_commit_pages =
            |b: &[u8]| parse_seg_commit_pages(b).map(|l| l.map(Iterator::collect::<Vec<_>>));
        let idxs = [PageIdx(0), PageIdx(7), PageIdx(u32::MAX)];
        let value = seg_commit_pages_value(idxs.iter().copied());
        assert_eq!(value.len(), 1 + 4 * idxs.len());
        assert_eq!(parse_seg_commit_pages(&value), Ok(Some(idxs.to_vec())));
        assert_eq!(
            parse_seg_commit_pages(&seg_commit_pages_value(std::iter::empty())),
            Ok(Some(vec![])),
            "a commit of no page lists none, unlike an entry that predates the lists"
        );
        assert_eq!(parse_seg_commit_pages(&[]), Ok(None));
        let e = parse_seg_commit_pages(&value[..value.len() - 1]).unwrap_err();
        assert!(e.contains("not a multiple of 4"), "{e}");
        let e = parse_seg_commit_pages(&[2, 0, 0, 0, 0]).unwrap_err();
        assert!(e.contains("unknown format 2"), "{e}");
    }
}
