//! `folio admin`: status of a group and membership changes.

use std::time::Duration;

use clap::Subcommand;
use folio_client::{Client, Registry, RetryPolicy};
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
    },
    /// Remove a node from the group.
    RemoveNode {
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: String,
        #[arg(long)]
        node_id: u64,
    },
    /// Regions and groups known to the volume registry: members, health, volume counts.
    Groups {
        /// Registry nodes' addresses, comma-separated (any one will do).
        #[arg(
            long,
            env = "FOLIO_REGISTRY",
            default_value = "127.0.0.1:7072",
            value_delimiter = ','
        )]
        registry: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// The registry group's leader, term and members, as seen by one registry node.
    RegistryStatus {
        #[arg(long, env = "FOLIO_REGISTRY", default_value = "127.0.0.1:7072")]
        registry: String,
        #[arg(long)]
        json: bool,
    },
}

const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(cmd: AdminCmd) -> anyhow::Result<()> {
    match cmd {
        AdminCmd::Status { addr, json } => status(&addr, json).await,
        AdminCmd::AddNode {
            addr,
            node_id,
            node_addr,
        } => {
            let c = Client::new([addr], RetryPolicy::default())?;
            let r = c.add_member(node_id, &node_addr).await?;
            println!("node {node_id} added; members: {}", members(&r.members));
            Ok(())
        }
        AdminCmd::Groups { registry, json } => groups(registry, json).await,
        AdminCmd::RegistryStatus { registry, json } => {
            let s = Registry::node_status(&registry, STATUS_TIMEOUT).await?;
            if json {
                println!(
                    "{}",
                    json!({"node_id": s.node_id, "state": s.state, "term": s.term,
                           "leader_id": s.leader_id, "leader_addr": s.leader_addr,
                           "applied_index": s.applied_index, "groups": s.groups,
                           "volumes": s.volumes,
                           "members": s.members.iter().map(|m| json!({"node_id": m.node_id, "addr": m.addr})).collect::<Vec<_>>()})
                );
            } else {
                println!(
                    "registry node {} ({}), term {}, leader {} {}, applied {}, {} groups, {} volumes",
                    s.node_id, s.state, s.term, s.leader_id, s.leader_addr, s.applied_index,
                    s.groups, s.volumes
                );
            }
            Ok(())
        }
        AdminCmd::RemoveNode { addr, node_id } => {
            let c = Client::new([addr], RetryPolicy::default())?;
            let r = c.remove_member(node_id).await?;
            println!("node {node_id} removed; members: {}", members(&r.members));
            Ok(())
        }
    }
}

fn members(m: &[folio_proto::admin::v1::Member]) -> String {
    m.iter()
        .map(|m| {
            format!(
                "{}@{}{}",
                m.node_id,
                m.addr,
                if m.voter { "" } else { " (learner)" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn status(addr: &str, as_json: bool) -> anyhow::Result<()> {
    let first = Client::node_status(addr, STATUS_TIMEOUT).await?;
    let mut rows = Vec::new();
    for m in &first.members {
        let s = if m.addr == addr || m.node_id == first.node_id {
            Ok(first.clone())
        } else {
            Client::node_status(&m.addr, STATUS_TIMEOUT).await
        };
        rows.push((m.clone(), s));
    }
    if as_json {
        let nodes: Vec<_> = rows
            .iter()
            .map(|(m, s)| match s {
                Ok(s) => json!({"node_id": m.node_id, "addr": m.addr, "voter": m.voter, "reachable": true,
                    "state": s.state, "term": s.term, "leader_id": s.leader_id,
                    "last_log_index": s.last_log_index, "applied_index": s.applied_index,
                    "buffered_bytes": s.buffered_bytes}),
                Err(e) => json!({"node_id": m.node_id, "addr": m.addr, "voter": m.voter, "reachable": false,
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
    let r = Registry::new(registry, RetryPolicy::default())?;
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
