//! What every Folio Raft node does to start and stop, whatever its group's state machine (a
//! write-tier `folio server`, a `folio registry` node, or both in `folio dev`): load and check its
//! TOML config, bind its gRPC listener and work out the address it announces, start openraft with
//! the peer transport and bootstrap the group once, serve gRPC with one set of transport settings,
//! and serve `/metrics`. A node's own crate adds only its services and background tasks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use folio_core::GroupId;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use crate::health::Health;
use crate::network::Network;
use crate::{bootstrap_once, BootstrapError, GroupTypes};

/// Longest a single gRPC call may run on a node.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent requests per client connection.
pub const CONCURRENCY_PER_CONNECTION: usize = 1024;
/// HTTP/2 keep-alive pings on idle connections, so a dead peer or client is noticed.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// How long a stopping node waits for calls in progress before it drops them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One member of a group's first membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    /// Address other members and clients use to reach this node (`host:port`).
    pub addr: String,
}

/// A node's configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The configuration of a node of some Raft group. Each kind of node has its own TOML layout;
/// this is what every one of them says about the node itself, and the checks they share.
pub trait NodeConfig: DeserializeOwned {
    /// This node's id within its group; at least 1.
    fn node_id(&self) -> u64;
    /// The address given as `advertise_addr`, if any.
    fn advertise_addr(&self) -> Option<&str>;
    /// The group's first members; the lowest id bootstraps the group, once.
    fn initial_members(&self) -> &[Member];
    /// The checks particular to this kind of node; [`NodeConfig::validate`] runs them after the
    /// shared ones.
    fn validate_own(&self) -> Result<(), ConfigError>;

    /// Every check a config must pass before the node starts.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id() == 0 {
            return Err(ConfigError::Invalid("node_id must be at least 1".into()));
        }
        let members = self.initial_members();
        let mut ids: Vec<_> = members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != members.len() || ids.contains(&0) {
            return Err(ConfigError::Invalid(
                "initial_members ids must be distinct and at least 1".into(),
            ));
        }
        self.validate_own()
    }

    /// The address this node announces to peers and clients: `advertise_addr`, else its own
    /// `initial_members` entry, else the address it is bound to.
    fn advertise(&self, bound: SocketAddr) -> String {
        if let Some(a) = self.advertise_addr() {
            return a.to_string();
        }
        self.initial_members()
            .iter()
            .find(|m| m.id == self.node_id())
            .map(|m| m.addr.clone())
            .unwrap_or_else(|| bound.to_string())
    }

    /// The members this node bootstraps the group with, if it is the lowest of them and its store
    /// is new. `advertise` is this node's announced address.
    fn bootstrap_members(&self, _advertise: &str) -> Vec<(u64, String)> {
        self.initial_members()
            .iter()
            .map(|m| (m.id, m.addr.clone()))
            .collect()
    }
}

/// Reads, parses and checks a node's TOML configuration file.
pub fn load_config<T: NodeConfig>(path: &Path) -> Result<T, ConfigError> {
    load_config_with(path, &Overrides::default())
}

/// What the command line says about a node in place of its config file, so that one file can
/// serve every member of a group (a Kubernetes StatefulSet's ConfigMap): the node id, from a pod
/// name's ordinal, and the address it announces.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// A name ending in `-N` (a StatefulSet pod's): the node id is N + 1.
    pub node_id_from_ordinal: Option<String>,
    pub advertise_addr: Option<String>,
}

impl Overrides {
    /// The node id a pod name's ordinal gives: `folio-g1-0` is node 1.
    pub fn node_id(name: &str) -> Result<u64, ConfigError> {
        let ordinal = name
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "--node-id-from-ordinal: {name:?} does not end in -<number>"
                ))
            })?;
        ordinal
            .checked_add(1)
            .ok_or_else(|| ConfigError::Invalid(format!("ordinal of {name:?} is too large")))
    }
}

/// [`load_config`], with `overrides` applied to the file's keys before it is checked.
pub fn load_config_with<T: NodeConfig>(
    path: &Path,
    overrides: &Overrides,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    let parse = |source| ConfigError::Parse {
        path: path.into(),
        source,
    };
    let mut table: toml::Table = toml::from_str(&text).map_err(parse)?;
    if let Some(name) = &overrides.node_id_from_ordinal {
        let id = Overrides::node_id(name)?;
        let id = i64::try_from(id)
            .map_err(|_| ConfigError::Invalid(format!("node id {id} is too large")))?;
        table.insert("node_id".into(), toml::Value::Integer(id));
    }
    if let Some(a) = &overrides.advertise_addr {
        table.insert("advertise_addr".into(), toml::Value::String(a.clone()));
    }
    let cfg: T = table.try_into().map_err(parse)?;
    cfg.validate()?;
    Ok(cfg)
}

