//! The state machine's rules, applied directly: CAS on LSN, gap-free LSNs, idempotent retries
//! and their retention window, two-step commits, segment placement, and that applied state
//! survives reopening the store.

use bytes::Bytes;
use folio_core::limits::IDEMPOTENCY_RETAIN_COMMITS;
use folio_core::{
    CommitArgs, Durability, GroupId, Lsn, Page, PageIdx, PageWrite, VolumeId, WritePagesArgs,
    PAGE_SIZE,
};
use folio_state::{
    open_store, Command, CommandResult, Rejection, Request, StateMachine, TypeConfig,
};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

struct Harness {
    _dir: tempfile::TempDir,
    sm: StateMachine,
    index: u64,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm) = open_store(dir.path(), GroupId(3)).unwrap();
        Harness {
            _dir: dir,
            sm,
            index: 0,
        }
    }

    async fn apply_with(
        &mut self,
        segment_bytes_max: u64,
        commands: Vec<Command>,
    ) -> Vec<CommandResult> {
        self.index += 1;
        let entry = Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(Request {
                time_ms: 1_000 + self.index,
                segment_bytes_max,
                commands,
            }),
        };
        let mut out = self.sm.apply([entry]).await.unwrap();
        out.pop().unwrap().results
    }

    async fn apply(&mut self, commands: Vec<Command>) -> Vec<CommandResult> {
        self.apply_with(8 << 20, commands).await
    }

    async fn one(&mut self, c: Command) -> CommandResult {
        self.apply(vec![c]).await.pop().unwrap()
    }
}

impl Drop for Harness {
    /// A checkpoint starts a compaction thread; the test process must not exit under it.
    fn drop(&mut self) {
        assert!(
            folio_state::wait_for_background_compaction(std::time::Duration::from_secs(30)),
            "a history compaction still runs after 30 s"
        );
    }
}

fn page(fill: u8) -> Page {
    Page::new(Bytes::from(vec![fill; PAGE_SIZE])).unwrap()
}

fn commit(v: VolumeId, expected: u64, key: &str, pages: &[(u32, u8)]) -> Command {
    Command::commit(CommitArgs {
        volume: v,
        expected_lsn: Lsn(expected),
        idempotency_key: Bytes::copy_from_slice(key.as_bytes()),
        durability: Durability::Quorum,
        pages: pages
            .iter()
            .map(|(i, f)| PageWrite {
                idx: PageIdx(*i),
                page: page(*f),
            })
            .collect(),
        refs: vec![],
    })
}

fn lsn_of(r: &CommandResult) -> (u64, bool) {
    match r {
        CommandResult::Committed {
            lsn, deduplicated, ..
        } => (lsn.0, *deduplicated),
        other => panic!("expected a commit, got {other:?}"),
    }
}

