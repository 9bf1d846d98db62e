//! What a member watches while it forwards a call to its group's leader: the leader it knows
//! ([`crate::leader_watch`]) and when it last heard from it ([`Health`]). A leader not heard from
//! within the election timeout gets no calls, and a call already at a leader that falls silent or
//! loses the leadership is given up on at once, not held until the client's deadline. The write
//! groups' edge and the registry both forward this way.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tonic::Status;

use crate::health::Health;
use crate::LeaderView;

/// A member's view of who leads, for forwarding.
#[derive(Clone)]
pub struct Leadership {
    /// Leader changes ([`crate::leader_watch`]).
    pub leaders: watch::Receiver<LeaderView>,
    /// When this member last heard from its leader.
    pub health: Health,
    /// A leader not heard from for this long is not forwarded to (the election timeout).
    pub silence_max: Duration,
    /// How refusals name the leader ("leader", "registry leader").
    who: &'static str,
}

/// How a call forwarded to the leader ended.
pub enum Watched<T> {
    /// The leader answered.
    Answered(Result<T, Status>),
    /// Leadership moved on while the call was at the old leader.
    NewLeader,
    /// Given up on, with this status.
    Abandoned(Status),
}

impl Leadership {
    pub fn new(
        leaders: watch::Receiver<LeaderView>,
        health: Health,
        silence_max: Duration,
        who: &'static str,
    ) -> Leadership {
        Leadership {
            leaders,
            health,
            silence_max,
            who,
        }
    }

    /// UNAVAILABLE when this member has not heard from leader `l` within the election timeout.
    pub fn silent(&self, l: u64) -> Option<Status> {
        let why = match self.health.since_heard_from(l) {
            Some(d) if d <= self.silence_max => return None,
            Some(d) => format!(
                "this node has not heard from {} {l} for {} ms (more than an election \
                 timeout), so it forwards nothing there",
                self.who,
                d.as_millis()
            ),
            None => format!("this node has not heard from {} {l} yet", self.who),
        };
        Some(folio_proto::not_leader(None, self.who, &why))
    }

    /// Waits for `call`, sent to leader `l`, but only while `l` still leads and this member
    /// keeps hearing from it within the election timeout.
    pub async fn watch<T>(
        &self,
        l: u64,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Watched<T> {
        let mut leaders = self.leaders.clone();
        let silence = async {
            let every = (self.silence_max / 4).max(Duration::from_millis(10));
            loop {
                tokio::time::sleep(every).await;
                if let Some(s) = self.silent(l) {
                    return s;
                }
            }
        };
        tokio::select! {
            biased;
            r = call => Watched::Answered(r),
            moved = leaders.wait_for(|v| v.leader != Some(l)) => match moved {
                Ok(_) => Watched::NewLeader,
                Err(_) => Watched::Abandoned(Status::unavailable("this node is shutting down")),
            },
            s = silence => Watched::Abandoned(s),
        }
    }
}
