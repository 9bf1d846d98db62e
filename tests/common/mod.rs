//! Shared by the flush tests: writers that record what was acknowledged, and a checker that
//! reads every segment back from the object store and finds every acknowledged page and commit
//! in it, with checksums verified.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use folio_client::{Client, Error};
use folio_core::{Lsn, PageIdx, SegmentId, VolumeId, PAGE_SIZE};
use folio_objstore::{ObjectKey, ObjectStore, S3Config, S3Store};
use folio_proto::volume::v1 as pb;
use folio_segment::Segment;
use folio_testkit::moto::Moto;
use folio_testkit::Cluster;

pub const BUCKET: &str = "folio";

/// One acknowledged commit and the bytes of each page it wrote.
#[derive(Clone, Debug)]
pub struct Ack {
    pub volume: VolumeId,
    pub lsn: Lsn,
    pub key: String,
    pub pages: Vec<(pb::PageRef, Bytes)>,
}

/// A page whose bytes say which writer and commit wrote it.
pub fn page_for(key: &str, salt: u32) -> Bytes {
    let mut data = vec![(salt % 251) as u8; PAGE_SIZE];
    data[..key.len()].copy_from_slice(key.as_bytes());
    Bytes::from(data)
}

/// How a writer ended.
#[derive(Debug, Default)]
pub struct WriterResult {
    pub acks: Vec<Ack>,
    /// Writes refused with UNAVAILABLE after the client's retries (for example a full buffer).
    pub refused: Vec<String>,
}

/// Commits `count` one- or two-page commits to `volume`, rebasing on conflict and keeping the
/// idempotency key across every retry of one logical write. A write whose retries run out is
/// recorded as refused and ends the writer; every other error fails it.
pub async fn writer(
    client: Arc<Client>,
    volume: VolumeId,
    name: String,
    count: usize,
    durability: pb::Durability,
    acked: Arc<AtomicUsize>,
) -> anyhow::Result<WriterResult> {
    let mut out = WriterResult::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for seq in 0..count {
        let key = format!("{name}-{seq}");
        let n_pages = 1 + seq % 2;
        let pages: Vec<(u32, Bytes)> = (0..n_pages)
            .map(|i| {
                let idx = (seq * 2 + i) as u32 % 512;
                (idx, page_for(&key, i as u32))
            })
            .collect();
        loop {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "writer {name} ran out of time"
            );
            let base = match client.snapshot(volume).await {
                Ok(l) => l,
                Err(Error::Unavailable { last, .. }) => {
                    out.refused.push(last);
                    return Ok(out);
                }
                Err(e) => bail!("snapshot: {e}"),
            };
            let req = pb::CommitRequest {
                volume_id: Bytes::copy_from_slice(volume.as_bytes()),
                expected_lsn: base.0,
                idempotency_key: Bytes::from(key.clone()),
                durability: durability as i32,
                pages: pages
                    .iter()
                    .map(|(i, d)| pb::PageWrite {
                        page_idx: *i,
                        data: d.clone(),
                    })
                    .collect(),
                refs: vec![],
            };
            match client.commit_request(req).await {
                Ok(c) => {
                    acked.fetch_add(1, Ordering::Relaxed);
                    ensure!(c.pages.len() == pages.len(), "one location per page");
                    out.acks.push(Ack {
                        volume,
                        lsn: c.lsn,
                        key: key.clone(),
                        pages: c
                            .pages
                            .into_iter()
                            .zip(pages.iter().map(|(_, d)| d.clone()))
                            .collect(),
                    });
                    break;
                }
                Err(Error::Conflict { .. }) => continue,
                Err(Error::Unavailable { last, .. }) => {
                    // Out of retries (a full buffer, or the group is down): stop writing.
                    out.refused.push(last);
                    return Ok(out);
                }
                Err(e) => bail!("commit {key}: {e}"),
            }
        }
    }
    Ok(out)
}

