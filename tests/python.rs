//! The Python client as users install it: `pip install ./clients/python` into a fresh virtual
//! environment (the build generates the stubs from proto/), then `test_folio.py`, run from outside
//! the source tree so that it imports the installed package, against a live node: create a
//! volume, commit pages, hit a CAS conflict, pull changes and read pages back; then the same over
//! TLS with bearer tokens, with the refusals of missing, garbage and read-only tokens.

use std::process::Command;
use std::time::Duration;

use folio_system_tests::folio_bin;
use folio_testkit::Cluster;
use secure::Secured;

mod secure;

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_installs_with_pip_and_works_against_a_live_node() -> anyhow::Result<()> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/python");
    let tmp = tempfile::tempdir()?;
    let venv = tmp.path().join("venv");
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )?;
    let python = venv.join("bin/python");
    // A copy of the sources: an in-tree build would leave build/ and folio_pb/ in the checkout,
    // and nextest may run this beside other tests. proto/ goes beside it as in the repository.
    let pkg = tmp.path().join("clients/python");
    std::fs::create_dir_all(&pkg)?;
    for f in ["pyproject.toml", "setup.py", "folio_client.py", "README.md"] {
        std::fs::copy(src.join(f), pkg.join(f))?;
    }
    run(
        Command::new("cp")
            .arg("-r")
            .arg(src.join("../../proto"))
            .arg(tmp.path()),
        "copy proto/",
    )?;
    run(
        Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .arg(&pkg),
        "pip install ./clients/python",
    )?;
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work)?;
    std::fs::copy(src.join("test_folio.py"), work.join("test_folio.py"))?;

    let c = Cluster::start(folio_bin(), 1)?;
    c.wait_leader(Duration::from_secs(20)).await?;
    run(
        Command::new(&python)
            .arg("test_folio.py")
            .arg(&c.node(1).addr)
            .current_dir(&work),
        "test_folio.py",
    )?;

    // The same checks over TLS with a token, and the refusals: no token, a garbage one, a
    // read-only token committing.
    let s = Secured::start(1)?;
    let admin = s.token("admin");
    s.agreed(&admin).await?;
    run(
        Command::new(&python)
            .arg("test_folio.py")
            .arg(&s.cluster.node(1).addr)
            .env("FOLIO_CA", &s.ca_path)
            .env("FOLIO_TOKEN", &admin)
            .env("FOLIO_READ_TOKEN", s.token("read:*"))
            .current_dir(&work),
        "test_folio.py over TLS with tokens",
    )?;
    Ok(())
}