#[tokio::test]
async fn cas_lsns_are_gap_free_and_conflicts_report_current() {
    let mut h = Harness::new();
    let v = VolumeId::new_random();
    assert_eq!(
        h.one(Command::CreateVolume { volume: v }).await,
        CommandResult::VolumeCreated { volume: v }
    );
    assert_eq!(
        h.one(Command::CreateVolume { volume: v }).await,
        CommandResult::Rejected(Rejection::VolumeExists(v))
    );
    // Several commits in one entry see each other: the second builds on the first.
    let rs = h
        .apply(vec![
            commit(v, 0, "a", &[(0, 1)]),
            commit(v, 1, "b", &[(1, 2)]),
            commit(v, 1, "c", &[(2, 3)]),
        ])
        .await;
    assert_eq!(lsn_of(&rs[0]), (1, false));
    assert_eq!(lsn_of(&rs[1]), (2, false));
    assert_eq!(
        rs[2],
        CommandResult::Rejected(Rejection::Conflict {
            volume: v,
            expected: Lsn(1),
            current: Lsn(2)
        })
    );
    assert_eq!(lsn_of(&h.one(commit(v, 2, "d", &[])).await), (3, false));
    let other = VolumeId::new_random();
    assert_eq!(
        h.one(commit(other, 0, "x", &[])).await,
        CommandResult::Rejected(Rejection::UnknownVolume(other))
    );
    let reader = h.sm.reader();
    let history = reader.commits(v, Lsn(1), 100).unwrap();
    assert_eq!(
        history.iter().map(|c| c.lsn.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(reader.volume(v).unwrap().unwrap().lsn, Lsn(3));
}

#[tokio::test]
async fn idempotent_retries_return_the_original_result() {
    let mut h = Harness::new();
    let v = VolumeId::new_random();
    h.one(Command::CreateVolume { volume: v }).await;
    let first = h.one(commit(v, 0, "k1", &[(5, 9)])).await;
    assert_eq!(lsn_of(&first), (1, false));
    // The same request again: the original answer, flagged, and no new LSN.
    let again = h.one(commit(v, 0, "k1", &[(5, 9)])).await;
    let (
        CommandResult::Committed { pages: p1, .. },
        CommandResult::Committed {
            pages: p2,
            deduplicated,
            ..
        },
    ) = (&first, &again)
    else {
        panic!("commits expected");
    };
    assert!(deduplicated);
    assert_eq!(p1, p2);
    // Rebased onto a newer LSN with the same key: still the original result.
    h.one(commit(v, 1, "k2", &[])).await;
    assert_eq!(
        lsn_of(&h.one(commit(v, 2, "k1", &[(5, 9)])).await),
        (1, true)
    );
    // The same key for different pages is refused.
    assert_eq!(
        h.one(commit(v, 2, "k1", &[(5, 8)])).await,
        CommandResult::Rejected(Rejection::KeyReused {
            volume: v,
            lsn: Lsn(1)
        })
    );
    assert_eq!(h.sm.reader().volume(v).unwrap().unwrap().lsn, Lsn(2));
}

#[tokio::test]
async fn idempotency_keys_are_retained_for_a_bounded_window() {
    let mut h = Harness::new();
    let v = VolumeId::new_random();
    h.one(Command::CreateVolume { volume: v }).await;
    let n = IDEMPOTENCY_RETAIN_COMMITS + 2;
    let mut lsn = 0;
    // Batches of commits, as group commit would make them.
    while lsn < n {
        let cmds: Vec<_> = (lsn..(lsn + 256).min(n))
            .map(|i| commit(v, i, &format!("k{i}"), &[]))
            .collect();
        for r in h.apply(cmds).await {
            lsn = lsn_of(&r).0;
        }
    }
    assert_eq!(lsn, n);
    // k0 (LSN 1) and k1 (LSN 2) left the window; k2 (LSN 3) is still in it.
    assert!(matches!(
        h.one(commit(v, 0, "k0", &[])).await,
        CommandResult::Rejected(Rejection::Conflict { .. })
    ));
    assert_eq!(lsn_of(&h.one(commit(v, 2, "k2", &[])).await), (3, true));
}

#[tokio::test]
async fn two_step_commit_checks_refs() {
    let mut h = Harness::new();
    let (v, w) = (VolumeId::new_random(), VolumeId::new_random());
    h.apply(vec![
        Command::CreateVolume { volume: v },
        Command::CreateVolume { volume: w },
    ])
    .await;
    let written = h
        .one(Command::WritePages {
            args: WritePagesArgs {
                volume: v,
                pages: vec![PageWrite {
                    idx: PageIdx(7),
                    page: page(1),
                }],
            },
        })
        .await;
    let CommandResult::PagesWritten { pages } = written else {
        panic!("pages expected")
    };
    let refs = pages.clone();
    let mk = |vol, refs| {
        Command::commit(CommitArgs {
            volume: vol,
            expected_lsn: Lsn(0),
            idempotency_key: Bytes::from_static(b"two-step"),
            durability: Durability::Quorum,
            pages: vec![],
            refs,
        })
    };
    // Refs of another volume's upload are refused.
    assert!(matches!(
        h.one(mk(w, refs.clone())).await,
        CommandResult::Rejected(Rejection::BadRef { .. })
    ));
    let mut wrong_idx = refs.clone();
    wrong_idx[0].idx = PageIdx(8);
    assert!(matches!(
        h.one(mk(v, wrong_idx)).await,
        CommandResult::Rejected(Rejection::BadRef { .. })
    ));
    match h.one(mk(v, refs)).await {
        CommandResult::Committed {
            lsn, pages: got, ..
        } => {
            assert_eq!(lsn, Lsn(1));
            assert_eq!(got, pages);
        }
        other => panic!("commit expected, got {other:?}"),
    }
    let buffered =
        h.sm.reader()
            .buffered_page(pages[0].segment, pages[0].offset)
            .unwrap()
            .unwrap();
    assert_eq!(buffered.as_ref(), page(1).bytes().as_ref());
}

#[tokio::test]
async fn pages_fill_segments_up_to_the_limit_in_order() {
    let mut h = Harness::new();
    let v = VolumeId::new_random();
    h.one(Command::CreateVolume { volume: v }).await;
    // Three pages per segment, and room for a few commit records (which count too).
    let limit = 3 * PAGE_SIZE as u64 + 1024;
    let rs = h
        .apply_with(
            limit,
            vec![commit(v, 0, "a", &[(0, 1), (1, 1), (2, 1), (3, 1)])],
        )
        .await;
    let CommandResult::Committed { pages, .. } = &rs[0] else {
        panic!()
    };
    assert_eq!(pages[0].segment, pages[2].segment);
    assert_ne!(pages[2].segment, pages[3].segment);
    assert!(pages[3].segment > pages[2].segment, "segment ids increase");
    assert_eq!(
        pages.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![0, 4096, 8192, 0]
    );
    let g = h.sm.reader().group_state();
    assert_eq!(g.sealed.len(), 1);
    assert_eq!(g.buffered_bytes, 4 * PAGE_SIZE as u64);
}

#[tokio::test]
async fn applied_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let v = VolumeId::new_random();
    {
        let (_l, sm) = open_store(dir.path(), GroupId(3)).unwrap();
        let mut h = Harness {
            _dir: tempfile::tempdir().unwrap(),
            sm,
            index: 0,
        };
        h.one(Command::CreateVolume { volume: v }).await;
        h.one(commit(v, 0, "a", &[(0, 1)])).await;
    }
    let (_l, mut sm) = open_store(dir.path(), GroupId(3)).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.unwrap().index, 2);
    assert_eq!(sm.reader().volume(v).unwrap().unwrap().lsn, Lsn(1));
}

