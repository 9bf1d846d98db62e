//! Index-run table format: round trips across many blocks, lookups by ranged reads that agree with
//! a sorted map, every kind of corruption detected, limits, and merging.

use std::collections::BTreeMap;

use bytes::Bytes;
use folio_segment::table::{
    merge, Block, BlockHandle, Table, TableBuilder, TableError, TableFooter, TableIndex,
    BLOCK_BYTES, MAX_BLOCK_BYTES, MAX_INDEX_BYTES, MAX_KEY_BYTES, MAX_VALUE_BYTES,
    TABLE_FOOTER_LEN, TABLE_HEADER_LEN, TABLE_VERSION,
};
use proptest::prelude::*;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;
/// A lookup's answers: the greatest entry at most the key, and the first key at least it.
type Lookups = (Option<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>);

/// Keys with gaps between them: "k" and an even number, big-endian, so odd numbers probe between.
fn key(n: u32) -> Vec<u8> {
    let mut k = b"k".to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn model(count: u32) -> Model {
    (0..count)
        .map(|i| (key(2 * i + 2), vec![i as u8; 40 + (i as usize * 7) % 160]))
        .collect()
}

fn build(m: &Model) -> Bytes {
    let mut b = TableBuilder::new();
    for (k, v) in m {
        b.push(k, v).unwrap();
    }
    assert_eq!(b.entries(), m.len() as u64);
    let estimate = b.len_estimate();
    let bytes = b.finish();
    assert_eq!(bytes.len(), estimate);
    bytes
}

fn tail(bytes: &[u8]) -> &[u8] {
    &bytes[bytes.len() - TABLE_FOOTER_LEN..]
}

fn footer(bytes: &[u8]) -> TableFooter {
    TableFooter::decode(tail(bytes)).unwrap()
}

fn index(bytes: &[u8]) -> TableIndex {
    let f = footer(bytes);
    let r = f.index_range();
    TableIndex::decode(&f, &bytes[r.start as usize..r.end as usize]).unwrap()
}

/// Recomputes the footer's own checksum after an edit.
fn reseal_footer(bytes: &mut [u8]) {
    let at = bytes.len() - TABLE_FOOTER_LEN;
    let crc = crc32c::crc32c(&bytes[at..at + 36]);
    bytes[at + 36..at + 40].copy_from_slice(&crc.to_le_bytes());
}

/// [`Lookups`] as a reader does them: footer, index, then one block by range (two for a seek that
/// runs off the end of its block).
fn ranged_lookups(bytes: &Bytes, k: &[u8]) -> Lookups {
    let index = index(bytes);
    let block = |i: usize| {
        let h = &index.blocks()[i];
        Block::decode(h, bytes.slice(h.range.start as usize..h.range.end as usize)).unwrap()
    };
    let floor = index.floor_block(k).and_then(|i| {
        let b = block(i);
        b.floor(k).map(|(k, v)| (k.to_vec(), v.to_vec()))
    });
    let mut seek = None;
    let mut i = index.seek_block(k);
    while i < index.blocks().len() && seek.is_none() {
        let b = block(i);
        seek = b.get(b.seek(k)).map(|(k, _)| k.to_vec());
        i += 1;
    }
    (floor, seek)
}

fn model_lookups(m: &Model, k: &[u8]) -> Lookups {
    let floor = m
        .range(..=k.to_vec())
        .next_back()
        .map(|(k, v)| (k.clone(), v.clone()));
    let seek = m.range(k.to_vec()..).next().map(|(k, _)| k.clone());
    (floor, seek)
}

#[test]
fn many_entries_round_trip_across_many_blocks() {
    let m = model(20_000);
    let bytes = build(&m);
    assert_eq!(bytes, build(&m), "encoding is deterministic");
    let t = Table::decode(bytes.clone()).unwrap();
    assert_eq!(t.entries(), 20_000);
    let got: Vec<(Vec<u8>, Vec<u8>)> = t.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    let want: Vec<(Vec<u8>, Vec<u8>)> = m.clone().into_iter().collect();
    assert_eq!(got, want);

    let f = footer(&bytes);
    assert_eq!(f.table_len(), bytes.len() as u64);
    assert_eq!(f.entries, 20_000);
    let blocks = t.index().blocks();
    assert!(blocks.len() > 20, "{} blocks", blocks.len());
    assert_eq!(f.blocks as usize, blocks.len());
    assert_eq!(blocks[0].range.start, TABLE_HEADER_LEN as u64);
    assert_eq!(blocks.last().unwrap().range.end, f.index_offset);
    for (i, h) in blocks.iter().enumerate() {
        let len = (h.range.end - h.range.start) as usize;
        assert!(len <= BLOCK_BYTES, "block {i} is {len} bytes");
        if i + 1 < blocks.len() {
            assert_eq!(h.range.end, blocks[i + 1].range.start);
            // A block closes only when the next entry would not fit.
            assert!(len > BLOCK_BYTES - 6 - 5 - 200, "block {i} is {len} bytes");
        }
    }
    assert!(t.index().approx_bytes() > blocks.len() * 5);
}

#[test]
fn lookups_by_ranged_reads_agree_with_a_sorted_map_across_block_boundaries() {
    let m = model(5_000);
    let bytes = build(&m);
    let t = Table::decode(bytes.clone()).unwrap();
    let blocks = t.index().blocks().to_vec();
    assert!(blocks.len() > 3);
    let mut probes = vec![Vec::new(), b"a".to_vec(), key(0), key(1), key(2), key(3)];
    probes.extend([key(10_000), key(10_001), key(u32::MAX), b"l".to_vec()]);
    for h in &blocks {
        // Each block's first key, just before it (the gap after the previous block's last
        // entry), and just after it.
        let n = u32::from_be_bytes(h.first_key[1..].try_into().unwrap());
        probes.extend([key(n - 1), key(n), key(n + 1), key(n - 2)]);
        let mut longer = h.first_key.to_vec();
        longer.push(0);
        probes.push(longer);
    }
    for k in &probes {
        let want = model_lookups(&m, k);
        assert_eq!(ranged_lookups(&bytes, k), want, "probe {k:?}");
        let floor = t.floor(k).map(|(k, v)| (k.to_vec(), v.to_vec()));
        assert_eq!(floor, want.0, "whole-table floor {k:?}");
        let from: Vec<Vec<u8>> = t.iter_from(k).map(|(k, _)| k.to_vec()).collect();
        let want_from: Vec<Vec<u8>> = m.range(k.clone()..).map(|(k, _)| k.clone()).collect();
        assert_eq!(from, want_from, "iter_from {k:?}");
    }
    // Before the first key: no floor block, and a seek starts at block 0.
    let index = t.index();
    assert_eq!(index.floor_block(b"a"), None);
    assert_eq!(index.seek_block(b"a"), 0);
    let last = blocks.len() - 1;
    assert_eq!(index.floor_block(&key(u32::MAX)), Some(last));
    // Between two blocks: the earlier block, whose entries are all smaller.
    let n = u32::from_be_bytes(blocks[2].first_key[1..].try_into().unwrap());
    assert_eq!(index.floor_block(&key(n - 1)), Some(1));
    assert_eq!(index.floor_block(&key(n)), Some(2));
}

#[test]
fn an_empty_table_round_trips() {
    let bytes = TableBuilder::new().finish();
    assert_eq!(bytes.len(), TABLE_HEADER_LEN + TABLE_FOOTER_LEN);
    let t = Table::decode(bytes.clone()).unwrap();
    assert_eq!(t.entries(), 0);
    assert_eq!(t.iter().count(), 0);
    assert_eq!(t.floor(b"x"), None);
    assert_eq!(t.iter_from(b"").count(), 0);
    assert!(t.index().blocks().is_empty());
    assert_eq!(ranged_lookups(&bytes, b"x"), (None, None));
}

#[test]
fn header_and_footer_have_the_documented_layout() {
    let m = model(3);
    let bytes = build(&m);
    assert_eq!(&bytes[..8], b"FOLIORUN");
    assert_eq!(&bytes[8..10], &TABLE_VERSION.to_le_bytes());
    assert_eq!(&bytes[10..12], &[0, 0]);
    // The first entry: key length, value length, key, value.
    let (k, v) = m.iter().next().unwrap();
    assert_eq!(&bytes[12..14], &(k.len() as u16).to_le_bytes());
    assert_eq!(&bytes[14..18], &(v.len() as u32).to_le_bytes());
    assert_eq!(&bytes[18..18 + k.len()], &k[..]);

    let t = tail(&bytes);
    let data_end = bytes.len() - TABLE_FOOTER_LEN - (8 + 4 + 4 + 2 + k.len());
    assert_eq!(&t[0..8], &(data_end as u64).to_le_bytes());
    assert_eq!(&t[8..16], &3u64.to_le_bytes());
    assert_eq!(
        &t[16..20],
        &((8 + 4 + 4 + 2 + k.len()) as u32).to_le_bytes()
    );
    let index = &bytes[data_end..bytes.len() - TABLE_FOOTER_LEN];
    assert_eq!(&t[20..24], &crc32c::crc32c(index).to_le_bytes());
    assert_eq!(
        &t[24..28],
        &crc32c::crc32c(&bytes[..TABLE_HEADER_LEN]).to_le_bytes()
    );
    assert_eq!(&t[28..32], &1u32.to_le_bytes());
    assert_eq!(&t[32..34], &1u16.to_le_bytes());
    assert_eq!(&t[34..36], &[0, 0]);
    assert_eq!(&t[36..40], &crc32c::crc32c(&t[..36]).to_le_bytes());
    assert_eq!(&t[40..], b"ENDOFRUN");
    // The index: offset, length, crc, first key.
    let block = &bytes[TABLE_HEADER_LEN..data_end];
    assert_eq!(&index[..8], &(TABLE_HEADER_LEN as u64).to_le_bytes());
    assert_eq!(&index[8..12], &(block.len() as u32).to_le_bytes());
    assert_eq!(&index[12..16], &crc32c::crc32c(block).to_le_bytes());
    assert_eq!(&index[16..18], &(k.len() as u16).to_le_bytes());
    assert_eq!(&index[18..], &k[..]);
}

#[test]
fn corruption_in_every_part_is_detected_and_named() {
    let bytes = build(&model(3_000));
    let f = footer(&bytes);
    let blocks = index(&bytes).blocks().to_vec();
    let flipped = |i: usize| {
        let mut bad = bytes.to_vec();
        bad[i] ^= 0x20;
        Table::decode(Bytes::from(bad)).unwrap_err()
    };
    for h in &blocks {
        for i in [
            h.range.start,
            (h.range.start + h.range.end) / 2,
            h.range.end - 1,
        ] {
            assert_eq!(
                flipped(i as usize),
                TableError::BlockChecksum(h.range.start)
            );
        }
    }
    let r = f.index_range();
    for i in [r.start, (r.start + r.end) / 2, r.end - 1] {
        assert_eq!(flipped(i as usize), TableError::Checksum("index"));
    }
    for i in 0..TABLE_HEADER_LEN {
        assert_eq!(flipped(i), TableError::Checksum("header"));
    }
    let footer_at = bytes.len() - TABLE_FOOTER_LEN;
    for i in footer_at..footer_at + 40 {
        assert_eq!(flipped(i), TableError::Checksum("footer"), "byte {i}");
    }
    for i in footer_at + 40..bytes.len() {
        assert_eq!(flipped(i), TableError::Magic("footer"));
    }
    let err = flipped(TABLE_HEADER_LEN + 1);
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn every_flipped_byte_and_every_truncation_of_a_small_table_is_detected() {
    let bytes = build(&model(12));
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut bad = bytes.to_vec();
            bad[i] ^= 1 << bit;
            assert!(
                Table::decode(Bytes::from(bad)).is_err(),
                "flip of bit {bit} at {i}"
            );
        }
    }
    for n in 0..bytes.len() {
        assert!(Table::decode(bytes.slice(..n)).is_err(), "cut to {n}");
    }
    assert!(matches!(
        TableFooter::decode(&tail(&bytes)[1..]),
        Err(TableError::Truncated(_))
    ));
}

