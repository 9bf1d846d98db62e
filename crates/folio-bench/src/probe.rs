//! What a workload cost, read before and after it: CPU time of the server processes and of this
//! process (from `/proc/<pid>/stat`), and object-store requests counted by the nodes
//! (`folio_object_store_requests_total` on their `/metrics` endpoints, fetched with hyper).
//!
//! The Prometheus text is read by a few lines here rather than the `prometheus-parse` crate: only
//! one counter family is needed, and that crate would add a third `itertools` version and a
//! regex per line to the build.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::StatusCode;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;

/// Largest `/metrics` answer read.
const METRICS_BYTES_MAX: usize = 16 << 20;
/// Longest one scrape (connect, request, whole answer) may take.
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
            // One client per snapshot: its pooled connections close when it is dropped, so no
            // connection outlives the measurement it belongs to.
            let http = http_client();
            let mut sum = StoreRequests::default();
            for addr in &self.metrics {
                let text = http_get(&http, addr, "/metrics")
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

/// The samples of `folio_object_store_requests_total` in Prometheus text, as (op, value). A sample
/// line is `name{labels} value [timestamp]`; comments and other families are skipped.
pub fn store_request_samples(text: &str) -> impl Iterator<Item = (&str, f64)> {
    text.lines().filter_map(|line| {
        let rest = line.strip_prefix("folio_object_store_requests_total{")?;
        // Folio's label values (operation and outcome names) hold no braces.
        let (labels, value) = rest.rsplit_once('}')?;
        let value = value.split_whitespace().next()?.parse::<f64>().ok()?;
        let op = labels
            .split(',')
            .find_map(|l| l.strip_prefix("op=\""))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or("");
        Some((op, value))
    })
}

/// Sums `folio_object_store_requests_total{op,outcome}` from Prometheus text.
pub fn store_requests(text: &str) -> StoreRequests {
    let mut r = StoreRequests::default();
    for (op, value) in store_request_samples(text) {
        r.total += value;
        match op {
            "put" => r.put += value,
            "get" | "get_range" => r.get += value,
            _ => {}
        }
    }
    r
}

/// A hyper client for plain-HTTP scrapes, dialling with TCP_NODELAY (as every Folio connection
/// does) and a connect timeout.
pub(crate) fn http_client() -> HttpClient<HttpConnector, Empty<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(METRICS_TIMEOUT));
    HttpClient::builder(TokioExecutor::new()).build(connector)
}

/// GETs `http://{addr}{path}`, bounded in time and size. Returns the body of a 200 answer.
pub(crate) async fn http_get(
    http: &HttpClient<HttpConnector, Empty<Bytes>>,
    addr: &str,
    path: &str,
) -> anyhow::Result<String> {
    let uri: hyper::Uri = format!("http://{addr}{path}")
        .parse()
        .with_context(|| format!("bad metrics address {addr:?}"))?;
    let fetch = async {
        let answer = http.get(uri).await?;
        let status = answer.status();
        anyhow::ensure!(status == StatusCode::OK, "HTTP answer {status}");
        let body = Limited::new(answer.into_body(), METRICS_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| {
                anyhow::anyhow!("read the answer (at most {METRICS_BYTES_MAX} bytes): {e}")
            })?;
        anyhow::Ok(body.to_bytes())
    };
    let body = tokio::time::timeout(METRICS_TIMEOUT, fetch)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {METRICS_TIMEOUT:?}"))??;
    String::from_utf8(body.to_vec()).context("metrics are not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_store_requests_by_op() {
        let text = "# HELP folio_object_store_requests_total x\n\
            folio_object_store_requests_total{op=\"put\",outcome=\"ok\"} 3\n\
            folio_object_store_requests_total{op=\"put\",outcome=\"already_exists\"} 1\n\
            folio_object_store_requests_total{op=\"get_range\",outcome=\"ok\"} 10 1700000000000\n\
            folio_object_store_requests_total{op=\"head\",outcome=\"ok\"} 2\n\
            folio_object_store_request_seconds_count{op=\"put\"} 4\n";
        let r = store_requests(text);
        assert_eq!((r.total, r.put, r.get), (16.0, 4.0, 10.0));
    }

    /// Answers one HTTP request on 127.0.0.1 with `answer`, and returns its address.
    async fn serve_once(answer: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                req.extend_from_slice(&buf[..n]);
            }
            assert!(req.starts_with(b"GET /metrics HTTP/1.1\r\n"));
            s.write_all(answer.as_bytes()).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn scrapes_over_http() {
        let addr = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-length: 59\r\nconnection: close\r\n\r\n\
             folio_object_store_requests_total{op=\"put\",outcome=\"ok\"} 7\n",
        )
        .await;
        let text = http_get(&http_client(), &addr, "/metrics").await.unwrap();
        assert_eq!(store_requests(&text).put, 7.0);
    }

    #[tokio::test]
    async fn refuses_an_error_answer() {
        let addr = serve_once(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        let e = http_get(&http_client(), &addr, "/metrics")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("503"), "{e:#}");
    }

    #[test]
    fn reads_own_cpu_time() {
        assert!(cpu_secs("/proc/self/stat").unwrap() >= 0.0);
    }
}
