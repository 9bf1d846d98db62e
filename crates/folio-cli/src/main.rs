//! The `folio` binary: run a node (`server`) or a registry node (`registry`), everything in one
//! process (`dev`), work with volumes (`volume`), and operate groups (`admin`). Benchmarks live in
//! the separate `folio-bench` binary, so their baseline clients stay out of this one.

mod admin;
mod probe;
mod secure;
mod token;
mod volume;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use folio_raft::node::load_config_with;
use folio_registry::{RegistryConfig, RegistryNode};
use folio_server::config::{Config, Member, ObjectStoreConfig, RegistryLink};
use folio_server::Node;

#[derive(Parser)]
#[command(
    name = "folio",
    version,
    about = "Low-latency page storage on object storage"
)]
struct Cli {
    #[command(flatten)]
    conn: secure::ConnArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node of a group, configured by a TOML file.
    Server {
        #[arg(long, short)]
        config: PathBuf,
        /// Rebuild the group from its object store: start every node of the group with this, on
        /// empty data directories. The bootstrapping node restores every flushed commit before
        /// the group takes writes (the same as `restore = true` in the config).
        #[arg(long)]
        restore: bool,
        #[command(flatten)]
        overrides: NodeOverrides,
    },
    /// Run one node of the volume registry, configured by a TOML file.
    Registry {
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        overrides: NodeOverrides,
    },
    /// Run a complete single-node Folio in this process, with data under a local directory: a
    /// group, the volume registry, and a local-directory object store.
    Dev {
        /// Where data is kept (created if missing).
        #[arg(long, default_value = ".folio-dev")]
        data_dir: PathBuf,
        /// gRPC address (client API, admin). Port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        /// Prometheus `/metrics` address.
        #[arg(long, default_value = "127.0.0.1:7071")]
        metrics: SocketAddr,
        /// The in-process registry's gRPC address. Port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:7072")]
        registry_listen: SocketAddr,
        /// The region the dev group serves.
        #[arg(long, default_value = "local")]
        region: String,
        /// TLS on every listener and client tokens required: makes a CA, the nodes'
        /// certificates, a signing key and an admin token under DATA_DIR/secure (kept across
        /// restarts), and prints how to use them.
        #[arg(long)]
        secure: bool,
        #[command(flatten)]
        store: DevStore,
    },
    /// Make token signing keys and mint scoped bearer tokens.
    Token {
        #[command(subcommand)]
        cmd: token::TokenCmd,
    },
    /// Work with volumes: create, list, info, log, pull, read, write, import, export.
    Volume {
        #[command(subcommand)]
        cmd: volume::VolumeCmd,
    },
    /// Operate a group.
    Admin {
        #[command(subcommand)]
        cmd: admin::AdminCmd,
    },
    /// Exit 0 if a node (server or registry) is ready, that is its `/readyz` on the metrics
    /// listener answers 200; with --live, if it is live (`/livez`). For container health checks.
    Probe {
        /// The node's metrics address (`metrics_addr`).
        #[arg(long, default_value = "127.0.0.1:9090")]
        addr: String,
        #[arg(long)]
        live: bool,
        /// Speak HTTPS (a node with `[tls]`). With --ca the node's certificate is verified
        /// against that CA; without, it is not (the probe sends nothing secret).
        #[arg(long)]
        https: bool,
    },
}

/// Settings given on the command line in place of the config file's, so one file serves every
/// member (a StatefulSet's ConfigMap).
#[derive(clap::Args)]
struct NodeOverrides {
    /// Load and check the config (with these overrides), print the node it describes, and exit
    /// without starting it.
    #[arg(long)]
    check_config: bool,
    /// Take the node id from this name's trailing ordinal plus one (`folio-g1-0` is node 1): a
    /// StatefulSet pod's name.
    #[arg(long, value_name = "POD_NAME")]
    node_id_from_ordinal: Option<String>,
    /// The address this node announces to peers and clients (`host:port`).
    #[arg(long)]
    advertise_addr: Option<String>,
    /// This node's certificate (PEM), in place of the config's `[tls] cert`.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// This node's private key (PEM), in place of the config's `[tls] key`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl NodeOverrides {
    fn get(&self) -> folio_raft::node::Overrides {
        folio_raft::node::Overrides {
            node_id_from_ordinal: self.node_id_from_ordinal.clone(),
            advertise_addr: self.advertise_addr.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        }
    }
}

