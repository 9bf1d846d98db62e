//! A node's configuration, read from a TOML file. Every limit has a named default here.

use std::net::SocketAddr;
use std::path::PathBuf;

use folio_core::{GroupId, NodeId};
pub use folio_raft::node::{ConfigError, Member, NodeConfig};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id within its group; at least 1.
    pub node_id: NodeId,
    /// The group's id; below 2^48. Members of one group share it.
    #[serde(default = "defaults::group_id")]
    pub group_id: u64,
    /// Where the gRPC server listens: client API and admin, and Raft peer traffic unless
    /// `peer_listen_addr` is given.
    pub listen_addr: SocketAddr,
    /// Address announced to peers and clients; defaults to this node's `initial_members` entry,
    /// else `listen_addr`.
    #[serde(default)]
    pub advertise_addr: Option<String>,
    /// A listener for Raft peer traffic alone, so that it can be firewalled apart from clients
    /// (with TLS it requires a client certificate). Every `initial_members` entry then names its
    /// `peer_addr`.
    #[serde(default)]
    pub peer_listen_addr: Option<SocketAddr>,
    /// Address announced to peers for Raft traffic; defaults to this node's `initial_members`
    /// entry's `peer_addr`, else the advertised host with `peer_listen_addr`'s port.
    #[serde(default)]
    pub advertise_peer_addr: Option<String>,
    /// Directory for RocksDB and snapshots.
    pub data_dir: PathBuf,
    /// Where `/metrics` is served (Prometheus text); none to disable.
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    /// The group's first members. The member with the lowest id bootstraps the group, once, when
    /// its store is empty; the others wait to hear from it. A node added later with
    /// `folio admin add-node` leaves this empty.
    #[serde(default)]
    pub initial_members: Vec<Member>,
    /// The region this group serves, as registered with the registry.
    #[serde(default = "defaults::region")]
    pub region: String,
    /// The volume registry this group registers with and reports to; none for a group that
    /// clients reach directly.
    #[serde(default)]
    pub registry: Option<RegistryLink>,
    /// The object store that is the group's system of record. Every member of a group must
    /// name the same store.
    pub object_store: ObjectStoreConfig,
    #[serde(default)]
    pub flush: FlushConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    #[serde(default)]
    pub read: ReadConfig,
    /// Rebuild the group from the object store: on empty data directories, every node of the
    /// group is started with this set (`folio server --restore`). The bootstrapping node then
    /// restores every flushed commit from the bucket before the group takes writes, and each
    /// node may replace its own claim in the bucket. Harmless once the rebuild is done.
    #[serde(default)]
    pub restore: bool,
    #[serde(default)]
    pub raft: RaftConfig,
    #[serde(default)]
    pub limits: Limits,
    /// Serve without TLS or client tokens on an address beyond loopback. Off, such a node
    /// refuses to start; on, it says so in its log and in admin Status.
    #[serde(default)]
    pub insecure: bool,
    /// TLS on every listener, and peers authenticated by their certificates.
    #[serde(default)]
    pub tls: Option<folio_auth::TlsConfig>,
    /// Client calls need a bearer token signed by one of these keys.
    #[serde(default)]
    pub auth: Option<folio_auth::AuthConfig>,
}

