//! `folio admin`: status of a group and membership changes.

use std::time::Duration;

use clap::Subcommand;
use folio_client::{Client, Registry, RetryPolicy};
use folio_raft::RaftNode;

use crate::secure::security;
use serde_json::json;

#[derive(Subcommand)]
pub enum AdminCmd {
    /// Show leader, term, members and applied index, as seen by every member.
    Status {
        /// Any member's address.
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: String,
        #[arg(long)]
        json: bool,
    },
    /// Add a node (already running, with an empty data directory) as a voter.
    AddNode {
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: String,
        #[arg(long)]
        node_id: u64,
        /// The new node's advertised address.
        #[arg(long)]
        node_addr: String,
        /// The new node's peer listener as peers dial it, when it has one (`peer_listen_addr`).
        #[arg(long)]
        peer_addr: Option<String>,
    },
    /// Remove a node from the group.
    RemoveNode {
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: String,
        #[arg(long)]
        node_id: u64,
    },
    /// The group's storage: live and garbage bytes, the bucket's objects, and each volume's
    /// share, as the leader's last lifecycle round found them.
    Storage {
        /// Any member's address.
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: String,
        #[arg(long)]
        json: bool,
    },
    /// Regions and groups known to the volume registry: members, health, volume counts.
    Groups {
        #[command(flatten)]
        registry: RegistryAddrs,
        #[arg(long)]
        json: bool,
    },
    /// End to end through the registry: create a volume in a region, commit a page, read it
    /// back, delete the volume. Exits 0 only if every step worked (the Helm chart's test).
    Check {
        #[command(flatten)]
        registry: RegistryAddrs,
        #[arg(long)]
        region: String,
    },
    /// The registry group's leader, term and members, as seen by one registry node.
    RegistryStatus {
        #[arg(long, env = "FOLIO_REGISTRY", default_value = "127.0.0.1:7072")]
        registry: String,
        #[arg(long)]
        json: bool,
    },
}

/// The volume registry, for the commands that go through it.
#[derive(clap::Args)]
pub struct RegistryAddrs {
    /// Registry nodes' addresses, comma-separated (any one will do).
    #[arg(
        long,
        env = "FOLIO_REGISTRY",
        default_value = "127.0.0.1:7072",
        value_delimiter = ','
    )]
    registry: Vec<String>,
}

const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

async fn check(registry: Vec<String>, region: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let c = Client::with_registry(
        registry,
        RetryPolicy::default(),
        folio_client::RouterOptions {
            security: security(),
            ..Default::default()
        },
    )?;
    let v = folio_core::VolumeId::new_random();
    let loc = c
        .create_volume_in(region, Some(v))
        .await
        .context("create a volume")?;
    println!("created volume {v} on group {}", loc.group_id);
    let mut page = vec![0u8; folio_core::PAGE_SIZE];
    page[..16].copy_from_slice(v.as_bytes());
    page[16..].fill(0x5a);
    let page = bytes::Bytes::from(page);
    let r = c
        .commit(
            v,
            folio_core::Lsn(0),
            vec![(0, page.clone())],
            "folio-admin-check",
        )
        .await
        .context("commit a page")?;
    println!("committed LSN {}", r.lsn.0);
    let got = c.read_pages(v, r.lsn, &[0]).await.context("read it back")?;
    anyhow::ensure!(
        got.first().map(|p| &p.data) == Some(&page),
        "the page read back differs from the page written"
    );
    println!("read it back");
    c.delete_volume(v).await.context("delete the volume")?;
    println!("deleted volume {v}: ok");
    Ok(())
}

pub async fn run(cmd: AdminCmd) -> anyhow::Result<()> {
    match cmd {
        AdminCmd::Status { addr, json } => status(&addr, json).await,
        AdminCmd::AddNode {
            addr,
            node_id,
            node_addr,
            peer_addr,
        } => {
            let c = Client::secured([addr], RetryPolicy::default(), security())?;
            let r = c
                .add_member_with_peer(node_id, &node_addr, peer_addr.as_deref())
                .await?;
            println!("node {node_id} added; members: {}", members(&r.members));
            Ok(())
        }
        AdminCmd::Groups { registry, json } => groups(registry.registry, json).await,
        AdminCmd::Storage { addr, json } => storage(&addr, json).await,
        AdminCmd::Check { registry, region } => check(registry.registry, &region).await,
        AdminCmd::RegistryStatus { registry, json } => {
            let s = Registry::node_status_secured(&registry, STATUS_TIMEOUT, &security()).await?;
            if json {
                println!(
                    "{}",
                    json!({"node_id": s.node_id, "state": s.state, "term": s.term,
                           "leader_id": s.leader_id, "leader_addr": s.leader_addr,
                           "applied_index": s.applied_index, "groups": s.groups,
                           "volumes": s.volumes, "security": s.security,
                           "members": s.members.iter().map(|m| json!({"node_id": m.node_id, "addr": m.addr})).collect::<Vec<_>>()})
                );
            } else {
                println!(
                    "registry node {} ({}), term {}, leader {} {}, applied {}, {} groups, {} volumes",
                    s.node_id, s.state, s.term, s.leader_id, s.leader_addr, s.applied_index,
                    s.groups, s.volumes
                );
                println!("security: {}", s.security);
            }
            Ok(())
        }
        AdminCmd::RemoveNode { addr, node_id } => {
            let c = Client::secured([addr], RetryPolicy::default(), security())?;
            let r = c.remove_member(node_id).await?;
            println!("node {node_id} removed; members: {}", members(&r.members));
            Ok(())
        }
    }
}

