//! Starting and stopping one write-tier node. The start-up every Folio node shares (config
//! checks, listener, openraft and bootstrap, gRPC transport settings, `/metrics`) is
//! `folio_raft::node`; this adds the write tier's store, services (client API, admin, Raft peer
//! traffic, health, reflection on one gRPC port) and background tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use folio_objstore::ObjectStore;
use folio_raft::network::{PeerService, Peers};
use folio_raft::node::{self as raft_node, NodeConfig, NodeSecurity, Serving};
use folio_state::{open_store, Raft};
use tokio::task::JoinSet;

use crate::admin::AdminSvc;
use crate::batcher::Batcher;
use crate::checkpointer::Checkpointer;
use crate::config::Config;
use crate::edge::Edge;
use crate::flusher::{FlushDemand, Flusher};
use crate::history::History;
use crate::lifecycle::SharedReport;
use crate::pages::PageReader;
use crate::restore::Restorer;
use crate::service::{ReadPath, VolumeSvc, WritePath};

/// The gRPC services whose health follows the node's readiness. (AdminService is left out: an
/// operator asks a node that is not ready for its status too.)
const GRPC_SERVICES: &[&str] = &[
    <folio_proto::volume::v1::volume_service_server::VolumeServiceServer<VolumeSvc> as tonic::server::NamedService>::NAME,
];

/// A running node.
pub struct Node {
    /// The address the gRPC server is bound to.
    pub addr: SocketAddr,
    /// Where the peer listener is bound, when the node has one.
    pub peer_addr: Option<SocketAddr>,
    /// The address clients (and peers, without a peer listener) use.
    pub advertise: String,
    pub metrics_addr: Option<SocketAddr>,
    pub raft: Raft,
    /// This node's applied state, for tools and tests.
    pub reader: folio_state::StateReader,
    serving: Serving,
    /// Background work (flusher, checkpointer, rebuild, snapshot trigger), aborted at shutdown.
    tasks: JoinSet<()>,
}

/// Builds a snapshot whenever `every` bytes of commands were applied since the last one this task
/// asked for, so the Raft log (which openraft purges after a snapshot) stays bounded in bytes
/// even when entries are large. openraft's own policy counts entries only.
async fn snapshot_by_bytes(raft: Raft, reader: folio_state::StateReader, every: u64) {
    let mut last = reader.applied_bytes();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = reader.applied_bytes();
        if now.saturating_sub(last) >= every {
            last = now;
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::warn!(error = %e, "could not trigger a snapshot");
            }
        }
    }
}

impl Node {
    pub async fn start(cfg: Config) -> anyhow::Result<Node> {
        let store = crate::objstore::open(&cfg.object_store)
            .await
            .context("open the object store")?;
        Self::start_with_store(cfg, store).await
    }

