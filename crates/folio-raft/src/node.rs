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
use openraft::storage::RaftStateMachine;

use crate::elect::{Timing, Voter};
use crate::LogStore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use folio_auth::{AuthConfig, Authenticator, NodeIdentity, TlsConfig, TlsMaterial, Verifier};
use folio_proto::channels::Security;

use crate::health::Health;
use crate::network::{Network, PeerService};
use crate::{bootstrap_once, BootstrapError, GroupTypes, RaftNode};
use folio_proto::raft::v1::raft_service_server::RaftServiceServer;

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
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: u64,
    /// Address clients (and peers, unless `peer_addr` is given) use to reach this node
    /// (`host:port`).
    pub addr: String,
    /// Where this member takes Raft traffic, when it has its own peer listener
    /// (`peer_listen_addr`).
    #[serde(default)]
    pub peer_addr: Option<String>,
}

impl Member {
    /// This member as the group's membership records it.
    pub fn node(&self) -> RaftNode {
        RaftNode::with_peer(&self.addr, self.peer_addr.clone())
    }
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
    /// `insecure = true`: the node may listen beyond loopback without TLS or client tokens.
    fn insecure(&self) -> bool;
    /// The `[tls]` section, if any.
    fn tls(&self) -> Option<&TlsConfig>;
    /// The `[auth]` section, if any.
    fn auth(&self) -> Option<&AuthConfig>;
    /// Every address the node listens on (gRPC, peers, metrics), for the safe-default check.
    fn listen_addrs(&self) -> Vec<SocketAddr>;
    /// The gRPC listener that takes only Raft peer traffic (`peer_listen_addr`), if any; else
    /// peers call the client listener.
    fn peer_listen_addr(&self) -> Option<SocketAddr>;
    /// The address given as `advertise_peer_addr`, if any.
    fn advertise_peer_addr(&self) -> Option<&str>;
    /// Who this node is, as its certificate must say.
    fn identity(&self) -> NodeIdentity;

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
        if let Some(p) = self.peer_listen_addr() {
            if let Some(m) = members.iter().find(|m| m.peer_addr.is_none()) {
                return Err(ConfigError::Invalid(format!(
                    "peer_listen_addr is set, so every initial_members entry needs peer_addr \
                     (where that member takes Raft traffic); node {} has none",
                    m.id
                )));
            }
            if p.port() != 0 && self.listen_addrs().iter().filter(|a| **a == p).count() > 1 {
                return Err(ConfigError::Invalid(format!(
                    "peer_listen_addr {p} must differ from the other listen addresses"
                )));
            }
        } else {
            let me = members.iter().find(|m| m.id == self.node_id());
            if let Some(p) = me.and_then(|m| m.peer_addr.as_deref()) {
                return Err(ConfigError::Invalid(format!(
                    "initial_members gives this node (node {}) the peer address {p}, but it \
                     has no peer_listen_addr to serve it",
                    self.node_id()
                )));
            }
            if self.advertise_peer_addr().is_some() {
                return Err(ConfigError::Invalid(
                    "advertise_peer_addr needs peer_listen_addr".into(),
                ));
            }
        }
        if self.auth().is_some() && self.tls().is_none() {
            return Err(ConfigError::Invalid(
                "[auth] needs [tls]: tokens sent in plaintext can be copied off the wire, and \
                 nodes call each other with their TLS certificates, not tokens"
                    .into(),
            ));
        }
        let open: Vec<String> = self
            .listen_addrs()
            .iter()
            .filter(|a| !a.ip().is_loopback())
            .map(|a| a.to_string())
            .collect();
        if !self.insecure() && !open.is_empty() && (self.tls().is_none() || self.auth().is_none()) {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on {} without TLS ([tls]) and client tokens ([auth]): \
                 configure both, or set insecure = true to serve anyone who can reach the port",
                open.join(", ")
            )));
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

    /// The address this node announces for peer traffic, when it has a peer listener bound to
    /// `bound`: `advertise_peer_addr`, else its `initial_members` entry's `peer_addr`, else the
    /// host of `advertise` with the peer listener's port.
    fn advertise_peer(&self, bound: SocketAddr, advertise: &str) -> String {
        if let Some(a) = self.advertise_peer_addr() {
            return a.to_string();
        }
        let mine = self
            .initial_members()
            .iter()
            .find(|m| m.id == self.node_id())
            .and_then(|m| m.peer_addr.clone());
        mine.unwrap_or_else(|| match advertise.rsplit_once(':') {
            Some((host, _)) => format!("{host}:{}", bound.port()),
            None => bound.to_string(),
        })
    }

    /// The members this node bootstraps the group with, if it is the lowest of them and its store
    /// is new. `me` is how this node announces itself.
    fn bootstrap_members(&self, _me: &RaftNode) -> Vec<(u64, RaftNode)> {
        self.initial_members()
            .iter()
            .map(|m| (m.id, m.node()))
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
    /// In place of `[tls] cert` and `key`: each pod's own certificate where one config serves
    /// every member.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
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
    for (key, file) in [("cert", &overrides.tls_cert), ("key", &overrides.tls_key)] {
        let Some(file) = file else { continue };
        let tls = table
            .get_mut("tls")
            .and_then(toml::Value::as_table_mut)
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "--tls-{key} given, but {} has no [tls] section (it names the CA)",
                    path.display()
                ))
            })?;
        let file = file
            .to_str()
            .ok_or_else(|| ConfigError::Invalid(format!("--tls-{key}: {file:?} is not UTF-8")))?;
        tls.insert(key.into(), toml::Value::String(file.into()));
    }
    let cfg: T = table.try_into().map_err(parse)?;
    cfg.validate()?;
    Ok(cfg)
}

