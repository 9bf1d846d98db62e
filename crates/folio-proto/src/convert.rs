//! Proto ⇄ domain conversions. `TryFrom` on requests validates everything a client controls:
//! sizes, counts, ranges, duplicates. Errors say exactly what was wrong and map to one gRPC code.

use std::collections::HashSet;

use bytes::Bytes;
use folio_core::limits::{
    MAX_IDEMPOTENCY_KEY_BYTES, MAX_PAGES_PER_REQUEST, MAX_PAGE_IDX, MAX_REFS_PER_COMMIT,
};
use folio_core::{
    CommitArgs, Durability, Lsn, Page, PageIdx, PageLocation, PageWrite, SegmentId, VolumeId,
    WritePagesArgs,
};
use tonic::{Code, Status};

use crate::volume::v1 as pb;

/// A request that cannot be served as sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidRequest {
    #[error("volume_id: {0}")]
    VolumeId(String),
    #[error("page {idx}: {reason}")]
    Page { idx: u32, reason: String },
    #[error("page index {0} is above the maximum {MAX_PAGE_IDX}")]
    PageIdxOutOfRange(u32),
    #[error("page index {0} appears more than once in the request")]
    DuplicatePage(u32),
    #[error("the request has {got} {what}; the limit is {limit}")]
    TooMany {
        what: &'static str,
        got: usize,
        limit: usize,
    },
    #[error("idempotency_key is required (1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes), got {0} bytes")]
    IdempotencyKey(usize),
    #[error("segment ref for page {idx}: {reason}")]
    Ref { idx: u32, reason: String },
    #[error("unknown durability value {0}")]
    Durability(i32),
}

impl From<InvalidRequest> for Status {
    fn from(e: InvalidRequest) -> Status {
        let code = match e {
            InvalidRequest::PageIdxOutOfRange(_) => Code::OutOfRange,
            InvalidRequest::TooMany { .. } => Code::ResourceExhausted,
            _ => Code::InvalidArgument,
        };
        Status::new(code, e.to_string())
    }
}

pub fn volume_id(b: &[u8]) -> Result<VolumeId, InvalidRequest> {
    VolumeId::from_slice(b).map_err(|e| InvalidRequest::VolumeId(e.to_string()))
}

fn page_idx(idx: u32) -> Result<PageIdx, InvalidRequest> {
    if idx > MAX_PAGE_IDX {
        return Err(InvalidRequest::PageIdxOutOfRange(idx));
    }
    Ok(PageIdx(idx))
}

fn page_writes(
    pages: Vec<pb::PageWrite>,
    seen: &mut HashSet<u32>,
) -> Result<Vec<PageWrite>, InvalidRequest> {
    if pages.len() > MAX_PAGES_PER_REQUEST {
        return Err(InvalidRequest::TooMany {
            what: "pages",
            got: pages.len(),
            limit: MAX_PAGES_PER_REQUEST,
        });
    }
    pages
        .into_iter()
        .map(|p| {
            let idx = page_idx(p.page_idx)?;
            if !seen.insert(p.page_idx) {
                return Err(InvalidRequest::DuplicatePage(p.page_idx));
            }
            let page = Page::new(p.data).map_err(|e| InvalidRequest::Page {
                idx: p.page_idx,
                reason: e.to_string(),
            })?;
            Ok(PageWrite { idx, page })
        })
        .collect()
}

fn page_location(r: &pb::PageRef) -> Result<PageLocation, InvalidRequest> {
    let idx = page_idx(r.page_idx)?;
    let segment = SegmentId::from_slice(&r.segment_id).map_err(|e| InvalidRequest::Ref {
        idx: r.page_idx,
        reason: e.to_string(),
    })?;
    if !r.offset.is_multiple_of(folio_core::PAGE_SIZE as u64) {
        return Err(InvalidRequest::Ref {
            idx: r.page_idx,
            reason: format!("offset {} is not a multiple of the page size", r.offset),
        });
    }
    Ok(PageLocation {
        idx,
        segment,
        offset: r.offset,
    })
}

fn durability(v: i32) -> Result<Durability, InvalidRequest> {
    match pb::Durability::try_from(v) {
        Ok(pb::Durability::Unspecified | pb::Durability::Quorum) => Ok(Durability::Quorum),
        Ok(pb::Durability::ObjectStore) => Ok(Durability::ObjectStore),
        Err(_) => Err(InvalidRequest::Durability(v)),
    }
}

impl TryFrom<pb::CommitRequest> for CommitArgs {
    type Error = InvalidRequest;