/// Where flushed segments go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ObjectStoreConfig {
    /// A directory on a local file system: `folio dev`'s default, or a shared mount. Every node
    /// of a group must see the same directory.
    Local { path: PathBuf },
    /// AWS S3 or an S3-compatible store. Credentials come from the standard AWS chain
    /// (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, SSO, instance and container
    /// roles). The store must enforce `If-None-Match: *` on PUT.
    S3 {
        bucket: String,
        /// Every key is stored under this prefix.
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        region: Option<String>,
        /// For S3-compatible stores, e.g. `http://127.0.0.1:9000`.
        #[serde(default)]
        endpoint: Option<String>,
        /// Path-style URLs, which most S3-compatible stores need.
        #[serde(default)]
        path_style: bool,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadConfig {
    /// Bytes of flushed pages kept in memory (a sixteenth of this again for segment indexes).
    pub page_cache_bytes: u64,
    /// An object-store read that has not answered after this long is sent a second time; the
    /// first answer wins.
    pub hedge_after_ms: u64,
    /// A ReadPages for an LSN this replica has not applied yet waits this long for it, then goes
    /// to the leader.
    pub replica_wait_ms: u64,
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            page_cache_bytes: 256 << 20,
            hedge_after_ms: 200,
            replica_wait_ms: 1000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlushConfig {
    /// The leader seals the open segment this long after it was opened (or sooner, when it
    /// reaches `limits.segment_bytes_max`). An idle group seals and uploads nothing.
    pub interval_ms: u64,
    /// Page bytes the local buffer may hold before writes are refused with UNAVAILABLE (retry).
    /// While the object store is reachable the buffer holds about one flush interval of writes;
    /// this bounds it, on disk and in snapshots, when the store is down or slow.
    pub buffer_bytes_max: u64,
    /// While this many segments wait for upload, the leader stops sealing by time (sealing by
    /// size goes on), so an outage makes fewer, larger segments instead of many small ones.
    pub sealed_segments_max: usize,
    /// Segment uploads in flight at once.
    pub upload_concurrency: usize,
    /// Longest a commit with `OBJECT_STORE` durability waits for its segment to be flushed. Past
    /// it the commit is answered UNAVAILABLE; it has committed, and a retry with the same
    /// idempotency key waits again.
    pub object_store_ack_timeout_ms: u64,
    /// Upload retries back off from 100 ms up to this.
    pub retry_backoff_max_ms: u64,
    /// While `OBJECT_STORE` commits wait, seal the open segment as soon as no other segment is
    /// being uploaded, so they wait about one upload instead of up to `interval_ms`. Off, they
    /// wait for the time seal like everything else: the "acknowledge after the periodic flush"
    /// behaviour Folio's QUORUM acknowledgement improves on, kept as a benchmark baseline.
    pub early_seal: bool,
}

impl Default for FlushConfig {
    fn default() -> Self {
        FlushConfig {
            interval_ms: 1000,
            buffer_bytes_max: 256 << 20,
            sealed_segments_max: 16,
            upload_concurrency: 4,
            object_store_ack_timeout_ms: 30_000,
            retry_backoff_max_ms: 5_000,
            early_seal: true,
        }
    }
}

/// Storage lifecycle: how much history each volume keeps, and the leader's rounds that drop the
/// rest from the group's index and delete what nothing references any more.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// Every snapshot stays readable for at least this long after a newer commit replaced it
    /// (a volume's own retention, set with SetRetention, takes the place of this and the next).
    pub retention_ms: u64,
    /// ... and the last this many commits of every volume stay readable whatever their age.
    pub retain_commits: u64,
    /// How often the leader runs a round: raise horizons, rewrite the index without what they
    /// hide (when at least a tenth of it is garbage, or a deleted volume's entries remain), then
    /// collect garbage.
    pub interval_ms: u64,
    /// Delete unreferenced objects at all (off: the bucket keeps everything, as before).
    pub gc: bool,
    /// An object is deleted only once no manifest that was current during this long references
    /// it. Must exceed the longest read: a reader holding an older manifest may still fetch
    /// what it names.
    pub gc_grace_ms: u64,
    /// Deletes per round, at most.
    pub gc_deletes_max: usize,
    /// Segments whose live pages (those a retained snapshot or a fork reads) take less than this
    /// fraction of their bytes are rewritten into new, full segments, and the old ones become
    /// garbage; 0 turns compaction off.
    pub compact_live_ratio: f64,
    /// Live page bytes one round copies, at most.
    pub compact_bytes_max: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            retention_ms: 24 * 3600 * 1000,
            retain_commits: 100,
            interval_ms: 60_000,
            gc: true,
            gc_grace_ms: 10 * 60 * 1000,
            gc_deletes_max: 10_000,
            compact_live_ratio: 0.5,
            compact_bytes_max: 64 << 20,
        }
    }
}

impl LifecycleConfig {
    /// The retention of volumes that have none of their own (SetRetention).
    pub fn default_retention(&self) -> folio_state::state::Retention {
        folio_state::state::Retention {
            ms: self.retention_ms,
            commits: self.retain_commits,
        }
    }
}