#[tokio::test]
async fn snapshot_moves_the_whole_state_to_a_fresh_replica() {
    use openraft::RaftSnapshotBuilder;
    use tokio::io::AsyncWriteExt;

    let mut a = Harness::new();
    let v = VolumeId::new_random();
    a.one(Command::CreateVolume { volume: v }).await;
    let rs = a
        .apply(vec![
            commit(v, 0, "a", &[(0, 1), (9, 2)]),
            commit(v, 1, "b", &[(0, 3)]),
        ])
        .await;
    let CommandResult::Committed { pages, .. } = &rs[1] else {
        panic!()
    };
    let loc = pages[0];

    let snap =
        a.sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    assert_eq!(snap.meta.last_log_id.unwrap().index, 2);
    let current = a.sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snap.meta);
    let bytes = folio_state::snapshot::read_all(current.snapshot)
        .await
        .unwrap();

    let mut b = Harness::new();
    let mut f = b.sm.begin_receiving_snapshot().await.unwrap();
    f.write_all(&bytes).await.unwrap();
    f.flush().await.unwrap();
    b.sm.install_snapshot(&snap.meta, f).await.unwrap();

    let (applied, _) = b.sm.applied_state().await.unwrap();
    assert_eq!(applied, snap.meta.last_log_id);
    let (ra, rb) = (a.sm.reader(), b.sm.reader());
    assert_eq!(rb.volume(v).unwrap(), ra.volume(v).unwrap());
    assert_eq!(
        rb.commits(v, Lsn(1), 10).unwrap(),
        ra.commits(v, Lsn(1), 10).unwrap()
    );
    assert_eq!(
        rb.buffered_page(loc.segment, loc.offset)
            .unwrap()
            .unwrap()
            .as_ref(),
        page(3).bytes().as_ref()
    );
    assert_eq!(rb.group_state(), ra.group_state());
    // The installed replica goes on exactly where the source would: same next LSN and segment slot.
    let next_a = a.one(commit(v, 2, "c", &[(1, 4)])).await;
    b.index = a.index - 1;
    let next_b = b.one(commit(v, 2, "c", &[(1, 4)])).await;
    assert_eq!(next_a, next_b);

    // A corrupted snapshot is refused and leaves the state machine as it was.
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    let mut c = Harness::new();
    let mut f = c.sm.begin_receiving_snapshot().await.unwrap();
    f.write_all(&bad).await.unwrap();
    assert!(c.sm.install_snapshot(&snap.meta, f).await.is_err());
    assert!(c.sm.reader().volume(v).unwrap().is_none());
}

fn open_segment(h: &Harness) -> folio_core::SegmentId {
    h.sm.reader()
        .group_state()
        .open
        .expect("a segment is open")
        .id
}

#[tokio::test]
async fn seal_then_flushed_drops_the_buffer_and_both_are_idempotent() {
    let mut h = Harness::new();
    let v = VolumeId::new_random();
    h.one(Command::CreateVolume { volume: v }).await;
    let rs = h.apply(vec![commit(v, 0, "a", &[(3, 1), (4, 2)])]).await;
    let CommandResult::Committed { pages, segment, .. } = &rs[0] else {
        panic!("commit expected")
    };
    let id = open_segment(&h);
    assert_eq!(*segment, id, "the record rides in the open segment");
    let reader = h.sm.reader();
    assert!(
        reader.build_segment(id).unwrap().is_none(),
        "not sealed yet"
    );
    assert_eq!(
        h.one(Command::Seal { segment: id }).await,
        CommandResult::Sealed(true)
    );
    assert_eq!(
        h.one(Command::Seal { segment: id }).await,
        CommandResult::Sealed(false)
    );
    let g = reader.group_state();
    assert!(g.open.is_none());
    assert_eq!(g.sealed.len(), 1);
    assert!(!g.is_flushed(id));

    let obj = reader
        .build_segment(id)
        .unwrap()
        .expect("sealed segment builds");
    assert_eq!((obj.pages, obj.commits), (2, 2));
    let seg = folio_segment::Segment::decode(obj.bytes.clone()).unwrap();
    assert_eq!(seg.id, id);
    for p in pages {
        let e = seg
            .index
            .get(v, p.idx, p.offset)
            .expect("page in the index");
        let want = if p.idx == PageIdx(3) {
            page(1)
        } else {
            page(2)
        };
        assert_eq!(seg.page(e).unwrap(), want);
    }
    let lsns: Vec<u64> = seg.commits.iter().map(|c| c.lsn.0).collect();
    assert_eq!(
        lsns,
        vec![0, 1],
        "the volume's creation and its first commit"
    );
    assert_eq!(seg.commits[1].idempotency_key.as_ref(), b"a");
    assert_eq!(seg.commits[1].pages, *pages);

    assert_eq!(
        h.one(Command::Flushed { segment: id }).await,
        CommandResult::Flushed(2 * PAGE_SIZE as u64)
    );
    assert_eq!(
        h.one(Command::Flushed { segment: id }).await,
        CommandResult::Flushed(0)
    );
    let g = reader.group_state();
    assert!(g.is_flushed(id) && g.sealed.is_empty());
    assert_eq!((g.buffered_bytes, g.flushed_segments), (0, 1));
    assert!(reader.buffered_page(id, 0).unwrap().is_none());
    assert!(reader.build_segment(id).unwrap().is_none());
    // History stays: the commit and its page locations are metadata, not buffer.
    assert_eq!(reader.commits(v, Lsn(1), 10).unwrap()[0].pages, *pages);
}

