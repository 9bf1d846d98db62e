//! Helpers shared by this crate's integration tests. Each test binary uses a part of them.
#![allow(dead_code)]

use std::time::Duration;

use folio_server::config::Config;
use folio_server::node::Node;

/// A directory removed when the test ends.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// A new directory under the system's temporary directory, named after `what`.
    pub fn new(what: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("folio-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The config of a one-node group `group` in this process, listening on `port`, with its data in
/// `dir/node`, and `sections` (TOML: `[flush]`, `[checkpoint]`, ...) appended.
pub fn single_node(dir: &std::path::Path, port: u16, group: u64, sections: &str) -> Config {
    let addr = format!("127.0.0.1:{port}");
    let text = format!(
        "node_id = 1\ngroup_id = {group}\nlisten_addr = \"{addr}\"\ndata_dir = \"{}\"\n\
         [[initial_members]]\nid = 1\naddr = \"{addr}\"\n\
         [object_store]\nkind = \"local\"\npath = \"{}\"\n{sections}",
        dir.join("node").display(),
        dir.join("unused").display()
    );
    toml::from_str(&text).expect("valid config")
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a port on 127.0.0.1")
        .port()
}

/// Waits (30 s at most) until the one-node group's node leads.
pub async fn wait_leader(node: &Node) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while node.raft.metrics().borrow().current_leader != Some(1) {
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