/// Where `folio dev` flushes segments: a local directory unless an S3 bucket is given.
#[derive(clap::Args)]
struct DevStore {
    /// Directory for flushed segments [default: DATA_DIR/objects].
    #[arg(long)]
    objects_dir: Option<PathBuf>,
    /// Flush to this S3 bucket instead of a local directory. Credentials come from the standard
    /// AWS chain (for example AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "FOLIO_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000.
    #[arg(long, env = "FOLIO_S3_ENDPOINT", requires = "s3_bucket")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "FOLIO_S3_REGION", requires = "s3_bucket")]
    s3_region: Option<String>,
    /// Key prefix within the bucket.
    #[arg(
        long,
        env = "FOLIO_S3_PREFIX",
        default_value = "",
        requires = "s3_bucket"
    )]
    s3_prefix: String,
    /// Path-style addressing (most S3-compatible stores need it).
    #[arg(long, env = "FOLIO_S3_PATH_STYLE", requires = "s3_bucket")]
    s3_path_style: bool,
}

impl DevStore {
    fn config(self, data_dir: &std::path::Path) -> ObjectStoreConfig {
        match self.s3_bucket {
            Some(bucket) => ObjectStoreConfig::S3 {
                bucket,
                prefix: self.s3_prefix,
                region: self.s3_region,
                endpoint: self.s3_endpoint,
                path_style: self.s3_path_style,
            },
            None => ObjectStoreConfig::Local {
                path: self.objects_dir.unwrap_or_else(|| data_dir.join("objects")),
            },
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FOLIO_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// What `--check-config` says of a node's protection: the files it would read (not read here).
fn protection(cfg: &impl folio_raft::node::NodeConfig) -> String {
    let tls = match cfg.tls() {
        Some(t) => format!(
            "TLS with cert {}, key {}, CA {}",
            t.cert.display(),
            t.key.display(),
            t.ca.display()
        ),
        None => "no TLS".to_string(),
    };
    let auth = match cfg.auth() {
        Some(a) => {
            let ids: Vec<&str> = a.keys.iter().map(|k| k.id.as_str()).collect();
            format!("client tokens (keys {})", ids.join(", "))
        }
        None => "no client tokens".to_string(),
    };
    format!("{tls}; {auth}")
}

async fn run_node(cfg: Config, banner: bool) -> anyhow::Result<()> {
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let mut node = Node::start(cfg).await?;
    if banner {
        println!("folio dev: listening on {}", node.addr);
        if let Some(m) = node.metrics_addr {
            println!("folio dev: metrics on {scheme}://{m}/metrics");
        }
    } else {
        println!(
            "folio server: listening on {} (advertised as {})",
            node.addr, node.advertise
        );
    }
    let failed = tokio::select! {
        r = node.wait() => r,
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            return node.shutdown().await;
        }
    };
    // The node stopped by itself: close what it holds (RocksDB under a compaction) before the
    // process exits with the error.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), node.shutdown()).await;
    failed
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Server {
            config,
            restore,
            overrides,
        } => {
            init_tracing();
            match load_config_with::<Config>(&config, &overrides.get()) {
                Ok(cfg) if overrides.check_config => {
                    println!(
                        "config ok: node {} of group {} in region {}, advertised as {}; {}",
                        cfg.node_id,
                        cfg.group_id,
                        cfg.region,
                        cfg.advertise_addr
                            .as_deref()
                            .unwrap_or("(its initial_members entry)"),
                        protection(&cfg)
                    );
                    Ok(())
                }
                Ok(mut cfg) => {
                    cfg.restore |= restore;
                    run_node(cfg, false).await
                }
                Err(e) => Err(e.into()),
            }
        }
        Cmd::Registry { config, overrides } => {
            init_tracing();
            match load_config_with::<RegistryConfig>(&config, &overrides.get()) {
                Ok(cfg) if overrides.check_config => {
                    println!(
                        "config ok: registry node {}, advertised as {}; {}",
                        cfg.node_id,
                        cfg.advertise_addr
                            .as_deref()
                            .unwrap_or("(its initial_members entry)"),
                        protection(&cfg)
                    );
                    Ok(())
                }
                Ok(cfg) => run_registry(cfg).await,
                Err(e) => Err(e.into()),
            }
        }
        Cmd::Dev {
            data_dir,
            listen,
            metrics,
            registry_listen,
            region,
            secure,
            store,
        } => {
            init_tracing();
            let store = store.config(&data_dir);
            let addrs = DevAddrs {
                listen,
                metrics,
                registry_listen,
            };
            dev(data_dir, addrs, region, secure, store).await
        }
        Cmd::Token { cmd } => token::run(cmd),
        Cmd::Admin { cmd } => match cli.conn.install() {
            Ok(()) => admin::run(cmd).await,
            Err(e) => Err(e),
        },
        Cmd::Probe { addr, live, https } => {
            let scheme = match cli.conn.ca() {
                Some(ca) => probe::Scheme::Https { ca: Some(ca) },
                None if https => probe::Scheme::Https { ca: None },
                None => probe::Scheme::Http,
            };
            probe::run(&addr, live, scheme)
        }
        Cmd::Volume { cmd } => match cli.conn.install() {
            Ok(()) => volume::run(cmd).await,
            Err(e) => Err(e),
        },
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code(&e)
        }
    }
}

