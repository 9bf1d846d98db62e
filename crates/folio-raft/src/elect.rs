//! Elections as Folio runs them on top of openraft 0.9, which has neither pre-vote nor
//! check-quorum: openraft's own election timer is off, and one task per node does three things.
//!
//! - **Election timer.** A voter that has heard nothing from a leader (and granted no vote) for
//!   a timeout drawn afresh each time from `[timeout_min, timeout_max)` asks for pre-votes. Time
//!   counts from openraft's vote "last modified" instant, which every AppendEntries from the
//!   leader and every granted vote refreshes, or from the node's start.
//! - **Pre-vote.** Before raising its term the node asks every other voter whether it would vote
//!   for it now ([`PreVoteRequest`]). A voter says no while it has heard from a leader within the
//!   lease (`timeout_min`), while it leads with a quorum itself, or when the asker's log is behind
//!   its own. Only with a majority of yeses does the node call openraft's election. A node cut off
//!   from the group, or one that resumes from a pause while the others still follow their leader,
//!   therefore never raises its term, and never deposes a healthy leader when it comes back.
//! - **Check-quorum.** A leader that has had no acknowledgement from a quorum for `timeout_max`
//!   steps down: it grants a vote for the next term to [`STEP_DOWN_CANDIDATE`], a node id no
//!   member has, which makes openraft leave the leader state at once. Clients then get UNAVAILABLE
//!   with the best leader hint the node has instead of calls held until the partition heals.
//!
//! openraft still checks every real vote request itself (log up to date, and its leader lease,
//! set to the same `timeout_min`); pre-vote only decides when a node may ask.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::raft::VoteRequest;
use openraft::{CommittedLeaderId, LogId, ServerState, Vote};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::network::Network;
use crate::GroupTypes;

/// The node a stepping-down leader grants its vote to: no member has this id (node ids start at
/// 1), so nobody wins with that vote. openraft (without its `single-term-leader` feature) orders
/// votes by (term, node id): a vote for node 0 at term t + 1 is above the old leader's own at
/// term t, so it leaves the leader state, and below every real candidate's at t + 1, so it still
/// votes for one of them and accepts the group's next leader.
pub const STEP_DOWN_CANDIDATE: u64 = 0;

/// A group's election timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How often the leader sends heartbeats.
    pub heartbeat: Duration,
    /// A follower stands for election after hearing nothing from a leader for a time drawn from
    /// `[timeout_min, timeout_max)`. `timeout_min` is also the lease: a voter that heard from a
    /// leader within it votes for nobody else.
    pub timeout_min: Duration,
    pub timeout_max: Duration,
}

impl Timing {
    pub fn from_ms(heartbeat: u64, timeout_min: u64, timeout_max: u64) -> Timing {
        Timing {
            heartbeat: Duration::from_millis(heartbeat),
            timeout_min: Duration::from_millis(timeout_min),
            timeout_max: Duration::from_millis(timeout_max),
        }
    }

    /// A voter that heard from a leader this recently refuses to vote for another node.
    pub fn lease(&self) -> Duration {
        self.timeout_min
    }

    /// A leader without a quorum's acknowledgement for this long steps down.
    pub fn check_quorum(&self) -> Duration {
        self.timeout_max
    }

    /// openraft's settings for these timings: its own election timer off (this module's task
    /// runs elections), its leader lease (openraft's `election_timeout_max`) equal to the
    /// pre-vote lease, and vote requests answered within half-way between a heartbeat and the
    /// lease (openraft's `election_timeout_min` is their time limit).
    pub fn apply(&self, c: &mut openraft::Config) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        c.heartbeat_interval = ms(self.heartbeat);
        c.election_timeout_max = ms(self.timeout_min);
        c.election_timeout_min = (ms(self.heartbeat) + ms(self.timeout_min)) / 2;
        c.enable_elect = false;
    }

    /// Checks the timings make sense together: a heartbeat well inside the lease, and a range to
    /// draw timeouts from.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat < Duration::from_millis(10) {
            return Err("heartbeat_interval_ms must be at least 10".into());
        }
        if self.timeout_min < self.heartbeat * 3 {
            return Err(format!(
                "election_timeout_min_ms ({} ms) must be at least 3 heartbeats ({} ms), or \
                 followers campaign whenever one heartbeat is late",
                self.timeout_min.as_millis(),
                (self.heartbeat * 3).as_millis()
            ));
        }
        if self.timeout_max <= self.timeout_min {
            return Err(format!(
                "election_timeout_max_ms ({} ms) must exceed election_timeout_min_ms ({} ms)",
                self.timeout_max.as_millis(),
                self.timeout_min.as_millis()
            ));
        }
        Ok(())
    }
}

