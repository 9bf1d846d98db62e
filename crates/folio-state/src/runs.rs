//! What a checkpoint puts in the object store: index runs, sorted tables
//! ([`folio_segment::table`]) whose entries are
//!
//! ```text
//! 'P' volume [16] page u32 BE lsn u64 BE  →  segment [16] offset u64 BE      a page version
//! 'C' volume [16] lsn u64 BE              →  commit record (below)           a commit
//! 'H' volume [16]                         →  lsn u64 BE created_at_ms u64 BE  a volume's head
//! ```
//!
//! Big-endian keys sort in (volume, page, LSN) and (volume, LSN) order, so the version of a page
//! visible at an LSN is the greatest `P` key at or below it, and a volume's commits from an LSN on
//! are a forward scan. A run covers the commits of a contiguous range of segments; a newer run
//! holds only later commits of any volume, so a lookup tries runs from the newest and stops at
//! the first that answers. A volume's head in a run is its last commit in the segments the run
//! covers; merging keeps the newer run's.
//!
//! A commit record value: version u8 (1), committed_at_ms u64, fingerprint u128, segment [16],
//! key length u16, key, page count u32, then per page: page u32, segment [16], offset u64 (all
//! little-endian).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use folio_core::{Lsn, PageIdx, PageLocation, SegmentId, VolumeId};

use crate::state::{CommitRecord, ForkBase, Retention, VolumeHead};

pub const PAGE: u8 = b'P';
pub const COMMIT: u8 = b'C';
pub const HEAD: u8 = b'H';
const COMMIT_VALUE_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
#[error("bad index-run entry: {0}")]
pub struct RunEntryError(String);

fn bad(s: impl Into<String>) -> RunEntryError {
    RunEntryError(s.into())
}

pub fn page_key(v: VolumeId, idx: PageIdx, lsn: Lsn) -> [u8; 29] {
    let mut k = [0u8; 29];
    k[0] = PAGE;
    k[1..].copy_from_slice(&crate::keys::page_key(v, idx, lsn));
    k
}

pub fn commit_key(v: VolumeId, lsn: Lsn) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = COMMIT;
    k[1..].copy_from_slice(&crate::keys::commit_key(v, lsn));
    k
}

pub fn head_key(v: VolumeId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = HEAD;
    k[1..].copy_from_slice(v.as_bytes());
    k
}

/// The key that sorts after every `H` key: the end of a scan over heads.
pub const HEADS_END: [u8; 1] = [HEAD + 1];

pub fn location_value(s: SegmentId, offset: u64) -> [u8; 24] {
    crate::keys::location_value(s, offset)
}

/// Parses a `P` entry: (volume, page, lsn) and location.
pub fn parse_page(
    key: &[u8],
    value: &[u8],
) -> Result<(VolumeId, Lsn, PageLocation), RunEntryError> {
    if key.len() != 29 || key[0] != PAGE || value.len() != 24 {
        return Err(bad("page entry has the wrong size"));
    }
    let v = VolumeId::from_slice(&key[1..17]).map_err(|e| bad(e.to_string()))?;
    let idx = PageIdx(u32::from_be_bytes(key[17..21].try_into().expect("4 bytes")));
    let lsn = Lsn(u64::from_be_bytes(key[21..29].try_into().expect("8 bytes")));
    let segment = SegmentId::from_slice(&value[..16]).map_err(|e| bad(e.to_string()))?;
    let offset = u64::from_be_bytes(value[16..].try_into().expect("8 bytes"));
    Ok((
        v,
        lsn,
        PageLocation {
            idx,
            segment,
            offset,
        },
    ))
}

/// A head's value: lsn u64 BE, created_at_ms u64 BE, then (since retention) horizon u64 BE and
/// flags u8 (bit 0: deleted, bit 1: a fork, bit 2: its own retention), for a fork its source
/// volume [16] and source LSN u64 BE, and for its own retention its milliseconds and commits
/// (u64 BE each). Runs written before retention hold only the first 16 bytes; they read as
/// horizon 0, not deleted, not a fork, the group's retention.
pub fn head_value(h: &VolumeHead) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEAD_VALUE_LEN + FORK_LEN + RETENTION_LEN);
    b.extend_from_slice(&h.lsn.0.to_be_bytes());
    b.extend_from_slice(&h.created_at_ms.to_be_bytes());
    b.extend_from_slice(&h.horizon.0.to_be_bytes());
    b.push(
        u8::from(h.deleted)
            | (u8::from(h.base.is_some()) << 1)
            | (u8::from(h.retention.is_some()) << 2),
    );
    if let Some(base) = &h.base {
        b.extend_from_slice(base.volume.as_bytes());
        b.extend_from_slice(&base.lsn.0.to_be_bytes());
    }
    if let Some(r) = &h.retention {
        b.extend_from_slice(&r.ms.to_be_bytes());
        b.extend_from_slice(&r.commits.to_be_bytes());
    }
    b
}