/// How a node protects itself and proves who it is, loaded from its config.
#[derive(Clone)]
pub struct NodeSecurity {
    /// The node's certificate, key and CA, when TLS is on.
    pub tls: Option<TlsMaterial>,
    /// The layer every gRPC call passes first.
    pub auth: Authenticator,
    /// How this node calls others (peers, the registry, the leader): TLS with its certificate.
    pub client: Security,
    /// One line for logs and admin Status.
    pub mode: String,
}

impl NodeSecurity {
    /// Reads the `[tls]` and `[auth]` files a config names and checks them: the certificate must
    /// name this node.
    pub fn load(cfg: &impl NodeConfig) -> Result<NodeSecurity, ConfigError> {
        let tls = match cfg.tls() {
            Some(t) => {
                let m = t.load().map_err(ConfigError::Invalid)?;
                m.check_identity(cfg.identity())
                    .map_err(ConfigError::Invalid)?;
                Some(m)
            }
            None => None,
        };
        let verifier = match cfg.auth() {
            Some(a) => Some(Verifier::load(a).map_err(ConfigError::Invalid)?),
            None => None,
        };
        let mode = match (&tls, &verifier) {
            (Some(_), Some(v)) => format!(
                "secure: TLS with peer certificates, client tokens (keys {})",
                v.key_ids().join(", ")
            ),
            (Some(_), None) => "TLS with peer certificates; NO client tokens: anyone who \
                                reaches the port may call"
                .to_string(),
            (None, Some(_)) => "client tokens, but NO TLS: traffic and tokens travel in \
                                plaintext, peers are not authenticated"
                .to_string(),
            (None, None) => "INSECURE: no TLS, no client tokens".to_string(),
        };
        Ok(NodeSecurity {
            client: match &tls {
                Some(m) => Security::tls(m.client()),
                None => Security::default(),
            },
            auth: Authenticator::new(verifier, tls.is_some()),
            tls,
            mode,
        })
    }

    /// Says in the log how this node is protected: a warning unless fully.
    pub fn log(&self) {
        if self.tls.is_none() || !self.tokens_required() {
            tracing::warn!(security = %self.mode, "serving without full protection");
        } else {
            tracing::info!(security = %self.mode, "serving with TLS and client tokens");
        }
    }

    /// Whether client calls need tokens.
    pub fn tokens_required(&self) -> bool {
        self.auth.tokens_required()
    }
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
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("TLS: {0}")]
    Tls(String),
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
    /// The peer listener, when the node has one.
    pub peer: Option<BoundPeer>,
}

/// A bound peer listener (`peer_listen_addr`) and the address the node announces for it.
pub struct BoundPeer {
    pub listener: TcpListener,
    pub addr: SocketAddr,
    pub advertise: String,
}

impl Bound {
    /// This node as its membership entry records it.
    pub fn me(&self) -> RaftNode {
        RaftNode::with_peer(
            &self.advertise,
            self.peer.as_ref().map(|p| p.advertise.clone()),
        )
    }
}

