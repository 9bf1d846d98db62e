//! Liveness and readiness of a Raft node, for orchestrators and load balancers.
//!
//! - **Live**: the process answers and its Raft core is running (openraft has not stopped on a
//!   fatal error). A node that is not live should be restarted.
//! - **Ready**: the node can serve: it knows a leader, and either it is that leader and a quorum
//!   acknowledged it within an election timeout, or it is a follower that heard from the leader
//!   within an election timeout and has applied up to within `lag_max` entries of the leader's
//!   commit index (carried by every AppendEntries, heartbeats included). A node that is not ready
//!   is kept out of rotation but not restarted: it may be catching up or cut off.
//!
//! One task per node recomputes both on every Raft metrics change and a few times per election
//! timeout, publishes them on a watch channel (for `/livez`, `/readyz` and the gRPC health
//! service) and exports the Raft gauges: term, leader, commit and applied index, and each
//! follower's replication lag on the leader.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus::{register_int_gauge, register_int_gauge_vec, IntGauge, IntGaugeVec};
use tokio::sync::watch;

use crate::GroupTypes;

/// A node's health as of its latest check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthState {
    /// `Err(why)` once the Raft core has stopped.
    pub live: Result<(), String>,
    /// `Err(why)` while the node cannot serve.
    pub ready: Result<(), String>,
}

impl HealthState {
    fn starting() -> HealthState {
        HealthState {
            live: Ok(()),
            ready: Err("starting".into()),
        }
    }
}

/// The latest AppendEntries this node accepted from a leader.
#[derive(Clone, Copy, Debug)]
struct Heard {
    at: Instant,
    term: u64,
    leader: u64,
    /// The leader's commit index (0: none yet).
    commit: u64,
}

/// A node's health, shared by the peer service (which records what it hears from the leader),
/// the HTTP endpoints and the gRPC health service.
#[derive(Clone)]
pub struct Health {
    heard: Arc<Mutex<Option<Heard>>>,
    state: watch::Receiver<HealthState>,
}

impl Health {
    /// The latest check.
    pub fn state(&self) -> HealthState {
        self.state.borrow().clone()
    }

    /// Changes of the state, for the gRPC health service.
    pub fn subscribe(&self) -> watch::Receiver<HealthState> {
        self.state.clone()
    }

    /// Records an AppendEntries accepted from `leader` at `term`, with the leader's commit
    /// index.
    pub fn heard_from_leader(&self, term: u64, leader: u64, commit: Option<u64>) {
        let mut h = self.heard.lock().expect("no panic holds the lock");
        *h = Some(Heard {
            at: Instant::now(),
            term,
            leader,
            commit: commit.unwrap_or(0),
        });
    }

    /// How long ago this node last accepted an AppendEntries from `leader` (`None`: not since it
    /// started, or its latest leader is another node).
    pub fn since_heard_from(&self, leader: u64) -> Option<Duration> {
        self.heard()
            .filter(|h| h.leader == leader)
            .map(|h| h.at.elapsed())
    }

    fn heard(&self) -> Option<Heard> {
        *self.heard.lock().expect("no panic holds the lock")
    }
}

