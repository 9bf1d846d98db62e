//! Segment format properties: random segments (pages and commits) round-trip byte-exactly and
//! deterministically, any single corrupted byte is detected, and the decoders never panic on
//! arbitrary input.

use bytes::Bytes;
use folio_core::limits::MAX_IDEMPOTENCY_KEY_BYTES;
use folio_core::{GroupId, Lsn, Page, PageIdx, PageLocation, SegmentId, VolumeId, PAGE_SIZE};
use folio_segment::{
    decode_commits, page_range, CommitEntry, Footer, Segment, SegmentBuilder, SegmentError,
    SegmentIndex, FOOTER_LEN, HEADER_LEN, VERSION,
};
use proptest::prelude::*;

fn seg_id() -> SegmentId {
    SegmentId::new(1_700_000_000_000, GroupId(9), 4)
}

/// A commit as the strategies generate it: volume byte, lsn, time, key, and pages as (page index,
/// segment id byte or `None` for this segment, slot).
type CommitSpec = (u8, u64, u64, Vec<u8>, Vec<(u32, Option<u8>, u64)>);

fn commit(spec: &CommitSpec) -> CommitEntry {
    let (vol, lsn, at, key, pages) = spec;
    CommitEntry {
        fingerprint: 0,
        volume: VolumeId::from_array([*vol; 16]),
        lsn: Lsn(*lsn),
        committed_at_ms: *at,
        idempotency_key: Bytes::from(key.clone()),
        pages: pages
            .iter()
            .map(|(idx, seg, slot)| PageLocation {
                idx: PageIdx(*idx),
                segment: seg.map_or(seg_id(), |s| SegmentId::from_slice(&[s; 16]).unwrap()),
                offset: slot * PAGE_SIZE as u64,
            })
            .collect(),
    }
}

/// Builds a segment of these pages, in order, and these commits, in the order given.
fn build(
    pages: &[(u8, u32, u8)],
    commits: &[CommitSpec],
) -> (Bytes, Vec<(VolumeId, PageIdx, u64, Page)>) {
    let mut b = SegmentBuilder::new(seg_id());
    for c in commits {
        b.add_commit(commit(c));
    }
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

/// Commits with distinct (volume, lsn), in random order; keys of every allowed length (often
/// empty or at the limit), pages in this segment or others, sometimes none.
fn commits_strategy(max: usize) -> impl Strategy<Value = Vec<CommitSpec>> {
    let key = prop_oneof![
        Just(Vec::new()),
        Just(vec![0xee; MAX_IDEMPOTENCY_KEY_BYTES]),
        prop::collection::vec(any::<u8>(), 0..=MAX_IDEMPOTENCY_KEY_BYTES),
    ];
    let page = (any::<u32>(), prop::option::of(any::<u8>()), 0u64..64);
    prop::collection::btree_map(
        (0u8..4, 0u64..16),
        (any::<u64>(), key, prop::collection::vec(page, 0..4)),
        0..max,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|((v, l), (at, key, pages))| (v, l, at, key, pages))
            .collect::<Vec<_>>()
    })
    .prop_shuffle()
}

/// What a decoder returns for these commits: sorted by (volume, lsn).
fn sorted(commits: &[CommitSpec]) -> Vec<CommitEntry> {
    let mut c: Vec<CommitEntry> = commits.iter().map(commit).collect();
    c.sort_by_key(|c| (c.volume, c.lsn));
    c
}

fn fixed_commits() -> Vec<CommitSpec> {
    vec![
        (
            2,
            5,
            1_700_000_000_005,
            b"retry-5".to_vec(),
            vec![(3, None, 0), (9, Some(7), 12)],
        ),
        (1, 1, 1_700_000_000_001, Vec::new(), Vec::new()),
        (
            2,
            4,
            1_700_000_000_004,
            vec![0xab; MAX_IDEMPOTENCY_KEY_BYTES],
            vec![(3, None, 2)],
        ),
    ]
}

#[test]
fn pages_and_commits_round_trip() {
    let commits = fixed_commits();
    let (bytes, placed) = build(&[(1, 3, 7), (0, 3, 8), (1, 3, 9)], &commits);
    let seg = Segment::decode(bytes.clone()).unwrap();
    assert_eq!(seg.id, seg_id());
    assert_eq!(seg.index.entries().len(), placed.len());
    assert_eq!(seg.commits, sorted(&commits));
    assert!(seg.commits[0].pages.is_empty());
    assert!(seg.commits[0].idempotency_key.is_empty());
    assert_eq!(
        seg.commits[1].idempotency_key.len(),
        MAX_IDEMPOTENCY_KEY_BYTES
    );
    assert_ne!(seg.commits[2].pages[1].segment, seg.id);
    // As a reader would after two ranged GETs: the footer, then the commits section.
    let footer = Footer::decode(&bytes[bytes.len() - FOOTER_LEN..]).unwrap();
    let r = footer.commits_range();
    assert_eq!(
        decode_commits(VERSION, &footer, &bytes[r.start as usize..r.end as usize]).unwrap(),
        seg.commits
    );
}