    /// Starts a node on an object store opened by the caller (tests wrap one with faults);
    /// `cfg.object_store` is not used.
    pub async fn start_with_store(
        cfg: Config,
        store: Arc<dyn ObjectStore>,
    ) -> anyhow::Result<Node> {
        cfg.validate()?;
        let security = NodeSecurity::load(&cfg)?;
        let bound = raft_node::bind(&cfg, cfg.listen_addr).await?;
        let (addr, advertise, me) = (bound.addr, bound.advertise.clone(), bound.me());
        let group = cfg.group();
        let fresh = !cfg.data_dir.join("db").exists();
        crate::identity::claim(&cfg, store.as_ref(), fresh).await?;
        let (log, sm) = open_store(&cfg.data_dir, group)
            .with_context(|| format!("open store in {}", cfg.data_dir.display()))?;
        let reader = sm.reader();
        let state_reader = reader.clone();
        let (raft, voter): (Raft, _) = raft_node::start_raft(
            &cfg,
            &security,
            group,
            cfg.openraft()?,
            cfg.timing(),
            &me,
            log,
            sm,
        )
        .await?;
        let hedge_after = Duration::from_millis(cfg.read.hedge_after_ms);
        // The history index's caches get a quarter of the page cache's budget on top of it.
        let history = Arc::new(History::new(
            reader.clone(),
            store.clone(),
            group,
            cfg.read.page_cache_bytes / 4,
            hedge_after,
        ));
        // Readiness first, so the peer service reports to it from the first message.
        let health = folio_raft::health::spawn(
            raft.clone(),
            voter.timing(),
            cfg.raft.ready_lag_entries,
            true,
        );
        let leaders = folio_raft::leader_watch(raft.clone());
        let batcher = Batcher::start(raft.clone(), leaders.clone(), cfg.limits.clone());
        let demand = Arc::new(FlushDemand::default());
        let registry = match &cfg.registry {
            Some(r) => Some(Arc::new(
                crate::registry::RegistryLink::new(r, cfg.region.clone(), security.client.clone())
                    .context("registry link")?,
            )),
            None => None,
        };
        let edge = Arc::new(Edge::new(
            cfg.node_id,
            group,
            raft.clone(),
            registry.clone(),
            crate::edge::Access {
                region: cfg.region.clone(),
                required: security.tokens_required() || security.tls.is_some(),
                client: security.client.clone(),
                mode: security.mode.clone(),
            },
            folio_raft::leadership::Leadership::new(
                leaders,
                health.clone(),
                voter.timing().timeout_max,
                crate::edge::status::LEADER,
            ),
        ));
        let writes = WritePath::new(batcher, history.clone(), cfg.flush.clone(), demand.clone());
        let pages = PageReader::new(
            history.clone(),
            store.clone(),
            cfg.read.page_cache_bytes,
            hedge_after,
        );
        let reads = ReadPath::new(history.clone(), pages, cfg.read.clone());
        let report = SharedReport::default();
        let admin = AdminSvc::server(edge.clone(), reader.clone(), report.clone());
        let volumes = VolumeSvc::server(edge, writes, reads);
        let mut tasks = JoinSet::new();
        tasks.spawn(
            Checkpointer {
                node_id: cfg.node_id,
                group,
                raft: raft.clone(),
                history: history.clone(),
                store: store.clone(),
                cfg: cfg.checkpoint.clone(),
                lifecycle: cfg.lifecycle.clone(),
                report: report.clone(),
                segment_bytes_max: cfg.limits.segment_bytes_max,
            }
            .run(),
        );
        if cfg.restore {
            tasks.spawn(
                Restorer {
                    node_id: cfg.node_id,
                    group,
                    raft: raft.clone(),
                    history,
                    store: store.clone(),
                    segment_bytes_max: cfg.limits.segment_bytes_max,
                }
                .run(),
            );
        }
        tasks.spawn(
            Flusher {
                node_id: cfg.node_id,
                raft: raft.clone(),
                reader: reader.clone(),
                segment_bytes_max: cfg.limits.segment_bytes_max,
                store,
                cfg: cfg.flush.clone(),
                demand,
            }
            .run(),
        );
        if let Some(link) = registry {
            tasks.spawn(link.heartbeat(raft.clone(), cfg.node_id, group, advertise.clone()));
        }
        tasks.spawn(snapshot_by_bytes(
            raft.clone(),
            reader,
            cfg.raft.snapshot_log_bytes,
        ));

        let (reporter, health_svc) = tonic_health::server::health_reporter();
        raft_node::follow_health(health.clone(), reporter, GRPC_SERVICES);
        let (reflection, reflection_alpha) =
            raft_node::reflection(folio_proto::FILE_DESCRIPTOR_SET)?;

        let peers = PeerService::new(
            raft.clone(),
            group,
            cfg.node_id,
            health.clone(),
            Peers::Group(group.0),
            security.tls.is_some(),
            voter,
        );
        let (peers_here, peer_router) = raft_node::place_peer_service(&bound, &security, peers)?;
        let router = raft_node::grpc_server(&security)?
            .add_service(volumes)
            .add_service(admin)
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
        tracing::info!(node = cfg.node_id, group = group.0, %addr, %me, ?peer_addr, "node started");
        security.log();
        Ok(Node {
            addr,
            peer_addr,
            advertise,
            metrics_addr,
            raft,
            reader: state_reader,
            serving,
            tasks,
        })
    }

    /// Stops serving and shuts Raft down.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.tasks.abort_all();
        self.serving.stop().await;
        self.raft.shutdown().await.context("shut down raft")?;
        // RocksDB aborts the process if it exits under a background compaction.
        if !tokio::task::spawn_blocking(|| {
            folio_state::wait_for_background_compaction(Duration::from_secs(30))
        })
        .await
        .unwrap_or(false)
        {
            tracing::warn!("a history compaction was still running at shutdown");
        }
        Ok(())
    }

    /// Runs until the server stops by itself (it does not, unless it fails). A node whose Raft
    /// core stopped (openraft quits on a storage error, such as ENOSPC on a log write) can
    /// serve nothing that needs its group again until it restarts, and a process that stays up
    /// in that state holds its clients and hides from supervisors that only restart processes
    /// that exit: it fails instead, and restarting on the same disk recovers it.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        let raft = self.raft.clone();
        tokio::select! {
            r = self.serving.wait() => r.context("gRPC server"),
            why = folio_raft::core_stopped(&raft) => {
                tracing::error!(%why, "the Raft core stopped: the node exits to be restarted");
                // Watch streams end with UNAVAILABLE first (they select on the same signal).
                tokio::time::sleep(Duration::from_millis(200)).await;
                anyhow::bail!("the Raft core stopped ({why}); restart the node on its data directory")
            }
        }
    }
}