async fn listen(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let failed = |source| StartError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

/// Binds the node's gRPC listener on `listen_addr`, and its peer listener when it has one.
pub async fn bind(cfg: &impl NodeConfig, listen_addr: SocketAddr) -> Result<Bound, StartError> {
    let (listener, addr) = listen(listen_addr).await?;
    let advertise = cfg.advertise(addr);
    let peer = match cfg.peer_listen_addr() {
        Some(p) => {
            let (listener, addr) = listen(p).await?;
            Some(BoundPeer {
                advertise: cfg.advertise_peer(addr, &advertise),
                listener,
                addr,
            })
        }
        None => None,
    };
    Ok(Bound {
        listener,
        addr,
        advertise,
        peer,
    })
}

/// Starts openraft for this node of `group`, with Folio's peer transport and election task
/// ([`crate::elect`], with `timing`), and bootstraps the group if this node is the one to do it
/// (see [`bootstrap_once`]). Returns the Raft handle and what the peer service needs to answer
/// pre-votes.
#[allow(clippy::too_many_arguments)]
pub async fn start_raft<C, SM>(
    cfg: &impl NodeConfig,
    security: &NodeSecurity,
    group: GroupId,
    mut raft_config: openraft::Config,
    timing: Timing,
    me: &RaftNode,
    log: LogStore<C>,
    sm: SM,
) -> Result<(openraft::Raft<C>, Voter), StartError>
where
    C: GroupTypes,
    SM: RaftStateMachine<C>,
{
    timing.apply(&mut raft_config);
    let raft_config = raft_config
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let network = Network::new(group, security.client.clone());
    let last_log = log.last_log_weak();
    let raft = openraft::Raft::new(
        cfg.node_id(),
        Arc::new(raft_config),
        network.clone(),
        log,
        sm,
    )
    .await
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let voter = Voter {
        timing,
        last_log,
        started: std::time::Instant::now(),
    };
    crate::elect::spawn(raft.clone(), network, cfg.node_id(), voter.clone());
    let members = cfg.bootstrap_members(me);
    bootstrap_once(&raft, cfg.node_id(), me, &members).await?;
    warn_if_peers_dial_elsewhere(&raft, cfg.node_id(), me);
    Ok((raft, voter))
}

/// Logs a warning when this node's membership entry (from an earlier start, or from add-node)
/// tells peers to dial another address than the one it serves Raft on now: until the entry is
/// changed (remove-node, then add-node with the new addresses), peers cannot reach it.
fn warn_if_peers_dial_elsewhere<C: GroupTypes>(raft: &openraft::Raft<C>, id: u64, me: &RaftNode) {
    let m = raft.metrics().borrow().membership_config.clone();
    if let Some(recorded) = m.membership().get_node(&id) {
        if recorded.peer() != me.peer() {
            tracing::warn!(
                node = id,
                recorded = %recorded,
                serving = %me,
                "peers dial this node at {}, but it takes Raft traffic at {}: remove it from the \
                 group and add it again with the new addresses (admin add-node --peer-addr)",
                recorded.peer(),
                me.peer()
            );
        }
    }
}

/// A node's gRPC server with every service added, ready to serve.
pub type GrpcRouter =
    tonic::transport::server::Router<tower_layer::Stack<Authenticator, tower_layer::Identity>>;

/// The gRPC server settings every Folio node uses: small replies are sent at once (no Nagle),
/// every call has a deadline, connections are bounded in concurrent calls and kept alive; TLS
/// when the node has it, and every call authenticated first ([`Authenticator`]).
pub fn grpc_server(security: &NodeSecurity) -> Result<GrpcServer, StartError> {
    server_with(security, security.tls.as_ref().map(TlsMaterial::server))
}

/// The peer listener's gRPC server (`peer_listen_addr`), for the Raft service alone: as
/// [`grpc_server`], but with TLS a client certificate signed by the CA is required for the
/// handshake itself, and a Raft call still needs a member's certificate (the same layer).
pub fn peer_grpc_server(security: &NodeSecurity) -> Result<GrpcServer, StartError> {
    server_with(
        security,
        security.tls.as_ref().map(TlsMaterial::peer_server),
    )
}

/// A gRPC server builder with Folio's settings and authentication layer.
pub type GrpcServer =
    tonic::transport::Server<tower_layer::Stack<Authenticator, tower_layer::Identity>>;

fn server_with(
    security: &NodeSecurity,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<GrpcServer, StartError> {
    let mut b = tonic::transport::Server::builder();
    if let Some(t) = tls {
        b = b
            .tls_config(t)
            .map_err(|e| StartError::Tls(e.to_string()))?;
    }
    Ok(b.tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE))
        .layer(security.auth.clone()))
}

/// Where the Raft service is served: on its own listener when the node has one (then the
/// returned router carries it and the client listener gets none), else on the client listener
/// (the service comes back to be added there).
#[allow(clippy::type_complexity)]
pub fn place_peer_service<C: GroupTypes>(
    bound: &Bound,
    security: &NodeSecurity,
    peers: RaftServiceServer<PeerService<C>>,
) -> Result<
    (
        Option<RaftServiceServer<PeerService<C>>>,
        Option<GrpcRouter>,
    ),
    StartError,
> {
    Ok(match &bound.peer {
        Some(_) => (None, Some(peer_grpc_server(security)?.add_service(peers))),
        None => (Some(peers), None),
    })
}

/// Reflection (both `v1` and `v1alpha`, which grpcurl before 1.9 and many tools still speak) for
/// `descriptors`.
pub fn reflection(
    descriptors: &'static [u8],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    StartError,
> {
    let fail = |e: tonic_reflection::server::Error| StartError::Raft(format!("reflection: {e}"));
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptors)
        .build_v1()
        .map_err(fail)?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptors)
        .build_v1alpha()
        .map_err(fail)?;
    Ok((v1, v1alpha))
}