/// "Would you vote for me if I stood for election now?"
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreVoteRequest {
    /// Who asks (its certificate must say so).
    pub candidate: u64,
    /// The term it would stand at: one above its current term.
    pub term: u64,
    /// The last entry in its log.
    pub last_log_id: Option<LogId<u64>>,
}

/// The answer to a [`PreVoteRequest`]; it changes nothing on the node that gives it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreVoteResponse {
    pub granted: bool,
    /// The answering node's current term.
    pub term: u64,
    /// Why not, when not granted.
    pub reason: String,
}

/// Reads the last log id of a node's log store (openraft does not expose its own copy).
pub type LastLog =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<LogId<u64>>> + Send>> + Send + Sync>;

/// What a node needs to answer pre-votes, beyond its Raft state: the timings and its log's end.
#[derive(Clone)]
pub struct Voter {
    pub(crate) timing: Timing,
    pub(crate) last_log: LastLog,
    /// When the node started: until it hears from its leader, a restarted follower counts its
    /// lease from here (openraft forgets when it last heard).
    pub(crate) started: Instant,
}

impl Voter {
    /// The group's election timings.
    pub fn timing(&self) -> Timing {
        self.timing
    }
}

/// What a voter knows when it answers a pre-vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VoterView {
    pub term: u64,
    /// It leads, and a quorum acknowledged it this long ago (`None`: never).
    pub leading: Option<Option<Duration>>,
    /// It follows a leader (its vote is committed), last heard from this long ago.
    pub following: Option<(u64, Duration)>,
    pub last_log_id: Option<LogId<u64>>,
}

/// Whether a voter in `view` grants `req`; `Err` says why not. A follower refuses within the
/// lease; a leader refuses until its own check-quorum time has run out (it is about to step
/// down then anyway), so that a late heartbeat acknowledgement never lets a node that was cut
/// off win with the leader's own yes.
pub(crate) fn decide(view: &VoterView, req: &PreVoteRequest, timing: Timing) -> Result<(), String> {
    let lease = timing.lease();
    match view.leading {
        Some(Some(ack)) if ack <= timing.check_quorum() => {
            return Err(format!(
                "it leads term {} and a quorum acknowledged it {} ms ago",
                view.term,
                ack.as_millis()
            ))
        }
        _ => {}
    }
    if let Some((leader, since)) = view.following {
        if since <= lease {
            return Err(format!(
                "it heard from leader {leader} of term {} {} ms ago",
                view.term,
                since.as_millis()
            ));
        }
    }
    if req.last_log_id < view.last_log_id {
        return Err(format!(
            "the candidate's log ends at {:?}, behind its own at {:?}",
            req.last_log_id, view.last_log_id
        ));
    }
    Ok(())
}

