//! Liveness and readiness on a 3-node group of processes, through `folio probe` (the container
//! health check) and the gRPC health service:
//!
//! - every node is ready once the group has a leader, and reports its term and leader as metrics;
//! - a leader whose two followers are killed stops being ready (no quorum acknowledges it) and
//!   its gRPC health turns NOT_SERVING, while `/livez` still answers 200;
//! - a follower whose leader and fellow follower are killed stops being ready (it hears from no
//!   leader);
//! - restarted, the group is ready again.

use std::time::Duration;

use anyhow::{ensure, Context};
use folio_system_tests::folio_bin;
use folio_testkit::Cluster;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// `folio probe` against a node: whether it exited 0, and what it said.
fn probe(c: &Cluster, id: u64, live: bool) -> (bool, String) {
    let mut cmd = std::process::Command::new(folio_bin());
    cmd.args(["probe", "--addr", &c.node(id).metrics_addr]);
    if live {
        cmd.arg("--live");
    }
    let out = cmd.output().expect("run folio probe");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

async fn grpc_health(c: &Cluster, id: u64) -> anyhow::Result<ServingStatus> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", c.node(id).addr))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut h = HealthClient::new(ch);
    let r = h
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(r.into_inner().status())
}

/// Waits (at most `within`) until node `id`'s readiness is `ready`; returns what the probe said.
async fn wait_ready(c: &Cluster, id: u64, ready: bool, within: Duration) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (ok, said) = probe(c, id, false);
        if ok == ready {
            return Ok(said);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "node {id} not {}ready within {within:?}: {said}",
            if ready { "" } else { "un" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_group_and_grpc_health_follows_readiness() -> anyhow::Result<()> {
    let mut c = Cluster::start(folio_bin(), 3)?;
    let res = run(&mut c).await;
    if res.is_err() {
        c.dump_logs();
    }
    res
}

async fn run(c: &mut Cluster) -> anyhow::Result<()> {
    let leader = c.wait_leader(Duration::from_secs(30)).await?;
    for id in 1..=3 {
        wait_ready(c, id, true, Duration::from_secs(20)).await?;
        ensure!(grpc_health(c, id).await? == ServingStatus::Serving);
        ensure!(c.metric(id, "folio_raft_leader_id")? == leader as f64);
        ensure!(c.metric(id, "folio_raft_term")? >= 1.0);
        ensure!(c.metric(id, "folio_node_ready")? == 1.0);
    }
    ensure!(c.metric(leader, "folio_raft_is_leader")? == 1.0);
    let lags = c.metric_samples(leader, "folio_raft_replication_lag_entries")?;
    ensure!(lags.len() == 2, "one lag series per follower: {lags:?}");

    // The leader alone: no quorum acknowledges it, so it is not ready (and soon steps down:
    // check-quorum), but it is live.
    let followers: Vec<u64> = (1..=3).filter(|n| *n != leader).collect();
    for f in &followers {
        c.kill(*f);
    }
    let said = wait_ready(c, leader, false, Duration::from_secs(10)).await?;
    ensure!(
        said.contains("quorum") || said.contains("no leader is known"),
        "says why: {said}"
    );
    let (live, said) = probe(c, leader, true);
    ensure!(live, "still live: {said}");
    ensure!(grpc_health(c, leader).await? == ServingStatus::NotServing);
    ensure!(c.metric(leader, "folio_node_ready")? == 0.0);
    for f in &followers {
        c.restart(*f)?;
    }
    for id in 1..=3 {
        wait_ready(c, id, true, Duration::from_secs(30)).await?;
    }
    ensure!(grpc_health(c, leader).await? == ServingStatus::Serving);

    // A follower alone: it hears from no leader, so it is not ready.
    let leader = c.wait_leader(Duration::from_secs(30)).await?;
    let lone = (1..=3).find(|n| *n != leader).context("a follower")?;
    let gone: Vec<u64> = (1..=3).filter(|n| *n != lone).collect();
    for g in &gone {
        c.kill(*g);
    }
    let said = wait_ready(c, lone, false, Duration::from_secs(10)).await?;
    ensure!(said.contains("leader"), "says why: {said}");
    ensure!(grpc_health(c, lone).await? == ServingStatus::NotServing);
    for g in &gone {
        c.restart(*g)?;
    }
    for id in 1..=3 {
        wait_ready(c, id, true, Duration::from_secs(30)).await?;
    }
    Ok(())
}
