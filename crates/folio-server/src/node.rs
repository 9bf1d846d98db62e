//! Starting and stopping one node: open the store, start Raft, bootstrap the group once, and serve
//! the client API, admin API, Raft peer traffic, health and reflection on one gRPC port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use folio_raft::network::{Network, PeerService};
use folio_raft::{open_store, Raft};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use crate::admin::AdminSvc;
use crate::batcher::Batcher;
use crate::config::Config;
use crate::flusher::{FlushDemand, Flusher};
use crate::pages::PageReader;
use crate::route::Shared;
use crate::service::VolumeSvc;

/// Longest a single client call may run on the server.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent requests per client connection.
pub const CONCURRENCY_PER_CONNECTION: usize = 1024;

/// A running node.
pub struct Node {
    /// The address the gRPC server is bound to.
    pub addr: SocketAddr,
    /// The address peers and clients use.
    pub advertise: String,
    pub metrics_addr: Option<SocketAddr>,
    pub raft: Raft,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Background work (flusher, snapshot trigger), aborted at shutdown.
    tasks: JoinSet<()>,
}

/// Builds a snapshot whenever `every` bytes of commands were applied since the last one this task
/// asked for, so the Raft log (which openraft purges after a snapshot) stays bounded in bytes
/// even when entries are large. openraft's own policy counts entries only.
async fn snapshot_by_bytes(raft: Raft, reader: folio_raft::StateReader, every: u64) {
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
        cfg.validate()?;
        let listener = tokio::net::TcpListener::bind(cfg.listen_addr)
            .await
            .with_context(|| format!("listen on {}", cfg.listen_addr))?;
        let addr = listener.local_addr()?;
        let advertise = cfg.advertise(addr);
        let group = cfg.group();

        let (log, sm) = open_store(&cfg.data_dir, group)
            .with_context(|| format!("open store in {}", cfg.data_dir.display()))?;
        let reader = sm.reader();
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(cfg.openraft()?),
            Network::new(group),
            log,
            sm,
        )
        .await
        .context("start raft")?;

        let initial: Vec<(u64, String)> = cfg
            .initial_members
            .iter()
            .map(|m| (m.id, m.addr.clone()))
            .collect();
        folio_raft::bootstrap_once(&raft, cfg.node_id, &advertise, &initial).await?;

        let store = crate::objstore::open(&cfg.object_store)
            .await
            .context("open the object store")?;
        let batcher = Batcher::start(raft.clone(), cfg.limits.clone());
        let demand = Arc::new(FlushDemand::default());
        let shared = Arc::new(Shared {
            id: cfg.node_id,
            group,
            raft: raft.clone(),
            reader: reader.clone(),
            batcher: batcher.clone(),
            flush: cfg.flush.clone(),
            flush_demand: demand.clone(),
            buffer_reserved: Default::default(),
            watch_slots: Arc::new(tokio::sync::Semaphore::new(
                crate::service::WATCH_STREAMS_MAX,
            )),
            pages: PageReader::new(
                reader.clone(),
                store.clone(),
                cfg.read.page_cache_bytes,
                Duration::from_millis(cfg.read.hedge_after_ms),
            ),
            read: cfg.read.clone(),
            channels: Shared::forward_channels(),
            registry: match &cfg.registry {
                Some(r) => Some(Arc::new(
                    crate::registry::RegistryLink::new(r, cfg.region.clone())
                        .context("registry link")?,
                )),
                None => None,
            },
        });
        let mut tasks = JoinSet::new();
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
        if let Some(link) = shared.registry.clone() {
            tasks.spawn(link.heartbeat(shared.clone(), advertise.clone()));
        }
        tasks.spawn(snapshot_by_bytes(
            raft.clone(),
            reader,
            cfg.raft.snapshot_log_bytes,
        ));

        let (health, health_svc) = tonic_health::server::health_reporter();
        health.set_serving::<folio_proto::volume::v1::volume_service_server::VolumeServiceServer<VolumeSvc>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(folio_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("build reflection service")?;

        let (stop, stopped) = oneshot::channel::<()>();
        // tonic applies `tcp_nodelay` only to listeners it binds itself: set it on every accepted
        // connection, or Nagle's algorithm meets delayed ACKs and small replies wait ~40 ms.
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            if let Ok(c) = &conn {
                let _ = c.set_nodelay(true);
            }
            conn
        });
        let router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(VolumeSvc::server(shared.clone()))
            .add_service(AdminSvc::server(shared.clone()))
            .add_service(PeerService::new(raft.clone(), group, cfg.node_id))
            .add_service(health_svc)
            .add_service(reflection);
        let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        }));

        let metrics_addr = match cfg.metrics_addr {
            Some(a) => Some(
                crate::metrics::serve(a)
                    .await
                    .with_context(|| format!("serve metrics on {a}"))?,
            ),
            None => None,
        };
        tracing::info!(node = cfg.node_id, group = group.0, %addr, %advertise, "node started");
        Ok(Node {
            addr,
            advertise,
            metrics_addr,
            raft,
            stop: Some(stop),
            server,
            tasks,
        })
    }

    /// Stops serving and shuts Raft down.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.tasks.abort_all();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
        self.raft.shutdown().await.context("shut down raft")?;
        Ok(())
    }

    /// Runs until the server stops by itself (it does not, unless it fails).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server).await?.context("gRPC server")
    }
}