/// Checkpoints: the leader moves the page index and commit records of flushed segments from the
/// nodes to index runs in the object store, so a node's state does not grow with history.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// A checkpoint is written when the oldest flushed segment no checkpoint covers is this old.
    pub interval_ms: u64,
    /// ... or as soon as that many index entries (page versions plus commit records) wait; one
    /// run holds at most about this many (a segment is never split).
    pub entries_max: u64,
    /// Runs are merged (newest two while the older is at most twice the newer's entries) up to
    /// this many bytes; larger runs stay as they are.
    pub run_bytes_max: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval_ms: 10_000,
            entries_max: 200_000,
            run_bytes_max: 64 << 20,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_logs_since_last: u64,
    /// Snapshot bytes per InstallSnapshot message.
    pub snapshot_chunk_bytes: u64,
    /// Log entries kept after a snapshot, so briefly lagging followers catch up from the log.
    pub logs_to_keep_after_snapshot: u64,
    /// Time for one InstallSnapshot message, the last of which installs the whole snapshot.
    pub install_snapshot_timeout_ms: u64,
    /// Log entries are purged (after a snapshot) only this many at a time, at least.
    pub purge_batch_size: u64,
    /// Also build a snapshot (and so purge the log) after this many bytes of commands were
    /// applied, so the log's size on disk is bounded by bytes and not only by entry count.
    pub snapshot_log_bytes: u64,
    /// A follower is ready (`/readyz`, gRPC health) while it has heard from the leader within an
    /// election timeout and applied to within this many entries of the leader's commit index.
    pub ready_lag_entries: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_logs_since_last: 20_000,
            snapshot_chunk_bytes: 1 << 20,
            // Entries are batches of up to `limits.batch_bytes_max` (2 MiB): 64 of them bound
            // the log kept after a snapshot to 128 MiB. A follower further behind gets a
            // snapshot, which holds only the buffer and the uncheckpointed index.
            logs_to_keep_after_snapshot: 64,
            install_snapshot_timeout_ms: 10_000,
            purge_batch_size: 32,
            snapshot_log_bytes: 128 << 20,
            ready_lag_entries: 100,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes of commands in one Raft entry (group commit). One request larger than this still
    /// goes alone in its own entry.
    pub batch_bytes_max: usize,
    /// Commands in one Raft entry.
    pub batch_requests_max: usize,
    /// Raft entries proposed but not yet committed. 1 gives pure group commit (everything that
    /// arrives during one fsync shares the next); more lets openraft pipeline.
    pub inflight_batches_max: usize,
    /// Write requests waiting for a batch; beyond this, writes get UNAVAILABLE (retry).
    pub write_queue_max: usize,
    /// Bytes of page data per segment before a new one is opened.
    pub segment_bytes_max: u64,
    /// Entries per AppendEntries message (bounds peer messages with `batch_bytes_max`). openraft
    /// 0.9 gives each AppendEntries `heartbeat_interval_ms` to be sent, fsync'd by the follower and
    /// answered, so a full message must fit in that time on the group's network and disks.
    pub append_entries_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch_bytes_max: 2 << 20,
            batch_requests_max: 512,
            inflight_batches_max: 2,
            write_queue_max: 4096,
            segment_bytes_max: 8 << 20,
            append_entries_max: 4,
        }
    }
}

/// Largest `segment_bytes_max`: segments are uploaded in one PUT and built in memory, and the
/// segment format bounds the commit records a segment carries (64 MiB); half of that leaves room
/// for the one record that may overflow a segment plus the section's count.
pub const SEGMENT_BYTES_MAX_LIMIT: u64 = 32 << 20;

mod defaults {
    pub fn group_id() -> u64 {
        1
    }
    pub fn region() -> String {
        "default".into()
    }
    pub fn resolve_cache_ttl_ms() -> u64 {
        30_000
    }
}

/// How a group reaches the volume registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryLink {
    /// Addresses of registry nodes (`host:port`); any one of them will do.
    pub addrs: Vec<String>,
    /// How long this node trusts the registry's answer about where a volume it does not serve
    /// lives (used to redirect clients).
    #[serde(default = "defaults::resolve_cache_ttl_ms")]
    pub resolve_cache_ttl_ms: u64,
}

impl NodeConfig for Config {
    fn node_id(&self) -> u64 {
        self.node_id
    }

    fn advertise_addr(&self) -> Option<&str> {
        self.advertise_addr.as_deref()
    }

    fn initial_members(&self) -> &[Member] {
        &self.initial_members
    }

    fn insecure(&self) -> bool {
        self.insecure
    }

    fn tls(&self) -> Option<&folio_auth::TlsConfig> {
        self.tls.as_ref()
    }

    fn auth(&self) -> Option<&folio_auth::AuthConfig> {
        self.auth.as_ref()
    }

