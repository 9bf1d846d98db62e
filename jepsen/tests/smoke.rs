//! The fault suite's smoke campaign, as CI runs it: four short runs that between them use every
//! workload and every nemesis, each on its own 3-node group in network namespaces. It passes
//! only if every run's checkers found nothing (no lost or misplaced acknowledged write, no
//! linearizability or isolation anomaly, watches complete and in order), no node panicked, and
//! every fault was actually injected at least once.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn results(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("campaign directory") {
        let p = e.expect("entry").path().join("results.json");
        if let Ok(t) = std::fs::read_to_string(&p) {
            out.push(serde_json::from_str(&t).expect("results.json is JSON"));
        }
    }
    out
}

#[test]
fn smoke_campaign_covers_every_workload_and_fault_and_finds_nothing() {
    let folio = folio_testkit::built("folio", "FOLIO_BIN").expect("the folio binary is built");
    let store = tempfile::Builder::new()
        .prefix("folio-jepsen-smoke-")
        .tempdir()
        .expect("temp dir");
    let status = Command::new(env!("CARGO_BIN_EXE_folio-jepsen"))
        .args(["campaign", "--smoke", "--time", "20", "--seed", "11"])
        // Not the default network, so a campaign run by hand can go on beside the tests.
        .args(["--net", "78"])
        .arg("--store")
        .arg(store.path())
        .arg("--folio")
        .arg(&folio)
        .status()
        .expect("run folio-jepsen");
    let campaign = std::fs::read_dir(store.path())
        .expect("store")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("a campaign directory");
    let md = std::fs::read_to_string(campaign.join("campaign.md")).unwrap_or_default();
    eprintln!("{md}");
    assert!(
        status.success(),
        "the smoke campaign failed; runs kept in {}",
        store.keep().display()
    );
    let all = results(&campaign);
    assert_eq!(all.len(), 4, "every run left a verdict");
    let workloads: BTreeSet<&str> = all.iter().filter_map(|r| r["workload"].as_str()).collect();
    assert_eq!(
        workloads,
        ["append", "cas", "durable", "watch"].into_iter().collect()
    );
    let injected: BTreeSet<String> = all
        .iter()
        .flat_map(|r| r["windows"].as_array().cloned().unwrap_or_default())
        .filter(|w| {
            !w["detail"]
                .as_str()
                .unwrap_or("")
                .starts_with("could not inject")
        })
        .filter_map(|w| w["kind"].as_str().map(str::to_string))
        .collect();
    let want: BTreeSet<String> = [
        "partition",
        "kill",
        "pause",
        "clock",
        "store",
        "member",
        "registry",
        "disk",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(injected, want, "every fault was injected at least once");
    for r in &all {
        assert_eq!(r["valid"], true, "{r:#}");
        assert!(
            r["ops"]["acknowledged_writes"].as_u64().unwrap_or(0) > 0,
            "each run acknowledged writes: {}",
            r["ops"]
        );
    }
}
