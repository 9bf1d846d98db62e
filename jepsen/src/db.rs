//! The system under test: a Folio group of `folio server` processes, one per network namespace,
//! a 3-node `folio registry` group and an S3-compatible store (moto) behind a fault proxy, the
//! last two on the host's end of the run's bridge. Everything the nemeses do to it goes through
//! here, and [`Db::heal`] undoes all of it.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use folio_client::{Client, RetryPolicy, RouterOptions};
use folio_testkit::moto::Moto;

use crate::net::Net;
use crate::proxy::FaultProxy;

pub const GROUP_ID: u64 = 7;
pub const REGION: &str = "jepsen";
const NODE_PORT: u16 = 7070;
const METRICS_PORT: u16 = 9100;
/// The runner's libfaketime (Debian's `faketime` package), preloaded when clocks are skewed.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// How the cluster is built.
#[derive(Clone, Debug)]
pub struct DbOpts {
    pub nodes: usize,
    /// Namespaces kept for members added under load.
    pub spare: usize,
    /// Run nodes under libfaketime so their wall clocks can be skewed.
    pub clock: bool,
    /// Give this node's data directory a small tmpfs of its own (MiB) that can be filled.
    pub small_disk: Option<(u64, u64)>,
    /// Extra lines for every node's `[raft]` section.
    pub raft: String,
}

/// One process of the cluster (a group node or a registry node).
pub struct Daemon {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    config: PathBuf,
    pub log: PathBuf,
    /// The namespace slot (group nodes); registry nodes run on the host.
    slot: Option<usize>,
    registry: bool,
    child: Option<Child>,
    pub paused: bool,
}

impl Daemon {
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
}

pub struct Db {
    pub net: Net,
    pub dir: PathBuf,
    bin: PathBuf,
    pub opts: DbOpts,
    _moto: Moto,
    pub store: FaultProxy,
    store_endpoint: String,
    pub registry: Vec<Daemon>,
    pub nodes: Vec<Daemon>,
    /// The group's voters as the runner last changed them.
    pub members: BTreeSet<u64>,
    mounts: Vec<PathBuf>,
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe {
        libc::kill(pid, sig);
    }
}

