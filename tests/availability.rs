//! Availability when members stop answering (issue 20): a 3-node group as `folio server`
//! processes, with members paused by SIGSTOP (a long GC pause, a stalled VM, or, for the others,
//! a member they cannot reach).
//!
//! - A follower that resumes after a pause longer than the election timeout does not depose the
//!   leader: pre-vote keeps it from raising the term while the others still follow their leader.
//! - A leader whose followers stop answering steps down (check-quorum) and answers the writes it
//!   holds with UNAVAILABLE, instead of holding them until the followers come back.
//! - A write sent to a follower while the leader is paused is not held on the silent leader: it
//!   is answered by a new leader (re-routed) or refused with UNAVAILABLE.
//! - A client whose leader stops answering does not wait out its attempt on it: after
//!   `hedge_after` it tries the next member too, and commits while the old leader is still
//!   stopped.

use std::time::Duration;

use bytes::Bytes;
use folio_client::{Client, Error, RetryPolicy};
use folio_core::{Lsn, VolumeId, PAGE_SIZE};
use folio_system_tests::folio_bin;
use folio_testkit::Cluster;

fn page(tag: u8) -> Bytes {
    Bytes::from(vec![tag; PAGE_SIZE])
}

/// A client of node `id` alone that makes one attempt with a deadline far beyond every
/// failover, so that what ends the call is the server's answer, not the client's patience.
fn one_attempt(cluster: &Cluster, id: u64) -> Client {
    let policy = RetryPolicy {
        max_attempts: 1,
        attempt_timeout: Duration::from_secs(60),
        total_timeout: Duration::from_secs(60),
        ..RetryPolicy::default()
    };
    Client::new([cluster.node(id).addr.clone()], policy).expect("address")
}

async fn status(cluster: &Cluster, id: u64) -> folio_proto::admin::v1::StatusResponse {
    Client::node_status(&cluster.node(id).addr, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("status of node {id}: {e}"))
}

/// A running group (its leader and followers), a client, and a volume with one commit (its LSN).
type Started = (Cluster, u64, Vec<u64>, Client, VolumeId, Lsn);

async fn started() -> Started {
    let cluster = Cluster::start(folio_bin(), 3).expect("start the group");
    let leader = cluster
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("a leader");
    let followers = (1..=3).filter(|n| *n != leader).collect();
    let client = cluster.client();
    let volume = client.create_volume(None).await.expect("create a volume");
    let first = client
        .commit(volume, Lsn(0), vec![(0, page(1))], "before")
        .await
        .expect("commit before the fault")
        .lsn;
    (cluster, leader, followers, client, volume, first)
}