#[tokio::test]
async fn the_group_watch_wakes_for_segment_changes_not_for_each_commit() {
    let mut h = Harness::new();
    let reader = h.sm.reader();
    let mut group = reader.watch_group();
    let v = VolumeId::new_random();
    h.one(Command::CreateVolume { volume: v }).await;
    h.apply(vec![commit(v, 0, "a", &[(1, 1)])]).await;
    assert!(group.has_changed().unwrap(), "the first segment opened");
    group.borrow_and_update();
    let id = open_segment(&h);
    let before = reader.group_state().buffered_bytes;
    h.apply(vec![commit(v, 1, "b", &[(2, 2)])]).await;
    assert!(
        !group.has_changed().unwrap(),
        "a commit into the open segment woke the group's waiters"
    );
    // The state itself is current all the same.
    assert_eq!(
        reader.group_state().buffered_bytes,
        before + PAGE_SIZE as u64
    );
    assert_eq!(group.borrow().buffered_bytes, before + PAGE_SIZE as u64);
    h.one(Command::Seal { segment: id }).await;
    assert!(group.has_changed().unwrap(), "a seal wakes them");
    group.borrow_and_update();
    h.one(Command::Flushed { segment: id }).await;
    assert!(group.has_changed().unwrap(), "a flush wakes them");
}

#[tokio::test]
async fn every_replica_builds_the_same_segment_bytes() {
    let (mut a, mut b) = (Harness::new(), Harness::new());
    let v = VolumeId::new_random();
    let entries = vec![
        vec![Command::CreateVolume { volume: v }],
        vec![
            commit(v, 0, "a", &[(1, 1), (2, 2)]),
            commit(v, 1, "b", &[(1, 3)]),
        ],
        vec![commit(v, 2, "c", &[])],
    ];
    for e in &entries {
        assert_eq!(a.apply(e.clone()).await, b.apply(e.clone()).await);
    }
    let id = open_segment(&a);
    assert_eq!(id, open_segment(&b));
    a.one(Command::Seal { segment: id }).await;
    b.one(Command::Seal { segment: id }).await;
    let (x, y) = (
        a.sm.reader().build_segment(id).unwrap().unwrap(),
        b.sm.reader().build_segment(id).unwrap().unwrap(),
    );
    assert_eq!(x.bytes, y.bytes);
}

#[tokio::test]
async fn a_refs_only_commit_still_carries_its_record() {
    let mut h = Harness::new();
    let v = VolumeId::new_random();
    h.one(Command::CreateVolume { volume: v }).await;
    let first = open_segment(&h);
    h.one(Command::Seal { segment: first }).await;
    h.one(Command::Flushed { segment: first }).await;
    assert!(h.sm.reader().group_state().open.is_none());
    // An empty commit opens a segment for its record alone.
    let rs = h.apply(vec![commit(v, 0, "empty", &[])]).await;
    let CommandResult::Committed { segment, pages, .. } = &rs[0] else {
        panic!()
    };
    assert!(pages.is_empty());
    assert_eq!(*segment, open_segment(&h));
    assert!(*segment > first);
}

/// Seals and flushes the open segment; returns it.
async fn seal_and_flush(h: &mut Harness) -> folio_core::SegmentId {
    let id = seal_only(h).await;
    h.one(Command::Flushed { segment: id }).await;
    id
}

/// Applies `Checkpointed { seq, through }` alone and returns its result.
async fn checkpointed(h: &mut Harness, seq: u64, through: folio_core::SegmentId) -> CommandResult {
    h.one(Command::Checkpointed { seq, through }).await
}

