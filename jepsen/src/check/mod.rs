//! Checkers: each reads a history (and, for durability and watch, what the healed cluster
//! returns) and says whether Folio kept its promises, with every anomaly it found.

use serde::Serialize;

pub mod durable;
pub mod elle;
pub mod linear;
pub mod watch;

/// One violation, with the history indexes of the operations involved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// Jepsen's and Elle's names where they exist: "nonlinearizable", "G0", "G1a", "G1c",
    /// "G-single", "G2", "lost-update", "incompatible-order", "duplicate", "lost", ...
    pub kind: String,
    pub ops: Vec<usize>,
    pub explanation: String,
}

/// What one checker concluded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckResult {
    pub checker: String,
    /// True only if the checker ran to the end and found nothing wrong.
    pub valid: bool,
    /// Set when the checker could not decide (for example a search over its limit): not a pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
    pub anomalies: Vec<Anomaly>,
    /// Counts worth reporting (operations checked, keys, ...).
    pub stats: std::collections::BTreeMap<String, u64>,
}

impl CheckResult {
    pub fn new(checker: &str) -> CheckResult {
        CheckResult {
            checker: checker.to_string(),
            valid: true,
            ..Default::default()
        }
    }

    pub fn anomaly(&mut self, kind: &str, ops: Vec<usize>, explanation: String) {
        self.valid = false;
        self.anomalies.push(Anomaly {
            kind: kind.to_string(),
            ops,
            explanation,
        });
    }

    pub fn undecided(&mut self, why: String) {
        self.valid = false;
        self.unknown = Some(why);
    }

    pub fn stat(&mut self, name: &str, n: u64) {
        *self.stats.entry(name.to_string()).or_default() += n;
    }
}