#[test]
fn an_unknown_version_is_refused_by_number() {
    let bytes = build(&model(10));
    // In the footer, with the footer's checksum recomputed.
    let mut bad = bytes.to_vec();
    let at = bad.len() - TABLE_FOOTER_LEN + 32;
    bad[at..at + 2].copy_from_slice(&2u16.to_le_bytes());
    reseal_footer(&mut bad);
    let err = Table::decode(Bytes::from(bad.clone())).unwrap_err();
    assert_eq!(err, TableError::Version(2));
    assert!(err.to_string().contains("version 2"), "{err}");
    assert_eq!(TableFooter::decode(tail(&bad)), Err(TableError::Version(2)));

    // In the header, with the header checksum in the footer recomputed.
    let mut bad = bytes.to_vec();
    bad[8..10].copy_from_slice(&7u16.to_le_bytes());
    let crc = crc32c::crc32c(&bad[..TABLE_HEADER_LEN]);
    let at = bad.len() - TABLE_FOOTER_LEN + 24;
    bad[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    reseal_footer(&mut bad);
    assert_eq!(
        Table::decode(Bytes::from(bad)).unwrap_err(),
        TableError::Version(7)
    );
}

#[test]
fn a_footer_cannot_claim_more_than_the_limits() {
    let bytes = build(&model(10));
    let with = |at: usize, field: &[u8]| {
        let mut t = tail(&bytes).to_vec();
        t[at..at + field.len()].copy_from_slice(field);
        reseal_footer(&mut t);
        TableFooter::decode(&t)
    };
    assert!(matches!(
        with(16, &(MAX_INDEX_BYTES as u32 + 1).to_le_bytes()),
        Err(TableError::Limit(_))
    ));
    assert!(matches!(
        with(28, &u32::MAX.to_le_bytes()),
        Err(TableError::Layout(_))
    ));
    assert!(matches!(
        with(0, &u64::MAX.to_le_bytes()),
        Err(TableError::Layout(_))
    ));
    assert!(matches!(
        with(0, &3u64.to_le_bytes()),
        Err(TableError::Layout(_))
    ));
    assert!(matches!(
        with(8, &u64::MAX.to_le_bytes()),
        Err(TableError::Layout(_))
    ));
    assert!(matches!(
        with(8, &0u64.to_le_bytes()),
        Err(TableError::Layout(_))
    ));
    // A consistent footer whose counts disagree with the blocks: caught by the whole decode.
    let mut bad = bytes.to_vec();
    let at = bad.len() - TABLE_FOOTER_LEN + 8;
    bad[at..at + 8].copy_from_slice(&11u64.to_le_bytes());
    reseal_footer(&mut bad);
    assert!(matches!(
        Table::decode(Bytes::from(bad)),
        Err(TableError::Layout(_))
    ));
}

#[test]
fn a_block_must_start_with_the_key_the_index_names() {
    let bytes = build(&model(10));
    let h = index(&bytes).blocks()[0].clone();
    let data = bytes.slice(h.range.start as usize..h.range.end as usize);
    assert_eq!(Block::decode(&h, data.clone()).unwrap().len(), 10);
    let mut other = h.clone();
    other.first_key = Bytes::from(key(1));
    assert!(matches!(
        Block::decode(&other, data.clone()),
        Err(TableError::Layout(_))
    ));
    // A block cut inside an entry, with a checksum that matches.
    let cut = data.slice(..data.len() - 1);
    let mut short = h.clone();
    short.range.end -= 1;
    short.crc = crc32c::crc32c(&cut);
    assert!(matches!(
        Block::decode(&short, cut),
        Err(TableError::Truncated(_))
    ));
    // Bytes of the wrong length for the handle.
    assert!(matches!(
        Block::decode(&h, data.slice(1..)),
        Err(TableError::Truncated(_))
    ));
}

#[test]
fn a_large_entry_gets_a_block_of_its_own_and_limits_hold() {
    let big_key = vec![b'm'; MAX_KEY_BYTES];
    let big_value = vec![0xab; MAX_VALUE_BYTES];
    let mut b = TableBuilder::new();
    b.push(b"a", b"small").unwrap();
    b.push(&big_key, &big_value).unwrap();
    b.push(b"z", b"small").unwrap();

    // Refused, and nothing added.
    let before = b.len_estimate();
    let long_key = vec![b'z'; MAX_KEY_BYTES + 1];
    assert!(matches!(b.push(&long_key, b""), Err(TableError::Limit(_))));
    let long_value = vec![0; MAX_VALUE_BYTES + 1];
    assert!(matches!(
        b.push(b"zz", &long_value),
        Err(TableError::Limit(_))
    ));
    assert!(matches!(b.push(b"z", b""), Err(TableError::OutOfOrder(_))));
    assert!(matches!(b.push(b"b", b""), Err(TableError::OutOfOrder(_))));
    assert_eq!((b.len_estimate(), b.entries()), (before, 3));

    let bytes = b.finish();
    let t = Table::decode(bytes).unwrap();
    let blocks = t.index().blocks();
    assert_eq!(blocks.len(), 3);
    assert_eq!(&blocks[1].first_key[..], &big_key[..]);
    let big_len = (blocks[1].range.end - blocks[1].range.start) as usize;
    assert_eq!(big_len, 6 + MAX_KEY_BYTES + MAX_VALUE_BYTES);
    assert!(big_len <= MAX_BLOCK_BYTES);
    assert_eq!(t.floor(b"n"), Some((&big_key[..], &big_value[..])));
    assert_eq!(t.iter().count(), 3);
}

#[test]
fn merge_keeps_the_union_and_the_newer_value() {
    let table = |entries: &[(&str, &str)]| {
        let mut b = TableBuilder::new();
        for (k, v) in entries {
            b.push(k.as_bytes(), v.as_bytes()).unwrap();
        }
        Table::decode(b.finish()).unwrap()
    };
    let newer = table(&[("a", "new-a"), ("c", "new-c"), ("e", "new-e")]);
    let older = table(&[
        ("a", "old-a"),
        ("b", "old-b"),
        ("c", "old-c"),
        ("d", "old-d"),
    ]);
    let merged = Table::decode(merge(&newer, &older).unwrap()).unwrap();
    let got: Vec<(&[u8], &[u8])> = merged.iter().collect();
    let want: Vec<(&[u8], &[u8])> = vec![
        (b"a", b"new-a"),
        (b"b", b"old-b"),
        (b"c", b"new-c"),
        (b"d", b"old-d"),
        (b"e", b"new-e"),
    ];
    assert_eq!(got, want);
    let empty = table(&[]);
    assert_eq!(
        merge(&newer, &empty).unwrap(),
        merge(&empty, &newer).unwrap()
    );
    assert_eq!(
        Table::decode(merge(&empty, &empty).unwrap())
            .unwrap()
            .entries(),
        0
    );

    // Across many blocks, against a map.
    let old_m = model(6_000);
    let new_m: Model = (0..3_000u32)
        .map(|i| (key(4 * i + 1 + (i % 2)), vec![0xee; 30]))
        .collect();
    let merged = Table::decode(
        merge(
            &Table::decode(build(&new_m)).unwrap(),
            &Table::decode(build(&old_m)).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut want = old_m;
    want.extend(new_m);
    let got: Model = merged
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(merged.entries(), want.len() as u64);
    assert_eq!(got, want);
}

fn model_strategy() -> impl Strategy<Value = Model> {
    let key = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8),
        prop::collection::vec(0u8..4, 0..300),
    ];
    // Large values are runs of one byte: generating 30 KB of random bytes per value is slow.
    let value = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        (0usize..30_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ];
    prop::collection::btree_map(key, value, 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_tables_round_trip_and_answer_like_a_map(
        m in model_strategy(),
        probes in prop::collection::vec(prop::collection::vec(0u8..5, 0..6), 0..8),
    ) {
        let bytes = build(&m);
        let t = Table::decode(bytes.clone()).unwrap();
        let got: Model = t.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        prop_assert_eq!(&got, &m);
        for k in probes.iter().chain(m.keys()) {
            prop_assert_eq!(ranged_lookups(&bytes, k), model_lookups(&m, k));
        }
    }

    #[test]
    fn any_flipped_bit_is_detected(
        m in model_strategy(),
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let bytes = build(&m);
        let mut bad = bytes.to_vec();
        let i = pos.index(bad.len());
        bad[i] ^= 1 << bit;
        prop_assert!(Table::decode(Bytes::from(bad)).is_err(), "flip at {} of {}", i, bytes.len());
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Table::decode(Bytes::from(data.clone()));
        if data.len() >= TABLE_FOOTER_LEN {
            let mut d = data.clone();
            d[TABLE_FOOTER_LEN - 8..TABLE_FOOTER_LEN].copy_from_slice(b"ENDOFRUN");
            reseal_footer(&mut d[..TABLE_FOOTER_LEN]);
            if let Ok(f) = TableFooter::decode(&d[..TABLE_FOOTER_LEN]) {
                let _ = TableIndex::decode(&f, &data);
            }
        }
        // Arbitrary bytes past the checksums, so the parsers themselves see them.
        let f = TableFooter {
            index_offset: TABLE_HEADER_LEN as u64 + 100,
            entries: 1,
            index_len: data.len() as u32,
            index_crc: crc32c::crc32c(&data),
            header_crc: 0,
            blocks: (data.len() / 18) as u32,
        };
        let _ = TableIndex::decode(&f, &data);
        let h = BlockHandle {
            range: 0..data.len() as u64,
            crc: crc32c::crc32c(&data),
            first_key: Bytes::new(),
        };
        if let Ok(b) = Block::decode(&h, Bytes::from(data)) {
            let _ = (b.floor(b"\x01"), b.seek(b"\x01"), b.iter().count());
        }
    }
}