/// A planner that keeps its counts between plans gets the same plans as one that reads every
/// commit record each time, through flushes, cuts at `entries_max` and checkpoints, and keeps
/// counts only for the segments still waiting.
#[tokio::test]
async fn plans_from_kept_counts_match_plans_read_afresh() {
    let mut h = Harness::new();
    let (a, b) = (VolumeId::new_random(), VolumeId::new_random());
    h.one(Command::CreateVolume { volume: a }).await;
    h.one(Command::CreateVolume { volume: b }).await;
    let reader = h.sm.reader();
    let mut counts = folio_state::PlanCounts::default();
    let mut segments = Vec::new();
    for round in 0..4u64 {
        // Three commits of one to three pages per segment, on both volumes.
        for i in 0..3u64 {
            let pages: Vec<(u32, u8)> = (0..=i as u32).map(|p| (p, round as u8 + 1)).collect();
            let (v, n) = if i % 2 == 0 {
                (a, round * 2 + i / 2)
            } else {
                (b, round)
            };
            let r = h.one(commit(v, n, &format!("{round}-{i}"), &pages)).await;
            assert!(matches!(r, CommandResult::Committed { .. }), "{r:?}");
        }
        segments.push(seal_and_flush(&mut h).await);
        for max in [1, 5, 8, 12, 1_000] {
            let fresh = reader.checkpoint_plan(max).unwrap();
            let counted = reader.checkpoint_plan_counted(max, &mut counts).unwrap();
            assert_eq!(counted, fresh, "round {round}, entries_max {max}");
        }
        assert_eq!(
            counts.len(),
            segments.len(),
            "every waiting segment counted"
        );
    }
    // A checkpoint of the first two segments: their counts are forgotten by the next plan.
    assert_eq!(
        checkpointed(&mut h, 1, segments[1]).await,
        CommandResult::Checkpointed(true)
    );
    let fresh = reader.checkpoint_plan(1_000).unwrap();
    assert_eq!(
        reader.checkpoint_plan_counted(1_000, &mut counts).unwrap(),
        fresh
    );
    assert_eq!(fresh.unwrap().first, segments[2]);
    assert_eq!(counts.len(), 2);
    // Everything covered: nothing to plan, nothing kept.
    assert_eq!(
        checkpointed(&mut h, 2, segments[3]).await,
        CommandResult::Checkpointed(true)
    );
    assert!(reader
        .checkpoint_plan_counted(1_000, &mut counts)
        .unwrap()
        .is_none());
    assert!(counts.is_empty());
}

#[tokio::test]
async fn a_checkpoint_drops_only_flushed_history_and_only_in_sequence() {
    let mut h = Harness::new();
    let v = VolumeId::new_random();
    h.one(Command::CreateVolume { volume: v }).await;
    h.one(commit(v, 0, "a", &[(0, 1), (1, 1)])).await;
    let first = seal_and_flush(&mut h).await;
    h.one(commit(v, 1, "b", &[(0, 2)])).await;
    let second = open_segment(&h);
    let reader = h.sm.reader();

    // The plan stops before the open segment, and the run holds the flushed one's history.
    let plan = reader.checkpoint_plan(1_000).unwrap().unwrap();
    assert_eq!((plan.first, plan.through, plan.segments), (first, first, 1));
    assert_eq!(
        plan.entries,
        1 + 1 + 2,
        "creation, one commit record, two page versions"
    );
    let run = reader.build_run(first).unwrap().unwrap();
    assert_eq!(
        run.entries,
        1 + 2 + 1,
        "commit, two pages, the volume's head"
    );
    let table = folio_segment::table::Table::decode(run.bytes.clone()).unwrap();
    assert_eq!(table.entries(), run.entries);
    assert!(
        reader.build_run(second).unwrap().is_none(),
        "not flushed yet"
    );

    // Out of sequence, or over an unflushed segment: refused.
    for (seq, through) in [(2, first), (1, second)] {
        assert_eq!(
            checkpointed(&mut h, seq, through).await,
            CommandResult::Checkpointed(false)
        );
    }
    assert_eq!(
        checkpointed(&mut h, 1, first).await,
        CommandResult::Checkpointed(true)
    );
    // A version may keep `through` (a rewrite of the runs), never move it back.
    let earlier = folio_core::SegmentId::new(1, GroupId(3), 0);
    assert_eq!(
        checkpointed(&mut h, 2, earlier).await,
        CommandResult::Checkpointed(false),
        "a checkpoint never moves back"
    );
    assert_eq!(
        checkpointed(&mut h, 2, first).await,
        CommandResult::Checkpointed(true),
        "a rewrite keeps `through`"
    );
    // LSN 1 left the node; LSN 2 (open segment) is still here.
    assert!(reader.page_at(v, PageIdx(1), Lsn(1)).unwrap().is_none());
    assert_eq!(
        reader.page_at(v, PageIdx(0), Lsn(5)).unwrap().unwrap().0,
        Lsn(2)
    );
    let local: Vec<u64> = reader
        .commits(v, Lsn(1), 10)
        .unwrap()
        .iter()
        .map(|c| c.lsn.0)
        .collect();
    assert_eq!(local, vec![2]);
    assert_eq!(reader.manifest().unwrap().unwrap().through, first);
    assert!(reader.checkpoint_plan(1_000).unwrap().is_none());

    // A retry of LSN 1 is still recognised; its pages come from the manifest (none here).
    let r = h.one(commit(v, 0, "a", &[(0, 1), (1, 1)])).await;
    assert_eq!(
        r,
        CommandResult::Committed {
            lsn: Lsn(1),
            pages: vec![],
            deduplicated: true,
            segment: first,
        }
    );
}