/// Bytes of a head value as written now, without a fork's source.
const HEAD_VALUE_LEN: usize = 25;
/// Bytes a fork's source adds.
const FORK_LEN: usize = 24;
/// Bytes a volume's own retention adds.
const RETENTION_LEN: usize = 16;
/// Bytes of a head value written before retention.
const HEAD_VALUE_V1_LEN: usize = 16;

pub fn parse_head(key: &[u8], value: &[u8]) -> Result<(VolumeId, VolumeHead), RunEntryError> {
    if key.len() != 17 || key[0] != HEAD {
        return Err(bad("head entry key has the wrong size"));
    }
    let v = VolumeId::from_slice(&key[1..]).map_err(|e| bad(e.to_string()))?;
    let u64_at = |i: usize| u64::from_be_bytes(value[i..i + 8].try_into().expect("8 bytes"));
    if value.len() == HEAD_VALUE_V1_LEN {
        return Ok((v, VolumeHead::new(Lsn(u64_at(0)), u64_at(8))));
    }
    if value.len() < HEAD_VALUE_LEN {
        return Err(bad("head entry is truncated"));
    }
    let mut h = VolumeHead::new(Lsn(u64_at(0)), u64_at(8));
    h.horizon = Lsn(u64_at(16));
    let flags = value[24];
    if flags & !0b111 != 0 {
        return Err(bad(format!("head entry has unknown flags {flags:#x}")));
    }
    h.deleted = flags & 1 != 0;
    let (fork, own) = (flags & 2 != 0, flags & 4 != 0);
    let want =
        HEAD_VALUE_LEN + if fork { FORK_LEN } else { 0 } + if own { RETENTION_LEN } else { 0 };
    if value.len() != want {
        return Err(bad("head entry has the wrong size"));
    }
    let mut at = HEAD_VALUE_LEN;
    if fork {
        h.base = Some(ForkBase {
            volume: VolumeId::from_slice(&value[at..at + 16]).map_err(|e| bad(e.to_string()))?,
            lsn: Lsn(u64_at(at + 16)),
        });
        at += FORK_LEN;
    }
    if own {
        h.retention = Some(Retention {
            ms: u64_at(at),
            commits: u64_at(at + 8),
        });
    }
    if h.horizon > h.lsn.next() {
        return Err(bad("head entry's horizon is past its head"));
    }
    Ok((v, h))
}

pub fn commit_value(c: &CommitRecord) -> Bytes {
    let mut b = BytesMut::with_capacity(64 + c.idempotency_key.len() + c.pages.len() * 28);
    b.put_u8(COMMIT_VALUE_VERSION);
    b.put_u64_le(c.committed_at_ms);
    b.put_u128_le(c.fingerprint);
    b.put_slice(c.segment.as_bytes());
    b.put_u16_le(c.idempotency_key.len() as u16);
    b.put_slice(&c.idempotency_key);
    b.put_u32_le(c.pages.len() as u32);
    for p in &c.pages {
        b.put_u32_le(p.idx.0);
        b.put_slice(p.segment.as_bytes());
        b.put_u64_le(p.offset);
    }
    b.freeze()
}