/// What a node answers to a pre-vote, from its Raft state and log.
pub(crate) async fn answer<C: GroupTypes>(
    raft: &openraft::Raft<C>,
    voter: &Voter,
    req: &PreVoteRequest,
) -> PreVoteResponse {
    let state = raft
        .with_raft_state(|st| {
            let vote = *st.vote_ref();
            let since = st.vote_last_modified().map(|t| t.elapsed());
            (vote, since, st.server_state)
        })
        .await;
    let Ok((vote, heard, server_state)) = state else {
        return PreVoteResponse {
            granted: false,
            term: 0,
            reason: "its Raft core has stopped".into(),
        };
    };
    let ack = raft
        .metrics()
        .borrow()
        .millis_since_quorum_ack
        .map(Duration::from_millis);
    let view = VoterView {
        term: vote.leader_id().get_term(),
        leading: (server_state == ServerState::Leader).then_some(ack),
        following: match (vote.is_committed(), vote.leader_id().voted_for()) {
            (true, Some(l)) if server_state != ServerState::Leader => {
                let up = voter.started.elapsed();
                Some((l, heard.map_or(up, |h| h.min(up))))
            }
            _ => None,
        },
        last_log_id: (voter.last_log)().await,
    };
    let res = decide(&view, req, voter.timing);
    PreVoteResponse {
        granted: res.is_ok(),
        term: view.term,
        reason: res.err().unwrap_or_default(),
    }
}

/// How often the task looks at a leader's quorum acknowledgements, and the least wait between
/// two looks at a follower's timer.
fn poll(timing: Timing) -> Duration {
    (timing.heartbeat / 2).max(Duration::from_millis(5))
}

/// Starts the node's election task (see the module docs). It ends when the Raft core stops.
pub(crate) fn spawn<C: GroupTypes>(
    raft: openraft::Raft<C>,
    network: Network<C>,
    me: u64,
    voter: Voter,
) {
    tokio::spawn(run(raft, network, me, voter));
}

async fn run<C: GroupTypes>(raft: openraft::Raft<C>, network: Network<C>, me: u64, voter: Voter) {
    let Voter {
        timing,
        last_log,
        started,
    } = voter;
    let draw = || {
        let (lo, hi) = (timing.timeout_min, timing.timeout_max);
        lo + (hi - lo).mul_f64(rand::rng().random::<f64>())
    };
    let mut timeout = draw();
    // Leaders and non-voters only look at quorum acknowledgements; the rest wait for their
    // timeout, which every heartbeat pushes back.
    let mut last_warned: Option<Instant> = None;
    // Pre-vote rounds refused in a row: the wait before the next one grows with them, up to the
    // lease, so that a node cut off for long sends few requests (each one that times out is a
    // reset stream its peers count against the connection when it comes back).
    let mut refused = 0u32;
    // The term this node leads and since when: a new leader gets a check-quorum time before its
    // first acknowledgement counts against it.
    let mut leading: Option<(u64, Instant)> = None;
    // The core drops its end when it stops, shut down or failed: this task then ends, and with
    // it the log store it holds (a node restarted in the same process must reopen RocksDB).
    let metrics = raft.metrics();
    loop {
        if metrics.has_changed().is_err() {
            return;
        }
        let (state, voters, term, ack) = {
            let m = metrics.borrow();
            if m.running_state.is_err() {
                return;
            }
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            (m.state, voters, m.current_term, m.millis_since_quorum_ack)
        };
        if state == ServerState::Leader {
            let since = match leading {
                Some((t, at)) if t == term => at,
                _ => leading.insert((term, Instant::now())).1,
            };
            let lost = voters.len() > 1
                && since.elapsed() > timing.check_quorum()
                && ack.is_none_or(|ms| Duration::from_millis(ms) > timing.check_quorum());
            if lost {
                step_down(&raft, term, ack).await;
            }
            tokio::time::sleep(poll(timing)).await;
            continue;
        }
        leading = None;
        if !voters.contains(&me) {
            tokio::time::sleep(poll(timing)).await;
            continue;
        }
        let since = raft
            .with_raft_state(|st| st.vote_last_modified().map(|t| t.elapsed()))
            .await;
        let Ok(since) = since else { return };
        let idle = since.unwrap_or(started.elapsed()).min(started.elapsed());
        // A lone voter has nobody to wait for (`folio dev`, a one-node group): it stands as soon
        // as it is not leading, once per poll so that its own election can finish.
        let wait = if voters.len() == 1 {
            poll(timing)
        } else {
            timeout
        };
        if idle < wait {
            // It hears from a leader (or just stood): a later silence starts afresh.
            refused = 0;
            tokio::time::sleep((wait - idle).max(poll(timing))).await;
            continue;
        }
        let granted = if voters.len() == 1 {
            Ok(())
        } else {
            pre_vote(&raft, &network, me, term + 1, &voters, timing, &last_log).await
        };
        match granted {
            Ok(()) => {
                tracing::info!(
                    term = term + 1,
                    idle_ms = idle.as_millis(),
                    "standing for election"
                );
                if raft.trigger().elect().await.is_err() {
                    return;
                }
                timeout = draw();
                // The election refreshes the vote's instant; wait from there.
                tokio::time::sleep(poll(timing)).await;
            }
            Err(why) => {
                if last_warned.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(
                        idle_ms = idle.as_millis(),
                        %why,
                        "no leader heard from, but a majority would not vote for this node"
                    );
                    last_warned = Some(Instant::now());
                }
                // Ask again soon: the others' leases may end a moment after this node's
                // timeout, and asking is cheap and changes nothing.
                refused = refused.saturating_add(1);
                let step = (timing.heartbeat * 2u32.pow(refused.min(4) - 1)).min(timing.lease());
                let wait = step.mul_f64(1.0 + rand::rng().random::<f64>()) / 2;
                tokio::time::sleep(wait.max(timing.heartbeat / 2)).await;
            }
        }
    }
}

