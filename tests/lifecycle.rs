//! The storage lifecycle end to end, on processes:
//!
//! - a fork costs the same object-store requests (none) for a 10,000-page volume as for a
//!   100-page one, reads its source's pages, and writes to it never show in the source;
//! - DeleteVolume through the registry: the volume answers NOT_FOUND (as does resolving it), its
//!   id cannot be created again, and deleting again succeeds;
//! - retention: snapshots below a volume's horizon answer OUT_OF_RANGE naming the oldest
//!   retained LSN (through the API and the CLI), and `folio admin storage --json` reports the
//!   horizon, the deletion, the fork and the bucket; a volume's own retention (`folio volume
//!   retention`) keeps more than the group's default until it is returned to the default.

mod common;

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use folio_client::{Client, Error, RetryPolicy, RouterOptions};
use folio_core::limits::MAX_PAGES_PER_REQUEST;
use folio_core::{Lsn, VolumeId, PAGE_SIZE};
use folio_system_tests::folio_bin;
use folio_testkit::registry::RegistryCluster;
use folio_testkit::{Cluster, Options};
use tonic::Code;

fn page(tag: u32) -> Bytes {
    let mut d = vec![(tag % 251) as u8; PAGE_SIZE];
    d[..4].copy_from_slice(&tag.to_le_bytes());
    Bytes::from(d)
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(folio_bin())
        .args(args)
        .output()
        .expect("run folio")
}

/// Every object-store request the node has made.
fn requests(c: &Cluster) -> f64 {
    common::counter(c, 1, "folio_object_store_requests_total", &[])
}

/// Waits until the node makes no object-store request for longer than a flush interval: every
/// segment is flushed and checkpointed.
async fn quiet(c: &Cluster) -> anyhow::Result<f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = requests(c);
    loop {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let now = requests(c);
        if now == last {
            return Ok(now);
        }
        last = now;
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "never quiet");
    }
}

