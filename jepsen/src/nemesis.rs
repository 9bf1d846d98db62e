//! Nemeses: the faults a run injects, one at a time, on a schedule drawn from the run's seed.
//! Each fault is a window: it starts, holds for a few seconds while the workload runs, and ends
//! with everything healed, so the next one starts from a healthy group. Every window is recorded
//! (kind, what exactly was done, start and end) for the verdict and the plot.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::db::Db;
use crate::proxy::Mode;

/// Every fault the suite knows.
pub const ALL: &[&str] = &[
    "partition",
    "kill",
    "pause",
    "clock",
    "store",
    "member",
    "registry",
    "disk",
];

/// One fault as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    pub kind: String,
    pub detail: String,
    /// Nanoseconds since the run started: when the injection began, when it had taken full
    /// effect (rules in every namespace, the process stopped, the member changed), and when
    /// everything was healed.
    pub start: u64,
    pub effective: u64,
    pub end: u64,
    /// The members the fault stopped, killed or cut off from the majority (none for faults of
    /// the store, the registry, clocks or membership).
    pub faulted: Vec<u64>,
}

/// Parses `a,b,c` (or `all`, or `none`) into fault names, refusing unknown ones.
pub fn parse(spec: &str) -> anyhow::Result<Vec<String>> {
    match spec {
        "none" | "" => return Ok(Vec::new()),
        "all" => return Ok(ALL.iter().map(|s| s.to_string()).collect()),
        _ => {}
    }
    spec.split(',')
        .map(|s| {
            let s = s.trim();
            if ALL.contains(&s) {
                Ok(s.to_string())
            } else {
                anyhow::bail!("unknown nemesis {s:?}; known: {}", ALL.join(", "))
            }
        })
        .collect()
}

pub struct Schedule {
    pub kinds: Vec<String>,
    rng: StdRng,
    /// Members added so far (bounded by the spare namespaces).
    added: usize,
}

