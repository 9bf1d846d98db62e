//! Who leads, over time: one task per member asks it for its status (term and the leader it
//! knows) every [`EVERY`], from outside the faults (the runner reaches every namespace), so
//! that each fault window can say whether it cost an election: the leader before the fault, the
//! leader after it, and how many terms the group went through. A resumed or rejoining follower
//! should cost none (pre-vote); a faulted leader should cost one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use folio_client::Client;
use serde::Serialize;

/// How often each member is asked.
const EVERY: Duration = Duration::from_millis(100);
/// Observations kept at most (a run of an hour at 3 members and 10 a second is 108,000).
const MAX_OBS: usize = 200_000;
/// After a fault is healed, elections it causes may take this long to show.
pub const SETTLE: Duration = Duration::from_secs(3);

/// One answer: at `t` (nanoseconds since the run started) `node` was at `term` and knew
/// `leader` (0: none).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Obs {
    pub t: u64,
    pub node: u64,
    pub term: u64,
    pub leader: u64,
}

/// The observations so far, shared with the polling tasks.
#[derive(Clone, Default)]
pub struct Monitor {
    obs: Arc<Mutex<Vec<Obs>>>,
}

impl Monitor {
    /// Starts polling `members` (id, address) until `stop` is set.
    pub fn start(
        members: Vec<(u64, String)>,
        start: Instant,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Monitor {
        let m = Monitor::default();
        for (node, addr) in members {
            let (obs, mut stop) = (m.obs.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    // A paused or cut-off member does not answer: no observation.
                    let Ok(s) = Client::node_status(&addr, EVERY * 2).await else {
                        continue;
                    };
                    let mut o = obs.lock().expect("no panic holds the lock");
                    if o.len() < MAX_OBS {
                        o.push(Obs {
                            t: start.elapsed().as_nanos() as u64,
                            node,
                            term: s.term,
                            leader: s.leader_id,
                        });
                    }
                }
            });
        }
        m
    }

    pub fn snapshot(&self) -> Vec<Obs> {
        let mut o = self.obs.lock().expect("no panic holds the lock").clone();
        o.sort_by_key(|o| o.t);
        o
    }
}

/// What the observations say about one fault window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Elections {
    /// The leader most recently reported before the fault began (0: none known).
    pub leader_before: u64,
    /// The leader most recently reported [`SETTLE`] after the fault was healed (or just before
    /// the next fault, if that began sooner).
    pub leader_after: u64,
    /// Terms the group went through from the fault's start until `SETTLE` after its end (or the
    /// next fault's start): the highest term reported then, less the highest reported before.
    pub terms: u64,
    /// When a member first reported a leader at a higher term than before the fault, in seconds
    /// after `from` (the fault taking effect): the failover as the servers see it, whatever
    /// clients still wait for.
    pub new_leader_s: Option<f64>,
}

/// [`Elections`] for a window from `start` to `end` (nanoseconds since the run started) that
/// took effect at `from`; `next` is when the next fault began, if one did: what follows it is
/// that fault's.
pub fn elections(obs: &[Obs], start: u64, from: u64, end: u64, next: Option<u64>) -> Elections {
    let settle = (end + SETTLE.as_nanos() as u64).min(next.unwrap_or(u64::MAX));
    let before: Vec<&Obs> = obs.iter().filter(|o| o.t < start).collect();
    let during: Vec<&Obs> = obs
        .iter()
        .filter(|o| o.t >= start && o.t <= settle)
        .collect();
    let term_before = before.iter().map(|o| o.term).max().unwrap_or(0);
    let term_after = during.iter().map(|o| o.term).max().unwrap_or(term_before);
    let last_leader = |os: &[&Obs]| {
        os.iter()
            .rev()
            .find(|o| o.leader != 0)
            .map_or(0, |o| o.leader)
    };
    let new_leader_s = during
        .iter()
        .find(|o| o.term > term_before && o.leader != 0)
        .map(|o| o.t.saturating_sub(from) as f64 / 1e9);
    Elections {
        leader_before: last_leader(&before),
        leader_after: last_leader(&during),
        terms: term_after.saturating_sub(term_before),
        new_leader_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(t_ms: u64, node: u64, term: u64, leader: u64) -> Obs {
        Obs {
            t: t_ms * 1_000_000,
            node,
            term,
            leader,
        }
    }

    #[test]
    fn a_window_without_an_election_has_no_terms() {
        let obs = vec![
            o(100, 1, 3, 1),
            o(100, 2, 3, 1),
            o(2000, 2, 3, 1),
            o(9000, 3, 3, 1),
        ];
        let e = elections(&obs, 1_000_000_000, 1_000_000_000, 4_000_000_000, None);
        assert_eq!(
            e,
            Elections {
                leader_before: 1,
                leader_after: 1,
                terms: 0,
                new_leader_s: None,
            }
        );
    }

    #[test]
    fn a_failover_shows_its_terms_and_new_leader() {
        let obs = vec![
            o(100, 2, 3, 1),
            o(1500, 2, 4, 0),
            o(1600, 3, 5, 2),
            o(1700, 2, 5, 2),
            // Long after the settle time: not this window's.
            o(20_000, 2, 9, 3),
        ];
        let e = elections(&obs, 1_000_000_000, 1_100_000_000, 4_000_000_000, None);
        assert_eq!(
            e,
            Elections {
                leader_before: 1,
                leader_after: 2,
                terms: 2,
                new_leader_s: Some(0.5),
            }
        );
        // The next fault began before the election: it is that fault's, not this one's.
        let e = elections(
            &obs,
            200_000_000,
            200_000_000,
            1_000_000_000,
            Some(1_400_000_000),
        );
        assert_eq!((e.terms, e.new_leader_s), (0, None));
    }
}