#[tokio::test]
async fn a_rebuild_restores_heads_history_and_keys_and_refuses_writes_meanwhile() {
    use folio_state::{RestoreStep, RestoredCommit};
    let mut h = Harness::new();
    let v = VolumeId::new_random();
    let seg = folio_core::SegmentId::new(500, GroupId(3), 4);
    assert_eq!(
        h.one(Command::Restore {
            step: RestoreStep::Begin {
                manifest: None,
                last_time_ms: 900_000,
                next_segment_seq: 5,
            }
        })
        .await,
        CommandResult::Restored
    );
    assert_eq!(
        h.one(Command::CreateVolume { volume: v }).await,
        CommandResult::Rejected(Rejection::Restoring)
    );
    let head = folio_state::state::VolumeHead::new(Lsn(1), 7);
    // A volume whose only records after the checkpoint are its creation and a retention change.
    let w = VolumeId::new_random();
    let own = folio_state::state::Retention {
        ms: 60_000,
        commits: 2,
    };
    let w_head = folio_state::state::VolumeHead {
        retention: Some(own),
        ..folio_state::state::VolumeHead::new(Lsn(0), 7)
    };
    h.one(Command::Restore {
        step: RestoreStep::Volumes {
            heads: vec![(v, head), (w, w_head)],
        },
    })
    .await;
    let event = |lsn: Lsn, key: Bytes| RestoredCommit {
        volume: w,
        lsn,
        committed_at_ms: 7,
        idempotency_key: key,
        fingerprint: 0,
        pages: vec![],
        segment: seg,
        indexed: true,
    };
    h.one(Command::Restore {
        step: RestoreStep::Commits {
            records: vec![
                event(Lsn(0), Bytes::new()),
                event(
                    folio_state::state::RETENTION_LSN,
                    folio_state::state::retention_record_key(Some(&own)),
                ),
            ],
        },
    })
    .await;
    let loc = folio_core::PageLocation {
        idx: PageIdx(4),
        segment: seg,
        offset: 0,
    };
    let original = commit(v, 0, "k", &[(4, 9)]);
    let Command::Commit { fingerprint, .. } = &original else {
        panic!()
    };
    h.one(Command::Restore {
        step: RestoreStep::Commits {
            records: vec![RestoredCommit {
                volume: v,
                lsn: Lsn(1),
                committed_at_ms: 8,
                idempotency_key: Bytes::from_static(b"k"),
                fingerprint: *fingerprint,
                pages: vec![loc],
                segment: seg,
                indexed: true,
            }],
        },
    })
    .await;
    h.one(Command::Restore {
        step: RestoreStep::End,
    })
    .await;
    let reader = h.sm.reader();
    assert_eq!(reader.volume(v).unwrap(), Some(head));
    // The next checkpoint writes both heads, the event-only volume's with its retention.
    let run = reader.build_run(seg).unwrap().unwrap();
    let table = folio_segment::table::Table::decode(run.bytes).unwrap();
    let heads: std::collections::BTreeMap<_, _> = table
        .iter()
        .filter(|(k, _)| k[0] == folio_state::runs::HEAD)
        .map(|(k, val)| folio_state::runs::parse_head(k, val).unwrap())
        .collect();
    assert_eq!(heads.get(&v).map(|h| h.lsn), Some(Lsn(1)));
    assert_eq!(
        heads.get(&w).map(|h| (h.lsn, h.retention)),
        Some((Lsn(0), Some(own)))
    );
    assert_eq!(
        reader.page_at(v, PageIdx(4), Lsn(1)).unwrap(),
        Some((Lsn(1), loc))
    );
    // The retry is answered from the restored window; the next commit continues the LSNs in a
    // segment numbered after the bucket's.
    assert_eq!(lsn_of(&h.one(original).await), (1, true));
    assert_eq!(
        lsn_of(&h.one(commit(v, 1, "next", &[(4, 1)])).await),
        (2, false)
    );
    let open = open_segment(&h);
    assert!(open > seg && open.seq() >= 5, "{open}");
    // A second rebuild of a group that holds state is refused.
    assert!(matches!(
        h.one(Command::Restore {
            step: RestoreStep::Begin {
                manifest: None,
                last_time_ms: 0,
                next_segment_seq: 0,
            }
        })
        .await,
        CommandResult::Rejected(Rejection::RestoreRefused(_))
    ));
}

