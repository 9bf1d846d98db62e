//! Latencies of a workload, kept in an HdrHistogram: memory does not grow with the number of
//! operations, percentiles hold 3 significant digits, and the histograms of concurrent
//! writers merge into one.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Largest latency a histogram resolves: an hour, far above every workload's time limit and
/// per-operation timeout. A longer one is recorded as this.
const LATENCY_NS_MAX: u64 = 3_600 * 1_000_000_000;
/// 3 digits: a 1 ms latency is known to ±1 µs, a 100 µs one to ±0.1 µs.
const SIGNIFICANT_DIGITS: u8 = 3;

/// Latencies in nanoseconds.
#[derive(Clone, Debug)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Latencies {
        Latencies(
            Histogram::new_with_bounds(1, LATENCY_NS_MAX, SIGNIFICANT_DIGITS)
                .expect("the bounds and precision are valid constants"),
        )
    }
}

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(ns);
    }

    /// Adds every latency of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        self.0
            .add(&other.0)
            .expect("histograms with the same bounds always merge");
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> usize {
        self.0.len() as usize
    }
}

/// Latency percentiles of a workload, each to the histogram's precision.
#[derive(Clone, Debug)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl Summary {
    /// `None` when nothing was recorded.
    pub fn of(l: &Latencies) -> Option<Summary> {
        let h = &l.0;
        if h.is_empty() {
            return None;
        }
        let at = |q: f64| Duration::from_nanos(h.value_at_quantile(q));
        Some(Summary {
            count: l.count(),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_nanos(h.max()),
            mean: Duration::from_nanos(h.mean().round() as u64),
        })
    }

    pub fn print(&self, what: &str, json: bool) {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        if json {
            println!(
                "{}",
                serde_json::json!({"workload": what, "count": self.count, "p50_us": us(self.p50),
                    "p90_us": us(self.p90), "p99_us": us(self.p99), "p999_us": us(self.p999),
                    "max_us": us(self.max)})
            );
        } else {
            println!(
                "{what}: n={} p50={:.0}µs p90={:.0}µs p99={:.0}µs p99.9={:.0}µs max={:.0}µs",
                self.count,
                us(self.p50),
                us(self.p90),
                us(self.p99),
                us(self.p999),
                us(self.max)
            );
        }
    }
}

pub fn summarize(l: &Latencies) -> anyhow::Result<Summary> {
    Summary::of(l).ok_or_else(|| anyhow::anyhow!("no samples were taken"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_within_three_digits() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        // 1..=1000 µs, split across two writers' histograms.
        for i in 1..=1000u64 {
            let d = Duration::from_micros(i);
            if i % 2 == 0 {
                a.record(d)
            } else {
                b.record(d)
            }
        }
        a.merge(&b);
        let s = summarize(&a).unwrap();
        assert_eq!(s.count, 1000);
        let near = |d: Duration, us: f64| (d.as_secs_f64() * 1e6 - us).abs() <= us * 1e-3;
        assert!(near(s.p50, 500.0), "{s:?}");
        assert!(near(s.p90, 900.0), "{s:?}");
        assert!(near(s.p99, 990.0), "{s:?}");
        assert!(near(s.p999, 999.0), "{s:?}");
        assert!(near(s.max, 1000.0), "{s:?}");
        assert!(near(s.mean, 500.5), "{s:?}");
    }

    #[test]
    fn empty_has_no_summary() {
        assert!(summarize(&Latencies::default()).is_err());
    }

    #[test]
    fn records_beyond_the_bound() {
        let mut l = Latencies::default();
        l.record(Duration::from_secs(2 * 3600));
        l.record(Duration::ZERO);
        assert_eq!(l.count(), 2);
    }
}
