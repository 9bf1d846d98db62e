//! Durability: every acknowledged write is in the volume's history at the LSN it was
//! acknowledged with, byte for byte, and no two acknowledgements name the same LSN. Checked once
//! the cluster is healed and again after every member was SIGKILLed and restarted.

use std::collections::HashMap;

use bytes::Bytes;
use folio_client::Client;
use folio_core::{Lsn, VolumeId};
use futures::StreamExt;

use super::CheckResult;
use crate::history::{pairs, Body, Mop, Op, OpType};
use crate::workload::{list_page, register_page, tagged_page};

/// One acknowledged write: what the history says must be on the volume at `lsn`.
#[derive(Clone, Debug)]
pub struct Acked {
    /// The completion's index in the history.
    pub index: usize,
    pub volume: usize,
    pub lsn: u64,
    pub pages: Vec<(u32, Bytes)>,
}

/// Every acknowledged write in a history.
pub fn acked(history: &[Op]) -> Vec<Acked> {
    let mut out = Vec::new();
    for p in pairs(history) {
        if p.complete.kind != OpType::Ok {
            continue;
        }
        let (volume, lsn, pages) = match &p.complete.body {
            Body::Cas {
                key,
                new,
                lsn: Some(lsn),
                ..
            } => (*key, *lsn, vec![(0, register_page(*new))]),
            Body::Write {
                key,
                page,
                tag,
                lsn: Some(lsn),
            } => (*key, *lsn, vec![(*page, tagged_page(*tag))]),
            Body::Txn {
                key,
                mops,
                lsn: Some(lsn),
            } => {
                let read: HashMap<u64, &Vec<u64>> = mops
                    .iter()
                    .filter_map(|m| match m {
                        Mop::Read { key, list: Some(l) } => Some((*key, l)),
                        _ => None,
                    })
                    .collect();
                let pages: Vec<(u32, Bytes)> = mops
                    .iter()
                    .filter_map(|m| match m {
                        Mop::Append { key, elem } => {
                            let mut l = read.get(key).map(|l| (*l).clone()).unwrap_or_default();
                            l.push(*elem);
                            Some((*key as u32, list_page(&l)))
                        }
                        _ => None,
                    })
                    .collect();
                if pages.is_empty() {
                    continue;
                }
                (*key, *lsn, pages)
            }
            _ => continue,
        };
        out.push(Acked {
            index: p.complete.index,
            volume: volume as usize,
            lsn,
            pages,
        });
    }
    out
}

/// Reads every acknowledged write back. `phase` names when (after healing, after a restart).
pub async fn check(
    client: &Client,
    volumes: &[VolumeId],
    acked: &[Acked],
    phase: &str,
) -> CheckResult {
    let mut r = CheckResult::new(&format!("durable ({phase})"));
    let mut seen: HashMap<(usize, u64), usize> = HashMap::new();
    for a in acked {
        if let Some(other) = seen.insert((a.volume, a.lsn), a.index) {
            r.anomaly(
                "duplicate-lsn",
                vec![other, a.index],
                format!(
                    "two writes were acknowledged at LSN {} of volume {}",
                    a.lsn, a.volume
                ),
            );
        }
    }
    r.stat("acknowledged", acked.len() as u64);
    let reads = futures::stream::iter(acked.iter().map(|a| async move {
        let idx: Vec<u32> = a.pages.iter().map(|(i, _)| *i).collect();
        let mut last = None;
        for _ in 0..5 {
            match client.read_pages(volumes[a.volume], Lsn(a.lsn), &idx).await {
                Ok(got) => return (a, Ok(got)),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        (a, Err(last.expect("five attempts failed")))
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    let mut checked = 0u64;
    for (a, got) in reads {
        match got {
            Ok(got) => {
                checked += 1;
                for ((idx, want), have) in a.pages.iter().zip(&got) {
                    if have.data != *want {
                        r.anomaly(
                            "lost",
                            vec![a.index],
                            format!(
                                "volume {} page {idx} at LSN {} is not what was acknowledged \
                                 (first bytes {:02x?}, want {:02x?})",
                                a.volume,
                                a.lsn,
                                &have.data[..8.min(have.data.len())],
                                &want[..8]
                            ),
                        );
                    }
                }
            }
            Err(e) => r.anomaly(
                "unreadable",
                vec![a.index],
                format!(
                    "volume {} at LSN {}: acknowledged, but reading it back failed: {e}",
                    a.volume, a.lsn
                ),
            ),
        }
    }
    r.stat("read-back", checked);
    r
}
