//! Test support: a Folio group as real `folio server` processes on 127.0.0.1, each with its own
//! data directory, that tests can SIGKILL and restart. Processes are killed when the cluster is
//! dropped. Every wait here is bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use folio_client::{Client, RetryPolicy};

/// One node process.
pub struct ProcNode {
    pub id: u64,
    pub addr: String,
    /// The node's peer listener, with [`Options::peer_listeners`].
    pub peer_addr: Option<String>,
    pub metrics_addr: String,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl ProcNode {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A group of node processes.
pub struct Cluster {
    bin: PathBuf,
    opts: Options,
    dir: tempfile::TempDir,
    pub nodes: Vec<ProcNode>,
}

/// Extra configuration for every node of a [`Cluster`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Lines for the `[raft]` section.
    pub raft: String,
    /// Lines for the `[flush]` section.
    pub flush: String,
    /// Lines for the `[limits]` section.
    pub limits: String,
    /// Lines for the `[object_store]` section; `None` gives every node the same local directory
    /// inside the cluster's temporary directory.
    pub object_store: Option<String>,
    /// The group id [default: 7].
    pub group_id: Option<u64>,
    /// The group's region [default: the server's default].
    pub region: Option<String>,
    /// Registry addresses the group registers with (none: no registry).
    pub registry: Vec<String>,
    /// Whole config sections appended after the others, each with its `[section]` header.
    pub sections: String,
    /// More sections for one node (by id), after `sections`: what differs between members,
    /// such as each one's `[tls]` certificate.
    pub node_sections: std::collections::BTreeMap<u64, String>,
    /// Give every node its own peer listener (`peer_listen_addr`), named in `initial_members`.
    pub peer_listeners: bool,
}

/// A member's addresses: for clients, and for peers when it has a peer listener.
type MemberAddrs = (u64, String, Option<String>);

impl Options {
    /// An S3 object store at `endpoint` (for example a [`moto::Moto`]), path-style.
    pub fn s3(endpoint: &str, bucket: &str) -> String {
        format!(
            "kind = \"s3\"\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\npath_style = true\n"
        )
    }
}

pub mod moto;
pub mod proxy;
pub mod registry;

/// Reserves a free port on 127.0.0.1 for a node to bind later. A port is never handed out twice
/// in one process. Ports come from below the kernel's ephemeral range when there is room: ports
/// in that range are also handed to outgoing connections (any test's clients and peers), and one
/// could take the port between this reservation and the node's bind (seen in CI: "serve metrics
/// on 127.0.0.1:41627: Address already in use").
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let below = (ephemeral_low > 11_000).then_some(10_000..ephemeral_low);
    for attempt in 0u32.. {
        let port = match &below {
            Some(r) if attempt < 1_000 => {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u32(attempt);
                r.start + (h.finish() % u64::from(r.end - r.start)) as u16
            }
            _ => 0,
        };
        let Ok(port) = std::net::TcpListener::bind(("127.0.0.1", port))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
        else {
            continue;
        };
        let mut given = GIVEN.lock().expect("port list lock is never poisoned");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    unreachable!("the loop returns")
}

/// A tool the tests run that `scripts/setup.sh` installs (helm, grpcurl): from the environment
/// variable `env` if set, else from setup's tools directory (`FOLIO_TOOLS_DIR`, default
/// `~/.cache/folio/bin`) when it is there, else `name` on PATH.
pub fn tool(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return p.into();
    }
    let tools = std::env::var_os("FOLIO_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/folio/bin")));
    match tools.map(|t| t.join(name)) {
        Some(p) if p.exists() => p,
        _ => name.into(),
    }
}