/// Starts the task that keeps a node's health (and, with `gauges`, the process's Raft gauges)
/// current; `timing.timeout_max` is the election timeout its checks use. It ends when the Raft core's metrics channel closes, leaving the node not live. A
/// process that runs two groups (`folio dev`) exports the gauges of one.
pub fn spawn<C: GroupTypes>(
    raft: openraft::Raft<C>,
    timing: crate::elect::Timing,
    lag_max: u64,
    gauges: bool,
) -> Health {
    let (tx, rx) = watch::channel(HealthState::starting());
    let health = Health {
        heard: Arc::new(Mutex::new(None)),
        state: rx,
    };
    let timeout = timing.timeout_max;
    let me = health.clone();
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let mut tick = tokio::time::interval(timeout / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // openraft publishes metrics on every pass of its loop (at least every tick), so metrics
        // that stop changing mean a stalled Raft core: their age counts against the leader.
        let mut seen_at = Instant::now();
        loop {
            let state = {
                let m = metrics.borrow_and_update();
                check(&m, me.heard(), timeout, lag_max, seen_at.elapsed())
            };
            if gauges {
                export(&metrics.borrow(), me.heard(), &state);
            }
            tx.send_if_modified(|s| {
                let changed = *s != state;
                if changed {
                    match &state.ready {
                        Ok(()) => tracing::info!("node is ready"),
                        Err(why) => tracing::warn!(%why, "node is not ready"),
                    }
                    *s = state;
                }
                changed
            });
            tokio::select! {
                r = metrics.changed() => {
                    if r.is_err() {
                        break;
                    }
                    seen_at = Instant::now();
                }
                _ = tick.tick() => {}
            }
            // Metrics change on every pass of openraft's loop: look at most every few ms.
            tokio::time::sleep(RECHECK_MIN).await;
        }
        let stopped = HealthState {
            live: Err("the Raft core has stopped".into()),
            ready: Err("the Raft core has stopped".into()),
        };
        if gauges {
            READY.set(0);
            LIVE.set(0);
        }
        tx.send_replace(stopped);
    });
    health
}

type Metrics = openraft::RaftMetrics<u64, crate::RaftNode>;

/// The least time between two checks, however often openraft publishes metrics.
const RECHECK_MIN: Duration = Duration::from_millis(20);

/// The commit index a leader can vouch for: the highest index a majority of voters (itself
/// included) has in its log.
fn leader_commit(m: &Metrics) -> Option<u64> {
    let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
    let repl = m.replication.as_ref()?;
    let mut matched: Vec<u64> = voters
        .iter()
        .map(|v| {
            if *v == m.id {
                m.last_log_index.unwrap_or(0)
            } else {
                repl.get(v).copied().flatten().map_or(0, |l| l.index)
            }
        })
        .collect();
    if matched.is_empty() {
        return None;
    }
    matched.sort_unstable_by(|a, b| b.cmp(a));
    Some(matched[matched.len() / 2])
}

/// `stale`: how long ago the metrics last changed.
fn check(
    m: &Metrics,
    heard: Option<Heard>,
    timeout: Duration,
    lag_max: u64,
    stale: Duration,
) -> HealthState {
    if let Err(e) = &m.running_state {
        let why = format!("the Raft core stopped: {e}");
        return HealthState {
            live: Err(why.clone()),
            ready: Err(why),
        };
    }
    let ready = match m.current_leader {
        None => Err(format!("no leader is known at term {}", m.current_term)),
        Some(l) if l == m.id => {
            let single = m.membership_config.membership().voter_ids().count() <= 1;
            let stale_ms = u64::try_from(stale.as_millis()).unwrap_or(u64::MAX);
            match m
                .millis_since_quorum_ack
                .map(|ms| ms.saturating_add(stale_ms))
            {
                _ if u128::from(stale_ms) > timeout.as_millis() => Err(format!(
                    "leader at term {} whose Raft core has not reported for {stale_ms} ms",
                    m.current_term
                )),
                _ if single && m.state.is_leader() => Ok(()),
                Some(ms) if u128::from(ms) <= timeout.as_millis() => Ok(()),
                Some(ms) => Err(format!(
                    "leader at term {} without a quorum's acknowledgement for {ms} ms",
                    m.current_term
                )),
                None => Err(format!(
                    "leader at term {} not yet acknowledged by a quorum",
                    m.current_term
                )),
            }
        }
        Some(l) => {
            let applied = m.last_applied.map_or(0, |a| a.index);
            match heard {
                Some(h) if h.leader == l && h.term == m.current_term => {
                    let since = h.at.elapsed();
                    if since > timeout {
                        Err(format!(
                            "nothing heard from leader {l} for {} ms",
                            since.as_millis()
                        ))
                    } else if applied + lag_max < h.commit {
                        Err(format!(
                            "applied index {applied} is {} entries behind leader {l}'s commit \
                             index {} (at most {lag_max})",
                            h.commit - applied,
                            h.commit
                        ))
                    } else {
                        Ok(())
                    }
                }
                _ => Err(format!(
                    "nothing heard yet from leader {l} at term {}",
                    m.current_term
                )),
            }
        }
    };
    HealthState {
        live: Ok(()),
        ready,
    }
}