    fn listen_addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(self.listen_addr)
            .chain(self.peer_listen_addr)
            .chain(self.metrics_addr)
            .collect()
    }

    fn peer_listen_addr(&self) -> Option<SocketAddr> {
        self.peer_listen_addr
    }

    fn advertise_peer_addr(&self) -> Option<&str> {
        self.advertise_peer_addr.as_deref()
    }

    fn identity(&self) -> folio_auth::NodeIdentity {
        folio_auth::NodeIdentity::Member {
            group: self.group_id,
            node: self.node_id,
        }
    }

    fn validate_own(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError::Invalid(s));
        if self.group_id > GroupId::MAX {
            return bad(format!(
                "group_id must be below 2^48, got {}",
                self.group_id
            ));
        }
        if let Err(e) = folio_core::ids::valid_region(&self.region) {
            return bad(format!("region: {e}"));
        }
        if self.registry.as_ref().is_some_and(|r| r.addrs.is_empty()) {
            return bad("registry.addrs must name at least one registry node".into());
        }
        let l = &self.limits;
        if l.batch_bytes_max == 0 || l.batch_requests_max == 0 || l.inflight_batches_max == 0 {
            return bad("limits must be positive".into());
        }
        if l.write_queue_max == 0 || l.append_entries_max == 0 {
            return bad("limits must be positive".into());
        }
        if l.segment_bytes_max < folio_core::PAGE_SIZE as u64 {
            return bad("segment_bytes_max must hold at least one page".into());
        }
        if l.segment_bytes_max > SEGMENT_BYTES_MAX_LIMIT {
            return bad(format!(
                "segment_bytes_max must be at most {SEGMENT_BYTES_MAX_LIMIT} bytes"
            ));
        }
        // Largest entry: a batch, or one maximal request; times entries per message.
        let entry = l
            .batch_bytes_max
            .max(folio_core::limits::MAX_CLIENT_MESSAGE_BYTES);
        if entry as u64 * l.append_entries_max > folio_raft::network::PEER_MESSAGE_BYTES_MAX as u64
        {
            return bad(format!(
                "append_entries_max × max(batch_bytes_max, client message) = {} exceeds the peer \
                 message limit of {} bytes",
                entry as u64 * l.append_entries_max,
                folio_raft::network::PEER_MESSAGE_BYTES_MAX
            ));
        }
        let c = &self.checkpoint;
        if c.interval_ms == 0 || c.entries_max == 0 {
            return bad(
                "checkpoint.interval_ms and checkpoint.entries_max must be positive".into(),
            );
        }
        if c.run_bytes_max > folio_objstore::MAX_OBJECT_BYTES as u64 / 2 {
            return bad(format!(
                "checkpoint.run_bytes_max must be at most {} bytes (half the largest object)",
                folio_objstore::MAX_OBJECT_BYTES / 2
            ));
        }
        let lc = &self.lifecycle;
        if lc.interval_ms == 0 || lc.retain_commits == 0 || lc.gc_deletes_max == 0 {
            return bad(
                "lifecycle.interval_ms, retain_commits and gc_deletes_max must be positive".into(),
            );
        }
        if !(0.0..1.0).contains(&lc.compact_live_ratio) {
            return bad(format!(
                "lifecycle.compact_live_ratio must be in [0, 1), not {}",
                lc.compact_live_ratio
            ));
        }
        let f = &self.flush;
        if f.interval_ms == 0
            || f.upload_concurrency == 0
            || f.sealed_segments_max == 0
            || f.object_store_ack_timeout_ms == 0
            || f.retry_backoff_max_ms < 100
        {
            return bad(
                "flush settings must be positive (retry_backoff_max_ms at least 100)".into(),
            );
        }
        if f.buffer_bytes_max < l.segment_bytes_max {
            return bad(format!(
                "flush.buffer_bytes_max ({}) must hold at least one segment ({})",
                f.buffer_bytes_max, l.segment_bytes_max
            ));
        }
        if self.read.hedge_after_ms == 0 {
            return bad("read.hedge_after_ms must be positive".into());
        }
        match &self.object_store {
            ObjectStoreConfig::S3 { bucket, .. } if bucket.is_empty() => {
                return bad("object_store.bucket must not be empty".into())
            }
            ObjectStoreConfig::Local { path } if path.as_os_str().is_empty() => {
                return bad("object_store.path must not be empty".into())
            }
            _ => {}
        }
        let r = &self.raft;
        if r.snapshot_log_bytes == 0 {
            return bad("raft.snapshot_log_bytes must be positive".into());
        }
        if let Err(e) = self.timing().validate() {
            return bad(format!("raft: {e}"));
        }
        Ok(())
    }
}

