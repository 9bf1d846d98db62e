//! A volume registry as real `folio registry` processes on 127.0.0.1, that tests can SIGKILL and
//! restart. Processes are killed when the cluster is dropped. Every wait here is bounded.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use folio_client::{Registry, RetryPolicy};

use crate::free_port;

/// One registry node process.
pub struct RegistryProc {
    pub id: u64,
    pub addr: String,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl RegistryProc {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// The registry group.
pub struct RegistryCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub nodes: Vec<RegistryProc>,
}

impl RegistryCluster {
    /// Starts `n` registry nodes (ids 1..=n) forming one registry group. Groups are considered
    /// unhealthy after `group_timeout_ms` without a heartbeat.
    pub fn start(
        bin: impl Into<PathBuf>,
        n: u64,
        group_timeout_ms: u64,
    ) -> anyhow::Result<RegistryCluster> {
        let dir = tempfile::Builder::new()
            .prefix("folio-registry-")
            .tempdir()?;
        let members: Vec<(u64, String)> = (1..=n)
            .map(|id| (id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let mut c = RegistryCluster {
            bin: bin.into(),
            dir,
            nodes: Vec::new(),
        };
        for (id, addr) in &members {
            let config = c.dir.path().join(format!("registry-{id}.toml"));
            let mut s = format!(
                "node_id = {id}\nlisten_addr = \"{addr}\"\ndata_dir = \"{}\"\n\
                 heartbeat_interval_ms = 200\ngroup_timeout_ms = {group_timeout_ms}\n\
                 raft_heartbeat_ms = 50\nelection_timeout_min_ms = 300\n\
                 election_timeout_max_ms = 600\n",
                c.dir.path().join(format!("registry-{id}")).display()
            );
            for (mid, maddr) in &members {
                s.push_str(&format!(
                    "[[initial_members]]\nid = {mid}\naddr = \"{maddr}\"\n"
                ));
            }
            std::fs::write(&config, s).with_context(|| format!("write {}", config.display()))?;
            let mut node = RegistryProc {
                id: *id,
                addr: addr.clone(),
                config,
                log: c.dir.path().join(format!("registry-{id}.log")),
                child: None,
            };
            node.child = Some(c.spawn(&node)?);
            c.nodes.push(node);
        }
        Ok(c)
    }

    fn spawn(&self, node: &RegistryProc) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        Command::new(&self.bin)
            .arg("registry")
            .arg("--config")
            .arg(&node.config)
            .env("FOLIO_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// A registry client that knows every node's address.
    pub fn client(&self) -> Registry {
        Registry::new(self.addrs(), RetryPolicy::default()).expect("registry has addresses")
    }

    /// SIGKILLs a registry node.
    pub fn kill(&mut self, id: u64) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.id == id) {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Waits until the running registry nodes agree on a running leader; returns its id.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut leader = None;
            let mut agreed = true;
            for n in self.nodes.iter().filter(|n| n.is_running()) {
                match Registry::node_status(&n.addr, Duration::from_millis(500)).await {
                    Ok(s) if s.leader_id != 0 && leader.is_none_or(|l| l == s.leader_id) => {
                        leader = Some(s.leader_id)
                    }
                    _ => agreed = false,
                }
            }
            if let Some(l) =
                leader.filter(|l| agreed && self.nodes.iter().any(|n| n.id == *l && n.is_running()))
            {
                return Ok(l);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "no agreed registry leader within {timeout:?}; logs in {}",
                    self.dir.path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Prints the tail of every registry node's log to stderr (for failing tests).
    pub fn dump_logs(&self) {
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("---- registry node {} ({}) ----", n.id, n.addr);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for RegistryCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
