//! Retry policy: which failures are retried and how long to wait between attempts. Every wait
//! and the whole budget are bounded.

use std::time::Duration;

use rand::Rng;
use tonic::Code;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Time for all attempts of one call together.
    pub total_timeout: Duration,
    /// Time for one attempt.
    pub attempt_timeout: Duration,
    /// First backoff; doubles per attempt up to `backoff_max`, with full jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 40,
            total_timeout: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
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

    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.backoff_base.saturating_mul(1 << attempt.min(16));
        let cap = exp.min(self.backoff_max);
        let ms = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        for a in 0..50 {
            assert!(p.backoff(a) <= p.backoff_max);
        }
    }
}