#[tokio::test]
async fn deleting_a_volume_retires_its_id_and_records_the_deletion() {
    let mut h = Harness::new();
    let v = VolumeId::new_random();
    h.one(Command::CreateVolume { volume: v }).await;
    h.one(commit(v, 0, "a", &[(0, 1)])).await;
    assert_eq!(
        h.one(Command::DeleteVolume { volume: v }).await,
        CommandResult::VolumeDeleted {
            volume: v,
            already: false
        }
    );
    assert_eq!(
        h.one(Command::DeleteVolume { volume: v }).await,
        CommandResult::VolumeDeleted {
            volume: v,
            already: true
        }
    );
    let deleted = CommandResult::Rejected(Rejection::Deleted(v));
    assert_eq!(h.one(commit(v, 1, "b", &[(0, 2)])).await, deleted);
    // Not even a retry of an earlier commit: the window went with the volume.
    assert_eq!(h.one(commit(v, 0, "a", &[(0, 1)])).await, deleted);
    assert_eq!(
        h.one(Command::CreateVolume { volume: v }).await,
        CommandResult::Rejected(Rejection::IdRetired(v))
    );
    let other = VolumeId::new_random();
    assert_eq!(
        h.one(Command::DeleteVolume { volume: other }).await,
        CommandResult::Rejected(Rejection::UnknownVolume(other))
    );
    let reader = h.sm.reader();
    assert!(reader.volume(v).unwrap().unwrap().deleted);

    // The deletion travels in the segment after the volume's records, and into the run.
    let id = seal_only(&mut h).await;
    let obj = reader.build_segment(id).unwrap().unwrap();
    let seg = folio_segment::Segment::decode(obj.bytes).unwrap();
    let lsns: Vec<u64> = seg.commits.iter().map(|c| c.lsn.0).collect();
    assert_eq!(lsns, vec![0, 1, u64::MAX]);
    assert_eq!(
        seg.commits[2].idempotency_key.as_ref(),
        folio_state::state::DELETION_RECORD_KEY
    );
    h.one(Command::Flushed { segment: id }).await;
    let run = reader.build_run(id).unwrap().unwrap();
    let table = folio_segment::table::Table::decode(run.bytes).unwrap();
    let (k, val) = table
        .iter()
        .find(|(k, _)| k[0] == folio_state::runs::HEAD)
        .unwrap();
    let (_, head) = folio_state::runs::parse_head(k, val).unwrap();
    assert!(head.deleted && head.lsn == Lsn(1), "{head:?}");
}

/// Seals the open segment and returns it, leaving it unflushed (so it can still be built).
async fn seal_only(h: &mut Harness) -> folio_core::SegmentId {
    let id = open_segment(h);
    h.one(Command::Seal { segment: id }).await;
    id
}

#[tokio::test]
async fn horizons_only_move_forward_and_never_past_the_head() {
    let mut h = Harness::new();
    let v = VolumeId::new_random();
    h.one(Command::CreateVolume { volume: v }).await;
    for l in 0..3 {
        h.one(commit(v, l, &format!("k{l}"), &[(0, l as u8)])).await;
    }
    let horizon = |h: &Harness| h.sm.reader().volume(v).unwrap().unwrap().horizon;
    let retain = |l: u64| Command::Retain {
        horizons: vec![(v, Lsn(l)), (VolumeId::new_random(), Lsn(l))],
        under: vec![],
    };
    assert_eq!(h.one(retain(2)).await, CommandResult::Retained(1));
    assert_eq!(horizon(&h), Lsn(2));
    assert_eq!(h.one(retain(1)).await, CommandResult::Retained(0));
    assert_eq!(horizon(&h), Lsn(2));
    // Computed under the default retention, but the volume got its own since: left alone.
    let own = folio_state::state::Retention {
        ms: 3_600_000,
        commits: 10,
    };
    h.one(Command::SetRetention {
        volume: v,
        retention: Some(own),
    })
    .await;
    let stale = Command::Retain {
        horizons: vec![(v, Lsn(3))],
        under: vec![None],
    };
    assert_eq!(h.one(stale).await, CommandResult::Retained(0));
    assert_eq!(horizon(&h), Lsn(2));
    let current = Command::Retain {
        horizons: vec![(v, Lsn(3))],
        under: vec![Some(own)],
    };
    assert_eq!(h.one(current).await, CommandResult::Retained(1));
    assert_eq!(horizon(&h), Lsn(3));
    assert_eq!(h.one(retain(9)).await, CommandResult::Retained(0));
    assert_eq!(horizon(&h), Lsn(3), "never past the head");
}

#[tokio::test]
async fn a_fork_starts_at_its_sources_snapshot_and_records_it() {
    let mut h = Harness::new();
    let v = VolumeId::new_random();
    h.one(Command::CreateVolume { volume: v }).await;
    for l in 0..3 {
        h.one(commit(v, l, &format!("k{l}"), &[(0, l as u8)])).await;
    }
    h.one(Command::Retain {
        horizons: vec![(v, Lsn(1))],
        under: vec![],
    })
    .await;
    let fork = |volume, source, at| Command::ForkVolume { volume, source, at };
    let f = VolumeId::new_random();
    assert_eq!(
        h.one(fork(f, v, None)).await,
        CommandResult::VolumeForked {
            volume: f,
            source: v,
            at: Lsn(3)
        }
    );
    let reader = h.sm.reader();
    let head = reader.volume(f).unwrap().unwrap();
    assert_eq!(head.lsn, Lsn(0));
    assert_eq!(
        head.base,
        Some(folio_state::state::ForkBase {
            volume: v,
            lsn: Lsn(3)
        })
    );
    for (at, why) in [(4, "past the head"), (0, "below the horizon")] {
        let g = VolumeId::new_random();
        assert!(
            matches!(
                h.one(fork(g, v, Some(Lsn(at)))).await,
                CommandResult::Rejected(Rejection::ForkPoint { .. })
            ),
            "{why}"
        );
    }
    assert_eq!(
        h.one(fork(f, v, Some(Lsn(2)))).await,
        CommandResult::Rejected(Rejection::VolumeExists(f))
    );
    let missing = VolumeId::new_random();
    assert_eq!(
        h.one(fork(VolumeId::new_random(), missing, None)).await,
        CommandResult::Rejected(Rejection::UnknownVolume(missing))
    );
    // The fork is a volume of its own: its commits start at LSN 1 and leave the source alone.
    assert_eq!(
        lsn_of(&h.one(commit(f, 0, "f1", &[(0, 9)])).await),
        (1, false)
    );
    assert_eq!(reader.volume(v).unwrap().unwrap().lsn, Lsn(3));

    // Its creation record names the source.
    let id = seal_only(&mut h).await;
    let seg =
        folio_segment::Segment::decode(reader.build_segment(id).unwrap().unwrap().bytes).unwrap();
    let created = seg
        .commits
        .iter()
        .find(|c| c.volume == f && c.lsn == Lsn(0))
        .unwrap();
    assert_eq!(
        folio_state::state::parse_fork_record_key(&created.idempotency_key).unwrap(),
        head.base
    );

    // Forks of forks, up to the depth limit.
    let mut src = f;
    for _ in 1..folio_state::state::MAX_FORK_DEPTH {
        let g = VolumeId::new_random();
        assert!(matches!(
            h.one(fork(g, src, None)).await,
            CommandResult::VolumeForked { .. }
        ));
        src = g;
    }
    assert_eq!(
        h.one(fork(VolumeId::new_random(), src, None)).await,
        CommandResult::Rejected(Rejection::ForkTooDeep(src))
    );
}