/// Writes pages `0..n` (tagged `tag + i`) in commits of at most a request's pages.
async fn fill(client: &Client, v: VolumeId, n: u32, tag: u32) -> anyhow::Result<Lsn> {
    let mut lsn = client.snapshot(v).await?;
    let mut start = 0;
    while start < n {
        let end = (start + MAX_PAGES_PER_REQUEST as u32).min(n);
        let pages = (start..end).map(|i| (i, page(tag + i))).collect();
        lsn = client
            .commit(v, lsn, pages, format!("fill-{tag}-{start}"))
            .await?
            .lsn;
        start = end;
    }
    Ok(lsn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_cost_nothing_per_page_and_deletes_retire_ids() -> anyhow::Result<()> {
    let reg = RegistryCluster::start(folio_bin(), 1, 3_000)?;
    reg.wait_leader(Duration::from_secs(20)).await?;
    let raddrs = reg.addrs();
    let c = Cluster::start_opts(
        folio_bin(),
        1,
        Options {
            group_id: Some(31),
            region: Some("eu".into()),
            registry: raddrs.clone(),
            sections: "[checkpoint]\ninterval_ms = 300\n".into(),
            ..Default::default()
        },
    )?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let client = Client::with_registry(
        raddrs.clone(),
        RetryPolicy::default(),
        RouterOptions::default(),
    )?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (small, large) = loop {
        let (a, b) = (VolumeId::new_random(), VolumeId::new_random());
        match client.create_volume_in("eu", Some(a)).await {
            Ok(_) => {
                client.create_volume_in("eu", Some(b)).await?;
                break (a, b);
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("create: {e}; the group is not registered yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let small_at = fill(&client, small, 100, 0).await?;
    let large_at = fill(&client, large, 10_000, 0).await?;

    // The request count around each fork, with nothing else to do.
    let mut cost = Vec::new();
    let mut forks = Vec::new();
    for (v, at) in [(small, small_at), (large, large_at)] {
        let before = quiet(&c).await?;
        let (f, got) = client.fork_volume(v, None, None).await?;
        cost.push(requests(&c) - before);
        assert_eq!(got, at, "forked at the source's head");
        forks.push(f);
    }
    eprintln!(
        "object-store requests per fork: 100 pages {}, 10,000 pages {}",
        cost[0], cost[1]
    );
    assert_eq!(
        cost[0], cost[1],
        "a fork's cost does not depend on the volume's size"
    );

    // The fork reads its source and goes its own way.
    let f = forks[1];
    let idxs = [0u32, 4_567, 9_999, 10_000];
    let got = client.read_pages(f, Lsn(0), &idxs).await?;
    for p in &got {
        let want = if p.page_idx < 10_000 {
            page(p.page_idx)
        } else {
            Bytes::from(vec![0u8; PAGE_SIZE])
        };
        assert_eq!(p.data, want, "fork page {}", p.page_idx);
    }
    client
        .commit(f, Lsn(0), vec![(4_567, page(99_999))], "fork-write")
        .await?;
    let src = client.read_pages(large, large_at, &[4_567]).await?;
    assert_eq!(
        src[0].data,
        page(4_567),
        "the source never sees the fork's writes"
    );
    let mine = client.read_pages(f, Lsn(1), &[4_567, 0]).await?;
    assert_eq!(mine[0].data, page(99_999));
    assert_eq!(mine[1].data, page(0));

    // The CLI forks at an LSN.
    let out = cli(&[
        "volume",
        "fork",
        &small.to_string(),
        "--at",
        "1",
        "--registry",
        &raddrs.join(","),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(j["at_lsn"], 1);
    let cli_fork: VolumeId = j["volume_id"].as_str().context("id")?.parse()?;
    assert_eq!(client.snapshot(cli_fork).await?, Lsn(0));
    // Past the head: a clear OUT_OF_RANGE.
    match client.fork_volume(small, Some(Lsn(99)), None).await {
        Err(Error::Invalid { code, message }) => {
            assert_eq!(code, Code::OutOfRange, "{message}");
            assert!(message.contains("latest LSN is"), "{message}");
        }
        other => panic!("fork past the head: {other:?}"),
    }

    // Deleting through the registry (the CLI).
    let out = cli(&[
        "volume",
        "delete",
        &small.to_string(),
        "--registry",
        &raddrs.join(","),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match client.snapshot(small).await {
        Err(Error::NotFound(m)) => assert!(m.contains("deleted"), "{m}"),
        other => panic!("snapshot of a deleted volume: {other:?}"),
    }
    match reg.client().resolve(small).await {
        Err(Error::NotFound(m)) => assert!(m.contains("deleted"), "{m}"),
        other => panic!("resolve a deleted volume: {other:?}"),
    }
    match client.create_volume_in("eu", Some(small)).await {
        Err(Error::Invalid { code, message }) => {
            assert_eq!(code, Code::FailedPrecondition);
            assert!(message.contains("never reused"), "{message}");
        }
        other => panic!("re-creating a deleted id: {other:?}"),
    }
    // Straight at the group too.
    match c
        .client()
        .commit(small, small_at, vec![(0, page(1))], "late")
        .await
    {
        Err(Error::NotFound(m)) => assert!(m.contains("deleted"), "{m}"),
        other => panic!("commit to a deleted volume: {other:?}"),
    }
    assert!(
        client.delete_volume(small).await?,
        "deleting again succeeds"
    );
    // Its forks live on: they read the deleted source's pages.
    let got = client.read_pages(forks[0], Lsn(0), &[42]).await?;
    assert_eq!(got[0].data, page(42));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_refuses_old_snapshots_by_name_and_storage_reports() -> anyhow::Result<()> {
    let c = Cluster::start_opts(
        folio_bin(),
        1,
        Options {
            flush: "interval_ms = 100\n".into(),
            sections: "[checkpoint]\ninterval_ms = 200\n\
                       [lifecycle]\ninterval_ms = 300\nretention_ms = 0\nretain_commits = 2\n\
                       gc_grace_ms = 500\n"
                .into(),
            ..Default::default()
        },
    )?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let client = c.client();
    let v = client.create_volume(None).await?;
    let gone = client.create_volume(None).await?;
    fill(&client, gone, 8, 500).await?;
    for lsn in 1..=10u64 {
        client
            .commit(
                v,
                Lsn(lsn - 1),
                vec![(0, page(lsn as u32))],
                format!("r{lsn}"),
            )
            .await?;
    }
    let (fork, _) = client.fork_volume(v, Some(Lsn(10)), None).await?;
    assert!(!client.delete_volume(gone).await?);
    // A volume with its own, longer retention (set through the CLI) keeps every snapshot.
    let kept = client.create_volume(None).await?;
    let out = cli(&[
        "volume",
        "retention",
        &kept.to_string(),
        "--time",
        "1h",
        "--commits",
        "3",
        "--addr",
        &c.addrs()[0],
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(j["retention"]["retention_ms"], 3_600_000);
    match client
        .set_retention(
            kept,
            Some(folio_proto::volume::v1::Retention {
                retention_ms: 1,
                retain_commits: 0,
            }),
        )
        .await
    {
        Err(Error::Invalid { code, message }) => {
            assert_eq!(code, Code::InvalidArgument);
            assert!(message.contains("retain_commits"), "{message}");
        }
        other => panic!("retain_commits 0: {other:?}"),
    }
    // Set before its commits, so no round can move its horizon first.
    for lsn in 1..=4u64 {
        client
            .commit(
                kept,
                Lsn(lsn - 1),
                vec![(0, page(lsn as u32))],
                format!("k{lsn}"),
            )
            .await?;
    }
    // The last two snapshots stay: the horizon reaches 9.
    let addr = c.addrs()[0].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match client.read_pages(v, Lsn(8), &[0]).await {
            Err(Error::Invalid {
                code: Code::OutOfRange,
                message,
            }) => {
                assert!(
                    message.contains("oldest retained LSN is 9"),
                    "names the oldest retained LSN: {message}"
                );
                break;
            }
            Ok(p) => assert_eq!(p[0].data, page(8), "retained, so as written"),
            Err(e) => return Err(e.into()),
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "retention never applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(client.read_pages(v, Lsn(9), &[0]).await?[0].data, page(9));
    assert_eq!(
        client.read_pages(fork, Lsn(0), &[0]).await?[0].data,
        page(10)
    );
    match client.pull_changes(v, Lsn(3)).await {
        Err(Error::Invalid { code, message }) => {
            assert_eq!(code, Code::OutOfRange);
            assert!(message.contains("oldest retained LSN is 9"), "{message}");
        }
        other => panic!("pull below the horizon: {other:?}"),
    }
    let out = cli(&[
        "volume",
        "read",
        &v.to_string(),
        "--page",
        "0",
        "--lsn",
        "2",
        "--addr",
        &addr,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("oldest retained LSN is 9"), "{err}");

    // The storage report, once a round has seen all of it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let report = loop {
        let out = cli(&["admin", "storage", "--addr", &addr, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let vols = j["volumes"].as_array().cloned().unwrap_or_default();
        let find = |id: VolumeId| {
            vols.iter()
                .find(|x| x["volume_id"] == id.to_string())
                .cloned()
        };
        let ready = find(v).is_some_and(|x| x["oldest_lsn"] == 9)
            && find(gone).is_some_and(|x| x["deleted"] == true && x["page_versions"] == 0)
            && find(fork).is_some_and(|x| x["fork_of"] == v.to_string())
            && find(kept).is_some_and(|x| x["commits"].as_u64() >= Some(4));
        if ready {
            break j;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "storage report: {j}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // A round has seen all of its commits: the volume with its own retention still reads its
    // first one.
    let kept_report = report["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|x| x["volume_id"] == kept.to_string()))
        .context("kept is reported")?;
    assert_eq!(kept_report["oldest_lsn"], 0);
    assert_eq!(kept_report["retention"]["retain_commits"], 3);
    assert_eq!(
        client.read_pages(kept, Lsn(1), &[0]).await?[0].data,
        page(1)
    );
    let listed = client.list_volumes(None, 0).await?;
    let info = listed
        .iter()
        .find(|x| x.volume_id.as_ref() == kept.as_bytes())
        .context("listed")?;
    assert_eq!(
        (info.oldest_lsn, info.retention.map(|r| r.retain_commits)),
        (0, Some(3))
    );
    // Back to the group's default (keep 2): its horizon moves to 3.
    client.set_retention(kept, None).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !matches!(
        client.read_pages(kept, Lsn(2), &[0]).await,
        Err(Error::Invalid {
            code: Code::OutOfRange,
            ..
        })
    ) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the default retention never applied again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        client.read_pages(kept, Lsn(3), &[0]).await?[0].data,
        page(3)
    );
    assert!(report["live_bytes"].as_u64().unwrap_or(0) >= PAGE_SIZE as u64);
    assert!(report["segments"]["objects"].as_u64().unwrap_or(0) >= 1);
    assert!(report["manifests"]["objects"].as_u64().unwrap_or(0) >= 1);
    let text = cli(&["admin", "storage", "--addr", &addr]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("deleted") && text.contains("fork of"),
        "{text}"
    );
    Ok(())
}
