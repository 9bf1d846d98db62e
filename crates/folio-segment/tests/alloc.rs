//! The commits decoder allocates in proportion to the bytes it is given, never to the counts those
//! bytes claim. Its own test binary, because it replaces the global allocator to watch requests.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use folio_core::{GroupId, Lsn, PageIdx, PageLocation, SegmentId, VolumeId};
use folio_segment::{
    decode_commits, CommitEntry, Footer, SegmentBuilder, SegmentError, FOOTER_LEN, HEADER_LEN,
    VERSION,
};

/// Records the largest single allocation request.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Largest = Largest;

fn footer_accepting(section: &[u8]) -> Footer {
    Footer {
        index_offset: HEADER_LEN as u64,
        page_count: 0,
        index_crc: 0,
        header_crc: 0,
        commits_crc: crc32c::crc32c(section),
        commits_len: section.len() as u64,
    }
}

/// Decodes `section` (re-checksummed) and returns the result and the largest allocation made.
fn decode_watching(section: &[u8]) -> (Result<Vec<CommitEntry>, SegmentError>, usize) {
    let footer = footer_accepting(section);
    LARGEST.store(0, Ordering::Relaxed);
    let got = decode_commits(VERSION, &footer, section);
    (got, LARGEST.load(Ordering::Relaxed))
}

#[test]
fn huge_claimed_counts_do_not_allocate() {
    let id = SegmentId::new(1, GroupId(1), 0);
    let mut b = SegmentBuilder::new(id);
    b.add_commit(CommitEntry {
        fingerprint: 0,
        volume: VolumeId::from_array([1; 16]),
        lsn: Lsn(1),
        committed_at_ms: 7,
        idempotency_key: Bytes::from_static(b"k"),
        pages: vec![PageLocation {
            idx: PageIdx(3),
            segment: id,
            offset: 0,
        }],
    });
    let bytes = b.finish();
    let valid = bytes[HEADER_LEN..bytes.len() - FOOTER_LEN].to_vec();
    let (got, _) = decode_watching(&valid);
    assert_eq!(got.unwrap().len(), 1);

    // The commit count, then the record's page count, claim u32::MAX.
    let page_count_at = 4 + 16 + 8 + 8 + 16 + 2 + 1;
    for at in [0, page_count_at] {
        let mut bad = valid.clone();
        bad[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let (got, largest) = decode_watching(&bad);
        assert!(matches!(got, Err(SegmentError::Layout(_))), "{got:?}");
        assert!(
            largest <= 4096,
            "a count at byte {at} led to a {largest}-byte allocation"
        );
    }
}
