//! The Python client, generated from proto/ with grpcio-tools, against a live node: create a
//! volume, commit pages, hit a CAS conflict, pull changes and read pages back.

use std::process::Command;
use std::time::Duration;

use folio_testkit::Cluster;

const BIN: &str = env!("CARGO_BIN_EXE_folio");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_works_against_a_live_node() -> anyhow::Result<()> {
    let c = Cluster::start(BIN, 1)?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/python");
    let gen = Command::new("bash").arg(dir.join("generate.sh")).output()?;
    anyhow::ensure!(
        gen.status.success(),
        "generate.sh: {}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let out = Command::new("python3")
        .arg(dir.join("test_folio.py"))
        .arg(&c.node(1).addr)
        .current_dir(&dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "test_folio.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
