//! The segment format. A segment is one immutable object holding pages of many volumes, and the
//! records of the commits applied while it was open, so one PUT per flush carries both pages and
//! history:
//!
//! ```text
//! header   32 bytes   "FOLIOSEG", version u16, reserved u16, page count u32, segment id [16]
//! pages    n × 4096   in slot order; a page's offset is its byte offset in this section
//! index    n × 32     (volume [16], page index u32, offset u64, crc32c of the page u32),
//!                     sorted by (volume, page index, offset) for binary search
//! commits  variable   commit count u32, then the commit records (below); at least 4 bytes
//! footer   40 bytes   index offset u64, page count u32, index crc32c u32, header crc32c u32,
//!                     commits crc32c u32, commits length u64, "FOLIOEND"
//! ```
//!
//! A commit record (version 2, the one written) is
//!
//! ```text
//! volume [16], lsn u64, committed_at_ms u64, fingerprint u128, key length u16,
//! key (key length bytes), page count u32,
//! then page count × (page index u32, segment id [16], offset u64)
//! ```
//!
//! Version 1 differs only in its commit records, which have no fingerprint; they decode with
//! fingerprint 0 ("unknown"). Records are sorted strictly by (volume, lsn); a record's pages are in
//! the order given. A record's pages may live in this segment or in another one (pages uploaded
//! earlier). The count is always present, so a segment with no commits has a 4-byte commits
//! section.
//!
//! All integers are little-endian. Every page has its own checksum in the index, so one page
//! fetched with a ranged GET ([`page_range`]) is verified on its own ([`IndexEntry::verify`]); the
//! index, the commits section and the header have checksums in the footer, and the index and
//! commits can each be fetched with a ranged GET ([`Footer::index_range`],
//! [`Footer::commits_range`]); the commits decoder also needs the version from the header
//! ([`Header::decode`]). Encoding is deterministic: the same pages in the same order and the same
//! set of commits (in any order) give the same bytes on every replica.

pub mod manifest;
pub mod table;

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use folio_core::limits::MAX_IDEMPOTENCY_KEY_BYTES;
use folio_core::{Lsn, Page, PageIdx, PageLocation, SegmentId, VolumeId, PAGE_SIZE};

pub const HEADER_LEN: usize = 32;
pub const INDEX_ENTRY_LEN: usize = 32;
pub const FOOTER_LEN: usize = 40;
/// The version written. Decoders read this and [`VERSION_1`].
pub const VERSION: u16 = 2;
/// The first version: commit records without a fingerprint.
pub const VERSION_1: u16 = 1;
const MAGIC: &[u8; 8] = b"FOLIOSEG";
const END_MAGIC: &[u8; 8] = b"FOLIOEND";

/// Pages in one segment; 8 MiB segments hold 2048, so this leaves ample room while bounding what
/// a decoder allocates from a header it has not verified yet.
pub const MAX_PAGES: u32 = 1 << 20;

/// Bytes in one segment's commits section. A commit record is at most about 480 KiB (a full
/// request of inline pages plus the most references), so this holds well over a hundred of the
/// largest commits and many thousands of ordinary ones, while bounding what a decoder reads and
/// allocates from a footer. Writers seal a segment before its commits reach this
/// ([`SegmentBuilder::commits_len`]).
pub const MAX_COMMITS_BYTES: u64 = 64 << 20;

/// The commit count at the start of the commits section.
const COMMIT_COUNT_LEN: usize = 4;
/// A commit record with an empty key and no pages: volume, lsn, time, fingerprint, key length,
/// page count.
const COMMIT_FIXED_LEN: usize = 16 + 8 + 8 + 16 + 2 + 4;
/// The same in version 1, which has no fingerprint.
const COMMIT_FIXED_LEN_V1: usize = COMMIT_FIXED_LEN - 16;
/// One page location in a commit record: page index, segment id, offset.
const COMMIT_PAGE_LEN: usize = 4 + 16 + 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    #[error("segment is {0} bytes, too short for a header and footer")]
    TooShort(usize),
    #[error("bad magic in the {0}")]
    Magic(&'static str),
    #[error(
        "unsupported segment version {0} (this build reads versions {VERSION_1} and {VERSION})"
    )]
    Version(u16),
    #[error("{0} checksum mismatch")]
    Checksum(&'static str),
    #[error("segment claims {0} pages, more than the limit {MAX_PAGES}")]
    TooManyPages(u32),
    #[error("commits section is {0} bytes, more than the limit {MAX_COMMITS_BYTES}")]
    CommitsTooLong(u64),
    #[error("segment layout is inconsistent: {0}")]
    Layout(String),
    #[error("page {idx} of volume {volume} at offset {offset}: checksum mismatch")]
    PageChecksum {
        volume: VolumeId,
        idx: PageIdx,
        offset: u64,
    },
    #[error("page at offset {0} is {1} bytes, not {PAGE_SIZE}")]
    PageLength(u64, usize),
}

/// One index entry: which page sits at which offset, and its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub volume: VolumeId,
    pub idx: PageIdx,
    pub offset: u64,
    pub crc: u32,
}