impl Schedule {
    pub fn new(kinds: Vec<String>, seed: u64) -> Schedule {
        Schedule {
            kinds,
            rng: StdRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973),
            added: 0,
        }
    }

    /// Runs faults until `until` (nanoseconds since `start`), then heals everything.
    pub async fn run(
        &mut self,
        db: &mut Db,
        start: std::time::Instant,
        until: Duration,
    ) -> anyhow::Result<Vec<Window>> {
        let mut windows = Vec::new();
        if self.kinds.is_empty() {
            tokio::time::sleep(until.saturating_sub(start.elapsed())).await;
            return Ok(windows);
        }
        // Cycle through the kinds in a seeded order, so a short run still has each once.
        let mut order = self.kinds.clone();
        order.shuffle(&mut self.rng);
        let mut next = 0usize;
        // Let the workload warm up first.
        tokio::time::sleep(Duration::from_millis(self.rng.random_range(1500..3000))).await;
        loop {
            let hold = Duration::from_millis(self.rng.random_range(2000..6000));
            if start.elapsed() + hold + Duration::from_secs(1) > until {
                break;
            }
            let kind = order[next % order.len()].clone();
            next += 1;
            if next.is_multiple_of(order.len()) {
                order.shuffle(&mut self.rng);
            }
            let t0 = start.elapsed().as_nanos() as u64;
            let (detail, faulted) = match self.begin(db, &kind).await {
                Ok(d) => d,
                Err(e) => (format!("could not inject: {e:#}"), Vec::new()),
            };
            let effective = start.elapsed().as_nanos() as u64;
            if kind != "member" {
                tokio::time::sleep(hold).await;
            }
            db.heal()?;
            let t1 = start.elapsed().as_nanos() as u64;
            eprintln!(
                "nemesis {kind} {:.1}s..{:.1}s: {detail}",
                t0 as f64 / 1e9,
                t1 as f64 / 1e9
            );
            windows.push(Window {
                kind,
                detail,
                start: t0,
                effective,
                end: t1,
                faulted,
            });
            let calm = Duration::from_millis(self.rng.random_range(2000..4000));
            if start.elapsed() + calm >= until {
                break;
            }
            tokio::time::sleep(calm).await;
        }
        tokio::time::sleep(until.saturating_sub(start.elapsed())).await;
        Ok(windows)
    }

    /// A member at random, or the leader half of the time.
    async fn victim(&mut self, db: &Db) -> (u64, &'static str) {
        let members: Vec<u64> = db.members.iter().copied().collect();
        if self.rng.random_bool(0.5) {
            if let Some(l) = db.leader().await {
                return (l, "leader");
            }
        }
        (
            *members.choose(&mut self.rng).expect("a group has members"),
            "member",
        )
    }

    /// Starts one fault; returns what it did, and the members it stopped or cut off from the
    /// majority.
    async fn begin(&mut self, db: &mut Db, kind: &str) -> anyhow::Result<(String, Vec<u64>)> {
        let none = |d: anyhow::Result<String>| d.map(|d| (d, Vec::new()));
        match kind {
            "partition" => self.partition(db).await,
            "kill" => {
                let (id, role) = self.victim(db).await;
                db.kill(id)?;
                Ok((
                    format!("SIGKILL node {id} ({role}), restarted at the end"),
                    vec![id],
                ))
            }
            "pause" => {
                let (id, role) = self.victim(db).await;
                db.pause(id)?;
                Ok((
                    format!("SIGSTOP node {id} ({role}), SIGCONT at the end"),
                    vec![id],
                ))
            }
            "clock" => {
                let mut members: Vec<u64> = db.members.iter().copied().collect();
                members.shuffle(&mut self.rng);
                let n = self.rng.random_range(1..=members.len().div_ceil(2));
                let mut done = Vec::new();
                for id in members.into_iter().take(n) {
                    let mag = *[5i64, 60, 600, 3600, 86_400]
                        .choose(&mut self.rng)
                        .expect("non-empty");
                    let off = if self.rng.random_bool(0.5) { mag } else { -mag };
                    db.skew_clock(id, off)?;
                    done.push(format!("node {id} {off:+}s"));
                }
                none(Ok(format!("wall clock skew: {}", done.join(", "))))
            }
            "store" => {
                if self.rng.random_bool(0.5) {
                    db.store.set(Mode::Down);
                    none(Ok(
                        "object store unreachable (connections closed and refused)".into(),
                    ))
                } else {
                    let ms = self.rng.random_range(200..1500);
                    db.store.set(Mode::Slow(Duration::from_millis(ms)));
                    none(Ok(format!("object store slow: {ms} ms per chunk each way")))
                }
            }
            "member" => {
                let spare = db.opts.spare;
                if db.members.len() > db.opts.nodes || self.added >= spare {
                    let members: Vec<u64> = db.members.iter().copied().collect();
                    if members.len() <= 3 {
                        anyhow::bail!("no member to remove without going below 3");
                    }
                    let id = *members.choose(&mut self.rng).expect("members");
                    db.remove_member(id).await?;
                    none(Ok(format!("removed node {id} under load")))
                } else {
                    let client = db.client(folio_client::RetryPolicy::default())?;
                    let id = db.add_member(&client).await?;
                    self.added += 1;
                    none(Ok(format!("added node {id} as a voter under load")))
                }
            }
            "registry" => {
                let Some(l) = db.registry_leader().await else {
                    anyhow::bail!("the registry has no leader");
                };
                db.kill_registry(l);
                none(Ok(format!(
                    "SIGKILL registry leader {l}, restarted at the end"
                )))
            }
            "disk" => {
                let victim = db.opts.small_disk.map(|(v, _)| v).unwrap_or(0);
                let bytes = db.fill_disk()?;
                Ok((
                    format!(
                        "filled node {victim}'s disk ({} MiB written until ENOSPC)",
                        bytes >> 20
                    ),
                    vec![victim],
                ))
            }
            other => anyhow::bail!("unknown nemesis {other}"),
        }
    }

    /// Cuts the network; the faulted members are those on the minority side.
    async fn partition(&mut self, db: &mut Db) -> anyhow::Result<(String, Vec<u64>)> {
        let mut members: Vec<u64> = db.members.iter().copied().collect();
        members.shuffle(&mut self.rng);
        let leader = db.leader().await;
        let shape = *["halves", "isolate-leader", "bridge"]
            .choose(&mut self.rng)
            .expect("non-empty");
        let cut = |a: &[u64], b: &[u64]| -> anyhow::Result<()> {
            for x in a {
                for y in b {
                    db.net.cut(*x as usize, *y as usize)?;
                }
            }
            Ok(())
        };
        match (shape, leader) {
            ("isolate-leader", Some(l)) => {
                let rest: Vec<u64> = members.iter().copied().filter(|m| *m != l).collect();
                cut(&[l], &rest)?;
                Ok((format!("leader {l} cut off from {rest:?}"), vec![l]))
            }
            ("bridge", _) if members.len() >= 3 => {
                // One node sees both sides; the sides do not see each other.
                let bridge = members[0];
                let rest = &members[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                cut(a, b)?;
                // Every side still reaches a majority through the bridge.
                Ok((
                    format!("bridge: {a:?} | {b:?}, node {bridge} sees both"),
                    Vec::new(),
                ))
            }
            _ => {
                let (a, b) = members.split_at(members.len() / 2);
                cut(a, b)?;
                Ok((
                    format!("halves: {a:?} | {b:?} (leader was {leader:?})"),
                    a.to_vec(),
                ))
            }
        }
    }
}
