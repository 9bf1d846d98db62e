//! The `folio volume` CLI end to end against a live node: a multi-megabyte file imported and
//! exported byte for byte, every `--json` output parses, and exit codes distinguish failures.

use std::process::Command;
use std::time::Duration;

use folio_system_tests::folio_bin;
use folio_testkit::Cluster;

fn folio(addr: &str, args: &[&str]) -> std::process::Output {
    Command::new(folio_bin())
        .arg("volume")
        .args(args)
        .args(["--addr", addr])
        .output()
        .expect("run folio")
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "folio failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json output parses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_export_round_trip_and_json() -> anyhow::Result<()> {
    let c = Cluster::start(folio_bin(), 1)?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let addr = c.node(1).addr.clone();
    let dir = tempfile::tempdir()?;

    let created = json(&folio(&addr, &["create", "--json"]));
    let vol = created["volume_id"].as_str().unwrap().to_string();

    // 5 MiB and a bit, so the last page is partial and two ReadPages calls are needed.
    let src = dir.path().join("in.bin");
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 1234u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data)?;
    let imported = json(&folio(
        &addr,
        &["import", &vol, src.to_str().unwrap(), "--json"],
    ));
    assert_eq!(imported["bytes"].as_u64(), Some(data.len() as u64));
    let dst = dir.path().join("out.bin");
    let exported = json(&folio(
        &addr,
        &["export", &vol, dst.to_str().unwrap(), "--json"],
    ));
    assert_eq!(exported["bytes"].as_u64(), Some(data.len() as u64));
    assert!(std::fs::read(&dst)? == data, "byte-identical round trip");

    let list = json(&folio(&addr, &["list", "--json"]));
    assert!(list["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["volume_id"] == vol.as_str()));
    let info = json(&folio(&addr, &["info", &vol, "--json"]));
    assert_eq!(info["lsn"], imported["lsn"]);
    let log = json(&folio(&addr, &["log", &vol, "--json"]));
    assert_eq!(log["commits"].as_array().unwrap().len(), 1);
    let pull = json(&folio(&addr, &["pull", &vol, "--json"]));
    assert_eq!(
        pull["changed_pages"].as_array().unwrap().len() as u64,
        1 + (data.len() as u64).div_ceil(4096)
    );
    let page = dir.path().join("page");
    std::fs::write(&page, b"hello")?;
    let w = json(&folio(
        &addr,
        &[
            "write",
            &vol,
            "--page",
            "0",
            "--file",
            page.to_str().unwrap(),
            "--json",
        ],
    ));
    assert!(w["lsn"].as_u64().unwrap() > imported["lsn"].as_u64().unwrap());
    let r = folio(&addr, &["read", &vol, "--page", "0"]);
    assert!(r.status.success());
    assert_eq!(&r.stdout[..5], b"hello");
    assert_eq!(r.stdout.len(), 4096);

    // Exit codes: an unknown volume is 4; exporting a volume without a file is 1.
    let missing = folio(&addr, &["info", "0123456789abcdef0123456789abcdef"]);
    assert_eq!(missing.status.code(), Some(4));
    let other = json(&folio(&addr, &["create", "--json"]));
    let bad = folio(
        &addr,
        &[
            "export",
            other["volume_id"].as_str().unwrap(),
            dst.to_str().unwrap(),
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    Ok(())
}