/// Waits until every running node's buffer is empty and no segment waits for upload.
pub async fn wait_drained(c: &Cluster, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut drained = true;
        for n in c.nodes.iter().filter(|n| n.is_running()) {
            let buffered = c.metric(n.id, "folio_buffer_bytes").unwrap_or(f64::NAN);
            let sealed = c.metric(n.id, "folio_sealed_segments").unwrap_or(f64::NAN);
            drained &= buffered == 0.0 && sealed == 0.0;
        }
        if drained {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "buffers did not drain to the object store within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client for the test bucket on `moto`.
pub async fn bucket(moto: &Moto) -> anyhow::Result<S3Store> {
    Ok(S3Store::connect(S3Config {
        bucket: BUCKET.into(),
        prefix: String::new(),
        region: Some("us-east-1".into()),
        endpoint: Some(moto.endpoint()),
        path_style: true,
        credentials: Some(("test".into(), "test".into())),
    })
    .await?)
}

/// Every segment in the bucket, decoded (so every checksum is verified).
pub async fn segments(moto: &Moto) -> anyhow::Result<HashMap<SegmentId, Segment>> {
    let store = bucket(moto).await?;
    let mut keys = Vec::new();
    loop {
        let page = store
            .list(
                ObjectKey::SEGMENTS_PREFIX,
                keys.last().map(String::as_str),
                1000,
            )
            .await?;
        if page.is_empty() {
            break;
        }
        keys.extend(page);
    }
    let mut out = HashMap::new();
    for k in keys {
        let id: SegmentId = k
            .strip_prefix(ObjectKey::SEGMENTS_PREFIX)
            .with_context(|| format!("key {k}"))?
            .parse()?;
        let bytes = store.get(&ObjectKey::Segment(id)).await?;
        let seg = Segment::decode(bytes).with_context(|| format!("decode {k}"))?;
        ensure!(
            k == format!("segments/{}", seg.id),
            "object {k} holds segment {}",
            seg.id
        );
        out.insert(seg.id, seg);
    }
    Ok(out)
}

/// Checks that every acknowledged page is in the segment and at the offset it was acknowledged
/// with, with the bytes that were written, and that every acknowledged commit's record is in
/// some segment with the same key and page locations. Returns the number of segments.
pub async fn check_acks_in_segments(moto: &Moto, acks: &[Ack]) -> anyhow::Result<usize> {
    let segs = segments(moto).await?;
    let mut records = HashMap::new();
    for s in segs.values() {
        for c in &s.commits {
            ensure!(
                records.insert((c.volume, c.lsn), c.clone()).is_none(),
                "commit {}@{} is in two segments",
                c.volume,
                c.lsn
            );
        }
    }
    for a in acks {
        for (r, data) in &a.pages {
            let sid = SegmentId::from_slice(&r.segment_id)?;
            let seg = segs.get(&sid).with_context(|| {
                format!("{} page {}: segment {sid} not uploaded", a.key, r.page_idx)
            })?;
            let e = seg
                .index
                .get(a.volume, PageIdx(r.page_idx), r.offset)
                .with_context(|| format!("{}: page {} not in segment {sid}", a.key, r.page_idx))?;
            let got = seg.page(e)?;
            ensure!(
                got.bytes() == data,
                "{}: page {} has other bytes",
                a.key,
                r.page_idx
            );
        }
        let rec = records.get(&(a.volume, a.lsn)).with_context(|| {
            format!(
                "commit record {}@{} ({}) not uploaded",
                a.volume, a.lsn, a.key
            )
        })?;
        ensure!(
            rec.idempotency_key == a.key.as_bytes(),
            "record {} has another key",
            a.key
        );
        let locs: Vec<(u32, SegmentId, u64)> = rec
            .pages
            .iter()
            .map(|p| (p.idx.0, p.segment, p.offset))
            .collect();
        let acked: Vec<(u32, SegmentId, u64)> = a
            .pages
            .iter()
            .map(|(r, _)| Ok((r.page_idx, SegmentId::from_slice(&r.segment_id)?, r.offset)))
            .collect::<anyhow::Result<_>>()?;
        ensure!(locs == acked, "record {} has other page locations", a.key);
    }
    Ok(segs.len())
}

/// Sum of a labelled counter's samples whose labels contain every one of `want`.
pub fn counter(c: &Cluster, id: u64, name: &str, want: &[&str]) -> f64 {
    c.metric_samples(id, name)
        .unwrap_or_default()
        .into_iter()
        .filter(|(labels, _)| want.iter().all(|w| labels.contains(w)))
        .map(|(_, v)| v)
        .sum()
}

/// Reads `pages` of `v` at `lsn` through `client` (a client of node `node`) and checks each
/// against `want(page)`: the LSN that wrote it and its bytes, `None` for a page never written
/// (zeros, written at LSN 0).
pub async fn check_snapshot(
    client: &Client,
    node: u64,
    v: VolumeId,
    lsn: u64,
    pages: &[u32],
    want: impl Fn(u32) -> Option<(u64, Bytes)>,
) -> anyhow::Result<()> {
    let got = client.read_pages(v, Lsn(lsn), pages).await?;
    ensure!(got.len() == pages.len(), "one answer per page");
    for p in got {
        let (want_lsn, want) = want(p.page_idx).unwrap_or((0, Bytes::from(vec![0u8; PAGE_SIZE])));
        ensure!(
            p.data == want && p.written_lsn == want_lsn,
            "node {node}, volume {v}, LSN {lsn}, page {}: written {} want {want_lsn}, bytes \
             equal: {}",
            p.page_idx,
            p.written_lsn,
            p.data == want
        );
    }
    Ok(())
}
