//! A member whose disk fills up (found by the fault suite: `jepsen/RESULTS.md`, run 31 of the
//! first campaign). openraft stops a node's Raft core when a log write fails with ENOSPC; the
//! process used to stay up in that state, holding every WatchVolume stream open and silent
//! forever and hiding from supervisors that restart processes only when they exit. Now the
//! streams end with an error, the process exits non-zero, and a restart on the same disk (once
//! space is freed) rejoins the group with everything it had acknowledged.
//!
//! Needs root (the member's data directory is a small tmpfs), as the fault suite does.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use folio_client::Client;
use folio_core::{Lsn, PAGE_SIZE};
use folio_system_tests::folio_bin;
use folio_testkit::Cluster;
use tokio_stream::StreamExt;

const VICTIM: u64 = 3;

fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(st.success(), "{args:?} failed: {st}");
}

/// Unmounts the tmpfs however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes 1 MiB chunks into `dir/filler` until the file system refuses; returns the bytes written.
fn fill(dir: &Path) -> u64 {
    let mut f = std::fs::File::create(dir.join("filler")).expect("create the filler");
    let chunk = vec![0xA5u8; 1 << 20];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k as u64,
        }
    }
    let _ = f.sync_all();
    n
}

fn page(tag: u64) -> Bytes {
    let mut p = vec![0u8; PAGE_SIZE];
    p[..8].copy_from_slice(&tag.to_le_bytes());
    p[8..].fill((tag % 251) as u8);
    Bytes::from(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_disk_fills_exits_ends_its_watches_and_rejoins_after_a_restart() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test mounts a tmpfs and must run as root (as scripts/test.sh does in CI)"
    );
    let mut cluster = Cluster::start(folio_bin(), 3).expect("start the group");
    cluster
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("a leader");

    // Move the victim onto a 48 MiB tmpfs, keeping what it has.
    cluster.kill(VICTIM);
    let data = cluster.node(VICTIM).data_dir.clone();
    let saved = data.with_extension("saved");
    std::fs::rename(&data, &saved).expect("move the data directory aside");
    std::fs::create_dir_all(&data).expect("mount point");
    sh(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=48m",
        "tmpfs",
        data.to_str().unwrap(),
    ]);
    let _mounted = Mounted(data.clone());
    sh(&[
        "cp",
        "-a",
        &format!("{}/.", saved.display()),
        data.to_str().unwrap(),
    ]);
    cluster.restart(VICTIM).expect("restart on the tmpfs");
    cluster
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("the victim rejoined");

    let client = cluster.client();
    let volume = client.create_volume(None).await.expect("create a volume");
    let mut last = client
        .commit(volume, Lsn(0), vec![(0, page(1))], "c-1")
        .await
        .expect("first commit")
        .lsn;
    // The victim knows the volume once it has applied its creation and first commit.
    let leader = cluster.wait_leader(Duration::from_secs(10)).await.unwrap();
    let applied = Client::node_status(&cluster.node(leader).addr, Duration::from_secs(2))
        .await
        .expect("leader status")
        .applied_index;
    cluster
        .wait_applied(VICTIM, applied, Duration::from_secs(30))
        .await
        .expect("the victim caught up");
    let mut watch = cluster
        .client_for(VICTIM)
        .watch(volume, Lsn(0))
        .await
        .expect("watch on the victim");

    // Fill the victim's disk, then keep committing until its log write fails.
    let filled = fill(&data);
    assert!(filled > 0, "the filler wrote something");
    let mut acked = vec![(last, 1u64)];
    let mut status = None;
    for tag in 2..2_000u64 {
        let c = client
            .commit(
                volume,
                last,
                vec![((tag % 64) as u32, page(tag))],
                format!("c-{tag}"),
            )
            .await
            .expect("the two other members keep committing");
        last = c.lsn;
        acked.push((c.lsn, tag));
        if let Some(s) = cluster
            .wait_exit(VICTIM, Duration::from_millis(10))
            .expect("the victim was running")
        {
            status = Some(s);
            break;
        }
    }
    let status = match status {
        Some(s) => s,
        None => cluster
            .wait_exit(VICTIM, Duration::from_secs(30))
            .expect("the victim was running")
            .expect("a member whose disk is full exits instead of lingering"),
    };
    assert!(!status.success(), "it exits with an error: {status}");
    let log = cluster.log_of(VICTIM);
    assert!(
        log.contains("the Raft core stopped"),
        "the log says why it exited:\n{log}"
    );

    // The watch on the victim ended instead of going silent: every event it did deliver was
    // in order, and then the stream said why it ended (sent before the process exited).
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        let mut prev = 0u64;
        loop {
            match watch.next().await {
                Some(Ok(ev)) => {
                    assert_eq!(ev.lsn, prev + 1, "events in LSN order, none skipped");
                    prev = ev.lsn;
                }
                Some(Err(status)) => return Some(status),
                None => return None,
            }
        }
    })
    .await
    .expect("the watch on the stopped member ended");
    let status = ended.expect("the stream ended with a status, not silently");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("stopped serving its group"),
        "the status says why: {status:?}"
    );

    // Free the space and restart: the member rejoins and serves every acknowledged commit.
    std::fs::remove_file(data.join("filler")).expect("remove the filler");
    cluster.restart(VICTIM).expect("restart the victim");
    let leader = cluster.wait_leader(Duration::from_secs(60)).await.unwrap();
    let applied = Client::node_status(&cluster.node(leader).addr, Duration::from_secs(2))
        .await
        .expect("leader status")
        .applied_index;
    cluster
        .wait_applied(VICTIM, applied, Duration::from_secs(60))
        .await
        .expect("the restarted victim caught up");
    let on_victim = cluster.client_for(VICTIM);
    for (lsn, tag) in acked.iter().rev().take(20) {
        let idx = if *tag == 1 { 0 } else { (tag % 64) as u32 };
        let pages = on_victim
            .read_pages(volume, *lsn, &[idx])
            .await
            .expect("read from the restarted victim");
        assert_eq!(pages[0].data, page(*tag), "page {idx} at LSN {lsn:?}");
    }
}
