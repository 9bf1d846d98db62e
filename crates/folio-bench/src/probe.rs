//! What a workload cost, read before and after it: CPU time of the server processes and of this
//! process (from `/proc/<pid>/stat`), and object-store requests counted by the nodes
//! (`folio_object_store_requests_total` on their `/metrics` endpoints).

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest `/metrics` answer read.
const METRICS_BYTES_MAX: u64 = 16 << 20;
const METRICS_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to read a workload's costs. Empty lists mean "not measured" (an external group).
#[derive(Clone, Debug, Default)]
pub struct Probe {
    /// The server processes serving the workload.
    pub pids: Vec<u32>,
    /// Their metrics addresses (`host:port`), for object-store request counts.
    pub metrics: Vec<String>,
}

/// Object-store requests counted by the nodes, summed over nodes, outcomes and operations.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreRequests {
    pub total: f64,
    pub put: f64,
    /// `get` and `get_range`.
    pub get: f64,
}

pub struct ProbeSnapshot {
    at: Instant,
    node_cpu_secs: Option<f64>,
    self_cpu_secs: f64,
    store: Option<StoreRequests>,
}

/// Costs over a window, per second of wall time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// CPU cores used by the server processes (user + system seconds per second).
    pub node_cpu_cores: Option<f64>,
    /// CPU cores used by this process (the load generator).
    pub bench_cpu_cores: f64,
    pub store_requests_per_s: Option<f64>,
    pub store_puts_per_s: Option<f64>,
    pub store_gets_per_s: Option<f64>,
}

impl Probe {
    pub async fn snapshot(&self) -> anyhow::Result<ProbeSnapshot> {
        let node_cpu_secs = if self.pids.is_empty() {
            None
        } else {
            let mut secs = 0.0;
            for pid in &self.pids {
                secs += cpu_secs(&format!("/proc/{pid}/stat"))
                    .with_context(|| format!("CPU time of server process {pid}"))?;
            }
            Some(secs)
        };
        let store = if self.metrics.is_empty() {
            None
        } else {
            let mut sum = StoreRequests::default();
            for addr in &self.metrics {
                let text = http_get(addr, "/metrics")
                    .await
                    .with_context(|| format!("read metrics from {addr}"))?;
                let r = store_requests(&text);
                sum.total += r.total;
                sum.put += r.put;
                sum.get += r.get;
            }
            Some(sum)
        };
        Ok(ProbeSnapshot {
            at: Instant::now(),
            node_cpu_secs,
            self_cpu_secs: cpu_secs("/proc/self/stat").context("CPU time of this process")?,
            store,
        })
    }
}

impl ProbeSnapshot {
    pub fn usage_until(&self, after: &ProbeSnapshot) -> Usage {
        let secs = after.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let rate = |a: f64, b: f64| (b - a).max(0.0) / secs;
        let store = self.store.zip(after.store);
        Usage {
            node_cpu_cores: self
                .node_cpu_secs
                .zip(after.node_cpu_secs)
                .map(|(a, b)| rate(a, b)),
            bench_cpu_cores: rate(self.self_cpu_secs, after.self_cpu_secs),
            store_requests_per_s: store.map(|(a, b)| rate(a.total, b.total)),
            store_puts_per_s: store.map(|(a, b)| rate(a.put, b.put)),
            store_gets_per_s: store.map(|(a, b)| rate(a.get, b.get)),
        }
    }
}

/// User + system CPU seconds of a process, from its `/proc/<pid>/stat`.
fn cpu_secs(stat_path: &str) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(stat_path).with_context(|| format!("read {stat_path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: fields are counted from
    // the last ')'. utime and stime are fields 14 and 15, so 11 and 12 after it.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("malformed {stat_path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("malformed {stat_path}: field {}", i + 3))
    };
    let ticks = field(11)? + field(12)?;
    // SAFETY: sysconf only reads a configuration value.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    anyhow::ensure!(per_sec > 0, "sysconf(_SC_CLK_TCK) failed");
    Ok(ticks as f64 / per_sec as f64)
}

/// Sums `folio_object_store_requests_total{op,outcome}` from Prometheus text.
pub fn store_requests(text: &str) -> StoreRequests {
    let mut r = StoreRequests::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("folio_object_store_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let op = labels
            .split(',')
            .find_map(|l| l.strip_prefix("op=\""))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or("");
        r.total += value;
        match op {
            "put" => r.put += value,
            "get" | "get_range" => r.get += value,
            _ => {}
        }
    }
    r
}

/// A plain HTTP/1.0 GET (the metrics endpoint closes the connection after answering), bounded
/// in time and size. Returns the body of a 200 answer.
async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.take(METRICS_BYTES_MAX).read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(METRICS_TIMEOUT, fetch)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {METRICS_TIMEOUT:?}"))??;
    let text = String::from_utf8(buf).context("metrics are not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status = head.lines().next().unwrap_or("");
    anyhow::ensure!(
        status.split_whitespace().nth(1) == Some("200"),
        "HTTP answer {status:?}"
    );
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_store_requests_by_op() {
        let text = "# HELP folio_object_store_requests_total x\n\
            folio_object_store_requests_total{op=\"put\",outcome=\"ok\"} 3\n\
            folio_object_store_requests_total{op=\"put\",outcome=\"already_exists\"} 1\n\
            folio_object_store_requests_total{op=\"get_range\",outcome=\"ok\"} 10\n\
            folio_object_store_requests_total{op=\"head\",outcome=\"ok\"} 2\n\
            folio_object_store_request_seconds_count{op=\"put\"} 4\n";
        let r = store_requests(text);
        assert_eq!((r.total, r.put, r.get), (16.0, 4.0, 10.0));
    }

    #[test]
    fn reads_own_cpu_time() {
        assert!(cpu_secs("/proc/self/stat").unwrap() >= 0.0);
    }
}
