//! The segment format. A segment is one immutable object holding pages of many volumes:
//!
//! ```text
//! header   32 bytes   "FOLIOSEG", version u16, reserved u16, page count u32, segment id [16]
//! pages    n × 4096   in slot order; a page's offset is its byte offset in this section
//! index    n × 32     (volume [16], page index u32, offset u64, crc32c of the page u32),
//!                     sorted by (volume, page index, offset) for binary search
//! footer   32 bytes   index offset u64, page count u32, index crc32c u32, header crc32c u32,
//!                     reserved u32, "FOLIOEND"
//! ```
//!
//! All integers are little-endian. Every page has its own checksum in the index, so one page
//! fetched with a ranged GET ([`page_range`]) is verified on its own ([`IndexEntry::verify`]); the
//! index and header have checksums in the footer. Encoding is deterministic: the same pages in
//! the same order give the same bytes on every replica.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use folio_core::{Page, PageIdx, SegmentId, VolumeId, PAGE_SIZE};

pub const HEADER_LEN: usize = 32;
pub const INDEX_ENTRY_LEN: usize = 32;
pub const FOOTER_LEN: usize = 32;
pub const VERSION: u16 = 1;
const MAGIC: &[u8; 8] = b"FOLIOSEG";
const END_MAGIC: &[u8; 8] = b"FOLIOEND";

/// Pages in one segment; 8 MiB segments hold 2048, so this leaves ample room while bounding what
/// a decoder allocates from a header it has not verified yet.
pub const MAX_PAGES: u32 = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    #[error("segment is {0} bytes, too short for a header and footer")]
    TooShort(usize),
    #[error("bad magic in the {0}")]
    Magic(&'static str),
    #[error("unsupported segment version {0}")]
    Version(u16),
    #[error("{0} checksum mismatch")]
    Checksum(&'static str),
    #[error("segment claims {0} pages, more than the limit {MAX_PAGES}")]
    TooManyPages(u32),
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

/// Builds a segment from pages in slot order.
pub struct SegmentBuilder {
    id: SegmentId,
    data: BytesMut,
    index: Vec<IndexEntry>,
}

impl SegmentBuilder {
    pub fn new(id: SegmentId) -> Self {
        SegmentBuilder {
            id,
            data: BytesMut::new(),
            index: Vec::new(),
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

    /// The encoded segment.
    pub fn finish(mut self) -> Bytes {
        let n = self.index.len() as u32;
        self.index.sort_unstable_by_key(IndexEntry::key);
        let mut out = BytesMut::with_capacity(
            HEADER_LEN + self.data.len() + self.index.len() * INDEX_ENTRY_LEN + FOOTER_LEN,
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
        out.put_u64_le(index_offset);
        out.put_u32_le(n);
        out.put_u32_le(index_crc);
        out.put_u32_le(header_crc);
        out.put_u32_le(0);
        out.put_slice(END_MAGIC);
        out.freeze()
    }
}

/// The footer: where the index is, and the checksums of index and header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    pub index_offset: u64,
    pub page_count: u32,
    pub index_crc: u32,
    pub header_crc: u32,
}

impl Footer {
    /// Parses the last [`FOOTER_LEN`] bytes of a segment.
    pub fn decode(tail: &[u8]) -> Result<Footer, SegmentError> {
        if tail.len() != FOOTER_LEN {
            return Err(SegmentError::TooShort(tail.len()));
        }
        if &tail[24..] != END_MAGIC {
            return Err(SegmentError::Magic("footer"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(tail[i..i + 4].try_into().expect("4 bytes"));
        let f = Footer {
            index_offset: u64::from_le_bytes(tail[..8].try_into().expect("8 bytes")),
            page_count: u32_at(8),
            index_crc: u32_at(12),
            header_crc: u32_at(16),
        };
        if u32_at(20) != 0 {
            return Err(SegmentError::Layout(
                "reserved footer bytes are not zero".into(),
            ));
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
        self.index_offset + self.index_len() as u64 + FOOTER_LEN as u64
    }

    /// Byte range of the index within the segment, for a ranged GET.
    pub fn index_range(&self) -> Range<u64> {
        self.index_offset..self.index_offset + self.index_len() as u64
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

/// A whole segment, decoded and verified.
#[derive(Clone, Debug)]
pub struct Segment {
    pub id: SegmentId,
    pub index: SegmentIndex,
    bytes: Bytes,
}

impl Segment {
    /// Verifies header, footer, index and every page checksum.
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
        let header = &bytes[..HEADER_LEN];
        if crc32c::crc32c(header) != footer.header_crc {
            return Err(SegmentError::Checksum("header"));
        }
        if &header[..8] != MAGIC {
            return Err(SegmentError::Magic("header"));
        }
        let version = u16::from_le_bytes(header[8..10].try_into().expect("2 bytes"));
        if version != VERSION {
            return Err(SegmentError::Version(version));
        }
        let count = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
        if count != footer.page_count {
            return Err(SegmentError::Layout(format!(
                "header says {count} pages, footer {}",
                footer.page_count
            )));
        }
        let id = SegmentId::from_slice(&header[16..32]).expect("16 bytes");
        let r = footer.index_range();
        let index = SegmentIndex::decode(&footer, &bytes[r.start as usize..r.end as usize])?;
        let seg = Segment { id, index, bytes };
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
        assert_eq!(bytes.len(), HEADER_LEN + FOOTER_LEN);
        let s = Segment::decode(bytes).unwrap();
        assert_eq!(s.id, id);
        assert!(s.index.entries().is_empty());
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
}