impl Db {
    pub async fn start(bin: PathBuf, dir: &Path, net: Net, opts: DbOpts) -> anyhow::Result<Db> {
        // A run starts from empty disks: a directory left by an earlier run with the same `--out`
        // (perhaps killed with a tmpfs still mounted) would hand the new group an old one's state.
        if dir.exists() {
            let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
            for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
                if Path::new(m).starts_with(dir) {
                    let _ = Command::new("umount").args(["-l", m]).status();
                }
            }
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("clear {} from an earlier run", dir.display()))?;
        }
        std::fs::create_dir_all(dir)?;
        let moto = Moto::start()?;
        moto.create_bucket("folio")?;
        let store = FaultProxy::start(
            &format!("{}:0", net.host_ip()),
            format!("127.0.0.1:{}", moto.port),
        )
        .await?;
        let store_endpoint = format!("http://{}", store.addr);
        let mut db = Db {
            net,
            dir: dir.to_path_buf(),
            bin,
            opts,
            _moto: moto,
            store,
            store_endpoint,
            registry: Vec::new(),
            nodes: Vec::new(),
            members: BTreeSet::new(),
            mounts: Vec::new(),
        };
        db.start_registry()?;
        let n = db.opts.nodes;
        for k in 1..=n {
            db.spawn_node(k, (1..=n).collect())?;
        }
        db.members = (1..=n as u64).collect();
        Ok(db)
    }

    fn registry_addrs(&self) -> Vec<String> {
        self.registry.iter().map(|r| r.addr.clone()).collect()
    }

    fn start_registry(&mut self) -> anyhow::Result<()> {
        let host = self.net.host_ip();
        let addrs: Vec<(u64, String)> = (1..=3)
            .map(|id| (id, format!("{host}:{}", folio_testkit::free_port())))
            .collect();
        for (id, addr) in &addrs {
            let data_dir = self.dir.join(format!("registry-{id}"));
            let config = self.dir.join(format!("registry-{id}.toml"));
            let mut s = format!(
                "node_id = {id}\nlisten_addr = \"{addr}\"\ndata_dir = \"{}\"\ninsecure = true\n\
                 heartbeat_interval_ms = 200\ngroup_timeout_ms = 3000\n",
                data_dir.display()
            );
            for (mid, maddr) in &addrs {
                s.push_str(&format!(
                    "[[initial_members]]\nid = {mid}\naddr = \"{maddr}\"\n"
                ));
            }
            std::fs::write(&config, s)?;
            let mut d = Daemon {
                id: *id,
                addr: addr.clone(),
                data_dir,
                config,
                log: self.dir.join(format!("registry-{id}.log")),
                slot: None,
                registry: true,
                child: None,
                paused: false,
            };
            d.child = Some(self.spawn(&d)?);
            self.registry.push(d);
        }
        Ok(())
    }

    /// Writes node `k`'s config and starts it in namespace slot `k` (its id is `k`).
    fn spawn_node(&mut self, k: usize, initial: Vec<usize>) -> anyhow::Result<()> {
        if k > self.opts.nodes + self.opts.spare {
            bail!("no namespace left for node {k}");
        }
        let ip = self.net.ip(k);
        let addr = format!("{ip}:{NODE_PORT}");
        let data_dir = self.dir.join(format!("node-{k}"));
        std::fs::create_dir_all(&data_dir)?;
        if let Some((victim, mib)) = self.opts.small_disk {
            if victim == k as u64 {
                mount_tmpfs(&data_dir, mib)?;
                self.mounts.push(data_dir.clone());
            }
        }
        let config = self.dir.join(format!("node-{k}.toml"));
        let registry: Vec<String> = self
            .registry_addrs()
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect();
        let mut s = format!(
            "node_id = {k}\ngroup_id = {GROUP_ID}\nregion = \"{REGION}\"\nlisten_addr = \"{addr}\"\n\
             data_dir = \"{}\"\nmetrics_addr = \"{ip}:{METRICS_PORT}\"\n\
             # A private test network: plaintext, no tokens.\ninsecure = true\n\
             [registry]\naddrs = [{}]\n",
            data_dir.join("db").display(),
            registry.join(", ")
        );
        for m in &initial {
            s.push_str(&format!(
                "[[initial_members]]\nid = {m}\naddr = \"{}:{NODE_PORT}\"\n",
                self.net.ip(*m)
            ));
        }
        s.push_str("[raft]\n");
        s.push_str(&self.opts.raft);
        s.push_str(&format!(
            "\n[object_store]\nkind = \"s3\"\nbucket = \"folio\"\nregion = \"us-east-1\"\n\
             endpoint = \"{}\"\npath_style = true\n",
            self.store_endpoint
        ));
        std::fs::write(&config, s)?;
        if self.opts.clock {
            std::fs::write(self.clock_file(k as u64), "+0\n")?;
        }
        let mut d = Daemon {
            id: k as u64,
            addr,
            data_dir,
            config,
            log: self.dir.join(format!("node-{k}.log")),
            slot: Some(k),
            registry: false,
            child: None,
            paused: false,
        };
        d.child = Some(self.spawn(&d)?);
        self.nodes.push(d);
        Ok(())
    }

    fn clock_file(&self, id: u64) -> PathBuf {
        self.dir.join(format!("clock-{id}.rc"))
    }

    fn spawn(&self, d: &Daemon) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&d.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg(if d.registry { "registry" } else { "server" })
            .arg("--config")
            .arg(&d.config)
            .env("FOLIO_LOG", "info,openraft=warn")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(slot) = d.slot {
            if self.opts.clock {
                cmd.env("LD_PRELOAD", LIBFAKETIME)
                    .env("FAKETIME_TIMESTAMP_FILE", self.clock_file(d.id))
                    .env("FAKETIME_CACHE_DURATION", "1")
                    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            }
            let enter = self.net.enter(slot)?;
            // SAFETY: the closure only calls setns(2) (see Net::enter).
            unsafe {
                cmd.pre_exec(enter);
            }
        }
        cmd.spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))
    }

    pub fn node(&self, id: u64) -> anyhow::Result<&Daemon> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> anyhow::Result<&mut Daemon> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))
    }

    /// A client that routes through the registry, as applications do.
    pub fn client(&self, policy: RetryPolicy) -> anyhow::Result<Client> {
        Ok(Client::with_registry(
            self.registry_addrs(),
            policy,
            RouterOptions {
                default_region: Some(REGION.into()),
                // Short, so that a member added under load is learned during the run.
                cache_ttl: Duration::from_secs(5),
                ..Default::default()
            },
        )?)
    }

    /// A client that talks to the group's current members directly.
    pub fn direct_client(&self, policy: RetryPolicy) -> anyhow::Result<Client> {
        let addrs: Vec<String> = self
            .members
            .iter()
            .filter_map(|id| self.node(*id).ok().map(|n| n.addr.clone()))
            .collect();
        Ok(Client::new(addrs, policy)?)
    }

    /// The leader a majority of the reachable members name, if any.
    pub async fn leader(&self) -> Option<u64> {
        let mut votes: std::collections::HashMap<u64, usize> = Default::default();
        for id in &self.members {
            let Ok(n) = self.node(*id) else { continue };
            if !n.running() || n.paused {
                continue;
            }
            if let Ok(s) = Client::node_status(&n.addr, Duration::from_millis(300)).await {
                if s.leader_id != 0 {
                    *votes.entry(s.leader_id).or_default() += 1;
                }
            }
        }
        let quorum = self.members.len() / 2 + 1;
        votes
            .into_iter()
            .find(|(_, n)| *n >= quorum)
            .map(|(id, _)| id)
    }

    /// The registry's leader, if its nodes agree on one.
    pub async fn registry_leader(&self) -> Option<u64> {
        for r in self.registry.iter().filter(|r| r.running()) {
            if let Ok(s) =
                folio_client::Registry::node_status(&r.addr, Duration::from_millis(300)).await
            {
                if s.leader_id != 0 {
                    return Some(s.leader_id);
                }
            }
        }
        None
    }

    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let n = self.node_mut(id)?;
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        n.paused = false;
        Ok(())
    }

    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        if self.node(id)?.running() {
            return Ok(());
        }
        let child = self.spawn(self.node(id)?)?;
        self.node_mut(id)?.child = Some(child);
        Ok(())
    }

    pub fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        let n = self.node_mut(id)?;
        if let Some(pid) = n.pid() {
            signal(pid, libc::SIGSTOP);
            n.paused = true;
        }
        Ok(())
    }

    pub fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        let n = self.node_mut(id)?;
        if let Some(pid) = n.pid() {
            signal(pid, libc::SIGCONT);
        }
        n.paused = false;
        Ok(())
    }

    pub fn kill_registry(&mut self, id: u64) {
        if let Some(r) = self.registry.iter_mut().find(|r| r.id == id) {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    pub fn restart_registry(&mut self) -> anyhow::Result<()> {
        for i in 0..self.registry.len() {
            if !self.registry[i].running() {
                let child = self.spawn(&self.registry[i])?;
                self.registry[i].child = Some(child);
            }
        }
        Ok(())
    }

    /// Sets node `id`'s wall clock `offset_s` seconds off (libfaketime rereads its file within a
    /// second). Monotonic clocks are left alone, as NTP leaves them.
    pub fn skew_clock(&self, id: u64, offset_s: i64) -> anyhow::Result<()> {
        if !self.opts.clock {
            bail!("clock skew needs the cluster started with clocks under libfaketime");
        }
        std::fs::write(self.clock_file(id), format!("{offset_s:+}\n"))?;
        Ok(())
    }

    /// Fills the small disk until a write fails with ENOSPC.
    pub fn fill_disk(&self) -> anyhow::Result<u64> {
        let Some((victim, _)) = self.opts.small_disk else {
            bail!("no small disk in this cluster");
        };
        let path = self.node(victim)?.data_dir.join("jepsen-fill");
        let mut f = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        use std::io::Write;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(written)
    }

    pub fn free_disk(&self) -> anyhow::Result<()> {
        if let Some((victim, _)) = self.opts.small_disk {
            let path = self.node(victim)?.data_dir.join("jepsen-fill");
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Starts a new node in the next free slot and adds it to the group as a voter.
    pub async fn add_member(&mut self, client: &Client) -> anyhow::Result<u64> {
        let k = self.nodes.len() + 1;
        self.spawn_node(k, Vec::new())?;
        let addr = self.node(k as u64)?.addr.clone();
        let direct = self.direct_client(RetryPolicy::default())?;
        let _ = client;
        direct.add_member(k as u64, &addr).await?;
        self.members.insert(k as u64);
        Ok(k as u64)
    }

    /// Removes a voter from the group and stops it.
    pub async fn remove_member(&mut self, id: u64) -> anyhow::Result<()> {
        let direct = self.direct_client(RetryPolicy::default())?;
        direct.remove_member(id).await?;
        self.members.remove(&id);
        self.kill(id)?;
        Ok(())
    }

    /// Undoes every fault: network, pauses, kills, store, clocks, disk, registry.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        self.net.heal()?;
        self.store.set(crate::proxy::Mode::Up);
        self.free_disk()?;
        let ids: Vec<u64> = self.members.iter().copied().collect();
        for id in ids {
            if self.node(id)?.paused {
                self.resume(id)?;
            }
            if self.opts.clock {
                self.skew_clock(id, 0)?;
            }
            self.restart(id)?;
        }
        self.restart_registry()
    }

    /// Kills every member (SIGKILL, like a power cut) and starts them all again.
    pub fn restart_all(&mut self) -> anyhow::Result<()> {
        let ids: Vec<u64> = self.members.iter().copied().collect();
        for id in &ids {
            self.kill(*id)?;
        }
        for id in &ids {
            self.restart(*id)?;
        }
        Ok(())
    }

    /// Waits until a majority agrees on a leader that takes a commit.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            let mut exited = Vec::new();
            for n in self
                .nodes
                .iter_mut()
                .filter(|n| self.members.contains(&n.id))
            {
                if let Some(Ok(Some(status))) = n.child.as_mut().map(|c| c.try_wait()) {
                    exited.push(format!("node {} {status} (log {})", n.id, n.log.display()));
                }
            }
            if exited.len() == self.members.len() {
                bail!("every member exited: {}", exited.join("; "));
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "no leader within {timeout:?}; logs in {}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Node logs' last lines that mention a panic, for the verdict.
    pub fn panics(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in self.nodes.iter().chain(&self.registry) {
            let text = std::fs::read_to_string(&d.log).unwrap_or_default();
            for l in text.lines().filter(|l| l.contains("panicked at")) {
                out.push(format!("{}: {l}", d.log.display()));
            }
        }
        out
    }
}

fn mount_tmpfs(dir: &Path, mib: u64) -> anyhow::Result<()> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(dir)
        .output()?;
    if !out.status.success() {
        bail!(
            "mount a {mib} MiB tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Drop for Db {
    fn drop(&mut self) {
        for d in self.nodes.iter_mut().chain(self.registry.iter_mut()) {
            if let Some(mut c) = d.child.take() {
                if d.paused {
                    signal(c.id() as i32, libc::SIGCONT);
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for m in &self.mounts {
            let _ = Command::new("umount").arg(m).output();
        }
    }
}