/// Asks every other voter for a pre-vote at `term`, all at once, each within half the lease.
/// `Ok` with a majority (this node's own yes included).
async fn pre_vote<C: GroupTypes>(
    raft: &openraft::Raft<C>,
    network: &Network<C>,
    me: u64,
    term: u64,
    voters: &[u64],
    timing: Timing,
    last_log: &LastLog,
) -> Result<(), String> {
    let req = PreVoteRequest {
        candidate: me,
        term,
        last_log_id: last_log().await,
    };
    let nodes: Vec<(u64, crate::RaftNode)> = {
        let m = raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        voters
            .iter()
            .filter(|v| **v != me)
            .filter_map(|v| membership.get_node(v).map(|n| (*v, n.clone())))
            .collect()
    };
    let ttl = (timing.lease() / 2).max(Duration::from_millis(20));
    let asks = nodes.into_iter().map(|(id, node)| {
        let (network, req) = (network.clone(), req.clone());
        async move {
            let r = tokio::time::timeout(ttl, network.pre_vote(id, &node, &req, ttl)).await;
            let r = r.unwrap_or_else(|_| Err(format!("no answer within {} ms", ttl.as_millis())));
            (id, r)
        }
    });
    let mut set = tokio::task::JoinSet::new();
    for ask in asks {
        set.spawn(ask);
    }
    // Done as soon as a majority said yes: a voter that does not answer (paused, cut off) must
    // not hold the round for its whole time limit, or the other followers' timers run out
    // meanwhile and they all stand at once, splitting the vote.
    let mut yes = 1;
    let mut no = Vec::new();
    while yes * 2 <= voters.len() {
        let Some(Ok((id, a))) = set.join_next().await else {
            break;
        };
        match a {
            Ok(r) if r.granted => yes += 1,
            Ok(r) => no.push(format!("node {id}: {}", r.reason)),
            Err(e) => no.push(format!("node {id}: {e}")),
        }
    }
    set.abort_all();
    if yes * 2 > voters.len() {
        Ok(())
    } else {
        Err(format!(
            "{yes} of {} voters for term {term}; {}",
            voters.len(),
            no.join("; ")
        ))
    }
}

