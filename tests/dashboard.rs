//! The Grafana dashboard (`charts/folio/dashboards/folio.json`) asks only for metrics Folio
//! exports: every metric name in its queries appears on the `/metrics` of a running group's
//! leader or a follower once the group has committed, flushed and read.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context};
use bytes::Bytes;
use folio_core::{Lsn, PAGE_SIZE};
use folio_system_tests::folio_bin;
use folio_testkit::{Cluster, Options};

/// The `folio_*` names in a PromQL expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(i) = rest.find("folio_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        into.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

/// The sample names on a node's `/metrics`.
fn exported(c: &Cluster, id: u64, names: &BTreeSet<String>) -> anyhow::Result<BTreeSet<String>> {
    let mut found = BTreeSet::new();
    for n in names {
        if !c.metric_samples(id, n)?.is_empty() {
            found.insert(n.clone());
        }
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exported() -> anyhow::Result<()> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/folio/dashboards/folio.json");
    let dash: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    ensure!(all.len() >= 10, "the dashboard's queries: {all:?}");
    let mut names = BTreeSet::new();
    for e in &all {
        metric_names(e, &mut names);
    }

    let c = Cluster::start_opts(
        folio_bin(),
        3,
        Options {
            flush: "interval_ms = 100\n".into(),
            ..Default::default()
        },
    )?;
    let leader = c.wait_leader(Duration::from_secs(30)).await?;
    let client = c.client();
    let v = client.create_volume(None).await?;
    let page = Bytes::from(vec![7u8; PAGE_SIZE]);
    let r = client.commit(v, Lsn(0), vec![(0, page)], "dash").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while c.metric(leader, "folio_segments_flushed_total")? < 1.0 {
        ensure!(tokio::time::Instant::now() < deadline, "nothing flushed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.read_pages(v, r.lsn, &[0]).await?;
    let follower = (1..=3).find(|n| *n != leader).context("a follower")?;
    let mut found = exported(&c, leader, &names)?;
    found.extend(exported(&c, follower, &names)?);
    let missing: Vec<_> = names.difference(&found).collect();
    ensure!(
        missing.is_empty(),
        "the dashboard queries metrics no node exports: {missing:?}"
    );
    Ok(())
}
