//! Micro-benchmark of the apply of a `Checkpointed` command: the one apply that, under load,
//! stalls the state machine for tens of milliseconds once per checkpoint (RFC 0009, "Left",
//! item 3). The history is what 16 writers leave between two checkpoints: 16 volumes, one-page
//! commits applied 16 to an entry, a segment sealed and flushed every 1,700 commits (one second
//! at 16 writers); then one `Checkpointed` covers every flushed segment, and only its apply is
//! timed. Its apply drops the covered commits' page-index entries and commit records.
//!
//!   cargo bench -p folio-state --bench checkpoint

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use folio_core::{
    CommitArgs, Durability, GroupId, Lsn, Page, PageIdx, PageWrite, SegmentId, VolumeId,
};
use folio_state::{open_store, Command, Request, StateMachine, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

const VOLUMES: usize = 16;
const COMMITS_PER_ENTRY: usize = 16;
const COMMITS_PER_SEGMENT: usize = 1_700;
const VOLUME_PAGES: u32 = 4096;

/// A state machine in a fresh store, fed entries one at a time.
struct Feeder {
    _dir: tempfile::TempDir,
    sm: StateMachine,
    rt: tokio::runtime::Runtime,
    index: u64,
}

impl Feeder {
    fn new() -> Feeder {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_log, sm) = open_store(dir.path(), GroupId(1)).expect("open store");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        Feeder {
            _dir: dir,
            sm,
            rt,
            index: 0,
        }
    }

    fn apply(&mut self, commands: Vec<Command>) {
        self.index += 1;
        let entry = Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(Request {
                time_ms: 1_000 + self.index,
                segment_bytes_max: 1 << 30,
                commands,
            }),
        };
        self.rt.block_on(self.sm.apply([entry])).expect("apply");
    }

    /// Seals the open segment and marks it flushed, as the flusher would once it is uploaded.
    fn seal_and_flush(&mut self) -> SegmentId {
        let open = self.sm.reader().group_state().open.as_ref().map(|o| o.id);
        let segment = open.expect("an open segment");
        self.apply(vec![Command::Seal { segment }]);
        self.apply(vec![Command::Flushed { segment }]);
        segment
    }
}

/// A store with `commits` one-page commits over [`VOLUMES`] volumes, every segment flushed, and
/// the last segment flushed.
fn history(commits: usize) -> (Feeder, SegmentId) {
    let mut f = Feeder::new();
    let volumes: Vec<VolumeId> = (0..VOLUMES).map(|_| VolumeId::new_random()).collect();
    f.apply(
        volumes
            .iter()
            .map(|&volume| Command::CreateVolume { volume })
            .collect(),
    );
    let page = Page::new(Bytes::from(vec![0x5A; folio_core::PAGE_SIZE])).expect("one page");
    let mut lsn = [0u64; VOLUMES];
    let mut since_seal = 0;
    let mut n = 0;
    let mut last = None;
    while n < commits {
        let batch = COMMITS_PER_ENTRY.min(commits - n);
        let commands = (n..n + batch)
            .map(|i| {
                let v = i % VOLUMES;
                lsn[v] += 1;
                Command::commit(CommitArgs {
                    volume: volumes[v],
                    expected_lsn: Lsn(lsn[v] - 1),
                    idempotency_key: Bytes::from(format!("k{i}")),
                    durability: Durability::Quorum,
                    pages: vec![PageWrite {
                        idx: PageIdx((lsn[v] as u32).wrapping_mul(2_654_435_761) % VOLUME_PAGES),
                        page: page.clone(),
                    }],
                    refs: vec![],
                })
            })
            .collect();
        f.apply(commands);
        n += batch;
        since_seal += batch;
        if since_seal >= COMMITS_PER_SEGMENT || n == commits {
            last = Some(f.seal_and_flush());
            since_seal = 0;
        }
    }
    (f, last.expect("at least one commit"))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("checkpointed_apply");
    g.sample_size(10);
    for commits in [5_000usize, 20_000] {
        g.throughput(Throughput::Elements(commits as u64));
        g.bench_with_input(BenchmarkId::from_parameter(commits), &commits, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (mut f, through) = history(n);
                    let g = f.sm.reader().group_state();
                    assert!(g.open.is_none() && g.sealed.is_empty(), "all flushed");
                    let started = Instant::now();
                    f.apply(vec![Command::Checkpointed { seq: 1, through }]);
                    total += started.elapsed();
                    let g = f.sm.reader().group_state();
                    assert_eq!(g.manifest.map(|m| m.through), Some(through), "applied");
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