#[test]
fn empty_segment_has_a_four_byte_commits_section() {
    let (bytes, _) = build(&[], &[]);
    assert_eq!(bytes.len(), HEADER_LEN + 4 + FOOTER_LEN);
    let seg = Segment::decode(bytes).unwrap();
    assert!(seg.index.entries().is_empty());
    assert!(seg.commits.is_empty());
}

#[test]
fn a_corrupted_commits_byte_is_a_commits_checksum_error() {
    let (bytes, _) = build(&[(1, 3, 7)], &fixed_commits());
    let footer = Footer::decode(&bytes[bytes.len() - FOOTER_LEN..]).unwrap();
    for i in footer.commits_range() {
        let mut bad = bytes.to_vec();
        bad[i as usize] ^= 0x01;
        assert_eq!(
            Segment::decode(Bytes::from(bad)).unwrap_err(),
            SegmentError::Checksum("commits"),
            "flip at byte {i}"
        );
    }
}

#[test]
fn every_flipped_byte_of_a_segment_is_detected() {
    let (bytes, _) = build(&[(1, 3, 7), (0, 3, 8), (1, 3, 9)], &fixed_commits());
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
    fn random_segments_round_trip(pages in pages_strategy(), commits in commits_strategy(12)) {
        let (bytes, placed) = build(&pages, &commits);
        prop_assert_eq!(&build(&pages, &commits).0, &bytes, "encoding is deterministic");
        let mut reordered = commits.clone();
        reordered.reverse();
        prop_assert_eq!(&build(&pages, &reordered).0, &bytes, "commit order does not matter");
        let seg = Segment::decode(bytes.clone()).unwrap();
        prop_assert_eq!(seg.index.entries().len(), placed.len());
        prop_assert_eq!(&seg.commits, &sorted(&commits));
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
    fn any_flipped_byte_is_detected(pages in prop::collection::vec((0u8..4, 0u32..8, any::<u8>()), 1..6), commits in commits_strategy(4), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (bytes, _) = build(&pages, &commits);
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
                let _ = decode_commits(VERSION, &f, &data);
            }
        }
        // Arbitrary bytes past the commits checksum, so the parser itself sees them.
        let _ = decode_commits(VERSION, &footer_accepting(&data), &data);
    }

    #[test]
    fn decoder_never_panics_on_damaged_segments(pages in pages_strategy(), commits in commits_strategy(8), cut in any::<prop::sample::Index>(), junk in any::<u8>()) {
        let (bytes, _) = build(&pages, &commits);
        let mut v = bytes.to_vec();
        let i = cut.index(v.len());
        v[i] = junk;
        let _ = Segment::decode(Bytes::from(v.clone()));
        v.truncate(i);
        prop_assert!(Segment::decode(Bytes::from(v)).is_err());
    }

    #[test]
    fn commits_decoder_never_panics_on_damaged_sections(
        commits in commits_strategy(8),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        // Truncate a valid section, or damage it and append to it, re-checksummed each time so the
        // damage reaches the parser: changed counts, key lengths, order, trailing bytes.
        let (bytes, _) = build(&[], &commits);
        let valid = &bytes[HEADER_LEN..bytes.len() - FOOTER_LEN];
        let t = &valid[..cut.index(valid.len())];
        prop_assert!(
            decode_commits(VERSION, &footer_accepting(t), t).is_err(),
            "a truncated section parses"
        );
        let mut s = valid.to_vec();
        for (at, b) in &edits {
            let i = at.index(s.len());
            s[i] = *b;
        }
        if let Ok(got) = decode_commits(VERSION, &footer_accepting(&s), &s) {
            prop_assert!(got.windows(2).all(|w| (w[0].volume, w[0].lsn) < (w[1].volume, w[1].lsn)));
        }
        s.extend_from_slice(&extra);
        let _ = decode_commits(VERSION, &footer_accepting(&s), &s);
    }
}

/// A footer whose commits length and checksum match `section`.
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
