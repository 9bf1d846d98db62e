//! Micro-benchmarks of the state machine's read paths on a realistic history: one volume with
//! 5000 commits of 2 pages each, scattered over 4096 pages, applied through the real RocksDB
//! state machine (segments seal by size as they fill).
//! - `changed_pages`: the PullChanges roll-up, every page written since an LSN as one Roaring
//!   bitmap, for a client 10, 100, 1000 and 5000 commits behind.
//! - `page_at`: the multi-version page-index lookup behind ReadPages, at the head and at an old
//!   snapshot.
//!
//!   cargo bench -p folio-state --bench state

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use folio_core::{CommitArgs, Durability, GroupId, Lsn, Page, PageIdx, PageWrite, VolumeId};
use folio_state::{open_store, Command, Request, StateReader, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

const COMMITS: u64 = 5000;
const PAGES_PER_COMMIT: u32 = 2;
const VOLUME_PAGES: u32 = 4096;
/// Commits per applied Raft entry while building the history (group commit).
const COMMITS_PER_ENTRY: u64 = 100;

fn page_idx(lsn: u64, j: u32) -> PageIdx {
    PageIdx(
        ((lsn as u32)
            .wrapping_mul(2_654_435_761)
            .wrapping_add(j * 97))
            % VOLUME_PAGES,
    )
}

/// Builds the history in a fresh store; the directory lives as long as the reader is used.
fn history() -> (tempfile::TempDir, StateReader, VolumeId) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_log, mut sm) = open_store(dir.path(), GroupId(1)).expect("open store");
    let v = VolumeId::new_random();
    let page = Page::new(Bytes::from(vec![0x5A; folio_core::PAGE_SIZE])).expect("one page");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut index = 0;
    let mut apply = |commands: Vec<Command>| {
        index += 1;
        let entry = Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request {
                time_ms: 1_000 + index,
                segment_bytes_max: 8 << 20,
                commands,
            }),
        };
        rt.block_on(sm.apply([entry])).expect("apply");
    };
    apply(vec![Command::CreateVolume { volume: v }]);
    for first in (1..=COMMITS).step_by(COMMITS_PER_ENTRY as usize) {
        let commands = (first..first + COMMITS_PER_ENTRY)
            .map(|lsn| {
                Command::commit(CommitArgs {
                    volume: v,
                    expected_lsn: Lsn(lsn - 1),
                    idempotency_key: Bytes::from(format!("k{lsn}")),
                    durability: Durability::Quorum,
                    pages: (0..PAGES_PER_COMMIT)
                        .map(|j| PageWrite {
                            idx: page_idx(lsn, j),
                            page: page.clone(),
                        })
                        .collect(),
                    refs: vec![],
                })
            })
            .collect();
        apply(commands);
    }
    let reader = sm.reader();
    assert_eq!(
        reader.volume(v).expect("read").expect("exists").lsn,
        Lsn(COMMITS),
        "every commit applied"
    );
    (dir, reader, v)
}

fn bench(c: &mut Criterion) {
    let (_dir, reader, v) = history();
    let head = Lsn(COMMITS);

    let mut g = c.benchmark_group("changed_pages");
    for behind in [10u64, 100, 1000, COMMITS] {
        g.throughput(Throughput::Elements(behind));
        g.bench_with_input(BenchmarkId::from_parameter(behind), &behind, |b, behind| {
            let since = Lsn(COMMITS - behind);
            b.iter(|| {
                reader
                    .changed_pages(black_box(v), since.next(), head)
                    .expect("roll-up")
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("page_at");
    g.throughput(Throughput::Elements(1));
    for (name, at) in [("head", head), ("old_snapshot", Lsn(COMMITS / 10))] {
        g.bench_function(name, |b| {
            let mut i = 0u32;
            b.iter(|| {
                i = i.wrapping_add(2_654_435_761);
                reader
                    .page_at(black_box(v), PageIdx(i % VOLUME_PAGES), at)
                    .expect("lookup")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
