//! `folio admin`: status of a group and membership changes.

use std::time::Duration;

use clap::Subcommand;
use folio_client::{Client, RetryPolicy};
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
