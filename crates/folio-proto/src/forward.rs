//! Where a call to a Raft group runs: on this member when it leads, forwarded once to the leader
//! otherwise, or refused with a retryable status naming the leader. Every Folio group (the write
//! groups and the registry) follows this one rule, so a forwarded call can never loop.

use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::channels::{Channel, ChannelCache, Security};
use crate::meta;

/// How long a forwarded call may take at the leader, at most.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// The time a client gave its call (its `grpc-timeout` header), if it gave one.
pub fn client_timeout(md: &MetadataMap) -> Option<Duration> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (n, unit) = v.split_at(v.len() - 1);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The time a forwarded call gets at the leader: three quarters of what the client gave its
/// call, so that the forwarding node still has time to answer with a status of its own (and
/// to send the call to a new leader), and never more than [`FORWARD_TIMEOUT`].
pub fn forward_timeout(client: Option<Duration>) -> Duration {
    client.map_or(FORWARD_TIMEOUT, |d| (d * 3 / 4).min(FORWARD_TIMEOUT))
}
/// How long connecting to the leader may take before the call is refused instead.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a call runs.
pub enum Route {
    /// This member leads: it answers.
    Local,
    /// The call goes to the leader, once, on this channel.
    Forward(Channel),
}

/// A member's way to its group's leader: the channels calls are forwarded on, and how the
/// leader is named when a call is refused ("leader", "registry leader").
pub struct Forwarder {
    channels: ChannelCache,
    who: &'static str,
}

impl Forwarder {
    /// `security`: how this member reaches the leader (its TLS client certificate).
    pub fn new(who: &'static str, security: Security) -> Forwarder {
        Forwarder {
            channels: ChannelCache::secured(CONNECT_TIMEOUT, Some(FORWARD_TIMEOUT), security),
            who,
        }
    }

    /// Decides where a call with metadata `md` runs, given this member's id and the leader it
    /// knows (id and address). A call that was already forwarded once is never forwarded again:
    /// it is refused with the leader's address instead, and `why` says why this member did not
    /// answer it. A forwarded call carries the caller's token (its `authorization`), so the
    /// leader checks the caller's rights, not this member's.
    pub fn route(
        &self,
        me: u64,
        leader: Option<(u64, Option<String>)>,
        md: &MetadataMap,
        why: &str,
    ) -> Result<Route, Status> {
        match leader {
            Some((l, _)) if l == me => Ok(Route::Local),
            Some((l, Some(addr))) if !md.contains_key(meta::FORWARDED) => {
                match self.channels.get(&addr) {
                    Ok(ch) => Ok(Route::Forward(
                        match md.get(http::header::AUTHORIZATION.as_str()) {
                            Some(v) => ch.with_authorization(v.as_bytes()),
                            None => ch,
                        },
                    )),
                    Err(e) => Err(self.not_leader(Some((l, Some(addr))), &e)),
                }
            }
            other => Err(self.not_leader(other, why)),
        }
    }

    /// UNAVAILABLE naming the leader, see [`crate::not_leader`].
    pub fn not_leader(&self, leader: Option<(u64, Option<String>)>, why: &str) -> Status {
        crate::not_leader(leader, self.who, why)
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn md(forwarded: bool) -> MetadataMap {
        let mut md = MetadataMap::new();
        if forwarded {
            md.insert(meta::FORWARDED, "1".parse().expect("ascii"));
        }
        md
    }

    #[test]
    fn a_forwarded_call_gets_part_of_the_clients_time() {
        let with = |v: &str| {
            let mut md = MetadataMap::new();
            md.insert("grpc-timeout", v.parse().expect("ascii"));
            client_timeout(&md)
        };
        assert_eq!(with("6000m"), Some(Duration::from_secs(6)));
        assert_eq!(with("2S"), Some(Duration::from_secs(2)));
        assert_eq!(with("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(with("500000u"), Some(Duration::from_millis(500)));
        for bad in ["", "m", "12x", "-5m", "1234567890m"] {
            assert_eq!(with(bad), None, "{bad}");
        }
        assert_eq!(client_timeout(&MetadataMap::new()), None);
        assert_eq!(
            forward_timeout(Some(Duration::from_secs(6))),
            Duration::from_millis(4500)
        );
        assert_eq!(
            forward_timeout(Some(Duration::from_secs(600))),
            FORWARD_TIMEOUT
        );
        assert_eq!(forward_timeout(None), FORWARD_TIMEOUT);
    }

    #[test]
    fn the_leader_answers_itself() {
        let f = Forwarder::new("leader", Security::default());
        let leader = Some((1, Some("127.0.0.1:1".to_string())));
        assert!(matches!(
            f.route(1, leader, &md(true), "x"),
            Ok(Route::Local)
        ));
    }

    #[test]
    fn a_forwarded_call_is_refused_naming_the_leader() {
        let f = Forwarder::new("leader", Security::default());
        let leader = Some((2, Some("127.0.0.1:7".to_string())));
        let Err(s) = f.route(1, leader, &md(true), "not the leader") else {
            panic!("a call forwarded once is never forwarded again");
        };
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(
            s.metadata().get(meta::LEADER_ADDR).map(|v| v.to_str().ok()),
            Some(Some("127.0.0.1:7"))
        );
        assert!(
            s.message().contains("the leader is node 2"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn no_leader_means_retry_later() {
        let f = Forwarder::new("registry leader", Security::default());
        let Err(s) = f.route(1, None, &md(false), "not the leader") else {
            panic!("nobody to forward to");
        };
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.metadata().get(meta::LEADER_ADDR).is_none());
        assert!(
            s.message().contains("no registry leader is known"),
            "{}",
            s.message()
        );
    }
}