async fn storage(addr: &str, as_json: bool) -> anyhow::Result<()> {
    let c = Client::secured([addr], RetryPolicy::default(), security())?;
    let s = c.storage().await?;
    let count = |c: &Option<folio_proto::admin::v1::ObjectCount>| {
        c.as_ref().map_or((0, 0), |c| (c.objects, c.bytes))
    };
    let (segs, runs, mans) = (count(&s.segments), count(&s.runs), count(&s.manifests));
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    if as_json {
        let vols: Vec<_> = s
            .volumes
            .iter()
            .map(|v| {
                json!({"volume_id": hex(&v.volume_id), "lsn": v.lsn, "oldest_lsn": v.oldest_lsn,
                       "deleted": v.deleted,
                       "fork_of": (!v.fork_of.is_empty()).then(|| hex(&v.fork_of)),
                       "fork_lsn": v.fork_lsn, "page_versions": v.page_versions,
                       "live_bytes": v.live_bytes, "commits": v.commits,
                       "retention": v.retention.map(|r| json!({"retention_ms": r.retention_ms,
                                                              "retain_commits": r.retain_commits}))})
            })
            .collect();
        println!(
            "{}",
            json!({"group_id": s.group_id, "as_of_ms": s.as_of_ms,
                   "manifest_seq": s.manifest_seq, "live_bytes": s.live_bytes,
                   "garbage_bytes": s.garbage_bytes, "fragmented_bytes": s.fragmented_bytes,
                   "segments": {"objects": segs.0, "bytes": segs.1},
                   "runs": {"objects": runs.0, "bytes": runs.1},
                   "manifests": {"objects": mans.0, "bytes": mans.1},
                   "deleted": s.deleted, "delete_errors": s.delete_errors,
                   "entries_dropped": s.entries_dropped,
                   "compacted_segments": s.compacted_segments,
                   "compacted_bytes": s.compacted_bytes, "volumes": vols,
                   "volumes_truncated": s.volumes_truncated})
        );
        return Ok(());
    }
    if s.as_of_ms == 0 {
        println!(
            "group {}: no lifecycle round has run on its leader yet (see lifecycle.interval_ms)",
            s.group_id
        );
        return Ok(());
    }
    println!(
        "group {}  manifest {}  as of {} ms\n\
         live        {:>14} bytes\n\
         garbage     {:>14} bytes (deleted after the grace period)\n\
         fragmented  {:>14} bytes\n\
         segments    {:>14} bytes in {} objects\n\
         runs        {:>14} bytes in {} objects\n\
         manifests   {:>14} bytes in {} objects\n\
         last round: {} deleted, {} failed, {} index entries dropped, {} segments \
         compacted ({} bytes copied)",
        s.group_id,
        s.manifest_seq,
        s.as_of_ms,
        s.live_bytes,
        s.garbage_bytes,
        s.fragmented_bytes,
        segs.1,
        segs.0,
        runs.1,
        runs.0,
        mans.1,
        mans.0,
        s.deleted,
        s.delete_errors,
        s.entries_dropped,
        s.compacted_segments,
        s.compacted_bytes
    );
    println!(
        "{:<32}  {:>10}  {:>10}  {:>12}  {:>14}  notes",
        "volume", "lsn", "oldest", "versions", "live bytes"
    );
    for v in &s.volumes {
        let mut notes = Vec::new();
        if v.deleted {
            notes.push("deleted".to_string());
        }
        if !v.fork_of.is_empty() {
            notes.push(format!("fork of {} at {}", hex(&v.fork_of), v.fork_lsn));
        }
        if let Some(r) = &v.retention {
            notes.push(format!(
                "keeps {} ms and {} snapshots",
                r.retention_ms, r.retain_commits
            ));
        }
        println!(
            "{:<32}  {:>10}  {:>10}  {:>12}  {:>14}  {}",
            hex(&v.volume_id),
            v.lsn,
            v.oldest_lsn,
            v.page_versions,
            v.live_bytes,
            notes.join(", ")
        );
    }
    if s.volumes_truncated {
        println!("(more volumes than the report holds)");
    }
    Ok(())
}

