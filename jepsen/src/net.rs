//! A private network for one run: a bridge on the host and one network namespace per node slot,
//! each joined to the bridge by a veth pair, on 10.213.N.0/24 (N is the run's network id). The
//! host end of the bridge (10.213.N.1) is where the runner's clients, the registry and the
//! object store's proxy live, so partitions between nodes (iptables inside each node's namespace)
//! never cut clients off: the same shape as the faults the issue describes, "clients still
//! reaching every node". Everything is removed on drop, and `clean` removes what a killed run
//! left behind.

use std::os::fd::AsRawFd;
use std::process::Command;

use anyhow::{bail, Context};

/// What every name of a run starts with (interface names are at most 15 bytes).
const PREFIX: &str = "fj";

pub struct Net {
    id: u8,
    slots: usize,
    /// Held while the network exists, so that a second run (or `clean`) on the same id refuses
    /// instead of tearing down a live run's namespaces. Released when the runner exits however.
    _lock: Option<std::fs::File>,
}

/// Takes the lock of network `id` without waiting; `None` when another live process holds it.
fn lock(id: u8) -> anyhow::Result<Option<std::fs::File>> {
    let dir = std::path::Path::new("/run/folio-jepsen");
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(format!("net-{id}.lock"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(f));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(None);
    }
    Err(err).with_context(|| format!("lock {}", path.display()))
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("run {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

impl Net {
    /// Creates the bridge and `slots` namespaces (slot k is node k, from 1).
    pub fn create(id: u8, slots: usize) -> anyhow::Result<Net> {
        if id == 0 || id > 250 {
            bail!("network id must be 1..=250");
        }
        let Some(l) = lock(id)? else {
            bail!("network {id} is in use by another run; pass another --net");
        };
        let net = Net {
            id,
            slots,
            _lock: Some(l),
        };
        net.remove();
        let br = net.bridge();
        run(&["ip", "link", "add", &br, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", net.host_ip()),
            "dev",
            &br,
        ])?;
        run(&["ip", "link", "set", &br, "up"])?;
        // Docker sets the host's FORWARD policy to DROP and bridged traffic passes through it
        // (br_netfilter): let this bridge's own traffic through, and nothing else.
        run(&[
            "iptables", "-I", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT",
        ])?;
        for k in 1..=slots {
            let ns = net.ns(k);
            let (host_end, ns_end) = (format!("{PREFIX}{id}v{k}"), format!("{PREFIX}{id}p{k}"));
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                "ip", "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end,
            ])?;
            run(&["ip", "link", "set", &ns_end, "netns", &ns])?;
            run(&["ip", "link", "set", &host_end, "master", &br])?;
            run(&["ip", "link", "set", &host_end, "up"])?;
            let ip = format!("{}/24", net.ip(k));
            run(&["ip", "-n", &ns, "addr", "add", &ip, "dev", &ns_end])?;
            run(&["ip", "-n", &ns, "link", "set", &ns_end, "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    pub fn bridge(&self) -> String {
        format!("{PREFIX}{}br", self.id)
    }

    pub fn ns(&self, k: usize) -> String {
        format!("{PREFIX}{}n{k}", self.id)
    }

    /// The host's address on the bridge.
    pub fn host_ip(&self) -> String {
        format!("10.213.{}.1", self.id)
    }

    /// Node slot `k`'s address.
    pub fn ip(&self, k: usize) -> String {
        format!("10.213.{}.{}", self.id, 10 + k)
    }

    /// A function for `Command::pre_exec` that moves the child into slot `k`'s namespace.
    pub fn enter(&self, k: usize) -> anyhow::Result<impl FnMut() -> std::io::Result<()>> {
        let f = std::fs::File::open(format!("/var/run/netns/{}", self.ns(k)))
            .with_context(|| format!("open namespace {}", self.ns(k)))?;
        Ok(move || {
            // SAFETY: setns on a descriptor we hold open; async-signal-safe, as pre_exec needs.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }

    /// Drops all traffic between slots `a` and `b` (both directions, rules in both namespaces).
    pub fn cut(&self, a: usize, b: usize) -> anyhow::Result<()> {
        for (x, y) in [(a, b), (b, a)] {
            let ns = self.ns(x);
            let peer = self.ip(y);
            run(&[
                "ip", "netns", "exec", &ns, "iptables", "-A", "INPUT", "-s", &peer, "-j", "DROP",
            ])?;
            run(&[
                "ip", "netns", "exec", &ns, "iptables", "-A", "OUTPUT", "-d", &peer, "-j", "DROP",
            ])?;
        }
        Ok(())
    }

    /// Removes every partition rule.
    pub fn heal(&self) -> anyhow::Result<()> {
        for k in 1..=self.slots {
            let ns = self.ns(k);
            run(&["ip", "netns", "exec", &ns, "iptables", "-F", "INPUT"])?;
            run(&["ip", "netns", "exec", &ns, "iptables", "-F", "OUTPUT"])?;
        }
        Ok(())
    }

    fn remove(&self) {
        for k in 1..=self.slots.max(8) {
            quiet(&["ip", "netns", "del", &self.ns(k)]);
            quiet(&["ip", "link", "del", &format!("{PREFIX}{}v{k}", self.id)]);
        }
        let br = self.bridge();
        quiet(&["ip", "link", "del", &br]);
        // Remove every copy of the FORWARD rule a killed run may have left.
        for _ in 0..8 {
            if Command::new("iptables")
                .args(["-D", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"])
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
            {
                break;
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Removes what runs killed before their clean-up left: every namespace, veth and bridge named
/// like this suite's, except those of runs still going.
pub fn clean_all() {
    for id in 1..=250u8 {
        let stale = std::path::Path::new(&format!("/sys/class/net/{PREFIX}{id}br")).exists()
            || (1..=8).any(|k| {
                std::path::Path::new(&format!("/var/run/netns/{PREFIX}{id}n{k}")).exists()
            });
        if !stale {
            continue;
        }
        match lock(id) {
            Ok(Some(l)) => drop(Net {
                id,
                slots: 8,
                _lock: Some(l),
            }),
            Ok(None) => eprintln!("network {id} belongs to a run still going: left alone"),
            Err(e) => eprintln!("network {id}: {e:#}"),
        }
    }
}

/// Whether this process may build namespaces (root, with `ip` and `iptables`).
pub fn available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces and iptables)".into());
    }
    for tool in ["ip", "iptables"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Err(format!("needs `{tool}` on PATH"));
        }
    }
    Ok(())
}