/// Starting a node failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("start raft: {0}")]
    Raft(String),
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error("serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound gRPC listener and the address the node announces.
pub struct Bound {
    pub listener: TcpListener,
    /// The address the listener is bound to (its real port when 0 was asked for).
    pub addr: SocketAddr,
    pub advertise: String,
}

/// Binds the node's gRPC listener on `listen_addr`.
pub async fn bind(cfg: &impl NodeConfig, listen_addr: SocketAddr) -> Result<Bound, StartError> {
    let listen = |source| StartError::Listen {
        addr: listen_addr,
        source,
    };
    let listener = TcpListener::bind(listen_addr).await.map_err(listen)?;
    let addr = listener.local_addr().map_err(listen)?;
    Ok(Bound {
        listener,
        advertise: cfg.advertise(addr),
        addr,
    })
}

/// Starts openraft for this node of `group`, with Folio's peer transport, and bootstraps the
/// group if this node is the one to do it (see [`bootstrap_once`]).
pub async fn start_raft<C, LS, SM>(
    cfg: &impl NodeConfig,
    group: GroupId,
    raft_config: openraft::Config,
    advertise: &str,
    log: LS,
    sm: SM,
) -> Result<openraft::Raft<C>, StartError>
where
    C: GroupTypes,
    LS: RaftLogStorage<C>,
    SM: RaftStateMachine<C>,
{
    let raft = openraft::Raft::new(
        cfg.node_id(),
        Arc::new(raft_config),
        Network::new(group),
        log,
        sm,
    )
    .await
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let members = cfg.bootstrap_members(advertise);
    bootstrap_once(&raft, cfg.node_id(), advertise, &members).await?;
    Ok(raft)
}

/// The gRPC server settings every Folio node uses: small replies are sent at once (no Nagle),
/// every call has a deadline, connections are bounded in concurrent calls and kept alive.
pub fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE))
}

/// A gRPC server running in the background until [`Serving::stop`].
pub struct Serving {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Serving {
    /// Serves `router` on `listener`.
    pub fn start(router: tonic::transport::server::Router, listener: TcpListener) -> Serving {
        let (stop, stopped) = oneshot::channel::<()>();
        // tonic applies `tcp_nodelay` only to listeners it binds itself: set it on every accepted
        // connection, or Nagle's algorithm meets delayed ACKs and small replies wait ~40 ms.
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            if let Ok(c) = &conn {
                let _ = c.set_nodelay(true);
            }
            conn
        });
        let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        }));
        Serving {
            stop: Some(stop),
            task,
        }
    }

    /// Stops accepting calls and waits up to [`SHUTDOWN_GRACE`] for those in progress.
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await;
    }

    /// Runs until the server stops by itself (it does not, unless it fails).
    pub async fn wait(&mut self) -> Result<(), std::io::Error> {
        match (&mut self.task).await {
            Ok(r) => r.map_err(std::io::Error::other),
            Err(e) => Err(std::io::Error::other(format!("gRPC server task: {e}"))),
        }
    }
}

/// Serves HTTP on `addr` until the process ends: `/metrics`, every metric in the process-wide
/// default registry in the Prometheus text format (`register` is called first, so that metrics
/// registered lazily appear before their first observation); `/livez` and `/readyz`, 200 or 503
/// with the reason (see [`crate::health`]). Returns the bound address.
pub async fn serve_metrics(
    addr: SocketAddr,
    register: fn(),
    health: Health,
) -> Result<SocketAddr, StartError> {
    register();
    crate::health::register();
    let failed = |source| StartError::Metrics { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    let answer = |r: Result<(), String>, ok: &'static str| match r {
        Ok(()) => (axum::http::StatusCode::OK, format!("{ok}\n")),
        Err(why) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not {ok}: {why}\n"),
        ),
    };
    let (live, ready) = (health.clone(), health);
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(|| async { render() }))
        .route(
            "/livez",
            axum::routing::get(move || {
                let s = live.state();
                async move { answer(s.live, "live") }
            }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || {
                let s = ready.state();
                async move { answer(s.ready, "ready") }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}

/// Keeps the gRPC health service's answer for `services` (and the server as a whole, "") in step
/// with the node's readiness: SERVING while ready, NOT_SERVING otherwise.
pub fn follow_health(
    health: Health,
    reporter: tonic_health::server::HealthReporter,
    services: &'static [&'static str],
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut states = health.subscribe();
        loop {
            let status = if states.borrow_and_update().ready.is_ok() {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            for s in services.iter().chain(&[""]) {
                reporter.set_service_status(s, status).await;
            }
            if states.changed().await.is_err() {
                return;
            }
        }
    })
}

/// Every metric in the process-wide default registry, in the Prometheus text format.
fn render() -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&prometheus::gather())
        .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::Overrides;

    #[test]
    fn node_ids_come_from_pod_ordinals() {
        assert_eq!(Overrides::node_id("folio-g1-0").unwrap(), 1);
        assert_eq!(Overrides::node_id("release-folio-registry-2").unwrap(), 3);
        for bad in [
            "folio",
            "folio-",
            "folio-g1",
            "folio-x-1a",
            "-18446744073709551615",
        ] {
            assert!(Overrides::node_id(bad).is_err(), "{bad}");
        }
    }
}