fn members(m: &[folio_proto::admin::v1::Member]) -> String {
    m.iter()
        .map(|m| {
            format!(
                "{}@{}{}",
                m.node_id,
                RaftNode::with_peer(&m.addr, Some(m.peer_addr.clone())),
                if m.voter { "" } else { " (learner)" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn status(addr: &str, as_json: bool) -> anyhow::Result<()> {
    let first = Client::node_status_secured(addr, STATUS_TIMEOUT, &security()).await?;
    let mut rows = Vec::new();
    for m in &first.members {
        let s = if m.addr == addr || m.node_id == first.node_id {
            Ok(first.clone())
        } else {
            Client::node_status_secured(&m.addr, STATUS_TIMEOUT, &security()).await
        };
        rows.push((m.clone(), s));
    }
    if as_json {
        let nodes: Vec<_> = rows
            .iter()
            .map(|(m, s)| match s {
                Ok(s) => json!({"node_id": m.node_id, "addr": m.addr, "peer_addr": m.peer_addr, "voter": m.voter, "reachable": true,
                    "state": s.state, "term": s.term, "leader_id": s.leader_id,
                    "last_log_index": s.last_log_index, "applied_index": s.applied_index,
                    "buffered_bytes": s.buffered_bytes, "security": s.security}),
                Err(e) => json!({"node_id": m.node_id, "addr": m.addr, "peer_addr": m.peer_addr, "voter": m.voter, "reachable": false,
                    "error": e.to_string()}),
            })
            .collect();
        let out = json!({"group_id": first.group_id, "leader_id": first.leader_id,
            "leader_addr": first.leader_addr, "term": first.term, "volumes": first.volumes, "nodes": nodes});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let leader = if first.leader_id == 0 {
        "none (election in progress)".to_string()
    } else {
        format!("node {} at {}", first.leader_id, first.leader_addr)
    };
    println!(
        "group {}  leader: {}  term: {}  volumes: {}",
        first.group_id, leader, first.term, first.volumes
    );
    println!("security (node {}): {}", first.node_id, first.security);
    println!(
        "{:>6}  {:<22} {:<8} {:<10} {:>6} {:>10} {:>10}",
        "node", "addr", "role", "state", "term", "last log", "applied"
    );
    for (m, s) in rows {
        let role = if m.voter { "voter" } else { "learner" };
        match s {
            Ok(s) => println!(
                "{:>6}  {:<22} {:<8} {:<10} {:>6} {:>10} {:>10}",
                m.node_id, m.addr, role, s.state, s.term, s.last_log_index, s.applied_index
            ),
            Err(e) => println!(
                "{:>6}  {:<22} {:<8} unreachable: {e}",
                m.node_id, m.addr, role
            ),
        }
    }
    Ok(())
}

async fn groups(registry: Vec<String>, json: bool) -> anyhow::Result<()> {
    let r = Registry::secured(registry, RetryPolicy::default(), security())?;
    let l = r.list_groups().await?;
    if json {
        let groups: Vec<_> = l
            .groups
            .iter()
            .map(|g| {
                json!({"group_id": g.group_id, "region": g.region, "healthy": g.healthy,
                       "last_heartbeat_ms_ago": g.last_heartbeat_ms_ago, "volumes": g.volumes,
                       "leader": g.leader_hint,
                       "members": g.members.iter().map(|m| json!({"node_id": m.node_id, "addr": m.addr})).collect::<Vec<_>>()})
            })
            .collect();
        println!("{}", json!({"regions": l.regions, "groups": groups}));
        return Ok(());
    }
    for region in &l.regions {
        println!("region {region}");
        for g in l.groups.iter().filter(|g| &g.region == region) {
            let health = if g.healthy {
                format!("healthy ({} ms ago)", g.last_heartbeat_ms_ago)
            } else if g.last_heartbeat_ms_ago == 0 {
                "not heard from".to_string()
            } else {
                format!("UNHEALTHY (last heard {} ms ago)", g.last_heartbeat_ms_ago)
            };
            let members: Vec<String> = g
                .members
                .iter()
                .map(|m| format!("{}={}", m.node_id, m.addr))
                .collect();
            println!(
                "  group {:<6} {:<40} {:>8} volumes  leader {}  members {}",
                g.group_id,
                health,
                g.volumes,
                if g.leader_hint.is_empty() {
                    "?"
                } else {
                    &g.leader_hint
                },
                members.join(",")
            );
        }
    }
    Ok(())
}
