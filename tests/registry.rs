//! The volume registry end to end: a 3-node registry (processes) and groups in two regions
//! (processes). Volumes created in a region land on that region's groups, least-loaded first;
//! clients resolve and write through the registry; a client with a stale resolution is
//! redirected by the group and succeeds; the registry keeps answering with a node killed; the CLI
//! creates, writes and reads through it; bad requests get clear statuses.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use folio_client::registry::pb;
use folio_client::{Client, Error, RetryPolicy, RouterOptions};
use folio_core::{Lsn, VolumeId, PAGE_SIZE};
use folio_system_tests::folio_bin;
use folio_testkit::registry::RegistryCluster;
use folio_testkit::{Cluster, Options};

/// Groups not heard from for this long get no new volumes.
const GROUP_TIMEOUT_MS: u64 = 3_000;

fn group(region: &str, id: u64, registry: &[String]) -> anyhow::Result<Cluster> {
    Cluster::start_opts(
        folio_bin(),
        1,
        Options {
            group_id: Some(id),
            region: Some(region.to_string()),
            registry: registry.to_vec(),
            ..Default::default()
        },
    )
}

fn page(tag: u8) -> Bytes {
    Bytes::from(vec![tag; PAGE_SIZE])
}

/// Waits until the registry reports `n` healthy groups.
async fn wait_healthy(reg: &RegistryCluster, n: usize) -> anyhow::Result<pb::ListGroupsResponse> {
    let client = reg.client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(l) = client.list_groups().await {
            if l.groups.iter().filter(|g| g.healthy).count() == n {
                return Ok(l);
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{n} groups did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(folio_bin())
        .args(args)
        .output()
        .expect("run folio")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_routing_redirects_and_registry_failover() -> anyhow::Result<()> {
    let mut reg = RegistryCluster::start(folio_bin(), 3, GROUP_TIMEOUT_MS)?;
    reg.wait_leader(Duration::from_secs(20)).await?;
    let raddrs = reg.addrs();
    let eu1 = group("eu", 11, &raddrs)?;
    let eu2 = group("eu", 12, &raddrs)?;
    let us = group("us", 21, &raddrs)?;
    for g in [&eu1, &eu2, &us] {
        g.wait_leader(Duration::from_secs(20)).await?;
    }
    let listed = wait_healthy(&reg, 3).await?;
    assert_eq!(listed.regions, vec!["eu".to_string(), "us".to_string()]);

    // Placement: each volume on its region's least-loaded group.
    let client = Client::with_registry(
        raddrs.clone(),
        RetryPolicy::default(),
        RouterOptions::default(),
    )?;
    let mut eu_vols = Vec::new();
    for _ in 0..4 {
        let id = VolumeId::new_random();
        let loc = client.create_volume_in("eu", Some(id)).await?;
        assert_eq!(loc.region, "eu");
        assert!(
            [11, 12].contains(&loc.group_id),
            "eu volume on group {}",
            loc.group_id
        );
        eu_vols.push((id, loc.group_id));
    }
    let on_11 = eu_vols.iter().filter(|(_, g)| *g == 11).count();
    assert_eq!(
        on_11, 2,
        "least-loaded placement spreads eu volumes 2/2: {eu_vols:?}"
    );
    let us_vol = VolumeId::new_random();
    let loc = client.create_volume_in("us", Some(us_vol)).await?;
    assert_eq!((loc.group_id, loc.region.as_str()), (21, "us"));
    // Retrying a create with the same id answers with the same placement, also when the
    // attempts race.
    let again = client.create_volume_in("us", Some(us_vol)).await?;
    assert_eq!(again.group_id, 21);
    let raced = VolumeId::new_random();
    let (a, b) = tokio::join!(
        client.create_volume_in("eu", Some(raced)),
        client.create_volume_in("eu", Some(raced))
    );
    assert_eq!(a?.group_id, b?.group_id, "one placement for one id");
    match client.create_volume_in("us", Some(raced)).await {
        Err(Error::AlreadyExists(m)) => assert!(m.contains("region"), "{m}"),
        other => panic!("same id in another region: {other:?}"),
    }

    // Each volume exists on its group, and only there.
    let groups = [(11u64, &eu1), (12, &eu2), (21, &us)];
    for (v, g) in eu_vols.iter().chain([(us_vol, 21)].iter()) {
        for (gid, cluster) in &groups {
            let r = cluster.client().snapshot(*v).await;
            if gid == g {
                assert_eq!(r?, Lsn(0));
            } else {
                // The wrong group refuses it, naming the right one.
                match r {
                    Err(Error::NotFound(m)) => assert!(
                        m.contains(&format!("lives in group {g}")),
                        "redirect names the home: {m}"
                    ),
                    other => panic!("expected a redirect from group {gid}, got {other:?}"),
                }
            }
        }
    }

    // Writes and reads through the registry.
    for (i, (v, _)) in eu_vols.iter().enumerate() {
        let c = client
            .commit(*v, Lsn(0), vec![(3, page(i as u8 + 1))], format!("w{i}"))
            .await?;
        assert_eq!(c.lsn, Lsn(1));
        let got = client.read_pages(*v, Lsn(1), &[3]).await?;
        assert_eq!(got[0].data, page(i as u8 + 1));
    }

    // A client whose cache says an eu volume lives in the us group: the us group redirects it
    // and the write succeeds.
    let stale = Client::with_registry(
        raddrs.clone(),
        RetryPolicy::default(),
        RouterOptions::default(),
    )?;
    let (v0, home) = eu_vols[0];
    stale
        .remember(
            v0,
            pb::VolumeLocation {
                volume_id: Bytes::copy_from_slice(v0.as_bytes()),
                group_id: 21,
                region: "us".into(),
                members: vec![pb::GroupMember {
                    node_id: 1,
                    addr: us.node(1).addr.clone(),
                }],
                leader_hint: String::new(),
            },
        )
        .await?;
    let c = stale
        .commit(v0, Lsn(1), vec![(4, page(9))], "stale")
        .await?;
    assert_eq!(c.lsn, Lsn(2));
    let direct = if home == 11 { &eu1 } else { &eu2 };
    assert_eq!(direct.client().snapshot(v0).await?, Lsn(2));

    // Clear statuses.
    match client.create_volume_in("mars", None).await {
        Err(Error::NotFound(m)) => assert!(m.contains("unknown region"), "{m}"),
        other => panic!("unknown region: {other:?}"),
    }
    match client.create_volume_in("EU!", None).await {
        Err(Error::Invalid { message, .. }) => assert!(message.contains("region"), "{message}"),
        other => panic!("invalid region: {other:?}"),
    }
    match client.snapshot(VolumeId::new_random()).await {
        Err(Error::NotFound(m)) => assert!(m.contains("not known to the registry"), "{m}"),
        other => panic!("unknown volume: {other:?}"),
    }
    // Heartbeats are checked before anything is recorded.
    let registry = reg.client();
    let beat = |group_id: u64, region: &str, addr: &str| pb::HeartbeatRequest {
        group_id,
        region: region.into(),
        members: vec![pb::GroupMember {
            node_id: 1,
            addr: addr.into(),
        }],
        leader_addr: addr.into(),
    };
    match registry.heartbeat(beat(1 << 48, "eu", "127.0.0.1:1")).await {
        Err(Error::Invalid { message, .. }) => assert!(message.contains("2^48"), "{message}"),
        other => panic!("group id out of range: {other:?}"),
    }
    match registry.heartbeat(beat(99, "eu", "a:1,b:2")).await {
        Err(Error::Invalid { message, .. }) => assert!(message.contains("host:port"), "{message}"),
        other => panic!("bad address: {other:?}"),
    }
    match registry.heartbeat(beat(11, "us", &eu1.node(1).addr)).await {
        Err(Error::Invalid { message, .. }) => {
            assert!(message.contains("cannot move"), "{message}")
        }
        other => panic!("region change: {other:?}"),
    }

    // Kill the registry leader: the other two keep answering, with a new leader.
    let leader = reg.wait_leader(Duration::from_secs(10)).await?;
    reg.kill(leader);
    reg.wait_leader(Duration::from_secs(20)).await?;
    let fresh = Client::with_registry(
        raddrs.clone(),
        RetryPolicy::default(),
        RouterOptions::default(),
    )?;
    for (v, _) in &eu_vols {
        assert!(fresh.snapshot(*v).await? >= Lsn(1));
    }
    let after = fresh.create_volume_in("eu", None).await?;
    assert!([11, 12].contains(&after.group_id));
    wait_healthy(&reg, 3).await?;

    // The CLI through the registry: create in a region, write a page, read it back.
    let regs = raddrs.join(",");
    let out = cli(&[
        "volume",
        "create",
        "--registry",
        &regs,
        "--region",
        "us",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(created["region"], "us");
    let vol = created["volume_id"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("page.bin");
    std::fs::write(&src, b"hello through the registry")?;
    let out = cli(&[
        "volume",
        "write",
        &vol,
        "--registry",
        &regs,
        "--page",
        "5",
        "--file",
        src.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["volume", "read", &vol, "--registry", &regs, "--page", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.starts_with(b"hello through the registry"));
    let out = cli(&["admin", "groups", "--registry", &regs, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let groups: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(groups["groups"].as_array().map(Vec::len), Some(3));

    // A region whose only group stops heartbeating gets no new volumes.
    drop(us);
    tokio::time::sleep(Duration::from_millis(GROUP_TIMEOUT_MS + 500)).await;
    let impatient = Client::with_registry(
        raddrs.clone(),
        RetryPolicy {
            total_timeout: Duration::from_secs(1),
            ..RetryPolicy::default()
        },
        RouterOptions::default(),
    )?;
    match impatient.create_volume_in("us", None).await {
        Err(Error::Unavailable { last, .. }) => {
            assert!(last.contains("no healthy group"), "{last}")
        }
        other => panic!("no healthy group: {other:?}"),
    }
    Ok(())
}