/// Makes a leader without a quorum leave the leader state: it grants a vote for the next term to
/// [`STEP_DOWN_CANDIDATE`], with a log that is never behind its own. Pending writes stay pending
/// in openraft (a later leader may still commit them); callers watch for the leadership change
/// and answer their clients at once.
async fn step_down<C: GroupTypes>(raft: &openraft::Raft<C>, term: u64, ack: Option<u64>) {
    tracing::warn!(
        term,
        quorum_ack_ms = ?ack,
        "stepping down: no quorum has acknowledged this leader within the check-quorum time"
    );
    let req = VoteRequest::new(
        Vote::new(term + 1, STEP_DOWN_CANDIDATE),
        Some(LogId::new(
            CommittedLeaderId::new(u64::MAX, u64::MAX),
            u64::MAX,
        )),
    );
    match raft.vote(req).await {
        Ok(r) if r.vote_granted => {}
        Ok(r) => tracing::warn!(vote = %r.vote, "stepping down was refused; trying again"),
        Err(e) => tracing::warn!(error = %e, "stepping down failed; trying again"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(term: u64, index: u64) -> Option<LogId<u64>> {
        Some(LogId::new(CommittedLeaderId::new(term, 0), index))
    }

    fn req(last: Option<LogId<u64>>) -> PreVoteRequest {
        PreVoteRequest {
            candidate: 3,
            term: 8,
            last_log_id: last,
        }
    }

    const T: Timing = Timing {
        heartbeat: Duration::from_millis(100),
        timeout_min: Duration::from_millis(400),
        timeout_max: Duration::from_millis(800),
    };

    #[test]
    fn a_follower_that_hears_its_leader_refuses() {
        let view = VoterView {
            term: 7,
            leading: None,
            following: Some((1, Duration::from_millis(90))),
            last_log_id: log(7, 10),
        };
        let why = decide(&view, &req(log(7, 10)), T).unwrap_err();
        assert!(why.contains("heard from leader 1"), "{why}");
        // Once the lease has run out, an up-to-date candidate gets the vote.
        let quiet = VoterView {
            following: Some((1, Duration::from_millis(401))),
            ..view
        };
        assert_eq!(decide(&quiet, &req(log(7, 10)), T), Ok(()));
    }

    #[test]
    fn a_leader_with_a_quorum_refuses_and_one_without_does_not() {
        let view = VoterView {
            term: 7,
            leading: Some(Some(Duration::from_millis(100))),
            following: None,
            last_log_id: log(7, 10),
        };
        assert!(decide(&view, &req(log(7, 12)), T).is_err());
        // A late acknowledgement (past the lease, within check-quorum) is still a leader.
        let late = VoterView {
            leading: Some(Some(Duration::from_millis(700))),
            ..view.clone()
        };
        assert!(decide(&late, &req(log(7, 12)), T).is_err());
        for ack in [None, Some(Duration::from_secs(2))] {
            let cut_off = VoterView {
                leading: Some(ack),
                ..view.clone()
            };
            assert_eq!(decide(&cut_off, &req(log(7, 12)), T), Ok(()));
        }
    }

    #[test]
    fn a_candidate_with_a_shorter_log_is_refused() {
        let view = VoterView {
            term: 7,
            leading: None,
            following: None,
            last_log_id: log(7, 10),
        };
        for behind in [log(7, 9), log(6, 20), None] {
            let why = decide(&view, &req(behind), T).unwrap_err();
            assert!(why.contains("behind"), "{why}");
        }
        assert_eq!(decide(&view, &req(log(8, 1)), T), Ok(()));
    }

    #[test]
    fn a_stepped_down_leader_still_accepts_and_elects_the_next_leader() {
        let old = Vote::new_committed(4, 2);
        let down = Vote::new(5, STEP_DOWN_CANDIDATE);
        assert!(down > old, "stepping down leaves the leader state");
        for n in 1..=7 {
            // Its vote for node 0 neither outranks a real candidate of the next term nor that
            // term's leader.
            assert!(Vote::new(5, n) > down);
            assert!(Vote::new_committed(5, n) > down);
        }
    }

    #[test]
    fn openraft_gets_the_lease_and_no_timer_of_its_own() {
        let t = Timing::from_ms(100, 400, 800);
        t.validate().unwrap();
        let mut c = openraft::Config::default();
        t.apply(&mut c);
        assert!(!c.enable_elect);
        assert_eq!(c.election_timeout_max, 400);
        assert_eq!(c.election_timeout_min, 250);
        c.validate().unwrap();
        assert!(Timing::from_ms(100, 250, 800).validate().is_err());
        assert!(Timing::from_ms(100, 400, 400).validate().is_err());
    }
}
