//! Starting a registry node: open its store, start its Raft group (the write tier's log store and
//! peer transport), bootstrap once, and serve the registry API, Raft peer traffic and health on
//! one gRPC port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use folio_raft::network::{Network, PeerService};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use crate::service::{Liveness, RegistrySvc};
use crate::{state, RegRaft, REGISTRY_GROUP};

/// One member of the registry's initial group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryMember {
    pub id: u64,
    pub addr: String,
}

/// A registry node's configuration (`folio registry --config FILE`, TOML).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// This node's id in the registry group; at least 1.
    pub node_id: u64,
    /// Where the gRPC server listens (registry API and Raft peer traffic).
    pub listen_addr: SocketAddr,
    /// Address announced to peers and clients; defaults to this node's `initial_members` entry,
    /// else `listen_addr`.
    #[serde(default)]
    pub advertise_addr: Option<String>,
    /// Directory for the registry's RocksDB.
    pub data_dir: PathBuf,
    /// Where `/metrics` is served (Prometheus text); none to disable.
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    /// The registry group's first members; the lowest id bootstraps it, once.
    #[serde(default)]
    pub initial_members: Vec<RegistryMember>,
    /// How often groups send heartbeats.
    #[serde(default = "defaults::heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// A group not heard from for this long gets no new volumes and is shown unhealthy.
    #[serde(default = "defaults::group_timeout_ms")]
    pub group_timeout_ms: u64,
    #[serde(default = "defaults::raft_heartbeat_ms")]
    pub raft_heartbeat_ms: u64,
    #[serde(default = "defaults::election_timeout_min_ms")]
    pub election_timeout_min_ms: u64,
    #[serde(default = "defaults::election_timeout_max_ms")]
    pub election_timeout_max_ms: u64,
}

mod defaults {
    pub fn heartbeat_interval_ms() -> u64 {
        1_000
    }
    pub fn group_timeout_ms() -> u64 {
        10_000
    }
    pub fn raft_heartbeat_ms() -> u64 {
        100
    }
    pub fn election_timeout_min_ms() -> u64 {
        400
    }
    pub fn election_timeout_max_ms() -> u64 {
        800
    }
}

impl RegistryConfig {
    /// A single-node registry in `data_dir` (what `folio dev` runs).
    pub fn single(listen_addr: SocketAddr, data_dir: PathBuf) -> RegistryConfig {
        RegistryConfig {
            node_id: 1,
            listen_addr,
            advertise_addr: None,
            data_dir,
            metrics_addr: None,
            initial_members: Vec::new(),
            heartbeat_interval_ms: defaults::heartbeat_interval_ms(),
            group_timeout_ms: defaults::group_timeout_ms(),
            raft_heartbeat_ms: defaults::raft_heartbeat_ms(),
            election_timeout_min_ms: defaults::election_timeout_min_ms(),
            election_timeout_max_ms: defaults::election_timeout_max_ms(),
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.node_id >= 1, "node_id must be at least 1");
        let mut ids: Vec<_> = self.initial_members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        anyhow::ensure!(
            ids.len() == self.initial_members.len() && !ids.contains(&0),
            "initial_members ids must be distinct and at least 1"
        );
        anyhow::ensure!(
            self.heartbeat_interval_ms >= 10 && self.group_timeout_ms > self.heartbeat_interval_ms,
            "group_timeout_ms must exceed heartbeat_interval_ms (at least 10)"
        );
        Ok(())
    }

    fn advertise(&self, bound: SocketAddr) -> String {
        if let Some(a) = &self.advertise_addr {
            return a.clone();
        }
        self.initial_members
            .iter()
            .find(|m| m.id == self.node_id)
            .map(|m| m.addr.clone())
            .unwrap_or_else(|| bound.to_string())
    }

    fn openraft(&self) -> anyhow::Result<openraft::Config> {
        let c = openraft::Config {
            cluster_name: "folio-registry".into(),
            heartbeat_interval: self.raft_heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10_000),
            max_in_snapshot_log_to_keep: 1_000,
            ..Default::default()
        };
        Ok(c.validate()?)
    }
}

/// A running registry node.
pub struct RegistryNode {
    pub addr: SocketAddr,
    pub advertise: String,
    pub raft: RegRaft,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RegistryNode {
    pub async fn start(cfg: RegistryConfig) -> anyhow::Result<RegistryNode> {
        cfg.validate()?;
        crate::metrics::register();
        let listener = tokio::net::TcpListener::bind(cfg.listen_addr)
            .await
            .with_context(|| format!("listen on {}", cfg.listen_addr))?;
        let addr = listener.local_addr()?;
        let advertise = cfg.advertise(addr);
        let (log, sm) = state::open(&cfg.data_dir)
            .with_context(|| format!("open registry store in {}", cfg.data_dir.display()))?;
        let shared = sm.shared();
        let raft = RegRaft::new(
            cfg.node_id,
            Arc::new(cfg.openraft()?),
            Network::new(REGISTRY_GROUP),
            log,
            sm,
        )
        .await
        .context("start registry raft")?;

        // No initial members: a single-node registry of this node (what `folio dev` runs).
        let initial: Vec<(u64, String)> = if cfg.initial_members.is_empty() {
            vec![(cfg.node_id, advertise.clone())]
        } else {
            cfg.initial_members
                .iter()
                .map(|m| (m.id, m.addr.clone()))
                .collect()
        };
        folio_raft::bootstrap_once(&raft, cfg.node_id, &advertise, &initial).await?;

        let live = Liveness {
            heartbeat_interval: Duration::from_millis(cfg.heartbeat_interval_ms),
            group_timeout: Duration::from_millis(cfg.group_timeout_ms),
        };
        let (health, health_svc) = tonic_health::server::health_reporter();
        health
            .set_serving::<folio_proto::registry::v1::registry_service_server::RegistryServiceServer<RegistrySvc>>()
            .await;
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            if let Ok(c) = &conn {
                let _ = c.set_nodelay(true);
            }
            conn
        });
        let router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(60))
            .concurrency_limit_per_connection(1024)
            .add_service(RegistrySvc::server(cfg.node_id, raft.clone(), shared, live))
            .add_service(PeerService::new(raft.clone(), REGISTRY_GROUP, cfg.node_id))
            .add_service(health_svc);
        let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        }));
        tracing::info!(node = cfg.node_id, %addr, %advertise, "registry node started");
        Ok(RegistryNode {
            addr,
            advertise,
            raft,
            stop: Some(stop),
            server,
        })
    }

    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
        self.raft
            .shutdown()
            .await
            .context("shut down registry raft")?;
        Ok(())
    }

    /// Runs until the server stops by itself (it does not, unless it fails).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server).await?.context("registry gRPC server")
    }
}