#[tokio::test]
async fn a_volumes_own_retention_travels_in_its_segment_and_its_run() {
    use folio_state::state::{parse_retention_record_key, Retention, RETENTION_LSN};
    let mut h = Harness::new();
    let v = VolumeId::new_random();
    h.one(Command::CreateVolume { volume: v }).await;
    h.one(commit(v, 0, "a", &[(0, 1)])).await;
    let first = seal_and_flush(&mut h).await;
    h.one(Command::Checkpointed {
        seq: 1,
        through: first,
    })
    .await;
    let own = Retention {
        ms: 60_000,
        commits: 7,
    };
    let set = |retention| Command::SetRetention {
        volume: v,
        retention,
    };
    assert_eq!(
        h.one(set(Some(own))).await,
        CommandResult::RetentionSet { volume: v }
    );
    let reader = h.sm.reader();
    assert_eq!(reader.volume(v).unwrap().unwrap().retention, Some(own));
    // Setting the same retention again adds nothing to the segment.
    h.one(set(Some(own))).await;
    let second = seal_only(&mut h).await;
    // The retention-only segment: one record, at the reserved LSN, naming the retention.
    let built = reader.build_segment(second).unwrap().unwrap();
    // A later change (in the next segment) does not change this segment's bytes: an upload that
    // is retried must find the same object.
    let shorter = Retention {
        ms: 1_000,
        commits: 1,
    };
    h.one(set(Some(shorter))).await;
    let again = reader.build_segment(second).unwrap().unwrap();
    assert_eq!(
        built.bytes, again.bytes,
        "a segment builds the same bytes every time"
    );
    h.one(set(Some(own))).await;
    let seg = folio_segment::Segment::decode(built.bytes).unwrap();
    assert_eq!(seg.commits.len(), 1);
    assert_eq!(seg.commits[0].lsn, RETENTION_LSN);
    assert_eq!(
        parse_retention_record_key(&seg.commits[0].idempotency_key),
        Ok(Some(own))
    );
    h.one(Command::Flushed { segment: second }).await;
    // A commit after it, in a segment no run covers yet.
    h.one(commit(v, 1, "b", &[(0, 2)])).await;
    assert_eq!(reader.volume(v).unwrap().unwrap().lsn, Lsn(2));

    let run = reader.build_run(second).unwrap().unwrap();
    let table = folio_segment::table::Table::decode(run.bytes).unwrap();
    let heads: Vec<_> = table
        .iter()
        .filter(|(k, _)| k[0] == folio_state::runs::HEAD)
        .map(|(k, val)| folio_state::runs::parse_head(k, val).unwrap().1)
        .collect();
    assert_eq!(heads.len(), 1);
    assert_eq!(
        (heads[0].lsn, heads[0].retention),
        (Lsn(1), Some(own)),
        "the head as of the run's last segment (not the later commit), with the retention"
    );

    // Back to the default: a record with the bare key.
    h.one(set(None)).await;
    let third = seal_only(&mut h).await;
    let seg = reader.build_segment(third).unwrap().unwrap();
    let seg = folio_segment::Segment::decode(seg.bytes).unwrap();
    let rec = seg.commits.iter().find(|c| c.lsn == RETENTION_LSN).unwrap();
    assert_eq!(parse_retention_record_key(&rec.idempotency_key), Ok(None));
    assert_eq!(reader.volume(v).unwrap().unwrap().retention, None);

    let other = VolumeId::new_random();
    assert_eq!(
        h.one(Command::SetRetention {
            volume: other,
            retention: None
        })
        .await,
        CommandResult::Rejected(Rejection::UnknownVolume(other))
    );
    h.one(Command::DeleteVolume { volume: v }).await;
    assert_eq!(
        h.one(set(Some(own))).await,
        CommandResult::Rejected(Rejection::Deleted(v))
    );
}