/// A node's gRPC servers (the client listener, and the peer listener when it has one) running in
/// the background until [`Serving::stop`].
pub struct Serving {
    stop: Option<tokio::sync::watch::Sender<bool>>,
    tasks: tokio::task::JoinSet<Result<(), tonic::transport::Error>>,
}

impl Serving {
    /// Serves `router` on `listener`.
    pub fn start(router: GrpcRouter, listener: TcpListener) -> Serving {
        let (stop, _) = tokio::sync::watch::channel(false);
        let mut s = Serving {
            stop: Some(stop),
            tasks: tokio::task::JoinSet::new(),
        };
        s.add(router, listener);
        s
    }

    /// Serves `router` on the client listener of `bound`, and `peers` (from
    /// [`place_peer_service`]) on its peer listener when it has one.
    pub fn start_bound(router: GrpcRouter, peers: Option<GrpcRouter>, bound: Bound) -> Serving {
        let mut s = Serving::start(router, bound.listener);
        if let (Some(r), Some(p)) = (peers, bound.peer) {
            s.add(r, p.listener);
        }
        s
    }

    /// Serves `router` on `listener` as well, until the same stop.
    pub fn add(&mut self, router: GrpcRouter, listener: TcpListener) {
        let Some(stop) = &self.stop else { return };
        let mut stopped = stop.subscribe();
        // tonic applies `tcp_nodelay` only to listeners it binds itself: set it on every accepted
        // connection, or Nagle's algorithm meets delayed ACKs and small replies wait ~40 ms.
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            if let Ok(c) = &conn {
                let _ = c.set_nodelay(true);
            }
            conn
        });
        self.tasks
            .spawn(router.serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
    }

    /// Stops accepting calls and waits up to [`SHUTDOWN_GRACE`] for those in progress.
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
    }

    /// Runs until a server stops by itself (they do not, unless one fails).
    pub async fn wait(&mut self) -> Result<(), std::io::Error> {
        match self.tasks.join_next().await {
            Some(Ok(r)) => r.map_err(std::io::Error::other),
            Some(Err(e)) => Err(std::io::Error::other(format!("gRPC server task: {e}"))),
            None => Ok(()),
        }
    }
}

/// Most TLS handshakes the HTTP endpoint runs at once; further connections wait in the kernel's
/// accept queue.
const HTTP_HANDSHAKES_MAX: usize = 64;

/// Accepted TLS connections for axum: a task accepts TCP connections and runs each handshake in
/// its own task (bounded in number and time), so one slow client cannot stall the others.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    addr: SocketAddr,
}

impl TlsListener {
    fn new(listener: TcpListener, cfg: Arc<rustls::ServerConfig>) -> std::io::Result<TlsListener> {
        let addr = listener.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(HTTP_HANDSHAKES_MAX);
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        let slots = Arc::new(tokio::sync::Semaphore::new(HTTP_HANDSHAKES_MAX));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let hs = tokio::time::timeout(
                        folio_auth::tls::HANDSHAKE_TIMEOUT,
                        acceptor.accept(tcp),
                    );
                    match hs.await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics TLS handshake"),
                        Err(_) => tracing::debug!(%peer, "metrics TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task ended (it does not): never hand out another connection.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// Serves HTTP on `addr` until the process ends: `/metrics`, every metric in the process-wide
/// default registry in the Prometheus text format (`register` is called first, so that metrics
/// registered lazily appear before their first observation); `/livez` and `/readyz`, 200 or 503
/// with the reason (see [`crate::health`]). HTTPS with the node's certificate when it has one;
/// `/metrics` needs a token with the `metrics` (or `admin`) scope when tokens are required, while
/// the probes stay open (they say only "live" or "ready"). Returns the bound address.
pub async fn serve_metrics(
    addr: SocketAddr,
    register: fn(),
    health: Health,
    security: &NodeSecurity,
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
    let auth = security.auth.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let checked = auth.check_http(&headers, &folio_auth::Need::Metrics);
                async move {
                    match checked {
                        Ok(()) => (axum::http::StatusCode::OK, render()),
                        Err(s) => {
                            let code = if s.code() == tonic::Code::PermissionDenied {
                                axum::http::StatusCode::FORBIDDEN
                            } else {
                                axum::http::StatusCode::UNAUTHORIZED
                            };
                            (code, format!("{}\n", s.message()))
                        }
                    }
                }
            }),
        )
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
    match &security.tls {
        Some(m) => {
            let cfg = m.http_server().map_err(StartError::Tls)?;
            let listener = TlsListener::new(listener, cfg).map_err(failed)?;
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            });
        }
        None => {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            });
        }
    }
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
