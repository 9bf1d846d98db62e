//! `folio dev` is a complete system in one process: a group, the volume registry (with the
//! group registered in region `local`) and a local-directory object store. A volume created
//! through the registry is written and read back through it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_folio");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run folio")
}

#[test]
fn dev_runs_group_and_registry_in_one_process() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(BIN)
        .args(["dev", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .args(["--registry-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("FOLIO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let _guard = Killed(child);
    // The banner names both addresses; read it on a thread so a silent process cannot hang us.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut group, mut registry) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while group.is_none() || registry.is_none() {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        if let Some(a) = line.strip_prefix("folio dev: listening on ") {
            group = Some(a.trim().to_string());
        }
        if let Some(a) = line.strip_prefix("folio dev: registry on ") {
            registry = Some(a.trim().to_string());
        }
    }
    let (group, registry) = (group.unwrap(), registry.unwrap());

    // The group registers itself with its first heartbeat.
    loop {
        let out = cli(&["admin", "groups", "--registry", &registry, "--json"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            if v["regions"] == serde_json::json!(["local"]) {
                assert_eq!(v["groups"][0]["members"][0]["addr"], group.as_str());
                break;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the dev group never registered");
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = cli(&[
        "volume",
        "create",
        "--registry",
        &registry,
        "--region",
        "local",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vol = String::from_utf8(out.stdout)?.trim().to_string();
    let src = dir.path().join("page");
    std::fs::write(&src, b"dev mode")?;
    let out = cli(&[
        "volume",
        "write",
        &vol,
        "--registry",
        &registry,
        "--page",
        "1",
        "--file",
        src.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Read back both through the registry and directly from the group.
    for target in [
        ["--registry", registry.as_str()],
        ["--addr", group.as_str()],
    ] {
        let out = cli(&["volume", "read", &vol, "--page", "1", target[0], target[1]]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.starts_with(b"dev mode"));
    }
    Ok(())
}