/// Parses a `C` entry: the volume and its commit record.
pub fn parse_commit(key: &[u8], value: &[u8]) -> Result<(VolumeId, CommitRecord), RunEntryError> {
    if key.len() != 25 || key[0] != COMMIT {
        return Err(bad("commit entry key has the wrong size"));
    }
    let v = VolumeId::from_slice(&key[1..17]).map_err(|e| bad(e.to_string()))?;
    let lsn = Lsn(u64::from_be_bytes(key[17..].try_into().expect("8 bytes")));
    let mut b = value;
    let need = |b: &[u8], n: usize| {
        if b.remaining() < n {
            Err(bad("commit record is truncated"))
        } else {
            Ok(())
        }
    };
    need(b, 1 + 8 + 16 + 16 + 2)?;
    let version = b.get_u8();
    if version != COMMIT_VALUE_VERSION {
        return Err(bad(format!(
            "commit record version {version}; this build reads version {COMMIT_VALUE_VERSION}"
        )));
    }
    let committed_at_ms = b.get_u64_le();
    let fingerprint = b.get_u128_le();
    let segment = SegmentId::from_slice(&b[..16]).map_err(|e| bad(e.to_string()))?;
    b.advance(16);
    let klen = b.get_u16_le() as usize;
    need(b, klen + 4)?;
    let idempotency_key = Bytes::copy_from_slice(&b[..klen]);
    b.advance(klen);
    let n = b.get_u32_le() as usize;
    if b.remaining() != n * 28 {
        return Err(bad("commit record's page list has the wrong length"));
    }
    let mut pages = Vec::with_capacity(n);
    for _ in 0..n {
        let idx = PageIdx(b.get_u32_le());
        let segment = SegmentId::from_slice(&b[..16]).map_err(|e| bad(e.to_string()))?;
        b.advance(16);
        pages.push(PageLocation {
            idx,
            segment,
            offset: b.get_u64_le(),
        });
    }
    Ok((
        v,
        CommitRecord {
            lsn,
            idempotency_key,
            fingerprint,
            committed_at_ms,
            pages,
            segment,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use folio_core::GroupId;

    #[test]
    fn entries_round_trip_and_sort_in_lookup_order() {
        let v = VolumeId::from_slice(&[7; 16]).unwrap();
        let s = SegmentId::new(5, GroupId(1), 2);
        let rec = CommitRecord {
            lsn: Lsn(9),
            idempotency_key: Bytes::from_static(b"k"),
            fingerprint: 77,
            committed_at_ms: 1234,
            pages: vec![PageLocation {
                idx: PageIdx(3),
                segment: s,
                offset: 4096,
            }],
            segment: s,
        };
        let (v2, back) = parse_commit(&commit_key(v, Lsn(9)), &commit_value(&rec)).unwrap();
        assert_eq!((v2, back), (v, rec));
        let (v3, lsn, loc) =
            parse_page(&page_key(v, PageIdx(3), Lsn(9)), &location_value(s, 4096)).unwrap();
        assert_eq!(
            (v3, lsn, loc.idx, loc.offset),
            (v, Lsn(9), PageIdx(3), 4096)
        );
        let mut h = VolumeHead::new(Lsn(9), 3);
        assert_eq!(parse_head(&head_key(v), &head_value(&h)).unwrap(), (v, h));
        h.horizon = Lsn(4);
        h.deleted = true;
        assert_eq!(parse_head(&head_key(v), &head_value(&h)).unwrap(), (v, h));
        h.base = Some(ForkBase {
            volume: VolumeId::from_slice(&[7; 16]).unwrap(),
            lsn: Lsn(77),
        });
        assert_eq!(parse_head(&head_key(v), &head_value(&h)).unwrap(), (v, h));
        h.retention = Some(Retention {
            ms: 60_000,
            commits: 5,
        });
        assert_eq!(parse_head(&head_key(v), &head_value(&h)).unwrap(), (v, h));
        h.base = None;
        assert_eq!(parse_head(&head_key(v), &head_value(&h)).unwrap(), (v, h));
        let mut truncated = head_value(&h);
        truncated.pop();
        assert!(parse_head(&head_key(v), &truncated).is_err());
        // Written before retention: 16 bytes, everything kept.
        let old = &head_value(&h)[..16];
        assert_eq!(
            parse_head(&head_key(v), old).unwrap(),
            (v, VolumeHead::new(Lsn(9), 3))
        );
        // LSN 256 sorts after LSN 255 (big-endian), and kinds sort C < H < P.
        assert!(page_key(v, PageIdx(1), Lsn(255)) < page_key(v, PageIdx(1), Lsn(256)));
        assert!(commit_key(v, Lsn(u64::MAX)).as_slice() < head_key(v).as_slice());
        assert!(head_key(v).as_slice() < HEADS_END.as_slice());
        assert!(HEADS_END.as_slice() < page_key(v, PageIdx(0), Lsn(0)).as_slice());
        let mut bad_version = commit_value(&back_rec()).to_vec();
        bad_version[0] = 9;
        let err = parse_commit(&commit_key(v, Lsn(1)), &bad_version).unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
    }

    fn back_rec() -> CommitRecord {
        CommitRecord {
            lsn: Lsn(1),
            idempotency_key: Bytes::new(),
            fingerprint: 0,
            committed_at_ms: 0,
            pages: vec![],
            segment: SegmentId::new(1, GroupId(1), 0),
        }
    }
}
