//! Micro-benchmarks of the segment format on a segment the size the flusher writes under steady
//! load: 2000 pages (8 MiB) of 50 volumes, with one commit record per page (1-page commits).
//! Encoding runs on the leader for every flush; decoding the footer and index runs on the first
//! ranged read of a segment; a page lookup and its checksum run on every read from the store.
//!
//!   cargo bench -p folio-segment --bench segment

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use folio_core::{GroupId, Lsn, Page, PageIdx, PageLocation, SegmentId, VolumeId, PAGE_SIZE};
use folio_segment::{
    page_range, CommitEntry, Footer, Segment, SegmentBuilder, SegmentIndex, FOOTER_LEN,
};

const PAGES: usize = 2000;
const VOLUMES: usize = 50;

struct Input {
    id: SegmentId,
    pages: Vec<(VolumeId, PageIdx, Page)>,
    commits: Vec<CommitEntry>,
}

/// Incompressible page bytes, different for every page.
fn page(seed: u64) -> Page {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(PAGE_SIZE);
    while v.len() < PAGE_SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    Page::new(Bytes::from(v)).expect("exactly one page")
}

fn input() -> Input {
    let id = SegmentId::new(1_700_000_000_000, GroupId(1), 7);
    let volumes: Vec<VolumeId> = (0..VOLUMES).map(|_| VolumeId::new_random()).collect();
    let mut pages = Vec::with_capacity(PAGES);
    let mut commits = Vec::with_capacity(PAGES);
    for i in 0..PAGES {
        let v = volumes[i % VOLUMES];
        // Each volume writes its pages in a scattered order, as many small commits would.
        let idx = PageIdx(((i / VOLUMES) as u32).wrapping_mul(2_654_435_761) % 100_000);
        pages.push((v, idx, page(i as u64)));
        commits.push(CommitEntry {
            fingerprint: 0,
            volume: v,
            lsn: Lsn((i / VOLUMES) as u64 + 1),
            committed_at_ms: 1_700_000_000_000 + i as u64,
            idempotency_key: Bytes::from(format!("client-{}-commit-{i}", i % VOLUMES)),
            pages: vec![PageLocation {
                idx,
                segment: id,
                offset: (i * PAGE_SIZE) as u64,
            }],
        });
    }
    Input { id, pages, commits }
}

fn encode(input: &Input) -> Bytes {
    let mut b = SegmentBuilder::new(input.id);
    for c in &input.commits {
        b.add_commit(c.clone());
    }
    for (v, idx, p) in &input.pages {
        b.push(*v, *idx, p);
    }
    b.finish()
}

fn bench(c: &mut Criterion) {
    let input = input();
    let bytes = encode(&input);
    let mut g = c.benchmark_group("segment_2000_pages");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode", |b| b.iter(|| encode(black_box(&input))));
    g.bench_function("decode_verify_all", |b| {
        b.iter(|| Segment::decode(black_box(bytes.clone())).expect("valid segment"))
    });
    g.finish();

    let footer = Footer::decode(&bytes[bytes.len() - FOOTER_LEN..]).expect("valid footer");
    let r = footer.index_range();
    let index_bytes = bytes.slice(r.start as usize..r.end as usize);
    let index = SegmentIndex::decode(&footer, &index_bytes).expect("valid index");
    let mut g = c.benchmark_group("segment_index");
    g.throughput(Throughput::Elements(1));
    g.bench_function("footer_and_index_decode", |b| {
        b.iter(|| {
            let f = Footer::decode(black_box(&bytes[bytes.len() - FOOTER_LEN..])).expect("valid");
            SegmentIndex::decode(&f, black_box(&index_bytes)).expect("valid index")
        })
    });
    // Look up pages in a fixed pseudo-random order, so branch prediction cannot learn one key.
    let keys: Vec<(VolumeId, PageIdx)> = (0..1024)
        .map(|i| {
            let (v, idx, _) = &input.pages[(i * 7919) % PAGES];
            (*v, *idx)
        })
        .collect();
    g.bench_function("lookup_latest_one_page", |b| {
        let mut i = 0;
        b.iter(|| {
            let (v, idx) = keys[i % keys.len()];
            i += 1;
            index.latest(black_box(v), black_box(idx)).expect("present")
        })
    });
    let entry = *index.entries().first().expect("non-empty");
    let r = page_range(entry.offset);
    let page_bytes = bytes.slice(r.start as usize..r.end as usize);
    g.bench_function("verify_one_page", |b| {
        b.iter_batched(
            || page_bytes.clone(),
            |p| entry.verify(black_box(p)).expect("valid page"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