impl Config {
    pub fn group(&self) -> GroupId {
        GroupId(self.group_id)
    }

    /// The group's election timings (see `folio_raft::elect`).
    pub fn timing(&self) -> folio_raft::elect::Timing {
        let r = &self.raft;
        folio_raft::elect::Timing::from_ms(
            r.heartbeat_interval_ms,
            r.election_timeout_min_ms,
            r.election_timeout_max_ms,
        )
    }

    /// The openraft configuration derived from this one, but for the election settings, which
    /// `start_raft` sets from [`Config::timing`].
    pub fn openraft(&self) -> Result<openraft::Config, ConfigError> {
        let r = &self.raft;
        let c = openraft::Config {
            cluster_name: format!("folio-group-{}", self.group_id),
            max_payload_entries: self.limits.append_entries_max,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_logs_since_last),
            snapshot_max_chunk_size: r.snapshot_chunk_bytes,
            max_in_snapshot_log_to_keep: r.logs_to_keep_after_snapshot,
            install_snapshot_timeout: r.install_snapshot_timeout_ms,
            purge_batch_size: r.purge_batch_size.max(1),
            ..Default::default()
        };
        c.validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
node_id = 1
listen_addr = "127.0.0.1:7070"
data_dir = "/tmp/folio"
[object_store]
kind = "local"
path = "/tmp/folio-objects"
"#;

    #[test]
    fn early_seal_defaults_on_and_can_be_turned_off() {
        let cfg: Config = toml::from_str(MINIMAL).unwrap();
        assert!(cfg.flush.early_seal);
        cfg.validate().unwrap();

        let off = format!("{MINIMAL}[flush]\nearly_seal = false\n");
        let cfg: Config = toml::from_str(&off).unwrap();
        assert!(!cfg.flush.early_seal);
        assert_eq!(cfg.flush.interval_ms, FlushConfig::default().interval_ms);
        cfg.validate().unwrap();
    }

    /// A member config with a peer listener, before `[object_store]`.
    fn with_peers(top: &str, members: &str) -> Result<Config, String> {
        let text = format!(
            "node_id = 1\nlisten_addr = \"0.0.0.0:7070\"\ndata_dir = \"/tmp/f\"\ninsecure = true\n\
             {top}\n{members}\n[object_store]\nkind = \"local\"\npath = \"/tmp/o\"\n"
        );
        let cfg: Config = toml::from_str(&text).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    fn members(peers: [Option<&str>; 2]) -> String {
        peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let id = i + 1;
                let peer = p.map_or(String::new(), |p| format!("peer_addr = \"{p}\"\n"));
                format!("[[initial_members]]\nid = {id}\naddr = \"n{id}:7070\"\n{peer}")
            })
            .collect()
    }

    #[test]
    fn a_peer_listener_needs_every_members_peer_address() {
        let top = "peer_listen_addr = \"0.0.0.0:7080\"";
        let cfg = with_peers(top, &members([Some("n1:7080"), Some("n2:7080")])).unwrap();
        assert_eq!(
            cfg.advertise_peer("0.0.0.0:7080".parse().unwrap(), "n1:7070"),
            "n1:7080"
        );
        let e = with_peers(top, &members([Some("n1:7080"), None])).unwrap_err();
        assert!(e.contains("node 2 has none"), "{e}");
        // Without an entry of its own, the node announces its advertised host, peer port.
        let cfg = with_peers(top, "").unwrap();
        assert_eq!(
            cfg.advertise_peer("0.0.0.0:7080".parse().unwrap(), "db1.example:7070"),
            "db1.example:7080"
        );
        let e = with_peers("peer_listen_addr = \"0.0.0.0:7070\"", "").unwrap_err();
        assert!(e.contains("must differ"), "{e}");
    }

    #[test]
    fn a_peer_address_needs_a_peer_listener() {
        let e = with_peers("", &members([Some("n1:7080"), Some("n2:7080")])).unwrap_err();
        assert!(e.contains("no peer_listen_addr"), "{e}");
        let e = with_peers("advertise_peer_addr = \"n1:7080\"", "").unwrap_err();
        assert!(e.contains("needs peer_listen_addr"), "{e}");
        // Another member's peer listener is that member's business.
        with_peers("", &members([None, Some("n2:7080")])).unwrap();
    }
}
