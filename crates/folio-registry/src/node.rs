//! Starting a registry node: its config, its store, and the registry API, Raft peer traffic and
//! health on one gRPC port. The start-up every Folio node shares (config checks and loading,
//! listener, openraft with the peer transport and bootstrap, gRPC settings, `/metrics`) is
//! `folio_raft::node`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use folio_raft::network::{PeerService, Peers};
use folio_raft::node::{self as raft_node, ConfigError, Member, NodeConfig, NodeSecurity, Serving};
use folio_raft::RaftNode;
use serde::{Deserialize, Serialize};

use crate::service::{Liveness, RegistrySvc};
use crate::{state, RegRaft, REGISTRY_GROUP};

/// The registry's gRPC service, whose health follows the node's readiness.
const GRPC_SERVICES: &[&str] = &[
    <folio_proto::registry::v1::registry_service_server::RegistryServiceServer<RegistrySvc> as tonic::server::NamedService>::NAME,
];
/// A registry follower is ready while it has applied to within this many entries of the leader's
/// commit index.
const READY_LAG_ENTRIES: u64 = 100;

/// A registry node's configuration (`folio registry --config FILE`, TOML).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// This node's id in the registry group; at least 1.
    pub node_id: u64,
    /// Where the gRPC server listens: registry API, and Raft peer traffic unless
    /// `peer_listen_addr` is given.
    pub listen_addr: SocketAddr,
    /// Address announced to peers and clients; defaults to this node's `initial_members` entry,
    /// else `listen_addr`.
    #[serde(default)]
    pub advertise_addr: Option<String>,
    /// A listener for Raft peer traffic alone (see the group config's).
    #[serde(default)]
    pub peer_listen_addr: Option<SocketAddr>,
    /// Address announced to peers for Raft traffic (see the group config's).
    #[serde(default)]
    pub advertise_peer_addr: Option<String>,
    /// Directory for the registry's RocksDB.
    pub data_dir: PathBuf,
    /// Where `/metrics` is served (Prometheus text); none to disable.
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    /// The registry group's first members; the lowest id bootstraps it, once.
    #[serde(default)]
    pub initial_members: Vec<Member>,
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
    /// Serve without TLS or client tokens on an address beyond loopback. Off, such a node
    /// refuses to start; on, it says so in its log and in Status.
    #[serde(default)]
    pub insecure: bool,
    /// TLS on every listener; peers and groups authenticated by their certificates.
    #[serde(default)]
    pub tls: Option<folio_auth::TlsConfig>,
    /// Client calls need a bearer token signed by one of these keys.
    #[serde(default)]
    pub auth: Option<folio_auth::AuthConfig>,
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
            peer_listen_addr: None,
            advertise_peer_addr: None,
            data_dir,
            metrics_addr: None,
            initial_members: Vec::new(),
            heartbeat_interval_ms: defaults::heartbeat_interval_ms(),
            group_timeout_ms: defaults::group_timeout_ms(),
            raft_heartbeat_ms: defaults::raft_heartbeat_ms(),
            election_timeout_min_ms: defaults::election_timeout_min_ms(),
            election_timeout_max_ms: defaults::election_timeout_max_ms(),
            insecure: false,
            tls: None,
            auth: None,
        }
    }

    /// The registry group's election timings (see `folio_raft::elect`).
    fn timing(&self) -> folio_raft::elect::Timing {
        folio_raft::elect::Timing::from_ms(
            self.raft_heartbeat_ms,
            self.election_timeout_min_ms,
            self.election_timeout_max_ms,
        )
    }

    fn openraft(&self) -> anyhow::Result<openraft::Config> {
        let c = openraft::Config {
            cluster_name: "folio-registry".into(),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10_000),
            max_in_snapshot_log_to_keep: 1_000,
            ..Default::default()
        };
        Ok(c.validate()?)
    }
}

impl NodeConfig for RegistryConfig {
    fn node_id(&self) -> u64 {
        self.node_id
    }

    fn advertise_addr(&self) -> Option<&str> {
        self.advertise_addr.as_deref()
    }

    fn initial_members(&self) -> &[Member] {
        &self.initial_members
    }

    fn insecure(&self) -> bool {
        self.insecure
    }

    fn tls(&self) -> Option<&folio_auth::TlsConfig> {
        self.tls.as_ref()
    }

    fn auth(&self) -> Option<&folio_auth::AuthConfig> {
        self.auth.as_ref()
    }