    fn try_from(r: pb::CommitRequest) -> Result<Self, Self::Error> {
        let volume = volume_id(&r.volume_id)?;
        let key_len = r.idempotency_key.len();
        if key_len == 0 || key_len > MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(InvalidRequest::IdempotencyKey(key_len));
        }
        let durability = durability(r.durability)?;
        if r.refs.len() > MAX_REFS_PER_COMMIT {
            return Err(InvalidRequest::TooMany {
                what: "refs",
                got: r.refs.len(),
                limit: MAX_REFS_PER_COMMIT,
            });
        }
        let mut seen = HashSet::with_capacity(r.pages.len() + r.refs.len());
        let pages = page_writes(r.pages, &mut seen)?;
        let refs = r
            .refs
            .iter()
            .map(|p| {
                let loc = page_location(p)?;
                if !seen.insert(p.page_idx) {
                    return Err(InvalidRequest::DuplicatePage(p.page_idx));
                }
                Ok(loc)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CommitArgs {
            volume,
            expected_lsn: Lsn(r.expected_lsn),
            idempotency_key: r.idempotency_key,
            durability,
            pages,
            refs,
        })
    }
}

impl TryFrom<pb::WritePagesRequest> for WritePagesArgs {
    type Error = InvalidRequest;

    fn try_from(r: pb::WritePagesRequest) -> Result<Self, Self::Error> {
        let volume = volume_id(&r.volume_id)?;
        let pages = page_writes(r.pages, &mut HashSet::new())?;
        Ok(WritePagesArgs { volume, pages })
    }
}

impl From<PageLocation> for pb::PageRef {
    fn from(l: PageLocation) -> Self {
        pb::PageRef {
            page_idx: l.idx.0,
            segment_id: Bytes::copy_from_slice(l.segment.as_bytes()),
            offset: l.offset,
        }
    }
}

impl From<Durability> for pb::Durability {
    fn from(d: Durability) -> Self {
        match d {
            Durability::Quorum => pb::Durability::Quorum,
            Durability::ObjectStore => pb::Durability::ObjectStore,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(idx: u32, len: usize) -> pb::PageWrite {
        pb::PageWrite {
            page_idx: idx,
            data: Bytes::from(vec![7u8; len]),
        }
    }

    fn commit(pages: Vec<pb::PageWrite>) -> pb::CommitRequest {
        pb::CommitRequest {
            volume_id: Bytes::copy_from_slice(VolumeId::new_random().as_bytes()),
            expected_lsn: 0,
            idempotency_key: Bytes::from_static(b"k"),
            durability: 0,
            pages,
            refs: vec![],
        }
    }

    fn code(r: pb::CommitRequest) -> Code {
        Status::from(CommitArgs::try_from(r).unwrap_err()).code()
    }

    #[test]
    fn valid_commit_converts() {
        let args = CommitArgs::try_from(commit(vec![page(0, 4096), page(9, 4096)])).unwrap();
        assert_eq!(args.pages.len(), 2);
        assert_eq!(args.pages[1].idx, PageIdx(9));
        assert_eq!(args.durability, Durability::Quorum);
    }

    #[test]
    fn bad_input_maps_to_clear_codes() {
        assert_eq!(code(commit(vec![page(0, 4095)])), Code::InvalidArgument);
        assert_eq!(code(commit(vec![page(0, 4097)])), Code::InvalidArgument);
        assert_eq!(
            code(commit(vec![page(3, 4096), page(3, 4096)])),
            Code::InvalidArgument
        );
        assert_eq!(code(commit(vec![page(u32::MAX, 4096)])), Code::OutOfRange);
        let many = (0..=MAX_PAGES_PER_REQUEST as u32)
            .map(|i| page(i, 4096))
            .collect();
        assert_eq!(code(commit(many)), Code::ResourceExhausted);
        let mut no_key = commit(vec![]);
        no_key.idempotency_key = Bytes::new();
        assert_eq!(code(no_key), Code::InvalidArgument);
        let mut bad_vol = commit(vec![]);
        bad_vol.volume_id = Bytes::from_static(b"short");
        assert_eq!(code(bad_vol), Code::InvalidArgument);
        let mut bad_dur = commit(vec![]);
        bad_dur.durability = 99;
        assert_eq!(code(bad_dur), Code::InvalidArgument);
        let mut bad_ref = commit(vec![page(1, 4096)]);
        bad_ref.refs.push(pb::PageRef {
            page_idx: 1,
            segment_id: Bytes::from(vec![0u8; 16]),
            offset: 0,
        });
        assert_eq!(code(bad_ref), Code::InvalidArgument);
        let mut odd_offset = commit(vec![]);
        odd_offset.refs.push(pb::PageRef {
            page_idx: 1,
            segment_id: Bytes::from(vec![0u8; 16]),
            offset: 5,
        });
        assert_eq!(code(odd_offset), Code::InvalidArgument);
    }
}
