//! Retry policy: which failures are retried and how long to wait between attempts. Every wait
//! and the whole budget are bounded. The waits come from backon's exponential backoff; the loop
//! that uses them is `Conn::retrying`.

use std::time::Duration;

use backon::ExponentialBuilder;
use tonic::{Code, Status};

/// Each wait doubles the one before (before jitter), up to the policy's `backoff_max`.
const BACKOFF_FACTOR: f32 = 2.0;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Time for all attempts of one call together.
    pub total_timeout: Duration,
    /// Time for one attempt.
    pub attempt_timeout: Duration,
    /// First backoff; doubles per attempt up to `backoff_max`, with jitter over the upper half
    /// of each step.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// When an attempt has had no answer for this long, the call also tries the next member,
    /// keeping the first attempt in flight (up to `attempt_timeout`): whichever answers first
    /// wins. A stopped or unreachable node then costs the call this much rather than a whole
    /// attempt. At most two attempts of one call are in flight; the second one counts against
    /// `max_attempts`. `None`: one attempt at a time. Repeating a call is safe for the same
    /// reasons retrying one is (see [`retryable`]).
    pub hedge_after: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 40,
            total_timeout: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            hedge_after: Some(Duration::from_secs(1)),
        }
    }
}

impl RetryPolicy {
    /// No retries: one attempt.
    pub fn once() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// The waits between one call's attempts: at most `max_attempts - 1` of them, the n-th
    /// between half and all of `min(backoff_base * 2^n, backoff_max)`. backon's jitter adds up
    /// to 100% on top of a step, so the steps are half of those bounds: from half of
    /// `2 * backoff_base` (that is, `backoff_base`) up to half of `backoff_max`. The time bound
    /// (`total_timeout`) covers the attempts too, so the caller checks it, not the backoff.
    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        let step_max = self.backoff_max / 2;
        ExponentialBuilder::new()
            .with_jitter()
            .with_factor(BACKOFF_FACTOR)
            .with_min_delay(self.backoff_base.min(step_max))
            .with_max_delay(step_max)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
    }
}

/// Failures that may succeed on another attempt or another node. Calls are safe to repeat:
/// commits carry idempotency keys, creates carry the id, and reads do not change anything.
pub fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    )
}

/// What a failed attempt means for the retry decision. A status that carries a source error was
/// made by this side's transport, not sent by a server: the connection failed under the call
/// (a GOAWAY that closed it, a reset, a read error). tonic maps some of those h2 reasons to
/// INTERNAL (NO_ERROR among them, which is how a server closing its connections gracefully can
/// end a call still in flight); gRPC's own clients report a broken connection as UNAVAILABLE,
/// and it is one: the call may succeed on a new connection or another member. Statuses a
/// server sent are kept as they are.
pub(crate) fn classify(status: Status) -> Status {
    let from_transport = std::error::Error::source(&status).is_some();
    if from_transport && status.code() == Code::Internal {
        let mut s = Status::unavailable(format!(
            "the connection failed during the call: {}",
            status.message()
        ));
        *s.metadata_mut() = status.metadata().clone();
        // Still marked as this side's failure, for `LastFailure`.
        s.set_source(std::sync::Arc::new(std::io::Error::other(
            status.message().to_string(),
        )));
        s
    } else {
        status
    }
}

/// One failed attempt of a call.
pub(crate) struct Failed {
    /// The node it went to.
    pub addr: String,
    pub status: Status,
    /// Attempts made so far in this call, this one included (skipped unusable addresses count).
    pub attempt: u32,
    /// The leader the node named, if it named another node: the next attempt goes there at once.
    pub leader: Option<String>,
}

/// What a call reports when its retries run out. What a server said wins over a later failure
/// to reach one: a dead member tried last would otherwise hide why the live ones refused.
#[derive(Default)]
pub(crate) struct LastFailure {
    status: Option<Status>,
    from_server: bool,
}

impl LastFailure {
    pub fn record(&mut self, status: &Status) {
        let from_server =
            std::error::Error::source(status).is_none() && status.code() != Code::DeadlineExceeded;
        if from_server || !self.from_server {
            self.from_server = from_server;
            self.status = Some(status.clone());
        }
    }

    /// The failure to report, or `latest` when none was recorded.
    pub fn or(self, latest: Status) -> Status {
        self.status.unwrap_or(latest)
    }
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder;

    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        let waits: Vec<Duration> = p.backoff().build().collect();
        assert_eq!(waits.len(), p.max_attempts as usize - 1);
        assert!(waits.iter().all(|w| *w <= p.backoff_max));
        assert!(waits[0] >= p.backoff_base && waits[0] <= 2 * p.backoff_base);
        assert!(waits.iter().all(|w| *w >= p.backoff_base));
    }

    #[test]
    fn backoff_is_bounded_when_the_base_exceeds_the_max() {
        let p = RetryPolicy {
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        assert!(p.backoff().build().all(|w| w <= p.backoff_max));
    }

    #[test]
    fn once_never_waits() {
        assert_eq!(RetryPolicy::once().backoff().build().count(), 0);
    }

    #[test]
    fn a_connection_that_fails_under_a_call_is_unavailable() {
        // What tonic makes of a stream ended by the connection's graceful close (GOAWAY with
        // NO_ERROR): INTERNAL, with the h2 error as its source.
        let goaway = Status::from_error(Box::new(h2::Error::from(h2::Reason::NO_ERROR)));
        assert_eq!(goaway.code(), Code::Internal);
        let s = classify(goaway);
        assert_eq!(s.code(), Code::Unavailable);
        assert!(retryable(s.code()));
        assert!(s.message().contains("connection failed"), "{}", s.message());
        assert!(
            std::error::Error::source(&s).is_some(),
            "still a transport failure"
        );
        // A server's own INTERNAL is not retried, and other codes pass through unchanged.
        assert_eq!(classify(Status::internal("bug")).code(), Code::Internal);
        assert!(!retryable(classify(Status::internal("bug")).code()));
        assert_eq!(
            classify(Status::not_found("no such volume")).code(),
            Code::NotFound
        );
        let refused = Status::from_error(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        assert_eq!(classify(refused).code(), Code::Unavailable);
    }

    #[test]
    fn a_server_answer_outlives_a_later_transport_failure() {
        let mut last = LastFailure::default();
        last.record(&Status::unavailable("not the leader"));
        last.record(&Status::deadline_exceeded("no answer"));
        let s = last.or(Status::cancelled("latest"));
        assert_eq!(s.code(), Code::Unavailable);
    }
}
