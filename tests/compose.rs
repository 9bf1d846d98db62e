//! `docker-compose.yml` end to end, on the images `scripts/image.sh` builds from this build's
//! `folio`: the stack comes up healthy (`docker compose up --wait`, nodes judged by `/readyz`),
//! a volume is created, written and read through the registry (and `folio admin check`, the Helm
//! chart's test, passes), the leader's container is stopped,
//! and commits go on through the registry on the two members left. The stack runs under a project
//! name of its own on free ports, and is taken down with its volumes however the test ends.
//!
//! Needs Docker and Compose v2 (`scripts/setup.sh` installs the latter); the first run on a
//! machine also makes the Debian base with debootstrap (about three minutes).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use folio_system_tests::folio_bin;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A Compose project, taken down with its volumes when dropped.
struct Stack {
    project: String,
    env: Vec<(&'static str, String)>,
    node_ports: Vec<u16>,
}

impl Stack {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.arg("compose")
            .args(["-p", &self.project, "-f"])
            .arg(root().join("docker-compose.yml"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command(args)
            .output()
            .with_context(|| format!("docker compose {}", args.join(" ")))
    }

    /// The CLI inside the Compose network, with `stdin` piped in.
    fn cli(&self, args: &[&str], stdin: &[u8]) -> anyhow::Result<Output> {
        let mut all = vec!["run", "--rm", "-T", "cli"];
        all.extend_from_slice(args);
        let mut child = self
            .command(&all)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("docker compose run cli")?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(stdin)
            .context("write stdin")?;
        Ok(child.wait_with_output()?)
    }

    /// Runs the CLI until it succeeds or `within` passes.
    fn cli_until_ok(
        &self,
        args: &[&str],
        stdin: &[u8],
        within: Duration,
    ) -> anyhow::Result<Output> {
        let deadline = Instant::now() + within;
        loop {
            let out = self.cli(args, stdin)?;
            if out.status.success() {
                return Ok(out);
            }
            if Instant::now() > deadline {
                bail!("folio {} kept failing: {}", args.join(" "), text(&out));
            }
            eprintln!("folio {}: {}; retrying", args.join(" "), text(&out).trim());
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The leader's node id, as node `via` (1-based) sees it from the host.
    fn leader(&self, via: usize) -> anyhow::Result<u64> {
        let out = Command::new(folio_bin())
            .args(["admin", "status", "--json", "--addr"])
            .arg(format!("127.0.0.1:{}", self.node_ports[via - 1]))
            .output()?;
        ensure!(out.status.success(), "admin status: {}", text(&out));
        let j: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        j["leader_id"].as_u64().context("leader_id")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(o) = self.run(&["logs", "--no-color", "--tail", "50"]) {
                eprintln!("{}", text(&o));
            }
        }
        match self.run(&["down", "-v", "--remove-orphans", "-t", "5"]) {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("compose down failed: {}", text(&o)),
            Err(e) => eprintln!("compose down failed: {e:#}"),
        }
    }
}

#[test]
fn compose_stack_serves_through_the_registry_and_survives_its_leader() -> anyhow::Result<()> {
    let image = Command::new(root().join("scripts/image.sh"))
        .arg("--bin")
        .arg(folio_bin())
        .output()
        .context("scripts/image.sh")?;
    ensure!(image.status.success(), "scripts/image.sh: {}", text(&image));

    let node_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut env = vec![
        ("FOLIO_S3_PORT", free_port().to_string()),
        ("FOLIO_REGISTRY_PORT", free_port().to_string()),
        ("FOLIO_REGISTRY_METRICS_PORT", free_port().to_string()),
    ];
    for (i, p) in node_ports.iter().enumerate() {
        let (port, metrics) = [
            ("FOLIO_NODE1_PORT", "FOLIO_NODE1_METRICS_PORT"),
            ("FOLIO_NODE2_PORT", "FOLIO_NODE2_METRICS_PORT"),
            ("FOLIO_NODE3_PORT", "FOLIO_NODE3_METRICS_PORT"),
        ][i];
        env.push((port, p.to_string()));
        env.push((metrics, free_port().to_string()));
    }
    let stack = Stack {
        project: format!("folio-test-{}", std::process::id()),
        env,
        node_ports,
    };
    let up = stack.run(&["up", "-d", "--wait", "--wait-timeout", "180"])?;
    ensure!(up.status.success(), "compose up: {}", text(&up));

    // Through the registry: the group registers itself shortly after it elects a leader.
    let reg = ["--registry", "registry:7000"];
    let mut args = vec!["volume", "create", "--region", "local", "--json"];
    args.extend(reg);
    let out = stack.cli_until_ok(&args, b"", Duration::from_secs(60))?;
    let created: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let volume = created["volume_id"]
        .as_str()
        .context("volume_id")?
        .to_string();
    let write = |page: &str, data: &[u8], within| {
        let mut args = vec!["volume", "write", &volume, "--page", page, "--json"];
        args.extend(reg);
        stack.cli_until_ok(&args, data, within)
    };
    let read = |page: &str| {
        let mut args = vec!["volume", "read", &volume, "--page", page];
        args.extend(reg);
        stack.cli_until_ok(&args, b"", Duration::from_secs(30))
    };
    write("0", b"before the leader stops", Duration::from_secs(30))?;
    // The Helm chart's test command, end to end through the registry.
    let mut args = vec!["admin", "check", "--region", "local"];
    args.extend(reg);
    let out = stack.cli_until_ok(&args, b"", Duration::from_secs(30))?;
    ensure!(text(&out).contains(": ok"), "admin check: {}", text(&out));
    let got = read("0")?.stdout;
    ensure!(
        got.starts_with(b"before the leader stops"),
        "read back {got:?}"
    );

    // Stop the leader's container; the two members left elect a new leader and commits go on.
    let leader = stack.leader(1)?;
    ensure!((1..=3).contains(&leader), "leader {leader}");
    let stop = stack.run(&["stop", "-t", "0", &format!("node{leader}")])?;
    ensure!(stop.status.success(), "compose stop: {}", text(&stop));
    let survivor = if leader == 1 { 2 } else { 1 };
    let out = write("1", b"after the leader stopped", Duration::from_secs(60))?;
    let committed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    // A retry by a new process after an unanswered attempt may commit once more.
    ensure!(
        committed["lsn"].as_u64() >= Some(2),
        "second commit: {committed}"
    );
    let new_leader = stack.leader(survivor)?;
    ensure!(new_leader != leader, "a new leader: {new_leader}");
    let got = read("1")?.stdout;
    ensure!(
        got.starts_with(b"after the leader stopped"),
        "read back {got:?}"
    );
    let got = read("0")?.stdout;
    ensure!(
        got.starts_with(b"before the leader stops"),
        "read back {got:?}"
    );
    Ok(())
}
