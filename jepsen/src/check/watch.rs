//! Watch: each WatchVolume subscriber received every commit once, in LSN order, with the pages
//! the commit wrote, across stream breaks and leader changes, up to the volume's final head.

use std::collections::HashMap;

use super::CheckResult;
use crate::check::durable::Acked;
use crate::workload::WatchLog;

pub fn check(logs: &[WatchLog], heads: &[u64], acked: &[Acked]) -> CheckResult {
    let mut r = CheckResult::new("watch");
    let pages: HashMap<(usize, u64), Vec<u32>> = acked
        .iter()
        .map(|a| {
            let mut p: Vec<u32> = a.pages.iter().map(|(i, _)| *i).collect();
            p.sort_unstable();
            ((a.volume, a.lsn), p)
        })
        .collect();
    for (w, log) in logs.iter().enumerate() {
        r.stat("events", log.events.len() as u64);
        r.stat("resumes", log.resumes);
        let mut prev = log.since;
        for (_, lsn, idx) in &log.events {
            if *lsn <= prev {
                r.anomaly(
                    "watch-order",
                    vec![],
                    format!(
                        "watcher {w} on volume {}: LSN {lsn} delivered after {prev} (twice or out of order)",
                        log.volume
                    ),
                );
            } else if *lsn != prev + 1 {
                r.anomaly(
                    "watch-gap",
                    vec![],
                    format!(
                        "watcher {w} on volume {}: LSNs {}..{} never delivered",
                        log.volume,
                        prev + 1,
                        lsn - 1
                    ),
                );
            }
            if let Some(want) = pages.get(&(log.volume, *lsn)) {
                if want != idx {
                    r.anomaly(
                        "watch-mismatch",
                        vec![],
                        format!(
                            "watcher {w} on volume {}: LSN {lsn} delivered pages {idx:?}, the \
                             acknowledged commit wrote {want:?}",
                            log.volume
                        ),
                    );
                }
            }
            prev = prev.max(*lsn);
        }
        let head = heads[log.volume];
        if prev < head {
            r.anomaly(
                "watch-incomplete",
                vec![],
                format!(
                    "watcher {w} on volume {} stopped at LSN {prev}; the head is {head}",
                    log.volume
                ),
            );
        }
    }
    r
}