    fn listen_addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(self.listen_addr)
            .chain(self.peer_listen_addr)
            .chain(self.metrics_addr)
            .collect()
    }

    fn peer_listen_addr(&self) -> Option<SocketAddr> {
        self.peer_listen_addr
    }

    fn advertise_peer_addr(&self) -> Option<&str> {
        self.advertise_peer_addr.as_deref()
    }

    fn identity(&self) -> folio_auth::NodeIdentity {
        folio_auth::NodeIdentity::Registry { node: self.node_id }
    }

    fn validate_own(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval_ms < 10 || self.group_timeout_ms <= self.heartbeat_interval_ms {
            return Err(ConfigError::Invalid(
                "group_timeout_ms must exceed heartbeat_interval_ms (at least 10)".into(),
            ));
        }
        self.timing()
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("registry raft: {e}")))?;
        Ok(())
    }

    /// With no initial members the registry is a single node of this node (what `folio dev`
    /// runs).
    fn bootstrap_members(&self, me: &RaftNode) -> Vec<(u64, RaftNode)> {
        if self.initial_members.is_empty() {
            return vec![(self.node_id, me.clone())];
        }
        self.initial_members
            .iter()
            .map(|m| (m.id, m.node()))
            .collect()
    }
}

/// A running registry node.
pub struct RegistryNode {
    pub addr: SocketAddr,
    /// Where the peer listener is bound, when the node has one.
    pub peer_addr: Option<SocketAddr>,
    pub advertise: String,
    /// Where `/metrics` is served, when it is.
    pub metrics_addr: Option<SocketAddr>,
    pub raft: RegRaft,
    serving: Serving,
}

impl RegistryNode {
    pub async fn start(cfg: RegistryConfig) -> anyhow::Result<RegistryNode> {
        cfg.validate()?;
        let security = NodeSecurity::load(&cfg)?;
        crate::metrics::register();
        let bound = raft_node::bind(&cfg, cfg.listen_addr).await?;
        let (addr, advertise, me) = (bound.addr, bound.advertise.clone(), bound.me());
        let (log, sm) = state::open(&cfg.data_dir)
            .with_context(|| format!("open registry store in {}", cfg.data_dir.display()))?;
        let shared = sm.shared();
        let (raft, voter): (RegRaft, _) = raft_node::start_raft(
            &cfg,
            &security,
            REGISTRY_GROUP,
            cfg.openraft()?,
            cfg.timing(),
            &me,
            log,
            sm,
        )
        .await?;

        let live = Liveness {
            heartbeat_interval: Duration::from_millis(cfg.heartbeat_interval_ms),
            group_timeout: Duration::from_millis(cfg.group_timeout_ms),
        };
        let timing = voter.timing();
        let health = folio_raft::health::spawn(
            raft.clone(),
            timing,
            READY_LAG_ENTRIES,
            cfg.metrics_addr.is_some(),
        );
        let (reporter, health_svc) = tonic_health::server::health_reporter();
        raft_node::follow_health(health.clone(), reporter, GRPC_SERVICES);
        let (reflection, reflection_alpha) =
            raft_node::reflection(folio_proto::FILE_DESCRIPTOR_SET)?;
        let peers = PeerService::new(
            raft.clone(),
            REGISTRY_GROUP,
            cfg.node_id,
            health.clone(),
            Peers::Registry,
            security.tls.is_some(),
            voter,
        );
        let (peers_here, peer_router) = raft_node::place_peer_service(&bound, &security, peers)?;
        let router = raft_node::grpc_server(&security)?
            .add_service(RegistrySvc::server(
                cfg.node_id,
                raft.clone(),
                shared,
                live,
                folio_raft::leadership::Leadership::new(
                    folio_raft::leader_watch(raft.clone()),
                    health.clone(),
                    timing.timeout_max,
                    crate::service::LEADER,
                ),
                &security,
            ))
            .add_optional_service(peers_here)
            .add_service(health_svc)
            .add_service(reflection)
            .add_service(reflection_alpha);
        let peer_addr = bound.peer.as_ref().map(|p| p.addr);
        let serving = Serving::start_bound(router, peer_router, bound);
        let metrics_addr = match cfg.metrics_addr {
            Some(a) => Some(
                raft_node::serve_metrics(a, crate::metrics::register, health, &security).await?,
            ),
            None => None,
        };
        tracing::info!(node = cfg.node_id, %addr, %me, ?peer_addr, "registry node started");
        security.log();
        Ok(RegistryNode {
            addr,
            peer_addr,
            advertise,
            metrics_addr,
            raft,
            serving,
        })
    }

    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.serving.stop().await;
        self.raft
            .shutdown()
            .await
            .context("shut down registry raft")?;
        Ok(())
    }

    /// Runs until the server stops by itself (it does not, unless it fails), or until its Raft
    /// core stops on a fatal error: then it fails, so that a supervisor restarts it (as a data
    /// node does).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        let raft = self.raft.clone();
        tokio::select! {
            r = self.serving.wait() => r.context("registry gRPC server"),
            why = folio_raft::core_stopped(&raft) => {
                tracing::error!(%why, "the Raft core stopped: the registry node exits to be restarted");
                anyhow::bail!("the Raft core stopped ({why}); restart the node on its data directory")
            }
        }
    }
}