impl IndexEntry {
    /// Checks a page's bytes (for example from a ranged GET) against this entry.
    pub fn verify(&self, bytes: Bytes) -> Result<Page, SegmentError> {
        let len = bytes.len();
        let page = Page::new(bytes).map_err(|_| SegmentError::PageLength(self.offset, len))?;
        if crc32c::crc32c(page.bytes()) != self.crc {
            return Err(SegmentError::PageChecksum {
                volume: self.volume,
                idx: self.idx,
                offset: self.offset,
            });
        }
        Ok(page)
    }

    fn key(&self) -> (VolumeId, PageIdx, u64) {
        (self.volume, self.idx, self.offset)
    }
}

/// The byte range of the page at `offset` within the segment object, for a ranged GET.
pub fn page_range(offset: u64) -> Range<u64> {
    let start = HEADER_LEN as u64 + offset;
    start..start + PAGE_SIZE as u64
}

/// The record of one commit applied while the segment was open: which volume reached which LSN,
/// when, under which idempotency key, and where the pages it wrote live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitEntry {
    pub volume: VolumeId,
    pub lsn: Lsn,
    pub committed_at_ms: u64,
    /// A content hash of the commit, so a retry under the same idempotency key is recognised as
    /// the same request; 0 means unknown (records of version 1 segments).
    pub fingerprint: u128,
    /// At most [`MAX_IDEMPOTENCY_KEY_BYTES`] bytes.
    pub idempotency_key: Bytes,
    /// In this segment or in others; kept in the order given.
    pub pages: Vec<PageLocation>,
}

/// Bytes a commit record with an idempotency key of `key_len` bytes and `pages` page locations
/// takes in a segment's commits section as written (version [`VERSION`]). Writers use it to decide
/// when a segment is full without building the record.
pub fn commit_record_len(key_len: usize, pages: usize) -> usize {
    COMMIT_FIXED_LEN + key_len + pages * COMMIT_PAGE_LEN
}

impl CommitEntry {
    /// Bytes of this record in the commits section.
    fn encoded_len(&self) -> usize {
        commit_record_len(self.idempotency_key.len(), self.pages.len())
    }

    fn key(&self) -> (VolumeId, Lsn) {
        (self.volume, self.lsn)
    }
}

/// Builds a segment from pages in slot order and the commits applied while it was open.
pub struct SegmentBuilder {
    id: SegmentId,
    data: BytesMut,
    index: Vec<IndexEntry>,
    commits: Vec<CommitEntry>,
    commits_len: usize,
}

impl SegmentBuilder {
    pub fn new(id: SegmentId) -> Self {
        SegmentBuilder {
            id,
            data: BytesMut::new(),
            index: Vec::new(),
            commits: Vec::new(),
            commits_len: COMMIT_COUNT_LEN,
        }
    }

    /// Appends a page; returns its offset.
    pub fn push(&mut self, volume: VolumeId, idx: PageIdx, page: &Page) -> u64 {
        let offset = self.data.len() as u64;
        self.data.extend_from_slice(page.bytes());
        self.index.push(IndexEntry {
            volume,
            idx,
            offset,
            crc: crc32c::crc32c(page.bytes()),
        });
        offset
    }

    pub fn page_count(&self) -> usize {
        self.index.len()
    }

    /// Adds a commit record; records are sorted by (volume, lsn) at [`finish`](Self::finish).
    ///
    /// Callers never add two records with the same (volume, lsn): `finish` still encodes them
    /// (in the order added, as the sort is stable, so the bytes stay deterministic), but
    /// [`Segment::decode`] and [`decode_commits`] reject such a segment as a layout error.
    ///
    /// # Panics
    ///
    /// If the idempotency key is longer than [`MAX_IDEMPOTENCY_KEY_BYTES`] or the commit has more
    /// than `u32::MAX` pages; the request edge rejects both, so this is a caller bug, caught here
    /// rather than as an unreadable segment.
    pub fn add_commit(&mut self, c: CommitEntry) {
        assert!(
            c.idempotency_key.len() <= MAX_IDEMPOTENCY_KEY_BYTES,
            "idempotency key of {} bytes exceeds {MAX_IDEMPOTENCY_KEY_BYTES}",
            c.idempotency_key.len()
        );
        assert!(
            u32::try_from(c.pages.len()).is_ok(),
            "commit has {} pages",
            c.pages.len()
        );
        self.commits_len += c.encoded_len();
        self.commits.push(c);
    }

    pub fn commit_count(&self) -> usize {
        self.commits.len()
    }

    /// Bytes the commits section will take, count included. Writers seal the segment before this
    /// exceeds [`MAX_COMMITS_BYTES`]; a longer section is encoded but no decoder accepts it.
    pub fn commits_len(&self) -> usize {
        self.commits_len
    }

