//! The etcd baseline: a 3-member etcd cluster on 127.0.0.1 (started from a given binary, or one
//! already running), driven through the `etcd-client` crate by the same closed-loop harness as
//! Folio. Each writer puts one key of its own, over and over, so writers never contend.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{ConnectOptions, KvClient};

use crate::group::{free_ports, Children, STARTUP_TIMEOUT};
use crate::load::{OpFuture, OpSample, Writer};

/// Longest one put may take before the workload fails (etcd's own request timeout is shorter).
const PUT_TIMEOUT: Duration = Duration::from_secs(30);

/// A 3-member etcd cluster this suite started, with data directories under its work directory
/// (the same disk as Folio's).
pub struct EtcdCluster {
    pub endpoints: Vec<String>,
    children: Children,
}

impl EtcdCluster {
    pub async fn start(bin: &Path, dir: &Path) -> anyhow::Result<EtcdCluster> {
        let dir = dir.join("etcd");
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let ports = free_ports(6)?;
        let client: Vec<String> = ports[..3]
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let peer: Vec<String> = ports[3..]
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let initial: Vec<String> = (0..3).map(|i| format!("e{}={}", i + 1, peer[i])).collect();
        let mut children = Children::default();
        for i in 0..3 {
            let name = format!("e{}", i + 1);
            let mut cmd = Command::new(bin);
            cmd.arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(dir.join(&name))
                .arg("--listen-client-urls")
                .arg(&client[i])
                .arg("--advertise-client-urls")
                .arg(&client[i])
                .arg("--listen-peer-urls")
                .arg(&peer[i])
                .arg("--initial-advertise-peer-urls")
                .arg(&peer[i])
                .arg("--initial-cluster")
                .arg(initial.join(","))
                .arg("--initial-cluster-token")
                .arg("folio-bench")
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--logger")
                .arg("zap")
                .arg("--log-level")
                .arg("warn");
            children.spawn(
                &format!("etcd member {name}"),
                cmd,
                &dir.join(format!("{name}.log")),
            )?;
        }
        let mut cluster = EtcdCluster {
            endpoints: client,
            children,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            cluster.children.check_alive()?;
            if leader_endpoint(&cluster.endpoints).await.is_ok() {
                return Ok(cluster);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "etcd elected no leader within {STARTUP_TIMEOUT:?} (logs in {})",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.pids()
    }
}

fn options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(PUT_TIMEOUT)
}

/// The endpoint of the member that leads, so that puts are not forwarded (Folio's writers, too,
/// talk to the leader).
pub async fn leader_endpoint(endpoints: &[String]) -> anyhow::Result<String> {
    for ep in endpoints {
        let Ok(mut c) = etcd_client::Client::connect([ep.as_str()], Some(options())).await else {
            continue;
        };
        let Ok(s) = c.status().await else { continue };
        let me = s.header().map(|h| h.member_id()).unwrap_or(0);
        if s.leader() != 0 && s.leader() == me {
            return Ok(ep.clone());
        }
    }
    anyhow::bail!("no etcd member at {endpoints:?} says it leads")
}

/// A KV client connected to `endpoint`.
pub async fn connect(endpoint: &str) -> anyhow::Result<etcd_client::Client> {
    etcd_client::Client::connect([endpoint], Some(options()))
        .await
        .with_context(|| format!("connect to etcd at {endpoint}"))
}

/// Puts a value of a fixed size to its own key, one put at a time.
pub struct EtcdWriter {
    kv: KvClient,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl EtcdWriter {
    pub fn new(client: &etcd_client::Client, key: String, value: Vec<u8>) -> EtcdWriter {
        EtcdWriter {
            kv: client.kv_client(),
            key: key.into_bytes(),
            value,
        }
    }
}

impl Writer for EtcdWriter {
    fn op(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let t = Instant::now();
            tokio::time::timeout(
                PUT_TIMEOUT,
                self.kv.put(self.key.clone(), self.value.clone(), None),
            )
            .await
            .map_err(|_| anyhow::anyhow!("etcd put took longer than {PUT_TIMEOUT:?}"))?
            .context("etcd put")?;
            Ok(OpSample {
                latency: t.elapsed(),
                conflicts: 0,
            })
        })
    }
}