static TERM: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("folio_raft_term", "This node's current Raft term").expect("registers once")
});
static LEADER: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "folio_raft_leader_id",
        "The node this node knows as its group's leader (0: none)"
    )
    .expect("registers once")
});
static IS_LEADER: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "folio_raft_is_leader",
        "1 while this node is its group's leader"
    )
    .expect("registers once")
});
static COMMIT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "folio_raft_commit_index",
        "The group's commit index as this node knows it (a leader from its followers' \
         acknowledgements, a follower from the leader's last message)"
    )
    .expect("registers once")
});
static APPLIED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "folio_raft_applied_index",
        "The last log index this node's state machine applied"
    )
    .expect("registers once")
});
static LAST_LOG: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "folio_raft_last_log_index",
        "The last index in this node's log"
    )
    .expect("registers once")
});
static LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "folio_raft_replication_lag_entries",
        "On the leader: entries of its log each follower has not acknowledged yet",
        &["follower"]
    )
    .expect("registers once")
});
static READY: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "folio_node_ready",
        "1 while this node is ready to serve (as /readyz answers)"
    )
    .expect("registers once")
});
static LIVE: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "folio_node_live",
        "1 while this node's Raft core runs (as /livez)"
    )
    .expect("registers once")
});

/// The followers with a lag series now.
static LAG_SHOWN: Mutex<std::collections::BTreeSet<String>> =
    Mutex::new(std::collections::BTreeSet::new());

/// Registers the health gauges, so they appear on `/metrics` before the first check.
pub fn register() {
    for g in [
        &*TERM,
        &*LEADER,
        &*IS_LEADER,
        &*COMMIT,
        &*APPLIED,
        &*LAST_LOG,
        &*READY,
        &*LIVE,
    ] {
        let _ = g.get();
    }
    LazyLock::force(&LAG);
}

fn export(m: &Metrics, heard: Option<Heard>, state: &HealthState) {
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    TERM.set(as_i64(m.current_term));
    LEADER.set(m.current_leader.map_or(0, as_i64));
    IS_LEADER.set(i64::from(m.state.is_leader()));
    LAST_LOG.set(as_i64(m.last_log_index.unwrap_or(0)));
    APPLIED.set(as_i64(m.last_applied.map_or(0, |a| a.index)));
    let commit = if m.state.is_leader() {
        leader_commit(m)
    } else {
        heard
            .filter(|h| Some(h.leader) == m.current_leader)
            .map(|h| h.commit)
    };
    if let Some(c) = commit {
        COMMIT.set(as_i64(c));
    }
    READY.set(i64::from(state.ready.is_ok()));
    LIVE.set(i64::from(state.live.is_ok()));
    // Lag series exist only on the leader, one per follower it replicates to. Series of
    // followers that left are removed, the others updated in place (no gap for a scrape).
    let mut now = std::collections::BTreeSet::new();
    if let (true, Some(repl)) = (m.state.is_leader(), m.replication.as_ref()) {
        let last = m.last_log_index.unwrap_or(0);
        for (follower, matched) in repl.iter().filter(|(f, _)| **f != m.id) {
            let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
            let label = follower.to_string();
            LAG.with_label_values(&[&label]).set(as_i64(lag));
            now.insert(label);
        }
    }
    let mut shown = LAG_SHOWN.lock().expect("no panic holds the lock");
    for gone in shown.difference(&now) {
        let _ = LAG.remove_label_values(&[gone]);
    }
    *shown = now;
}
