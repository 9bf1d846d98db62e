//! `folio dev` is a complete system in one process: a group, the volume registry (with the
//! group registered in region `local`) and a local-directory object store. A volume created
//! through the registry is written and read back through it.

use folio_system_tests::folio_bin;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(folio_bin())
        .args(args)
        .output()
        .expect("run folio")
}

/// Starts `folio dev` (plus `extra` flags) with its data under `dir`, and waits for its banner to
/// name the group's and the registry's addresses.
fn start(dir: &std::path::Path, extra: &[&str]) -> anyhow::Result<(Killed, String, String)> {
    let mut child = Command::new(folio_bin())
        .args(["dev", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .args(["--registry-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .args(extra)
        .env("FOLIO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let guard = Killed(child);
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
    Ok((guard, group.unwrap(), registry.unwrap()))
}

#[test]
fn dev_runs_group_and_registry_in_one_process() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_guard, group, registry) = start(dir.path(), &[])?;
    let deadline = Instant::now() + Duration::from_secs(30);

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

/// `folio dev --secure` is still one command: it makes a CA, certificates, a signing key and an
/// admin token, and then nothing is served without them.
#[test]
fn dev_secure_makes_its_own_ca_and_admin_token_and_refuses_plaintext() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_guard, group, registry) = start(dir.path(), &["--secure"])?;
    let secure = dir.path().join("data/secure");
    let (ca, admin) = (secure.join("ca.pem"), secure.join("admin.token"));
    let (ca, admin) = (ca.to_str().unwrap(), admin.to_str().unwrap());
    let with = |token_file: &str, args: &[&str]| {
        let mut all = vec!["--ca", ca, "--token-file", token_file];
        all.extend_from_slice(args);
        cli(&all)
    };
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // Without credentials nothing is answered, with TLS or without.
    let create = [
        "volume",
        "create",
        "--registry",
        &registry,
        "--region",
        "local",
    ];
    let bare = cli(&create);
    assert!(!bare.status.success(), "plaintext create succeeded");
    let mut tls_only = vec!["--ca", ca];
    tls_only.extend_from_slice(&create);
    let out = cli(&tls_only);
    assert!(!out.status.success(), "a call without a token succeeded");
    assert!(err(&out).to_lowercase().contains("token"), "{}", err(&out));

    // The admin token creates a volume once the group has registered; write and read it back.
    let deadline = Instant::now() + Duration::from_secs(30);
    let vol = loop {
        let out = with(admin, &create);
        if out.status.success() {
            break String::from_utf8(out.stdout)?.trim().to_string();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "create never succeeded: {}",
            err(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let src = dir.path().join("page");
    std::fs::write(&src, b"secure dev")?;
    let page = src.to_str().unwrap();
    let write = [
        "volume", "write", &vol, "--addr", &group, "--page", "1", "--file", page,
    ];
    let out = with(admin, &write);
    assert!(out.status.success(), "{}", err(&out));

    // A narrower token minted from the dev signing key reads but cannot write.
    let key = secure.join("dev.key");
    let out = cli(&[
        "token",
        "issue",
        "--key",
        key.to_str().unwrap(),
        "--scope",
        "read:*",
        "--ttl",
        "10m",
    ]);
    assert!(out.status.success(), "{}", err(&out));
    let reader = dir.path().join("read.token");
    std::fs::write(&reader, out.stdout)?;
    let reader = reader.to_str().unwrap();
    let out = with(
        reader,
        &["volume", "read", &vol, "--page", "1", "--addr", &group],
    );
    assert!(out.status.success(), "{}", err(&out));
    assert!(out.stdout.starts_with(b"secure dev"));
    let out = with(reader, &write);
    assert!(!out.status.success(), "a read-only token wrote");
    assert!(
        err(&out).to_lowercase().contains("permission"),
        "{}",
        err(&out)
    );
    Ok(())
}