    /// The encoded segment.
    pub fn finish(mut self) -> Bytes {
        let n = self.index.len() as u32;
        self.index.sort_unstable_by_key(IndexEntry::key);
        // Stable, so duplicate (volume, lsn) records (a caller bug) still encode deterministically.
        self.commits.sort_by_key(CommitEntry::key);
        let mut out = BytesMut::with_capacity(
            HEADER_LEN
                + self.data.len()
                + self.index.len() * INDEX_ENTRY_LEN
                + self.commits_len
                + FOOTER_LEN,
        );
        out.put_slice(MAGIC);
        out.put_u16_le(VERSION);
        out.put_u16_le(0);
        out.put_u32_le(n);
        out.put_slice(self.id.as_bytes());
        let header_crc = crc32c::crc32c(&out[..HEADER_LEN]);
        out.put_slice(&self.data);
        let index_offset = out.len() as u64;
        for e in &self.index {
            out.put_slice(e.volume.as_bytes());
            out.put_u32_le(e.idx.0);
            out.put_u64_le(e.offset);
            out.put_u32_le(e.crc);
        }
        let index_crc = crc32c::crc32c(&out[index_offset as usize..]);
        let commits_offset = out.len();
        out.put_u32_le(self.commits.len() as u32);
        for c in &self.commits {
            out.put_slice(c.volume.as_bytes());
            out.put_u64_le(c.lsn.0);
            out.put_u64_le(c.committed_at_ms);
            out.put_u128_le(c.fingerprint);
            out.put_u16_le(c.idempotency_key.len() as u16);
            out.put_slice(&c.idempotency_key);
            out.put_u32_le(c.pages.len() as u32);
            for p in &c.pages {
                out.put_u32_le(p.idx.0);
                out.put_slice(p.segment.as_bytes());
                out.put_u64_le(p.offset);
            }
        }
        debug_assert_eq!(out.len() - commits_offset, self.commits_len);
        let commits_crc = crc32c::crc32c(&out[commits_offset..]);
        out.put_u64_le(index_offset);
        out.put_u32_le(n);
        out.put_u32_le(index_crc);
        out.put_u32_le(header_crc);
        out.put_u32_le(commits_crc);
        out.put_u64_le(self.commits_len as u64);
        out.put_slice(END_MAGIC);
        out.freeze()
    }
}

/// The footer: where the index and commits are, and the checksums of index, header and commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    pub index_offset: u64,
    pub page_count: u32,
    pub index_crc: u32,
    pub header_crc: u32,
    pub commits_crc: u32,
    /// Length of the commits section, count included.
    pub commits_len: u64,
}