/// Every member reports `leader` at `term`.
async fn all_follow(cluster: &Cluster, leader: u64, term: u64) {
    for n in 1..=3 {
        let s = status(cluster, n).await;
        assert_eq!(
            (s.leader_id, s.term),
            (leader, term),
            "node {n}: {s:?}\n{}",
            cluster.log_of(n)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_resumed_from_a_pause_does_not_depose_the_leader() {
    let (cluster, leader, followers, client, volume, first) = started().await;
    let term = status(&cluster, leader).await.term;

    // Paused for many election timeouts (400-800 ms): on resuming, its election timer has long
    // run out, and without pre-vote it would stand at a higher term at once.
    let victim = followers[0];
    cluster.pause(victim).expect("pause");
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.resume(victim).expect("resume");
    // Long enough for it to time out, ask, be refused and ask again several times.
    tokio::time::sleep(Duration::from_secs(3)).await;

    all_follow(&cluster, leader, term).await;
    client
        .commit(volume, first, vec![(0, page(2))], "after")
        .await
        .expect("commit after the pause");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_a_quorum_steps_down_and_answers_what_it_holds() {
    let (cluster, leader, followers, client, volume, first) = started().await;

    for f in &followers {
        cluster.pause(*f).expect("pause a follower");
    }
    let held = one_attempt(&cluster, leader)
        .commit(volume, first, vec![(0, page(2))], "cut-off")
        .await;
    let msg = match held {
        Err(Error::Unavailable { last, .. }) => last,
        other => panic!("a leader without a quorum answered {other:?}"),
    };
    assert!(
        msg.contains("lost the leadership") && msg.contains("outcome is unknown"),
        "{msg}"
    );
    let s = status(&cluster, leader).await;
    assert_ne!(s.state, "Leader", "the old leader still leads: {s:?}");
    assert_eq!(s.leader_id, 0, "{s:?}");

    for f in &followers {
        cluster.resume(*f).expect("resume a follower");
    }
    let now = cluster
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("a leader once the followers are back");
    // The stepped-down leader accepts whoever the others elected: nobody is deposed once the
    // group has agreed (a stepping-down vote that outranked the next term's leader did that).
    let term = status(&cluster, now).await.term;
    tokio::time::sleep(Duration::from_secs(2)).await;
    all_follow(&cluster, now, term).await;
    // The write the old leader held may or may not have committed: the same idempotency key
    // settles it, on whichever node leads now.
    let head = client.snapshot(volume).await.expect("head");
    assert!(head.0 >= first.0, "nothing acknowledged was lost");
    let again = client
        .commit(volume, first, vec![(0, page(2))], "cut-off")
        .await;
    match again {
        Ok(r) => assert!(r.lsn.0 > first.0),
        Err(Error::Conflict { current, .. }) => assert!(current.0 > first.0),
        Err(e) => panic!("retrying the held write: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_forwarded_while_the_leader_is_paused_is_not_held_there() {
    let (cluster, leader, followers, client, volume, first) = started().await;
    let via = followers[0];
    let applied = status(&cluster, leader).await.applied_index;
    cluster
        .wait_applied(via, applied, Duration::from_secs(10))
        .await
        .expect("the follower caught up");

    cluster.pause(leader).expect("pause the leader");
    let res = one_attempt(&cluster, via)
        .commit(volume, first, vec![(0, page(2))], "during")
        .await;
    // Either the follower sent it where leadership went (Ok), or it said at once that it has
    // no leader to send it to; never held on the paused leader until the deadline.
    match &res {
        Ok(r) => assert_eq!(r.lsn.0, first.0 + 1),
        Err(Error::Unavailable { last, .. }) => assert!(
            last.contains("not heard from leader")
                || last.contains("no leader is known")
                || last.contains("leadership"),
            "{last}"
        ),
        Err(e) => panic!("a write forwarded to a paused leader ended with {e}"),
    }
    // The write may fail fast, before an election timeout has passed: keep the leader paused
    // until the others have a leader of their own, so that what follows checks leadership
    // moving, not how quickly the write failed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(&cluster, via).await;
        if s.leader_id != 0 && s.leader_id != leader {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the two others elected no leader while the old one was paused: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.resume(leader).expect("resume the leader");
    let now = cluster
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("one leader after the resume");
    assert_ne!(now, leader, "the paused leader was replaced");
    if let Ok(r) = res {
        assert!(client.snapshot(volume).await.expect("head").0 >= r.lsn.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_paused_leader_commits_elsewhere_while_it_is_stopped() {
    let (cluster, leader, followers, _, volume, first) = started().await;
    // The leader first, so that is where the client's calls go; its attempts would outlast the
    // test, so only trying another member can end the commit while the leader is stopped.
    let mut addrs = vec![cluster.node(leader).addr.clone()];
    addrs.extend(followers.iter().map(|f| cluster.node(*f).addr.clone()));
    let policy = RetryPolicy {
        attempt_timeout: Duration::from_secs(120),
        total_timeout: Duration::from_secs(120),
        hedge_after: Some(Duration::from_millis(300)),
        ..RetryPolicy::default()
    };
    let client = Client::new(addrs, policy).expect("addresses");
    // A call on the leader's connection, so the commit below finds it open, not refused.
    assert_eq!(client.snapshot(volume).await.expect("head").0, first.0);

    cluster.pause(leader).expect("pause the leader");
    let res = client
        .commit(volume, first, vec![(0, page(2))], "hedged")
        .await;
    cluster.resume(leader).expect("resume the leader");
    let done = res.expect("a commit while the leader is stopped");
    assert_eq!(done.lsn.0, first.0 + 1);
    // The attempt left at the stopped leader carries the same key: it cannot commit twice.
    cluster
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("one leader after the resume");
    let again = client
        .commit(volume, first, vec![(0, page(2))], "hedged")
        .await
        .expect("the same commit again");
    assert_eq!((again.lsn, again.deduplicated), (done.lsn, true));
}
