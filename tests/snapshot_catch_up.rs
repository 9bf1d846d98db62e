//! A follower that was down while the leader snapshotted and purged its log catches up through an
//! InstallSnapshot transfer, then serves as a full member: with the old leader killed, it is part
//! of every quorum, the history is intact, and its buffer drains to the object store. Snapshots
//! here are triggered by bytes of log, not by entry count.

use std::time::Duration;

use bytes::Bytes;
use folio_core::{Lsn, PAGE_SIZE};
use folio_system_tests::folio_bin;
use folio_testkit::Cluster;

mod common;

const COMMITS_WHILE_DOWN: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_through_a_snapshot() -> anyhow::Result<()> {
    // Snapshot after 256 KiB of commands (the entry-count policy is out of reach), keep only 10
    // entries after it: 200 one-page commits purge what the follower lacks.
    let extra = "snapshot_logs_since_last = 1000000\nlogs_to_keep_after_snapshot = 10\n\
                 purge_batch_size = 8\nsnapshot_chunk_bytes = 65536\n\
                 snapshot_log_bytes = 262144\n";
    let mut c = Cluster::start_with(folio_bin(), 3, extra)?;
    let res = run(&mut c).await;
    if res.is_err() {
        c.dump_logs();
    }
    res
}

async fn run(c: &mut Cluster) -> anyhow::Result<()> {
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    let lagging = (1..=3).find(|i| *i != leader).unwrap();
    let client = c.client();
    let v = client.create_volume(None).await?;
    c.kill(lagging);
    let page = Bytes::from(vec![7u8; PAGE_SIZE]);
    for i in 0..COMMITS_WHILE_DOWN {
        client
            .commit(
                v,
                Lsn(i),
                vec![((i % 64) as u32, page.clone())],
                format!("c{i}"),
            )
            .await?;
    }
    let status =
        folio_client::Client::node_status(&c.node(leader).addr, Duration::from_secs(2)).await?;
    assert!(
        status.purged_index > 2,
        "the leader purged the entries the follower lacks: {status:?}"
    );
    c.restart(lagging)?;
    c.wait_applied(lagging, status.applied_index, Duration::from_secs(30))
        .await?;
    assert!(
        c.metric(leader, "folio_raft_snapshots_built_total")? >= 1.0,
        "the leader snapshotted"
    );
    // At least one: the leader may cut a newer snapshot while the first is in transit.
    assert!(
        c.metric(lagging, "folio_raft_snapshots_installed_total")? >= 1.0,
        "the follower caught up through a snapshot, not the (purged) log"
    );

    // The old leader goes away: the caught-up follower is now needed for every quorum.
    c.kill(leader);
    c.wait_leader(Duration::from_secs(30)).await?;
    let head = client.snapshot(v).await?;
    assert_eq!(head, Lsn(COMMITS_WHILE_DOWN));
    client
        .commit(v, head, vec![(0, page.clone())], "after")
        .await?;
    let history = client.all_commits(v).await?;
    assert_eq!(history.len() as u64, COMMITS_WHILE_DOWN + 1);
    // The caught-up follower flushes and drops its buffer like everyone else.
    common::wait_drained(c, Duration::from_secs(30)).await?;
    assert!(history
        .iter()
        .enumerate()
        .all(|(i, h)| h.lsn == i as u64 + 1));
    Ok(())
}