impl Footer {
    /// Parses the last [`FOOTER_LEN`] bytes of a segment.
    pub fn decode(tail: &[u8]) -> Result<Footer, SegmentError> {
        if tail.len() != FOOTER_LEN {
            return Err(SegmentError::TooShort(tail.len()));
        }
        if &tail[32..] != END_MAGIC {
            return Err(SegmentError::Magic("footer"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(tail[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(tail[i..i + 8].try_into().expect("8 bytes"));
        let f = Footer {
            index_offset: u64_at(0),
            page_count: u32_at(8),
            index_crc: u32_at(12),
            header_crc: u32_at(16),
            commits_crc: u32_at(20),
            commits_len: u64_at(24),
        };
        if f.commits_len > MAX_COMMITS_BYTES {
            return Err(SegmentError::CommitsTooLong(f.commits_len));
        }
        if f.commits_len < COMMIT_COUNT_LEN as u64 {
            return Err(SegmentError::Layout(format!(
                "commits section is {} bytes, too short for its count",
                f.commits_len
            )));
        }
        if f.page_count > MAX_PAGES {
            return Err(SegmentError::TooManyPages(f.page_count));
        }
        let expected = HEADER_LEN as u64 + f.page_count as u64 * PAGE_SIZE as u64;
        if f.index_offset != expected {
            return Err(SegmentError::Layout(format!(
                "index at {} but {} pages end at {expected}",
                f.index_offset, f.page_count
            )));
        }
        Ok(f)
    }

    /// Total segment length this footer implies.
    pub fn segment_len(&self) -> u64 {
        self.commits_range().end + FOOTER_LEN as u64
    }

    /// Byte range of the index within the segment, for a ranged GET.
    pub fn index_range(&self) -> Range<u64> {
        self.index_offset..self.index_offset + self.index_len() as u64
    }

    /// Byte range of the commits section within the segment, for a ranged GET.
    pub fn commits_range(&self) -> Range<u64> {
        let start = self.index_range().end;
        start..start + self.commits_len
    }

    fn index_len(&self) -> usize {
        self.page_count as usize * INDEX_ENTRY_LEN
    }
}

/// A verified, sorted segment index, for finding pages without reading the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentIndex {
    entries: Vec<IndexEntry>,
}

impl SegmentIndex {
    /// Parses and verifies the index bytes named by `footer`.
    pub fn decode(footer: &Footer, bytes: &[u8]) -> Result<SegmentIndex, SegmentError> {
        if bytes.len() != footer.index_len() {
            return Err(SegmentError::Layout(format!(
                "index is {} bytes, footer says {}",
                bytes.len(),
                footer.index_len()
            )));
        }
        if crc32c::crc32c(bytes) != footer.index_crc {
            return Err(SegmentError::Checksum("index"));
        }
        let data_len = footer.page_count as u64 * PAGE_SIZE as u64;
        let mut entries = Vec::with_capacity(footer.page_count as usize);
        for chunk in bytes.chunks_exact(INDEX_ENTRY_LEN) {
            let e = IndexEntry {
                volume: VolumeId::from_slice(&chunk[..16]).expect("16 bytes"),
                idx: PageIdx(u32::from_le_bytes(
                    chunk[16..20].try_into().expect("4 bytes"),
                )),
                offset: u64::from_le_bytes(chunk[20..28].try_into().expect("8 bytes")),
                crc: u32::from_le_bytes(chunk[28..32].try_into().expect("4 bytes")),
            };
            if !e.offset.is_multiple_of(PAGE_SIZE as u64) || e.offset >= data_len {
                return Err(SegmentError::Layout(format!(
                    "index entry offset {} is not a page slot",
                    e.offset
                )));
            }
            if entries
                .last()
                .is_some_and(|p: &IndexEntry| p.key() >= e.key())
            {
                return Err(SegmentError::Layout("index is not strictly sorted".into()));
            }
            entries.push(e);
        }
        Ok(SegmentIndex { entries })
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// The entry for the page at exactly this offset, found by binary search.
    pub fn get(&self, volume: VolumeId, idx: PageIdx, offset: u64) -> Option<&IndexEntry> {
        self.entries
            .binary_search_by_key(&(volume, idx, offset), IndexEntry::key)
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The last-written copy of a page in this segment (highest offset), by binary search.
    pub fn latest(&self, volume: VolumeId, idx: PageIdx) -> Option<&IndexEntry> {
        let end = self
            .entries
            .partition_point(|e| (e.volume, e.idx) <= (volume, idx));
        end.checked_sub(1)
            .map(|i| &self.entries[i])
            .filter(|e| (e.volume, e.idx) == (volume, idx))
    }
}

/// Parses and verifies a commits section (the bytes of [`Footer::commits_range`], for example
/// from a ranged GET) of a segment of this `version` ([`Header::version`]). Records come back
/// sorted by (volume, lsn); those of a version 1 segment with fingerprint 0.
pub fn decode_commits(
    version: u16,
    footer: &Footer,
    bytes: &[u8],
) -> Result<Vec<CommitEntry>, SegmentError> {
    let fixed_len = match version {
        VERSION => COMMIT_FIXED_LEN,
        VERSION_1 => COMMIT_FIXED_LEN_V1,
        v => return Err(SegmentError::Version(v)),
    };
    if bytes.len() as u64 != footer.commits_len {
        return Err(SegmentError::Layout(format!(
            "commits section is {} bytes, footer says {}",
            bytes.len(),
            footer.commits_len
        )));
    }
    if crc32c::crc32c(bytes) != footer.commits_crc {
        return Err(SegmentError::Checksum("commits"));
    }
    let mut r = Reader(bytes);
    let count = r.u32()? as usize;
    // Every count is bounded by the bytes left before anything is allocated for it.
    if count > r.0.len() / fixed_len {
        return Err(SegmentError::Layout(format!(
            "{count} commits cannot fit in {} bytes",
            r.0.len()
        )));
    }
    let mut commits: Vec<CommitEntry> = Vec::with_capacity(count);
    for _ in 0..count {
        let volume = VolumeId::from_slice(r.take(16)?).expect("16 bytes");
        let lsn = Lsn(r.u64()?);
        let committed_at_ms = r.u64()?;
        let fingerprint = if version == VERSION_1 { 0 } else { r.u128()? };
        let key_len = r.u16()? as usize;
        if key_len > MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(SegmentError::Layout(format!(
                "idempotency key of {key_len} bytes exceeds {MAX_IDEMPOTENCY_KEY_BYTES}"
            )));
        }
        let idempotency_key = Bytes::copy_from_slice(r.take(key_len)?);
        let page_count = r.u32()? as usize;
        if page_count > r.0.len() / COMMIT_PAGE_LEN {
            return Err(SegmentError::Layout(format!(
                "{page_count} commit pages cannot fit in {} bytes",
                r.0.len()
            )));
        }
        let mut pages = Vec::with_capacity(page_count);
        for _ in 0..page_count {
            let idx = PageIdx(r.u32()?);
            let segment = SegmentId::from_slice(r.take(16)?).expect("16 bytes");
            let offset = r.u64()?;
            pages.push(PageLocation {
                idx,
                segment,
                offset,
            });
        }
        let c = CommitEntry {
            volume,
            lsn,
            committed_at_ms,
            fingerprint,
            idempotency_key,
            pages,
        };
        if commits.last().is_some_and(|p| p.key() >= c.key()) {
            return Err(SegmentError::Layout(
                "commits are not strictly sorted by (volume, lsn)".into(),
            ));
        }
        commits.push(c);
    }
    if !r.0.is_empty() {
        return Err(SegmentError::Layout(format!(
            "{} bytes after the last commit",
            r.0.len()
        )));
    }
    Ok(commits)
}

/// Reads little-endian fields off the front of untrusted bytes, failing instead of panicking when
/// they run out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SegmentError> {
        if n > self.0.len() {
            return Err(SegmentError::Layout("commits section is truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SegmentError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u16(&mut self) -> Result<u16, SegmentError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, SegmentError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, SegmentError> {
        self.array().map(u64::from_le_bytes)
    }

    fn u128(&mut self) -> Result<u128, SegmentError> {
        self.array().map(u128::from_le_bytes)
    }
}

/// The header: which format version the segment is in, and its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// [`VERSION`] or [`VERSION_1`]; the commits decoder needs it.
    pub version: u16,
    pub id: SegmentId,
}

impl Header {
    /// Parses and verifies the first [`HEADER_LEN`] bytes of a segment against its footer.
    pub fn decode(footer: &Footer, bytes: &[u8]) -> Result<Header, SegmentError> {
        if bytes.len() != HEADER_LEN {
            return Err(SegmentError::Layout(format!(
                "header is {} bytes, not {HEADER_LEN}",
                bytes.len()
            )));
        }
        if crc32c::crc32c(bytes) != footer.header_crc {
            return Err(SegmentError::Checksum("header"));
        }
        if &bytes[..8] != MAGIC {
            return Err(SegmentError::Magic("header"));
        }
        let version = u16::from_le_bytes(bytes[8..10].try_into().expect("2 bytes"));
        if version != VERSION && version != VERSION_1 {
            return Err(SegmentError::Version(version));
        }
        let count = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
        if count != footer.page_count {
            return Err(SegmentError::Layout(format!(
                "header says {count} pages, footer {}",
                footer.page_count
            )));
        }
        Ok(Header {
            version,
            id: SegmentId::from_slice(&bytes[16..32]).expect("16 bytes"),
        })
    }
}

/// A whole segment, decoded and verified.
#[derive(Clone, Debug)]
pub struct Segment {
    pub id: SegmentId,
    /// The format version it was written in ([`Header::version`]).
    pub version: u16,
    pub index: SegmentIndex,
    /// Sorted by (volume, lsn).
    pub commits: Vec<CommitEntry>,
    bytes: Bytes,
}

impl Segment {
    /// Verifies header, footer, index, commits and every page checksum.
    pub fn decode(bytes: Bytes) -> Result<Segment, SegmentError> {
        if bytes.len() < HEADER_LEN + FOOTER_LEN {
            return Err(SegmentError::TooShort(bytes.len()));
        }
        let footer = Footer::decode(&bytes[bytes.len() - FOOTER_LEN..])?;
        if footer.segment_len() != bytes.len() as u64 {
            return Err(SegmentError::Layout(format!(
                "segment is {} bytes, footer implies {}",
                bytes.len(),
                footer.segment_len()
            )));
        }
        let header = Header::decode(&footer, &bytes[..HEADER_LEN])?;
        let r = footer.index_range();
        let index = SegmentIndex::decode(&footer, &bytes[r.start as usize..r.end as usize])?;
        let r = footer.commits_range();
        let commits = decode_commits(
            header.version,
            &footer,
            &bytes[r.start as usize..r.end as usize],
        )?;
        let seg = Segment {
            id: header.id,
            version: header.version,
            index,
            commits,
            bytes,
        };
        for e in seg.index.entries() {
            seg.page(e)?;
        }
        Ok(seg)
    }

    /// The verified bytes of the page an index entry names.
    pub fn page(&self, e: &IndexEntry) -> Result<Page, SegmentError> {
        let r = page_range(e.offset);
        e.verify(self.bytes.slice(r.start as usize..r.end as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use folio_core::GroupId;

    pub(crate) fn page(fill: u8) -> Page {
        Page::new(Bytes::from(vec![fill; PAGE_SIZE])).unwrap()
    }

    #[test]
    fn empty_segment_round_trips() {
        let id = SegmentId::new(1, GroupId(1), 0);
        let bytes = SegmentBuilder::new(id).finish();
        assert_eq!(bytes.len(), HEADER_LEN + 4 + FOOTER_LEN);
        let s = Segment::decode(bytes).unwrap();
        assert_eq!(s.id, id);
        assert!(s.index.entries().is_empty());
        assert!(s.commits.is_empty());
    }

    #[test]
    fn one_page_is_readable_with_a_ranged_read() {
        let id = SegmentId::new(5, GroupId(2), 3);
        let (v, w) = (VolumeId::from_array([1; 16]), VolumeId::from_array([2; 16]));
        let mut b = SegmentBuilder::new(id);
        let o1 = b.push(w, PageIdx(9), &page(1));
        let o2 = b.push(v, PageIdx(4), &page(2));
        let o3 = b.push(w, PageIdx(9), &page(3));
        assert_eq!((o1, o2, o3), (0, 4096, 8192));
        let bytes = b.finish();
        // As a reader would: footer, then index, then one page, each by range.
        let footer = Footer::decode(&bytes[bytes.len() - FOOTER_LEN..]).unwrap();
        let r = footer.index_range();
        let index =
            SegmentIndex::decode(&footer, &bytes[r.start as usize..r.end as usize]).unwrap();
        let latest = index.latest(w, PageIdx(9)).unwrap();
        assert_eq!(latest.offset, o3);
        let r = page_range(latest.offset);
        let got = latest
            .verify(bytes.slice(r.start as usize..r.end as usize))
            .unwrap();
        assert_eq!(got, page(3));
        assert_eq!(index.get(w, PageIdx(9), o1).unwrap().offset, o1);
        assert!(index.latest(v, PageIdx(5)).is_none());
        assert!(index.get(v, PageIdx(4), o1).is_none());
    }

    fn commit(vol: u8, lsn: u64, key: &[u8], pages: Vec<PageLocation>) -> CommitEntry {
        CommitEntry {
            volume: VolumeId::from_array([vol; 16]),
            lsn: Lsn(lsn),
            committed_at_ms: 1_700_000_000_000 + lsn,
            fingerprint: (u128::from(lsn) << 100) | 0xfeed,
            idempotency_key: Bytes::copy_from_slice(key),
            pages,
        }
    }

    /// A footer that accepts `section` as this segment's commits (for feeding the commits decoder
    /// bytes that pass the checksum).
    fn footer_for(section: &[u8]) -> Footer {
        Footer {
            index_offset: HEADER_LEN as u64,
            page_count: 0,
            index_crc: crc32c::crc32c(&[]),
            header_crc: 0,
            commits_crc: crc32c::crc32c(section),
            commits_len: section.len() as u64,
        }
    }

    /// The commits section of a segment with no pages holding these commits.
    fn section(commits: Vec<CommitEntry>) -> Vec<u8> {
        let mut b = SegmentBuilder::new(SegmentId::new(1, GroupId(1), 0));
        for c in commits {
            b.add_commit(c);
        }
        let bytes = b.finish();
        bytes[HEADER_LEN..bytes.len() - FOOTER_LEN].to_vec()
    }

    #[test]
    fn commits_round_trip_sorted_and_are_readable_with_a_ranged_read() {
        let id = SegmentId::new(5, GroupId(2), 3);
        let other = SegmentId::new(4, GroupId(2), 2);
        let mut b = SegmentBuilder::new(id);
        let v = VolumeId::from_array([1; 16]);
        let o = b.push(v, PageIdx(7), &page(1));
        let here = PageLocation {
            idx: PageIdx(7),
            segment: id,
            offset: o,
        };
        let there = PageLocation {
            idx: PageIdx(8),
            segment: other,
            offset: 8192,
        };
        let cs = vec![
            commit(1, 3, &[0xab; MAX_IDEMPOTENCY_KEY_BYTES], vec![here, there]),
            commit(0, 9, b"", vec![]),
            commit(1, 2, b"k", vec![there]),
        ];
        for c in &cs {
            b.add_commit(c.clone());
        }
        assert_eq!(b.commit_count(), 3);
        let len = b.commits_len();
        let bytes = b.finish();
        let footer = Footer::decode(&bytes[bytes.len() - FOOTER_LEN..]).unwrap();
        assert_eq!(footer.commits_len, len as u64);
        assert_eq!(footer.segment_len(), bytes.len() as u64);
        let r = footer.commits_range();
        assert_eq!(r.start, footer.index_range().end);
        assert_eq!(r.end, (bytes.len() - FOOTER_LEN) as u64);
        let got =
            decode_commits(VERSION, &footer, &bytes[r.start as usize..r.end as usize]).unwrap();
        let want = vec![cs[1].clone(), cs[2].clone(), cs[0].clone()];
        assert_eq!(got, want);
        let seg = Segment::decode(bytes).unwrap();
        assert_eq!(seg.commits, want);
    }

    #[test]
    fn commits_section_has_the_documented_layout() {
        let id = SegmentId::new(5, GroupId(2), 3);
        let loc = PageLocation {
            idx: PageIdx(0x0102_0304),
            segment: id,
            offset: 0x1000,
        };
        let got = section(vec![commit(7, 0x11, b"ab", vec![loc])]);
        let mut want = Vec::new();
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&[7; 16]);
        want.extend_from_slice(&0x11u64.to_le_bytes());
        want.extend_from_slice(&(1_700_000_000_000u64 + 0x11).to_le_bytes());
        want.extend_from_slice(&((0x11u128 << 100) | 0xfeed).to_le_bytes());
        want.extend_from_slice(&2u16.to_le_bytes());
        want.extend_from_slice(b"ab");
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&0x0102_0304u32.to_le_bytes());
        want.extend_from_slice(id.as_bytes());
        want.extend_from_slice(&0x1000u64.to_le_bytes());
        assert_eq!(got, want);
    }

    #[test]
    fn footer_has_the_documented_layout_and_bounds_the_commits_length() {
        let mut b = SegmentBuilder::new(SegmentId::new(1, GroupId(1), 0));
        b.add_commit(commit(1, 1, b"key", vec![]));
        let bytes = b.finish();
        let tail = &bytes[bytes.len() - FOOTER_LEN..];
        let f = Footer::decode(tail).unwrap();
        let commits = &bytes[HEADER_LEN..bytes.len() - FOOTER_LEN];
        assert_eq!(&tail[..8], &(HEADER_LEN as u64).to_le_bytes());
        assert_eq!(&tail[8..12], &0u32.to_le_bytes());
        assert_eq!(&tail[12..16], &crc32c::crc32c(&[]).to_le_bytes());
        assert_eq!(
            &tail[16..20],
            &crc32c::crc32c(&bytes[..HEADER_LEN]).to_le_bytes()
        );
        assert_eq!(&tail[20..24], &crc32c::crc32c(commits).to_le_bytes());
        assert_eq!(&tail[24..32], &(commits.len() as u64).to_le_bytes());
        assert_eq!(&tail[32..], b"FOLIOEND");
        assert_eq!(f.commits_len, 4 + COMMIT_FIXED_LEN as u64 + 3);

        let with_len = |len: u64| {
            let mut t = tail.to_vec();
            t[24..32].copy_from_slice(&len.to_le_bytes());
            Footer::decode(&t)
        };
        assert_eq!(
            with_len(MAX_COMMITS_BYTES + 1),
            Err(SegmentError::CommitsTooLong(MAX_COMMITS_BYTES + 1))
        );
        assert_eq!(
            with_len(u64::MAX),
            Err(SegmentError::CommitsTooLong(u64::MAX))
        );
        assert!(matches!(with_len(3), Err(SegmentError::Layout(_))));
        assert_eq!(
            with_len(MAX_COMMITS_BYTES).unwrap().commits_len,
            MAX_COMMITS_BYTES
        );
    }

    #[test]
    fn commits_decoder_rejects_malformed_sections() {
        let layout = |s: &[u8]| {
            matches!(
                decode_commits(VERSION, &footer_for(s), s),
                Err(SegmentError::Layout(_))
            )
        };
        let good = section(vec![commit(1, 1, b"a", vec![]), commit(1, 2, b"b", vec![])]);
        assert_eq!(
            decode_commits(VERSION, &footer_for(&good), &good)
                .unwrap()
                .len(),
            2
        );

        // Checksum, and a length that disagrees with the footer.
        let mut bad = good.clone();
        bad[10] ^= 1;
        assert_eq!(
            decode_commits(VERSION, &footer_for(&good), &bad),
            Err(SegmentError::Checksum("commits"))
        );
        assert!(matches!(
            decode_commits(VERSION, &footer_for(&good), &good[..good.len() - 1]),
            Err(SegmentError::Layout(_))
        ));

        // Trailing bytes, a truncated record, an empty section.
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(layout(&trailing));
        assert!(layout(&good[..good.len() - 1]));
        assert!(layout(&[]));

        // A count (of commits, or of one commit's pages) larger than the bytes could hold.
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(layout(&huge));
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&3u32.to_le_bytes());
        assert!(layout(&huge));
        let mut huge = good.clone();
        let pages_at = 4 + 16 + 8 + 8 + 16 + 2 + 1;
        huge[pages_at..pages_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(layout(&huge));

        // Records out of order, or with the same (volume, lsn).
        let mut swapped = good.clone();
        swapped[4 + 16..4 + 24].copy_from_slice(&5u64.to_le_bytes());
        assert!(layout(&swapped));
        let mut b = SegmentBuilder::new(SegmentId::new(1, GroupId(1), 0));
        b.add_commit(commit(1, 1, b"a", vec![]));
        b.add_commit(commit(1, 1, b"b", vec![]));
        let dup = b.finish();
        assert_eq!(
            &dup,
            &{
                let mut b = SegmentBuilder::new(SegmentId::new(1, GroupId(1), 0));
                b.add_commit(commit(1, 1, b"a", vec![]));
                b.add_commit(commit(1, 1, b"b", vec![]));
                b.finish()
            },
            "duplicates still encode deterministically"
        );
        assert!(matches!(Segment::decode(dup), Err(SegmentError::Layout(_))));

        // A key longer than the limit, though the bytes are there.
        let mut long = Vec::new();
        long.extend_from_slice(&1u32.to_le_bytes());
        long.extend_from_slice(&[0; 48]);
        long.extend_from_slice(&((MAX_IDEMPOTENCY_KEY_BYTES + 1) as u16).to_le_bytes());
        long.extend_from_slice(&[0; MAX_IDEMPOTENCY_KEY_BYTES + 1]);
        long.extend_from_slice(&0u32.to_le_bytes());
        assert!(layout(&long));
        let at_limit = section(vec![commit(0, 0, &[0; MAX_IDEMPOTENCY_KEY_BYTES], vec![])]);
        assert_eq!(at_limit.len(), long.len() - 1);
        assert!(decode_commits(VERSION, &footer_for(&at_limit), &at_limit).is_ok());
    }

    #[test]
    #[should_panic(expected = "idempotency key")]
    fn add_commit_refuses_an_oversized_key() {
        let mut b = SegmentBuilder::new(SegmentId::new(1, GroupId(1), 0));
        b.add_commit(commit(1, 1, &[0; MAX_IDEMPOTENCY_KEY_BYTES + 1], vec![]));
    }

    /// A version 1 segment, written byte by byte as the version 1 writer did: one page and two
    /// commits whose records have no fingerprint.
    fn v1_segment(id: SegmentId, v: VolumeId, other: SegmentId) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"FOLIOSEG");
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(id.as_bytes());
        let header_crc = crc32c::crc32c(&b);
        b.extend_from_slice(&[7; PAGE_SIZE]);
        let index_offset = b.len();
        b.extend_from_slice(v.as_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&crc32c::crc32c(&[7; PAGE_SIZE]).to_le_bytes());
        let index_crc = crc32c::crc32c(&b[index_offset..]);
        let commits_offset = b.len();
        b.extend_from_slice(&2u32.to_le_bytes());
        // Volume, lsn, time, key length, key, page count, pages.
        b.extend_from_slice(v.as_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&1_000u64.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(b"k1");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(id.as_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(v.as_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&2_000u64.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(id.as_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(other.as_bytes());
        b.extend_from_slice(&8192u64.to_le_bytes());
        let commits_crc = crc32c::crc32c(&b[commits_offset..]);
        let commits_len = (b.len() - commits_offset) as u64;
        b.extend_from_slice(&(index_offset as u64).to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&index_crc.to_le_bytes());
        b.extend_from_slice(&header_crc.to_le_bytes());
        b.extend_from_slice(&commits_crc.to_le_bytes());
        b.extend_from_slice(&commits_len.to_le_bytes());
        b.extend_from_slice(b"FOLIOEND");
        b
    }

    #[test]
    fn a_version_1_segment_decodes_with_fingerprint_zero() {
        let id = SegmentId::new(5, GroupId(2), 3);
        let other = SegmentId::new(4, GroupId(2), 2);
        let v = VolumeId::from_array([9; 16]);
        let bytes = Bytes::from(v1_segment(id, v, other));
        let here = PageLocation {
            idx: PageIdx(3),
            segment: id,
            offset: 0,
        };
        let want = vec![
            CommitEntry {
                volume: v,
                lsn: Lsn(1),
                committed_at_ms: 1_000,
                fingerprint: 0,
                idempotency_key: Bytes::from_static(b"k1"),
                pages: vec![here],
            },
            CommitEntry {
                volume: v,
                lsn: Lsn(2),
                committed_at_ms: 2_000,
                fingerprint: 0,
                idempotency_key: Bytes::new(),
                pages: vec![
                    here,
                    PageLocation {
                        idx: PageIdx(4),
                        segment: other,
                        offset: 8192,
                    },
                ],
            },
        ];
        let seg = Segment::decode(bytes.clone()).unwrap();
        assert_eq!((seg.id, seg.version), (id, VERSION_1));
        assert_eq!(seg.commits, want);
        let e = seg.index.latest(v, PageIdx(3)).unwrap();
        assert_eq!(seg.page(e).unwrap().bytes()[..], [7; PAGE_SIZE]);

        // As a ranged reader would: footer, header, then the commits section.
        let footer = Footer::decode(&bytes[bytes.len() - FOOTER_LEN..]).unwrap();
        let header = Header::decode(&footer, &bytes[..HEADER_LEN]).unwrap();
        assert_eq!(header, Header { version: 1, id });
        let r = footer.commits_range();
        let section = &bytes[r.start as usize..r.end as usize];
        assert_eq!(
            decode_commits(header.version, &footer, section).unwrap(),
            want
        );
    }

    #[test]
    fn the_builder_writes_version_2_and_version_3_is_refused() {
        let mut b = SegmentBuilder::new(SegmentId::new(1, GroupId(1), 0));
        b.add_commit(commit(1, 1, b"k", vec![]));
        let bytes = b.finish();
        assert_eq!(&bytes[8..10], &2u16.to_le_bytes());
        assert_eq!(Segment::decode(bytes.clone()).unwrap().version, VERSION);

        // Version 3 with checksums that match, so only the version is wrong.
        let mut v3 = bytes.to_vec();
        v3[8..10].copy_from_slice(&3u16.to_le_bytes());
        let header_crc = crc32c::crc32c(&v3[..HEADER_LEN]);
        let at = v3.len() - FOOTER_LEN + 16;
        v3[at..at + 4].copy_from_slice(&header_crc.to_le_bytes());
        let err = Segment::decode(Bytes::from(v3)).unwrap_err();
        assert_eq!(err, SegmentError::Version(3));
        assert!(err.to_string().contains("version 3"), "{err}");

        let footer = Footer::decode(&bytes[bytes.len() - FOOTER_LEN..]).unwrap();
        let r = footer.commits_range();
        let section = &bytes[r.start as usize..r.end as usize];
        assert_eq!(
            decode_commits(3, &footer, section),
            Err(SegmentError::Version(3))
        );
        assert_eq!(
            decode_commits(0, &footer, section),
            Err(SegmentError::Version(0))
        );
    }
}