/// A file the workspace build puts beside the test executables (`target/<profile>/NAME`), such
/// as the `folio` binary for tests outside folio-cli, or `libfolio_sqlite.so`: from the
/// environment variable `env` if set, else from the build's output directory, or an error that
/// says to build the workspace first (as `scripts/test.sh` does).
pub fn built(name: &str, env: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    // Test executables live in target/<profile>/deps.
    let deps = exe.parent().context("test executable has a directory")?;
    for dir in [deps.parent(), Some(deps)].into_iter().flatten() {
        let p = dir.join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!(
        "{name} is not built next to {}: build the whole workspace first (`cargo build --workspace \
         --all-targets`, as scripts/test.sh does) or set {env}",
        deps.display()
    )
}

/// A fresh address on 127.0.0.1 (see [`free_port`]).
fn local_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[allow(clippy::too_many_arguments)]
fn write_config(
    path: &Path,
    id: u64,
    addr: &str,
    peer: Option<&str>,
    data: &Path,
    members: &[MemberAddrs],
    opts: &Options,
    objects: &Path,
    metrics_addr: &str,
) -> anyhow::Result<()> {
    let mut s = format!(
        "node_id = {id}\ngroup_id = {}\nlisten_addr = \"{addr}\"\ndata_dir = \"{}\"\nmetrics_addr = \"{metrics_addr}\"\n",
        opts.group_id.unwrap_or(7),
        data.display()
    );
    if let Some(p) = peer {
        s.push_str(&format!("peer_listen_addr = \"{p}\"\n"));
    }
    if let Some(r) = &opts.region {
        s.push_str(&format!("region = \"{r}\"\n"));
    }
    if !opts.registry.is_empty() {
        let addrs: Vec<String> = opts.registry.iter().map(|a| format!("\"{a}\"")).collect();
        s.push_str(&format!("[registry]\naddrs = [{}]\n", addrs.join(", ")));
    }
    for (mid, maddr, mpeer) in members {
        s.push_str(&format!(
            "[[initial_members]]\nid = {mid}\naddr = \"{maddr}\"\n"
        ));
        if let Some(p) = mpeer {
            s.push_str(&format!("peer_addr = \"{p}\"\n"));
        }
    }
    // Short timeouts keep failover in tests quick; the same code paths as production.
    s.push_str(
        "[raft]\nheartbeat_interval_ms = 50\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\n",
    );
    s.push_str(&opts.raft);
    s.push_str("\n[flush]\n");
    s.push_str(&opts.flush);
    s.push_str("\n[limits]\n");
    s.push_str(&opts.limits);
    s.push_str("\n[object_store]\n");
    match &opts.object_store {
        Some(o) => s.push_str(o),
        None => s.push_str(&format!(
            "kind = \"local\"\npath = \"{}\"\n",
            objects.display()
        )),
    }
    s.push('\n');
    s.push_str(&opts.sections);
    if let Some(own) = opts.node_sections.get(&id) {
        s.push('\n');
        s.push_str(own);
    }
    std::fs::write(path, s).with_context(|| format!("write {}", path.display()))
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n) that form one group.
    pub fn start(bin: impl Into<PathBuf>, n: u64) -> anyhow::Result<Cluster> {
        Self::start_with(bin, n, "")
    }

    /// Like [`Cluster::start`], with extra lines for every node's `[raft]` config section.
    pub fn start_with(
        bin: impl Into<PathBuf>,
        n: u64,
        raft_extra: &str,
    ) -> anyhow::Result<Cluster> {
        Self::start_opts(
            bin,
            n,
            Options {
                raft: raft_extra.to_string(),
                ..Default::default()
            },
        )
    }

    /// Like [`Cluster::start`], with extra configuration for every node.
    pub fn start_opts(bin: impl Into<PathBuf>, n: u64, opts: Options) -> anyhow::Result<Cluster> {
        let bin = bin.into();
        let dir = tempfile::Builder::new()
            .prefix("folio-cluster-")
            .tempdir()?;
        let peers = opts.peer_listeners;
        let members: Vec<MemberAddrs> = (1..=n)
            .map(|id| (id, local_addr(), peers.then(local_addr)))
            .collect();
        let mut c = Cluster {
            bin,
            opts,
            dir,
            nodes: Vec::new(),
        };
        for (id, addr, peer) in &members {
            c.add_node_process(*id, addr.clone(), peer.clone(), &members)?;
        }
        Ok(c)
    }

    /// Starts a node process that is not part of the initial group (to be added with AddMember),
    /// with a peer listener when the cluster's nodes have them (see [`ProcNode::peer_addr`]).
    pub fn spawn_extra(&mut self, id: u64) -> anyhow::Result<String> {
        let addr = local_addr();
        let peer = self.opts.peer_listeners.then(local_addr);
        self.add_node_process(id, addr.clone(), peer, &[])?;
        Ok(addr)
    }

    fn add_node_process(
        &mut self,
        id: u64,
        addr: String,
        peer_addr: Option<String>,
        members: &[MemberAddrs],
    ) -> anyhow::Result<()> {
        let data_dir = self.dir.path().join(format!("node-{id}"));
        let config = self.dir.path().join(format!("node-{id}.toml"));
        let log = self.dir.path().join(format!("node-{id}.log"));
        let metrics_addr = local_addr();
        write_config(
            &config,
            id,
            &addr,
            peer_addr.as_deref(),
            &data_dir,
            members,
            &self.opts,
            &self.objects_dir(),
            &metrics_addr,
        )?;
        let mut node = ProcNode {
            id,
            addr,
            peer_addr,
            metrics_addr,
            data_dir,
            config,
            log,
            child: None,
        };
        node.child = Some(self.spawn(&node)?);
        self.nodes.push(node);
        Ok(())
    }

    fn spawn(&self, node: &ProcNode) -> anyhow::Result<Child> {
        self.spawn_with(node, &[])
    }

    fn spawn_with(&self, node: &ProcNode, args: &[&str]) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let child = Command::new(&self.bin)
            .arg("server")
            .arg("--config")
            .arg(&node.config)
            .args(args)
            .env("FOLIO_LOG", "info,openraft=warn")
            // Test credentials for an S3-compatible test server (moto accepts any); never
            // look for instance metadata on a test machine.
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        Ok(child)
    }

    fn node_mut(&mut self, id: u64) -> &mut ProcNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("node id exists in this cluster")
    }

    pub fn node(&self, id: u64) -> &ProcNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("node id exists in this cluster")
    }

    /// SIGKILLs a node: no shutdown, no flush, like a crash.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.node_mut(id).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOPs a node: it keeps its connections but answers nothing, like a long GC pause or
    /// a stalled VM, until [`Cluster::resume`].
    pub fn pause(&self, id: u64) -> anyhow::Result<()> {
        self.signal(id, "-STOP")
    }

    /// SIGCONTs a node paused with [`Cluster::pause`].
    pub fn resume(&self, id: u64) -> anyhow::Result<()> {
        self.signal(id, "-CONT")
    }

    fn signal(&self, id: u64, sig: &str) -> anyhow::Result<()> {
        let pid = match &self.node(id).child {
            Some(c) => c.id(),
            None => bail!("node {id} is not running"),
        };
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .context("run kill")?;
        anyhow::ensure!(status.success(), "kill {sig} {pid} failed: {status}");
        Ok(())
    }

    /// Starts a killed node again on the same data directory and address.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let child = self.spawn(self.node(id))?;
        self.node_mut(id).child = Some(child);
        Ok(())
    }

    /// Starts a killed node again with extra `folio server` arguments (e.g. `--restore`).
    pub fn restart_with(&mut self, id: u64, args: &[&str]) -> anyhow::Result<()> {
        let child = self.spawn_with(self.node(id), args)?;
        self.node_mut(id).child = Some(child);
        Ok(())
    }

    /// Deletes a node's data directory, killing the node first: its disk is lost.
    pub fn wipe(&mut self, id: u64) -> anyhow::Result<()> {
        self.kill(id);
        let dir = &self.node(id).data_dir;
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("remove {}", dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// Waits up to `timeout` for node `id`'s process to exit by itself; its exit status, or
    /// `None` if it is still running (it is then left running).
    pub fn wait_exit(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let deadline = std::time::Instant::now() + timeout;
        let node = self.node_mut(id);
        let Some(child) = node.child.as_mut() else {
            bail!("node {id} is not running");
        };
        loop {
            if let Some(status) = child.try_wait()? {
                node.child = None;
                return Ok(Some(status));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log of node `id` so far.
    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(&self.node(id).log).unwrap_or_default()
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// A client that knows every node's address.
    pub fn client(&self) -> Client {
        Client::new(self.addrs(), RetryPolicy::default()).expect("cluster has addresses")
    }

    /// A client that talks only to one node (no other addresses to fall back on).
    pub fn client_for(&self, id: u64) -> Client {
        Client::new([self.node(id).addr.clone()], RetryPolicy::default()).expect("address")
    }

    /// Waits until the running nodes agree on a leader that is itself running; returns its id.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.agreed_leader().await {
                return Ok(l);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "no agreed leader within {timeout:?}; logs in {}",
                    self.dir.path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn agreed_leader(&self) -> Option<u64> {
        let mut leader = None;
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            let s = Client::node_status(&n.addr, Duration::from_millis(500))
                .await
                .ok()?;
            if s.leader_id == 0 || leader.is_some_and(|l| l != s.leader_id) {
                return None;
            }
            leader = Some(s.leader_id);
        }
        leader.filter(|l| self.nodes.iter().any(|n| n.id == *l && n.is_running()))
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(s) =
                Client::node_status(&self.node(id).addr, Duration::from_millis(500)).await
            {
                if s.applied_index >= index {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("node {id} did not apply index {index} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of a metric (a counter or gauge without labels) scraped from a node's `/metrics`.
    pub fn metric(&self, id: u64, name: &str) -> anyhow::Result<f64> {
        let body = self.scrape(id)?;
        let line = body
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .with_context(|| format!("metric {name} not found on node {id}"))?;
        Ok(line.split_whitespace().nth(1).unwrap_or("nan").parse()?)
    }

    /// Where node logs and data live (kept while the cluster lives).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The local object-store directory the nodes share when no other store is configured.
    pub fn objects_dir(&self) -> PathBuf {
        self.dir.path().join("objects")
    }

    /// Every sample of a metric on a node's `/metrics`, labels included, as (labels, value).
    pub fn metric_samples(&self, id: u64, name: &str) -> anyhow::Result<Vec<(String, f64)>> {
        let body = self.scrape(id)?;
        Ok(body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                let (metric, labels) = match key.split_once('{') {
                    Some((m, rest)) => (m, rest.trim_end_matches('}').to_string()),
                    None => (key, String::new()),
                };
                (metric == name).then(|| Some((labels, value.parse().ok()?)))?
            })
            .collect())
    }

    fn scrape(&self, id: u64) -> anyhow::Result<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.node(id).metrics_addr)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    }

    /// Prints the tail of every node's log to stderr (for failing tests).
    pub fn dump_logs(&self) {
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("---- node {} ({}) ----", n.id, n.addr);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