/// Exit codes scripts can rely on: 0 success, 1 any other failure, 2 bad usage (clap),
/// 3 conflict (CAS or transaction), 4 not found, 5 unavailable after retries, 6 invalid request.
fn exit_code(e: &anyhow::Error) -> std::process::ExitCode {
    use folio_client::{Error, TxError};
    let client = e
        .downcast_ref::<Error>()
        .or_else(|| match e.downcast_ref::<TxError>() {
            Some(TxError::Client(c)) => Some(c),
            _ => None,
        });
    let code = match (client, e.downcast_ref::<TxError>()) {
        (_, Some(TxError::Conflict { .. } | TxError::TooManyRebases(_))) => 3,
        (Some(Error::Conflict { .. }), _) => 3,
        (Some(Error::NotFound(_)), _) => 4,
        (Some(Error::Unavailable { .. }), _) => 5,
        (Some(Error::Invalid { .. } | Error::AlreadyExists(_)), _) => 6,
        _ => 1,
    };
    std::process::ExitCode::from(code)
}

async fn run_registry(cfg: RegistryConfig) -> anyhow::Result<()> {
    let mut node = RegistryNode::start(cfg).await?;
    println!(
        "folio registry: listening on {} (advertised as {})",
        node.addr, node.advertise
    );
    if let Some(bound) = node.metrics_addr {
        println!("folio registry: metrics on http://{bound}/metrics");
    }
    let failed = tokio::select! {
        r = node.wait() => r,
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            return node.shutdown().await;
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), node.shutdown()).await;
    failed
}

/// A port-0 address resolved by binding, so it can be announced with the real port.
fn resolve_port(a: SocketAddr) -> anyhow::Result<SocketAddr> {
    if a.port() != 0 {
        return Ok(a);
    }
    let l = std::net::TcpListener::bind(a)?;
    Ok(l.local_addr()?)
}

/// Where `folio dev` listens.
struct DevAddrs {
    listen: SocketAddr,
    metrics: SocketAddr,
    registry_listen: SocketAddr,
}

async fn dev(
    data_dir: PathBuf,
    addrs: DevAddrs,
    region: String,
    secure: bool,
    object_store: ObjectStoreConfig,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    // The group id and node ids are fixed, so restarting reuses the same data.
    let listen = resolve_port(addrs.listen)?;
    let registry_listen = resolve_port(addrs.registry_listen)?;
    let security = match secure {
        true => Some(secure::dev_material(&data_dir.join("secure"))?),
        false => None,
    };
    let mut registry_cfg = RegistryConfig::single(registry_listen, data_dir.join("registry"));
    if let Some(s) = &security {
        registry_cfg.tls = Some(s.registry_tls.clone());
        registry_cfg.auth = Some(s.auth.clone());
    }
    let registry = RegistryNode::start(registry_cfg)
        .await
        .context("start the registry")?;
    println!("folio dev: registry on {}", registry.addr);
    let cfg = Config {
        node_id: 1,
        group_id: 1,
        listen_addr: listen,
        advertise_addr: Some(listen.to_string()),
        peer_listen_addr: None,
        advertise_peer_addr: None,
        data_dir: data_dir.clone(),
        metrics_addr: Some(addrs.metrics),
        initial_members: vec![Member {
            id: 1,
            addr: listen.to_string(),
            peer_addr: None,
        }],
        region,
        registry: Some(RegistryLink {
            addrs: vec![registry.advertise.clone()],
            resolve_cache_ttl_ms: 30_000,
        }),
        object_store,
        flush: Default::default(),
        checkpoint: Default::default(),
        lifecycle: Default::default(),
        restore: false,
        read: Default::default(),
        raft: Default::default(),
        limits: Default::default(),
        insecure: false,
        tls: security.as_ref().map(|s| s.node_tls.clone()),
        auth: security.as_ref().map(|s| s.auth.clone()),
    };
    if let Some(s) = &security {
        println!("{}", s.usage(&listen.to_string()));
    }
    println!("folio dev: data in {}", data_dir.display());
    match &cfg.object_store {
        ObjectStoreConfig::Local { path } => {
            println!("folio dev: segments flushed to {}", path.display())
        }
        ObjectStoreConfig::S3 { bucket, .. } => {
            println!("folio dev: segments flushed to S3 bucket {bucket}")
        }
    }
    let res = run_node(cfg, true).await;
    let _ = registry.shutdown().await;
    res
}
