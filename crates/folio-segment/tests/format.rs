//! Segment format properties: random segments round-trip byte-exactly and deterministically, any
//! single corrupted byte is detected, and the decoder never panics on arbitrary input.

use bytes::Bytes;
use folio_core::{GroupId, Page, PageIdx, SegmentId, VolumeId, PAGE_SIZE};
use folio_segment::{page_range, Footer, Segment, SegmentBuilder, SegmentIndex, FOOTER_LEN};
use proptest::prelude::*;

fn build(pages: &[(u8, u32, u8)]) -> (Bytes, Vec<(VolumeId, PageIdx, u64, Page)>) {
    let mut b = SegmentBuilder::new(SegmentId::new(1_700_000_000_000, GroupId(9), 4));
    let mut placed = Vec::new();
    for (vol, idx, fill) in pages {
        let v = VolumeId::from_array([*vol; 16]);
        let mut data = vec![*fill; PAGE_SIZE];
        data[..4].copy_from_slice(&idx.to_le_bytes());
        let p = Page::new(Bytes::from(data)).unwrap();
        let off = b.push(v, PageIdx(*idx), &p);
        placed.push((v, PageIdx(*idx), off, p));
    }
    (b.finish(), placed)
}

fn pages_strategy() -> impl Strategy<Value = Vec<(u8, u32, u8)>> {
    // Few volumes and page indexes, so the same page often appears more than once.
    prop::collection::vec((0u8..4, 0u32..8, any::<u8>()), 0..24)
}

#[test]
fn every_flipped_byte_of_a_segment_is_detected() {
    let (bytes, _) = build(&[(1, 3, 7), (0, 3, 8), (1, 3, 9)]);
    for i in 0..bytes.len() {
        let mut bad = bytes.to_vec();
        bad[i] ^= 0x10;
        assert!(
            Segment::decode(Bytes::from(bad)).is_err(),
            "flip at byte {i} of {} went unnoticed",
            bytes.len()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_segments_round_trip(pages in pages_strategy()) {
        let (bytes, placed) = build(&pages);
        prop_assert_eq!(&build(&pages).0, &bytes, "encoding is deterministic");
        let seg = Segment::decode(bytes.clone()).unwrap();
        prop_assert_eq!(seg.index.entries().len(), placed.len());
        for (v, idx, off, p) in &placed {
            let e = seg.index.get(*v, *idx, *off).unwrap();
            prop_assert_eq!(&seg.page(e).unwrap(), p);
            let r = page_range(*off);
            prop_assert_eq!(&e.verify(bytes.slice(r.start as usize..r.end as usize)).unwrap(), p);
        }
        // `latest` finds the last copy written of each page.
        for (v, idx, _, _) in &placed {
            let last = placed.iter().filter(|(pv, pi, _, _)| pv == v && pi == idx).map(|x| x.2).max();
            prop_assert_eq!(seg.index.latest(*v, *idx).map(|e| e.offset), last);
        }
    }

    #[test]
    fn any_flipped_byte_is_detected(pages in prop::collection::vec((0u8..4, 0u32..8, any::<u8>()), 1..6), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (bytes, _) = build(&pages);
        let mut bad = bytes.to_vec();
        let i = pos.index(bad.len());
        bad[i] ^= 1 << bit;
        prop_assert!(Segment::decode(Bytes::from(bad)).is_err(), "flip at {} of {} went unnoticed", i, bytes.len());
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Segment::decode(Bytes::from(data.clone()));
        if data.len() >= FOOTER_LEN {
            if let Ok(f) = Footer::decode(&data[data.len() - FOOTER_LEN..]) {
                let _ = SegmentIndex::decode(&f, &data);
            }
        }
    }

    #[test]
    fn decoder_never_panics_on_damaged_segments(pages in pages_strategy(), cut in any::<prop::sample::Index>(), junk in any::<u8>()) {
        let (bytes, _) = build(&pages);
        let mut v = bytes.to_vec();
        let i = cut.index(v.len());
        v[i] = junk;
        let _ = Segment::decode(Bytes::from(v.clone()));
        v.truncate(i);
        prop_assert!(Segment::decode(Bytes::from(v)).is_err());
    }
}
